"""A seeded generator of a realistic shop export with planted structure, for tests and demos.

:func:`generate_shop` writes what a customer would hand over (transactions, web events in
Tailor's event-log shape with an offer log, CRM traits; CSV, JSON Lines, parquet or a mix, in
one file or a folder of parts) and returns the truth: the clean frames ingest must produce, the
planted group and labels of every customer and, with ``messy=True``, the bad rows injected.

Must not import server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from model_export.inputs._shop_plan import (
    END,
    GROUP_SPECS,
    GROUPS,
    LOGGING_POLICIES,
    MAX_AMOUNT,
    OFFERS,
    REWARD,
    SHOP_TIMEZONE,
    TX_COLUMNS,
    TX_COLUMNS_ORDER,
    Format,
    GroupSpec,
)
from model_export.inputs._shop_sim import (
    _EV_EXPORT,
    _EV_SCHEMA,
    _TX_SCHEMA,
    _Customer,
    _frame,
    _labels,
    _pick,
    _simulate,
)
from model_export.inputs.config import (
    Columns,
    DataConfig,
    TrainingConfig,
    TraitsConfig,
    TransactionColumns,
)

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
