"""Read a customer's transactions, web events and traits into clean polars frames, with a report.

Each input is a file or a folder of CSV, JSON Lines and parquet files, with column names from
:class:`TrainingConfig.columns`. Unusable rows are skipped and counted under one reason each
(:data:`TRANSACTION_REASONS`, :data:`EVENT_REASONS`, :data:`TRAIT_REASONS`); timestamps are
read by :func:`parse_timestamps` and converted to UTC.

Must not import server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import polars as pl

from model_export.inputs._ingest_core import (
    _RAW,
    EVENT_REASONS,
    TRAIT_REASONS,
    TRANSACTION_REASONS,
    ColumnError,
    IngestError,
    IngestResult,
    InputReport,
    _Field,
    _fields,
    _limit,
    _read,
)
from model_export.inputs._read import parse_timestamps
from model_export.inputs.config import EventColumns, TrainingConfig, TransactionColumns

__all__ = [
    "EVENTS_SCHEMA",
    "EVENT_REASONS",
    "EVENT_TYPES",
    "TRAIT_REASONS",
    "TRANSACTIONS_SCHEMA",
    "TRANSACTION_REASONS",
    "ColumnError",
    "IngestError",
    "IngestResult",
    "InputReport",
    "parse_timestamps",
    "read_all",
    "read_events",
    "read_traits",
    "read_transactions",
    "summarize",
]

#: The event types of Tailor's event log (:class:`sdk.schema.Event`); any other is rejected.
EVENT_TYPES = ("impression", "click", "conversion", "dismiss", "not_interested", "pageview")
#: Record types of the server's event log that are not feedback events (read, then skipped).
LOG_RECORD_TYPES = ("decision", "erasure")

#: Clean transactions columns and dtypes.
TRANSACTIONS_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "order_id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "amount": pl.Float64(),
    "quantity": pl.Float64(),
    "category": pl.String(),
    "channel": pl.String(),
}
#: Clean events columns and dtypes.
EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "visitor_id": pl.String(),
    "customer_id": pl.String(),
    "type": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "session_id": pl.String(),
    "offer_id": pl.String(),
    "value": pl.Float64(),
    "propensity": pl.Float64(),
    "category": pl.String(),
    "url": pl.String(),
    "referrer": pl.String(),
    "user_agent": pl.String(),
    "timezone": pl.String(),
}


# --- the three inputs --------------------------------------------------------------------------


def read_transactions(
    config: TrainingConfig, *, now: datetime | None = None, cutoff: datetime | None = None
) -> IngestResult:
    """Read ``data.transactions`` into :data:`TRANSACTIONS_SCHEMA` (category and channel
    lower-case).

    Rows are rejected, in this order, for: a missing customer id; a missing order id (when an
    order id column is configured; without one every row is its own order, id ``file#row``); an
    unparseable timestamp; a timestamp after ``cutoff`` (default ``config.cutoff``) or more than
    a day after ``now``; a missing or unparseable amount; a negative amount (refunds are not
    purchases); an amount over ``data.max_amount``. Then a repeated order id is a duplicate and
    only its first row (in file and row order) is kept, unless ``data.order_lines`` says rows
    are the lines of orders.

    Args:
        config: the training config (paths, columns, timezone, formats, limits).
        now: the current time (default: the clock), for the future-timestamp check.
        cutoff: rows after it are rejected as future; default ``config.cutoff``.

    Raises:
        IngestError: no input file or an unknown time zone; ColumnError: a configured column
            is in no file.
    """
    cols: TransactionColumns = config.columns.transactions
    d = TransactionColumns()
    fields = _fields(
        TRANSACTIONS_SCHEMA,
        [
            ("customer_id", cols.customer_id, "id", True, None),
            ("order_id", cols.order_id, "id", True, None),
            ("ts", cols.timestamp, "timestamp", True, None),
            ("amount", cols.amount, "number", True, None),
            ("quantity", cols.quantity, "number", False, d.quantity),
            ("category", cols.category, "lower", False, d.category),
            ("channel", cols.channel, "lower", False, d.channel),
        ],
    )
    limit = _limit(config, now, cutoff)
    amount = pl.col("amount")
    rules: dict[str, tuple[pl.Expr, str | None]] = {
        "missing_customer_id": (pl.col("customer_id").is_null(), None),
        "missing_order_id": (pl.col("order_id").is_null(), None),
        "unparseable_timestamp": (pl.col("ts").is_null(), _RAW + "ts"),
        "future_timestamp": (pl.col("ts") > limit, _RAW + "ts"),
        "unparseable_amount": (amount.is_null(), _RAW + "amount"),
        "negative_amount": (amount < 0, _RAW + "amount"),
        "absurd_amount": (amount > config.data.max_amount, _RAW + "amount"),
    }
    by_rows = cols.order_id is None
    if by_rows:
        del rules["missing_order_id"]
    unique = not (by_rows or config.data.order_lines)
    return _read(
        "transactions",
        config.data.transactions,
        fields,
        config,
        rules,
        unique_key="order_id" if unique else None,
        duplicate_reason="duplicate_order_id",
        synthesize_key="order_id" if by_rows else None,
    )


def read_events(
    config: TrainingConfig, *, now: datetime | None = None, cutoff: datetime | None = None
) -> IngestResult:
    """Read ``data.events`` (Tailor's event log, or page views mapped by ``[columns.events]``)
    into :data:`EVENTS_SCHEMA` (type and category lower-case).

    Rows are rejected, in this order, for: a missing visitor id; a type that is not one of
    :data:`EVENT_TYPES`; an unparseable or future timestamp (as for transactions); an
    unparseable or negative ``value``; a ``propensity`` outside (0, 1]. Columns left at their
    default names may be absent from the files (they are then null).

    Raises:
        IngestError: ``data.events`` is not set, no input file or an unknown time zone;
            ColumnError: a configured column is in no file.
    """
    if config.data.events is None:
        raise IngestError("data.events is not set")
    cols: EventColumns = config.columns.events
    d = EventColumns()
    fields = _fields(
        EVENTS_SCHEMA,
        [
            ("visitor_id", cols.visitor_id, "id", True, None),
            ("customer_id", cols.customer_id, "id", False, d.customer_id),
            ("type", cols.type, "lower", True, None),
            ("ts", cols.timestamp, "timestamp", True, None),
            ("session_id", cols.session_id, "id", False, d.session_id),
            ("offer_id", cols.offer_id, "text", False, d.offer_id),
            ("value", cols.value, "number", False, d.value),
            ("propensity", cols.propensity, "number", False, d.propensity),
            ("category", cols.category, "lower", False, d.category),
            ("url", cols.url, "text", False, d.url),
            ("referrer", cols.referrer, "text", False, d.referrer),
            ("user_agent", cols.user_agent, "text", False, d.user_agent),
            ("timezone", cols.timezone, "text", False, d.timezone),
        ],
    )
    limit = _limit(config, now, cutoff)
    value, propensity = pl.col("value"), pl.col("propensity")
    unparsed = {
        c: pl.col(c).is_null() & pl.col(_RAW + c).is_not_null() for c in ("value", "propensity")
    }
    rules: dict[str, tuple[pl.Expr, str | None]] = {
        # the server's event log also holds its decision and erasure records: skipped, counted
        "not_an_event": (
            pl.col("type").is_in(LOG_RECORD_TYPES).fill_null(False),
            _RAW + "type",
        ),
        "missing_visitor_id": (pl.col("visitor_id").is_null(), None),
        "unknown_event_type": (~pl.col("type").is_in(EVENT_TYPES).fill_null(False), _RAW + "type"),
        "unparseable_timestamp": (pl.col("ts").is_null(), _RAW + "ts"),
        "future_timestamp": (pl.col("ts") > limit, _RAW + "ts"),
        "unparseable_value": (unparsed["value"], _RAW + "value"),
        "negative_value": (value < 0, _RAW + "value"),
        "invalid_propensity": (
            unparsed["propensity"] | (propensity <= 0) | (propensity > 1),
            _RAW + "propensity",
        ),
    }
    return _read("events", config.data.events, fields, config, rules)


def read_traits(config: TrainingConfig) -> IngestResult:
    """Read ``data.traits``: customer_id plus the columns listed in ``traits.use``.

    A trait whose values all read as numbers becomes Float64, any other is text. Rows without a
    customer id are rejected; a repeated customer id keeps its first row.

    Raises:
        IngestError: ``data.traits`` is not set, no input file, or ``customer_id`` listed as a
            trait; ColumnError: a listed column is in no file.
    """
    if config.data.traits is None:
        raise IngestError("data.traits is not set")
    key = config.columns.traits_customer_id
    fields = [_Field("customer_id", key, "id", required=True)]
    for name in config.traits.use:
        if name in ("customer_id", key):
            raise IngestError(f"traits.use: {name!r} is the customer id, not a trait")
        fields.append(_Field(name, name, "text", required=True))
    rules = {"missing_customer_id": (pl.col("customer_id").is_null(), None)}
    result = _read(
        "traits",
        config.data.traits,
        fields,
        config,
        rules,
        unique_key="customer_id",
        duplicate_reason="duplicate_customer_id",
    )
    frame = result.frame
    casts = []
    for name in config.traits.use:
        values = frame.get_column(name)
        numbers = values.cast(pl.Float64, strict=False)
        casts.append(numbers if numbers.null_count() == values.null_count() else values)
    return IngestResult(frame=frame.with_columns(casts), report=result.report)


def read_all(
    config: TrainingConfig, *, now: datetime | None = None, cutoff: datetime | None = None
) -> dict[str, IngestResult]:
    """Read every input the config names: ``transactions`` always, ``events`` and ``traits``
    when set, keyed by kind."""
    out = {"transactions": read_transactions(config, now=now, cutoff=cutoff)}
    if config.data.events is not None:
        out["events"] = read_events(config, now=now, cutoff=cutoff)
    if config.data.traits is not None:
        out["traits"] = read_traits(config)
    return out


# --- summary -----------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def _round(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), 2)


def _counts(frame: pl.DataFrame, column: str, top: int = 20) -> dict[str, int]:
    counts = (
        frame.get_column(column)
        .drop_nulls()
        .value_counts()
        .sort(["count", column], descending=[True, False])
        .head(top)
    )
    return dict(
        zip(counts.get_column(column).to_list(), counts.get_column("count").to_list(), strict=True)
    )


def _frame_summary(kind: str, frame: pl.DataFrame) -> dict[str, Any]:
    if kind == "transactions":
        s = frame.select(
            customers=pl.col("customer_id").n_unique(),
            orders=pl.col("order_id").n_unique(),
            revenue=pl.col("amount").sum(),
            median_amount=pl.col("amount").median(),
            first=pl.col("ts").min(),
            last=pl.col("ts").max(),
        ).row(0, named=True)
        return {
            "customers": s["customers"],
            "orders": s["orders"],
            "revenue": _round(s["revenue"]),
            "median_amount": _round(s["median_amount"]),
            "first": _iso(s["first"]),
            "last": _iso(s["last"]),
            "categories": _counts(frame, "category"),
            "channels": _counts(frame, "channel"),
        }
    if kind == "events":
        s = frame.select(
            visitors=pl.col("visitor_id").n_unique(),
            customers=pl.col("customer_id").drop_nulls().n_unique(),
            first=pl.col("ts").min(),
            last=pl.col("ts").max(),
        ).row(0, named=True)
        return {
            "visitors": s["visitors"],
            "customers": s["customers"],
            "first": _iso(s["first"]),
            "last": _iso(s["last"]),
            "types": _counts(frame, "type"),
        }
    return {
        "customers": frame.height,
        "traits": {
            c: {"dtype": str(frame.schema[c]), "filled": frame.height - frame[c].null_count()}
            for c in frame.columns
            if c != "customer_id"
        },
    }


def summarize(results: Mapping[str, IngestResult] | Iterable[IngestResult]) -> dict[str, Any]:
    """The "data summary" of a training run, for the manifest's ``training.data``.

    One entry per input kind: its :class:`InputReport` plus what the clean frame holds
    (customers, orders, revenue, date range, category and channel counts for transactions;
    visitors, customers, date range and type counts for events; dtype and filled count per trait),
    and ``total``: rows read and accepted, and rejections per reason, over all inputs.

    Raises:
        ValueError: two results of the same kind.
    """
    items = list(results.values()) if isinstance(results, Mapping) else list(results)
    out: dict[str, Any] = {}
    read = accepted = 0
    rejected: dict[str, int] = {}
    for result in items:
        kind = result.report.kind
        if kind in out:
            raise ValueError(f"two {kind} results given to summarize")
        out[kind] = result.report.to_builtins() | _frame_summary(kind, result.frame)
        read += result.report.rows_read
        accepted += result.report.rows_accepted
        for reason, count in result.report.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + count
    out["total"] = {"rows_read": read, "rows_accepted": accepted, "rejected": rejected}
    return out
