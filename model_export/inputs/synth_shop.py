"""A seeded generator of a realistic shop export with planted structure, for tests and demos.

:func:`generate_shop` simulates a shop over ``days`` (two years by default) ending on
:data:`END` and writes what a customer would hand over: transactions (``Customer ID, Invoice,
InvoiceDate, Total, Quantity, Category, Channel``), web events in Tailor's event-log shape
(page views with URL, referrer, user agent and time zone, plus an offer log of impressions with
their logging propensity, clicks and conversions with value) and CRM traits, as CSV, JSON Lines,
parquet or a mix, in one file or a folder of parts. It also returns the truth: the clean frames
ingest must produce, the planted group and labels of every customer, and, with ``messy=True``,
the exact number of bad rows injected per reject reason.

Planted structure (:data:`GROUP_SPECS`):

* groups differ in purchase rate, order value, categories, channels (web/app/store), devices,
  how they arrive (direct, search, social, email campaigns, paid) and browsing;
* churn follows a BG/NBD-style process: after each purchase a customer leaves for good with a
  group-specific probability, otherwise buys again after a gamma-distributed gap. A long silence
  relative to one's usual gap therefore signals churn (the chance of never buying again grows
  with recency), and some customers leave before the cutoff, some after;
* the offer log's logging policy is known (uniform, or skewed towards a few offers) and the
  conversion probability depends on group x offer (:data:`REWARD`), so a policy that learns
  each group's best offer beats the logging policy. Conversions are offer rewards; they are not
  mirrored in the transactions export, which the churn process alone drives.

Must not import server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
import polars as pl

from model_export.inputs._shop_files import (
    DAYFIRST,
    NATIVE,
    SUFFIX,
    TS_STYLES,
    Item,
    bad_events,
    bad_transactions,
    inject,
    part_formats,
    render_ts,
    split,
    write_part,
    write_parts,
)
from model_export.inputs.config import (
    Columns,
    DataConfig,
    TrainingConfig,
    TraitsConfig,
    TransactionColumns,
)
from model_export.inputs.ingest import EVENTS_SCHEMA, TRANSACTIONS_SCHEMA

__all__ = [
    "DAYFIRST",
    "END",
    "GROUPS",
    "GROUP_SPECS",
    "LOGGING_POLICIES",
    "OFFERS",
    "REWARD",
    "SHOP_TIMEZONE",
    "GroupSpec",
    "ShopExport",
    "generate_shop",
]

Format = Literal["csv", "jsonl", "parquet", "mixed"]

#: The last instant of the simulated period (the export's "now").
END = datetime(2026, 6, 1, tzinfo=UTC)
#: The shop's time zone: timestamps without an offset are wall time here.
SHOP_TIMEZONE = "Europe/Berlin"
SHOP = "https://shop.example.com"
#: Offers of the packaged demo catalogue.
OFFERS = (
    "clearance_sale",
    "coupon_15",
    "loyalty_points",
    "new_arrivals",
    "app_download",
    "buying_guide",
    "winback_20",
    "welcome_10",
)
#: Logging policies of the offer log: probability of showing each offer.
LOGGING_POLICIES: dict[str, dict[str, float]] = {
    "uniform": dict.fromkeys(OFFERS, 1 / len(OFFERS)),
    "skewed": {
        "new_arrivals": 0.3,
        "clearance_sale": 0.25,
        "coupon_15": 0.15,
        "loyalty_points": 0.06,
        "app_download": 0.06,
        "buying_guide": 0.06,
        "winback_20": 0.06,
        "welcome_10": 0.06,
    },
}
#: Column names of the transactions export (mapped by the returned config).
TX_COLUMNS = TransactionColumns(
    customer_id="Customer ID",
    order_id="Invoice",
    timestamp="InvoiceDate",
    amount="Total",
    quantity="Quantity",
    category="Category",
    channel="Channel",
)
TX_COLUMNS_ORDER = (
    "Customer ID",
    "Invoice",
    "InvoiceDate",
    "Total",
    "Quantity",
    "Category",
    "Channel",
)
MAX_AMOUNT = 50_000.0


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """How one planted group buys, browses and responds to offers."""

    share: float
    #: Mean days between purchases while active; None: never buys.
    gap_days: float | None
    #: Probability of leaving for good after each purchase.
    dropout: float
    #: Median order value and its log-normal spread.
    aov: float
    aov_sigma: float
    categories: dict[str, float]
    channels: dict[str, float]
    devices: dict[str, float]
    arrivals: dict[str, float]
    #: Mean days between browsing sessions while active.
    visit_gap_days: float
    views: tuple[int, int]
    search_rate: float
    best_offer: str


GROUPS = ("loyal", "bargain", "lapsing", "one_time", "new", "window")
GROUP_SPECS: dict[str, GroupSpec] = {
    "loyal": GroupSpec(
        share=0.15,
        gap_days=16.0,
        dropout=0.01,
        aov=140.0,
        aov_sigma=0.35,
        categories={"electronics": 0.4, "home": 0.35, "books": 0.25},
        channels={"web": 0.5, "store": 0.35, "app": 0.15},
        devices={"desktop": 0.8, "mobile": 0.2},
        arrivals={"direct": 0.7, "search": 0.3},
        visit_gap_days=30.0,
        views=(2, 5),
        search_rate=0.05,
        best_offer="loyalty_points",
    ),
    "bargain": GroupSpec(
        share=0.22,
        gap_days=21.0,
        dropout=0.03,
        aov=22.0,
        aov_sigma=0.4,
        categories={"fashion": 0.45, "beauty": 0.35, "home": 0.2},
        channels={"app": 0.6, "web": 0.35, "store": 0.05},
        devices={"mobile": 0.6, "desktop": 0.4},
        arrivals={"email": 0.75, "direct": 0.25},
        visit_gap_days=20.0,
        views=(3, 8),
        search_rate=0.1,
        best_offer="coupon_15",
    ),
    "lapsing": GroupSpec(
        share=0.13,
        gap_days=30.0,
        dropout=0.2,
        aov=60.0,
        aov_sigma=0.4,
        categories={"sports": 0.4, "fashion": 0.3, "home": 0.3},
        channels={"web": 0.6, "store": 0.3, "app": 0.1},
        devices={"desktop": 0.6, "mobile": 0.4},
        arrivals={"search": 0.6, "direct": 0.4},
        visit_gap_days=40.0,
        views=(2, 4),
        search_rate=0.1,
        best_offer="winback_20",
    ),
    "one_time": GroupSpec(
        share=0.2,
        gap_days=60.0,
        dropout=1.0,
        aov=45.0,
        aov_sigma=0.5,
        categories={"home": 0.3, "sports": 0.3, "fashion": 0.4},
        channels={"web": 0.7, "store": 0.2, "app": 0.1},
        devices={"desktop": 0.5, "mobile": 0.5},
        arrivals={"paid": 0.5, "search": 0.5},
        visit_gap_days=90.0,
        views=(1, 3),
        search_rate=0.1,
        best_offer="winback_20",
    ),
    "new": GroupSpec(
        share=0.1,
        gap_days=35.0,
        dropout=0.1,
        aov=50.0,
        aov_sigma=0.4,
        categories={"electronics": 0.3, "fashion": 0.3, "beauty": 0.2, "books": 0.2},
        channels={"web": 0.6, "app": 0.3, "store": 0.1},
        devices={"mobile": 0.5, "desktop": 0.5},
        arrivals={"paid": 0.4, "social": 0.3, "search": 0.3},
        visit_gap_days=10.0,
        views=(2, 5),
        search_rate=0.1,
        best_offer="welcome_10",
    ),
    "window": GroupSpec(
        share=0.2,
        gap_days=None,
        dropout=0.0,
        aov=40.0,
        aov_sigma=0.4,
        categories={"electronics": 0.35, "fashion": 0.35, "sports": 0.3},
        channels={},
        devices={"mobile": 0.75, "desktop": 0.15, "tablet": 0.1},
        arrivals={"social": 0.6, "search": 0.4},
        visit_gap_days=12.0,
        views=(4, 12),
        search_rate=0.3,
        best_offer="buying_guide",
    ),
}


def _reward_row(best: str, second: str) -> dict[str, float]:
    row = dict.fromkeys(OFFERS, 0.02)
    row[best] = 0.2
    row[second] = 0.08
    return row


#: Conversion probability of an impression, by planted group and offer.
REWARD: dict[str, dict[str, float]] = {
    "loyal": _reward_row("loyalty_points", "new_arrivals"),
    "bargain": _reward_row("coupon_15", "clearance_sale"),
    "lapsing": _reward_row("winback_20", "coupon_15"),
    "one_time": _reward_row("winback_20", "clearance_sale"),
    "new": _reward_row("welcome_10", "new_arrivals"),
    "window": _reward_row("buying_guide", "app_download"),
}

_UA = {
    "desktop": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "mobile": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "tablet": "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
}
_ZONES = {"Europe/Berlin": 0.7, "Europe/Vienna": 0.1, "Europe/Zurich": 0.1, "Europe/London": 0.1}
_SOCIAL = ("https://l.facebook.com/", "https://www.instagram.com/", "https://t.co/x1")
_TERMS = ("headphones", "sneakers", "lamp", "serum", "tent", "novel", "charger")


@dataclass(frozen=True, slots=True)
class ShopExport:
    """What :func:`generate_shop` wrote, and the truth behind it.

    Attributes:
        root: the output folder.
        config: a training config that reads this export (also written as ``tailor.toml``).
        files: per input kind, the files written, relative to ``root``.
        injected: per input kind, bad rows injected per reject reason (empty unless messy).
        transactions: the clean transactions ingest must return (its frame schema).
        events: the clean events ingest must return.
        traits: customer_id, loyalty_tier, age as ingest must return them.
        labels: per customer: group, visitor id, first purchase, planted dropout time,
            alive_at_cutoff, purchases before the cutoff, churned/purchases_next/value_next
            over ``[cutoff, cutoff + horizon)`` (null for who never bought before) and the
            group's best offer.
        cutoff: the label cutoff, ``END - horizon_days``.
        horizon_days: the label horizon.
        now: the export time (:data:`END`).
        timezone: the shop's time zone (naive timestamps).
        logging_policy: the offer probabilities of the offer log.
    """

    root: Path
    config: TrainingConfig
    files: dict[str, list[str]]
    injected: dict[str, dict[str, int]]
    transactions: pl.DataFrame
    events: pl.DataFrame
    traits: pl.DataFrame
    labels: pl.DataFrame
    cutoff: datetime
    horizon_days: int
    now: datetime
    timezone: str
    logging_policy: dict[str, float]


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


# --- rendering -----------------------------------------------------------------------------


def _tx_item(
    o: dict[str, Any], rng: random.Random, zone: ZoneInfo, mixed: bool, messy: bool
) -> dict[str, Any]:
    ts = render_ts(o["ts"], rng.choice(TS_STYLES) if mixed else "iso_z", zone)
    category = o["category"].title() if o["category"] else None
    if messy and category and rng.random() < 0.05:
        category = f"  {category.upper()} "  # accepted: trimmed and lower-cased
    return {
        "Customer ID": o["customer_id"],
        "Invoice": o["order_id"],
        "InvoiceDate": ts,
        "Total": o["amount"],
        "Quantity": int(o["quantity"]),
        "Category": category,
        "Channel": o["channel"].title() if o["channel"] else None,
        NATIVE: {"InvoiceDate": o["ts"]},
    }


def _ev_item(e: dict[str, Any]) -> dict[str, Any]:
    out = {_EV_EXPORT[k]: e.get(k) for k in _EV_SCHEMA}
    ts = e["ts"]
    out["timestamp"] = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    out[NATIVE] = {"timestamp": ts}
    return out


# --- entry point -----------------------------------------------------------------------------


def generate_shop(
    out: str | Path,
    *,
    customers: int = 2000,
    seed: int = 7,
    fmt: Format = "csv",
    files: int = 1,
    messy: bool = False,
    mixed_timezones: bool = False,
    logging_policy: Literal["uniform", "skewed"] = "uniform",
    horizon_days: int = 90,
    days: int = 730,
    visitors: int | None = None,
) -> ShopExport:
    """Simulate a shop and write its export under ``out``.

    Layout: ``transactions`` and ``events`` are single files (``transactions.csv`` ...) when
    ``files == 1`` and not messy, otherwise folders of parts ``part-000.csv`` ...; traits are
    always ``traits.csv``; ``labels.csv`` holds the planted truth and ``tailor.toml`` a config
    that reads it all.

    Args:
        out: output folder (created).
        customers: customers simulated (plus ``visitors`` anonymous visitors, default a tenth).
        seed: the same seed writes the same export.
        fmt: csv, jsonl, parquet, or mixed (parts cycle csv, jsonl, parquet).
        files: parts per input.
        messy: inject bad rows of every reject reason (counted in ``injected``), a corrupt
            parquet part among the transactions and among the events, and harmless mess
            (padded, upper-case categories; event types in capitals).
        mixed_timezones: write transaction times in mixed styles: ISO with Z or an offset, naive
            wall time in :data:`SHOP_TIMEZONE` (ISO or day-first, listed in the config), epoch
            seconds and milliseconds; all denote the true instant.
        logging_policy: how the offer log chose offers (see :data:`LOGGING_POLICIES`).
        horizon_days: label horizon; the cutoff is ``END - horizon_days``.
        days: length of the simulated period.
        visitors: anonymous visitors (browsing only).
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    start = END - timedelta(days=days)
    cutoff = END - timedelta(days=horizon_days)
    policy = LOGGING_POLICIES[logging_policy]
    people, orders, events = _simulate(
        rng, customers, customers // 10 if visitors is None else visitors, start, cutoff, policy
    )
    zone = ZoneInfo(SHOP_TIMEZONE)
    folder = files > 1 or messy
    formats = part_formats(fmt, files)
    injected: dict[str, dict[str, int]] = {"transactions": {}, "events": {}, "traits": {}}
    written: dict[str, list[str]] = {}

    # transactions
    native_tx = not (mixed_timezones or messy)
    tx_items: list[Item] = [_tx_item(o, rng, zone, mixed_timezones, messy) for o in orders]
    typed_tx: dict[str, pl.DataType] | None = (
        {"InvoiceDate": pl.Datetime("us", "UTC"), "Total": pl.Float64(), "Quantity": pl.Int64()}
        if native_tx
        else None
    )
    tx_parts = split(tx_items, files)
    if messy:
        valid = [i for i in tx_items if isinstance(i, dict)]
        inject(rng, tx_parts, formats, bad_transactions(rng, valid, END), injected["transactions"])
        # Rows without an order id come from their own generator, so that adding them left the
        # rest of the export (and the tests tuned on it) unchanged.
        extra = random.Random(seed + 1_000_003)
        for value in ("", None):
            row = dict(extra.choice(valid)) | {"Invoice": value}
            part = extra.randrange(len(tx_parts))
            tx_parts[part].insert(extra.randint(0, len(tx_parts[part])), row)
        injected["transactions"]["missing_order_id"] = 2
        # Duplicates repeat an order id of the first part, later in reading order.
        first = [
            i for i in tx_parts[0] if isinstance(i, dict) and str(i["Invoice"]).startswith("INV")
        ]
        for original in rng.sample(first, 3):
            tx_parts[-1].append(original | {"Total": round(original["Total"] + 1.0, 2)})
        injected["transactions"]["duplicate_order_id"] = 3
    written["transactions"] = write_parts(
        root, "transactions", folder, formats, list(TX_COLUMNS_ORDER), tx_parts, typed_tx, messy
    )
    if messy:
        injected["transactions"]["unreadable_file"] = 1

    # events
    ev_items: list[Item] = [_ev_item(e) for e in events]
    if messy:
        for item in ev_items[:: max(1, len(ev_items) // 7)]:
            assert isinstance(item, dict)
            item["type"] = item["type"].upper()  # accepted: types compare lower-case
    ev_parts = split(ev_items, files)
    if messy:
        valid_ev = [e for e in ev_items if isinstance(e, dict)]
        inject(rng, ev_parts, formats, bad_events(rng, valid_ev, END), injected["events"])
    typed_ev: dict[str, pl.DataType] | None = (
        None
        if messy
        else {
            "timestamp": pl.Datetime("us", "UTC"),
            "value": pl.Float64(),
            "propensity": pl.Float64(),
        }
    )
    written["events"] = write_parts(
        root, "events", folder, formats, list(_EV_EXPORT.values()), ev_parts, typed_ev, messy
    )
    if messy:
        injected["events"]["unreadable_file"] = 1

    # traits (CSV, the usual CRM export)
    trait_rows = _traits(rng, people)
    trait_items: list[Item] = [dict(r) for r in trait_rows]
    if messy:
        for _ in range(2):
            trait_items.insert(
                rng.randint(0, len(trait_items)),
                {"customer_id": "", "loyalty_tier": "gold", "age": 40},
            )
        for original in rng.sample(trait_rows, 2):
            trait_items.append(original | {"loyalty_tier": "platinum"})
        injected["traits"] = {"missing_customer_id": 2, "duplicate_customer_id": 2}
    traits_path = root / "traits.csv"
    write_part(traits_path, "csv", ["customer_id", "loyalty_tier", "age"], trait_items, None)
    written["traits"] = ["traits.csv"]

    labels = _labels(people, cutoff, horizon_days)
    labels.write_csv(root / "labels.csv")
    config = _config(root, folder, formats[0], mixed_timezones)
    (root / "tailor.toml").write_text(_toml(config, root), encoding="utf-8")
    tx_truth = _frame(orders, _TX_SCHEMA).sort("order_id")
    ev_truth = _frame(events, _EV_SCHEMA)
    traits_truth = pl.DataFrame(
        trait_rows,
        schema={"customer_id": pl.String(), "loyalty_tier": pl.String(), "age": pl.Float64()},
        strict=False,
    )
    return ShopExport(
        root=root,
        config=config,
        files=written,
        injected={k: v for k, v in injected.items() if v} if messy else {},
        transactions=tx_truth,
        events=ev_truth,
        traits=traits_truth,
        labels=labels,
        cutoff=cutoff,
        horizon_days=horizon_days,
        now=END,
        timezone=SHOP_TIMEZONE,
        logging_policy=policy,
    )


def _traits(rng: random.Random, people: list[_Customer]) -> list[dict[str, Any]]:
    tiers = {
        "loyal": {"gold": 0.7, "silver": 0.3},
        "bargain": {"silver": 0.5, "bronze": 0.5},
        "lapsing": {"silver": 0.4, "bronze": 0.6},
        "one_time": {"bronze": 1.0},
        "new": {"bronze": 1.0},
        "window": {"none": 1.0},
    }
    return [
        {
            "customer_id": c.id,
            "loyalty_tier": _pick(rng, tiers[c.group]),
            "age": None if rng.random() < 0.1 else float(rng.randint(18, 80)),
        }
        for c in people
    ]


def _config(root: Path, folder: bool, fmt: str, mixed: bool) -> TrainingConfig:
    def where(kind: str) -> str:
        return str(root / kind) if folder else str(root / f"{kind}{SUFFIX[fmt]}")

    return TrainingConfig(
        name="synthshop",
        data=DataConfig(
            transactions=where("transactions"),
            events=where("events"),
            traits=str(root / "traits.csv"),
            timezone=SHOP_TIMEZONE,
            max_amount=MAX_AMOUNT,
            date_formats=[DAYFIRST] if mixed else [],
        ),
        columns=Columns(transactions=TX_COLUMNS),
        traits=TraitsConfig(use=["loyalty_tier", "age"]),
    )


def _toml(config: TrainingConfig, root: Path) -> str:
    def rel(p: str | None) -> str:
        return Path(p).relative_to(root).as_posix() if p else ""

    d, c = config.data, TX_COLUMNS
    formats = ", ".join(msgspec.json.encode(f).decode() for f in d.date_formats)
    return "\n".join(
        [
            f'name = "{config.name}"',
            "",
            "[data]",
            f'transactions = "{rel(d.transactions)}"',
            f'events = "{rel(d.events)}"',
            f'traits = "{rel(d.traits)}"',
            f'timezone = "{d.timezone}"',
            f"max_amount = {d.max_amount:g}",
            f"date_formats = [{formats}]",
            "",
            "[columns.transactions]",
            *(f'{k} = "{getattr(c, k)}"' for k in TransactionColumns.__struct_fields__),
            "",
            "[traits]",
            'use = ["loyalty_tier", "age"]',
            "",
        ]
    )
