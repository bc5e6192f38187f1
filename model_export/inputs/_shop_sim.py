"""Simulating the shop's customers: orders with BG/NBD-style churn, browsing sessions and the
offer log, and the truth frames (clean inputs and labels) the simulation implies.

Must not import server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from model_export.inputs._shop_plan import _UA, END, GROUP_SPECS, GROUPS, REWARD, SHOP, GroupSpec
from model_export.inputs.ingest import EVENTS_SCHEMA, TRANSACTIONS_SCHEMA

_ZONES = {"Europe/Berlin": 0.7, "Europe/Vienna": 0.1, "Europe/Zurich": 0.1, "Europe/London": 0.1}
_SOCIAL = ("https://l.facebook.com/", "https://www.instagram.com/", "https://t.co/x1")
_TERMS = ("headphones", "sneakers", "lamp", "serum", "tent", "novel", "charger")


@dataclass(slots=True)
class _Customer:
    id: str
    group: str
    visitor: str
    user_id: str | None
    zone: str
    device: str
    start: datetime
    orders: list[dict[str, Any]] = field(default_factory=list)
    dropout_at: datetime | None = None


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _between(rng: random.Random, lo: datetime, hi: datetime) -> datetime:
    seconds = max((hi - lo).total_seconds(), 1.0)
    return (lo + timedelta(seconds=rng.uniform(0, seconds))).replace(microsecond=0)


# --- simulation ----------------------------------------------------------------------------


def _simulate_orders(rng: random.Random, c: _Customer, spec: GroupSpec) -> None:
    if spec.gap_days is None:
        return
    t = c.start
    while t < END:
        quantity = 1 + min(int(rng.expovariate(1.0)), 5)
        c.orders.append(
            {
                "customer_id": c.id,
                "ts": t,
                "amount": round(spec.aov * rng.lognormvariate(0.0, spec.aov_sigma), 2),
                "quantity": float(quantity),
                "category": _pick(rng, spec.categories),
                "channel": _pick(rng, spec.channels),
            }
        )
        if rng.random() < spec.dropout:
            c.dropout_at = t
            return
        gap = rng.gammavariate(2.0, spec.gap_days / 2.0)
        t = (t + timedelta(days=gap)).replace(microsecond=0)


def _session_times(
    rng: random.Random, c: _Customer, spec: GroupSpec, start: datetime
) -> list[datetime]:
    """Starts of sessions: one before each web/app order, plus browsing while active."""
    times = [
        o["ts"] - timedelta(minutes=rng.uniform(3, 25))
        for o in c.orders
        if o["channel"] in ("web", "app")
    ]
    if spec.gap_days is None:
        active_end = min(END, c.start + timedelta(days=rng.expovariate(1 / 150)))
    elif c.dropout_at is not None:
        active_end = min(END, c.dropout_at + timedelta(days=30))
    else:
        active_end = END
    t = max(start, c.start - timedelta(days=rng.uniform(0, 10)))
    while True:
        t += timedelta(days=rng.expovariate(1 / spec.visit_gap_days))
        if t >= active_end:
            break
        times.append(t)
    return sorted(x.replace(microsecond=0) for x in times if start <= x < END)


def _landing(rng: random.Random, arrival: str, category: str) -> tuple[str, str | None]:
    if arrival == "email":
        campaign = rng.choice(("weekly_deals", "spring_sale", "clearance"))
        return (
            f"{SHOP}/c/{category}?utm_source=newsletter&utm_medium=email&utm_campaign={campaign}",
            rng.choice((None, "https://mail.google.com/")),
        )
    if arrival == "search":
        return f"{SHOP}/c/{category}", "https://www.google.com/"
    if arrival == "social":
        return f"{SHOP}/c/{category}", rng.choice(_SOCIAL)
    if arrival == "paid":
        return f"{SHOP}/c/{category}?gclid=Cj0K{rng.randint(1000, 9999)}", "https://www.google.com/"
    return f"{SHOP}/", None


def _session_events(
    rng: random.Random,
    c: _Customer,
    spec: GroupSpec,
    session: str,
    t: datetime,
    policy: dict[str, float],
    with_offers: bool,
) -> list[dict[str, Any]]:
    base = {
        "visitor_id": c.visitor,
        "customer_id": c.user_id,
        "session_id": session,
        "user_agent": _UA[c.device],
        "timezone": c.zone,
    }
    events: list[dict[str, Any]] = []
    arrival = _pick(rng, spec.arrivals)
    category = _pick(rng, spec.categories)
    url, referrer = _landing(rng, arrival, category)
    events.append(
        {
            **base,
            "type": "pageview",
            "ts": t,
            "url": url,
            "referrer": referrer,
            "category": category if "/c/" in url else None,
        }
    )
    for _ in range(rng.randint(*spec.views) - 1):
        t += timedelta(seconds=rng.randint(10, 180))
        previous = url
        if rng.random() < spec.search_rate:
            url, cat = f"{SHOP}/search?q={rng.choice(_TERMS)}", None
        else:
            cat = _pick(rng, spec.categories)
            url = rng.choice((f"{SHOP}/c/{cat}", f"{SHOP}/p/{rng.randint(1000, 9999)}"))
        events.append(
            {**base, "type": "pageview", "ts": t, "url": url, "referrer": previous, "category": cat}
        )
    if with_offers and rng.random() < 0.5:
        offer = _pick(rng, policy)
        shown = events[0]["ts"] + timedelta(seconds=2)
        events.append(
            {
                **base,
                "type": "impression",
                "ts": shown,
                "offer_id": offer,
                "propensity": policy[offer],
            }
        )
        p = REWARD[c.group][offer]
        click = min(0.9, 2 * p)
        if rng.random() < click:
            events.append(
                {**base, "type": "click", "ts": shown + timedelta(seconds=5), "offer_id": offer}
            )
            if rng.random() < p / click:
                value = round(spec.aov * rng.lognormvariate(0.0, spec.aov_sigma), 2)
                events.append(
                    {
                        **base,
                        "type": "conversion",
                        "ts": shown + timedelta(seconds=rng.randint(60, 900)),
                        "offer_id": offer,
                        "value": value,
                    }
                )
    return events


def _visitor(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{rng.getrandbits(48):012x}"


def _simulate(
    rng: random.Random,
    customers: int,
    visitors: int,
    start: datetime,
    cutoff: datetime,
    policy: dict[str, float],
) -> tuple[list[_Customer], list[dict[str, Any]], list[dict[str, Any]]]:
    shares = {g: GROUP_SPECS[g].share for g in GROUPS}
    people: list[_Customer] = []
    for i in range(customers):
        group = _pick(rng, shares)
        spec = GROUP_SPECS[group]
        # A few ids are e-mail addresses, which are not valid wire ids (they get hashed ids).
        cid = f"C{i + 1:06d}" if rng.random() > 0.01 else f"user{i + 1}@example.com"
        logged_in = rng.random() < 0.5
        if group == "new":
            first = _between(rng, cutoff - timedelta(days=60), cutoff - timedelta(days=1))
        elif group == "window":
            first = _between(rng, start, cutoff - timedelta(days=30))
        else:
            first = _between(rng, start, cutoff - timedelta(days=150))
        c = _Customer(
            id=cid,
            group=group,
            visitor=cid if logged_in else _visitor(rng, "v"),
            user_id=None if logged_in else cid,
            zone=_pick(rng, _ZONES),
            device=_pick(rng, spec.devices),
            start=first,
        )
        _simulate_orders(rng, c, spec)
        people.append(c)
    orders = sorted(
        (o for c in people for o in c.orders), key=lambda o: (o["ts"], o["customer_id"])
    )
    for n, o in enumerate(orders, start=1):
        o["order_id"] = f"INV{n:07d}"
    events: list[dict[str, Any]] = []
    session_no = 0
    for c in people:
        spec = GROUP_SPECS[c.group]
        for t in _session_times(rng, c, spec, start):
            session_no += 1
            events += _session_events(rng, c, spec, f"s{session_no:08d}", t, policy, True)
    for _ in range(visitors):
        spec = GROUP_SPECS["window"]
        anon = _Customer(
            id="",
            group="window",
            visitor=_visitor(rng, "anon-"),
            user_id=None,
            zone=_pick(rng, _ZONES),
            device=_pick(rng, spec.devices),
            start=_between(rng, start, END),
        )
        for _ in range(rng.randint(1, 3)):
            session_no += 1
            t = _between(rng, anon.start, min(END, anon.start + timedelta(days=30)))
            events += _session_events(rng, anon, spec, f"s{session_no:08d}", t, policy, False)
    events.sort(key=lambda e: (e["ts"], e["session_id"], e["type"]))
    return people, orders, events


# --- truth frames ----------------------------------------------------------------------------

# the generator's truth has exactly the clean frames' columns and dtypes
_TX_SCHEMA = TRANSACTIONS_SCHEMA
_EV_SCHEMA = EVENTS_SCHEMA
_EV_EXPORT = {
    "visitor_id": "visitorId",
    "customer_id": "userId",
    "type": "type",
    "ts": "timestamp",
    "session_id": "sessionId",
    "offer_id": "offerId",
    "value": "value",
    "propensity": "propensity",
    "category": "category",
    "url": "url",
    "referrer": "referrer",
    "user_agent": "userAgent",
    "timezone": "timezone",
}


def _frame(rows: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(
        {name: [r.get(name) for r in rows] for name in schema}, schema=schema, strict=False
    )


def _labels(people: list[_Customer], cutoff: datetime, horizon_days: int) -> pl.DataFrame:
    end = cutoff + timedelta(days=horizon_days)
    rows = []
    for c in people:
        before = [o for o in c.orders if o["ts"] < cutoff]
        after = [o for o in c.orders if cutoff <= o["ts"] < end]
        bought = bool(before)
        rows.append(
            {
                "customer_id": c.id,
                "visitor_id": c.visitor,
                "group": c.group,
                "first_purchase": c.orders[0]["ts"] if c.orders else None,
                "dropout_at": c.dropout_at,
                "alive_at_cutoff": c.dropout_at is None or c.dropout_at >= cutoff,
                "purchases_before": len(before),
                "churned": (not after) if bought else None,
                "purchases_next": len(after) if bought else None,
                "value_next": round(sum(o["amount"] for o in after), 2) if bought else None,
                "best_offer": GROUP_SPECS[c.group].best_offer,
            }
        )
    schema: dict[str, pl.DataType] = {
        "customer_id": pl.String(),
        "visitor_id": pl.String(),
        "group": pl.String(),
        "first_purchase": pl.Datetime("us", "UTC"),
        "dropout_at": pl.Datetime("us", "UTC"),
        "alive_at_cutoff": pl.Boolean(),
        "purchases_before": pl.Int64(),
        "churned": pl.Boolean(),
        "purchases_next": pl.Int64(),
        "value_next": pl.Float64(),
        "best_offer": pl.String(),
    }
    return _frame(rows, schema).sort("customer_id")
