"""Read a customer's transactions, web events and traits into clean polars frames, with a report.

Each input is a file or a folder of files (searched recursively; ``.csv``, ``.jsonl``/``.ndjson``
and ``.parquet`` may be mixed), with column names taken from :class:`TrainingConfig.columns`.
Rows that cannot be used are skipped, never silently: each one is counted under exactly one
reason (the first that applies, in the order of :data:`TRANSACTION_REASONS`,
:data:`EVENT_REASONS` or :data:`TRAIT_REASONS`) and the first three of each reason are quoted as
``file:row`` examples in the :class:`InputReport`. A file that cannot be read at all is one
``unreadable_file`` and the others are still read; a configured column that is in none of the
files is a :class:`ColumnError`, since then the config (not the data) is wrong. A required
column (ids, timestamp, amount, listed traits) missing from only some files makes those files
unreadable; an optional one (quantity, category, channel, event details) is null there.

Timestamps are tried, per value, as: each of ``data.date_formats`` (chrono/strftime syntax, e.g.
``"%d/%m/%Y %H:%M"`` for day-first dates, which are never guessed), then ISO 8601 with ``T`` or a
space, with or without seconds and fractions, with an offset, ``Z`` or none, then a date alone,
then epoch numbers (9+ digits: seconds, milliseconds, microseconds or nanoseconds by magnitude).
Native parquet datetimes and numbers are used as they are. A value without an offset is wall time
in ``data.timezone`` (the earlier instant when a DST fold makes it ambiguous; a wall time inside
a DST gap does not exist and is unparseable). Everything is converted to UTC. Times before 1990
are placeholders (``0``, ``1900-01-01``), counted as unparseable.

Ids are strings; an integral float id such as ``"17850.0"`` (a spreadsheet artefact) becomes
``"17850"``. Row numbers count records from 1, a CSV header excluded.

Must not import server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import polars as pl

from model_export.inputs._read import (
    ROW,
    Unreadable,
    file_format,
    id_expr,
    list_input_files,
    number_expr,
    parse_timestamps,
    read_rows,
    read_schema,
    text_expr,
)
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

Kind = Literal["transactions", "events", "traits"]

#: The event types of Tailor's event log (:class:`sdk.schema.Event`); any other is rejected.
EVENT_TYPES = ("impression", "click", "conversion", "dismiss", "not_interested", "pageview")
#: Record types of the server's event log that are not feedback events (read, then skipped).
LOG_RECORD_TYPES = ("decision", "erasure")
#: Reject reasons of transactions, in the order they are checked.
TRANSACTION_REASONS = (
    "unreadable_file",
    "malformed_row",
    "missing_customer_id",
    "missing_order_id",
    "unparseable_timestamp",
    "future_timestamp",
    "unparseable_amount",
    "negative_amount",
    "absurd_amount",
    "duplicate_order_id",
)
#: Reject reasons of web events, in the order they are checked.
EVENT_REASONS = (
    "unreadable_file",
    "malformed_row",
    "not_an_event",
    "missing_visitor_id",
    "unknown_event_type",
    "unparseable_timestamp",
    "future_timestamp",
    "unparseable_value",
    "negative_value",
    "invalid_propensity",
)
#: Reject reasons of traits, in the order they are checked.
TRAIT_REASONS = ("unreadable_file", "malformed_row", "missing_customer_id", "duplicate_customer_id")
_REASONS: dict[str, tuple[str, ...]] = {
    "transactions": TRANSACTION_REASONS,
    "events": EVENT_REASONS,
    "traits": TRAIT_REASONS,
}

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

MAX_EXAMPLES = 3
_STRING = pl.String()
_FILE = "__file"
_REASON = "__reason"
_RAW = "__raw_"

#: A reject rule: reason -> (condition over parsed columns, column quoted in examples or None).
Rules = Mapping[str, tuple[pl.Expr, str | None]]


class IngestError(Exception):
    """Base of ingest errors: an input as a whole cannot be read.

    * :class:`ColumnError`: a configured column is in none of the files.

    Bad rows and unreadable files are not errors; the report counts them.
    """


class ColumnError(IngestError):
    """A column named in the config (or a required default) is in none of the files."""


class InputReport(msgspec.Struct, frozen=True, kw_only=True):
    """What was read from one input and why rows were rejected.

    ``rows_read`` counts the records of readable files, so ``rows_read == rows_accepted +
    sum(rejected.values()) - rejected.get("unreadable_file", 0)`` (that one counts files).
    ``examples`` holds up to three ``file:row`` references per reason, with the offending value
    when it is not an id. ``files`` (read or tried) and ``ignored_files`` (unsupported suffixes)
    are relative to ``source`` when it is a folder.
    """

    kind: str
    source: str
    files: list[str]
    rows_read: int
    rows_accepted: int
    rejected: dict[str, int]
    examples: dict[str, list[str]]
    ignored_files: list[str] = []

    def to_builtins(self) -> dict[str, Any]:
        """The report as JSON-ready builtins (for the manifest's ``training.data``)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


@dataclass(frozen=True, slots=True)
class IngestResult:
    """A clean frame and the report of how it was read."""

    frame: pl.DataFrame
    report: InputReport


@dataclass(frozen=True, slots=True)
class _Field:
    """A clean column, the source column it is read from, and how it is parsed."""

    name: str
    column: str | None
    parse: Literal["id", "lower", "text", "number", "timestamp"]
    dtype: pl.DataType = _STRING
    required: bool = False
    #: The column's default name: when the configured name is still the default and the data
    #: has no such column, the clean column is null (the export simply lacks it).
    default: str | None = None

    @property
    def optional_if_absent(self) -> bool:
        return not self.required and self.column is not None and self.column == self.default


# --- one file --------------------------------------------------------------------------------


def _parse(frame: pl.DataFrame, fields: list[_Field], config: TrainingConfig) -> pl.DataFrame:
    """Clean columns from raw ones, plus ``__raw_<name>``: timestamps, numbers and types as read."""
    exprs: list[pl.Expr] = [pl.col(ROW)]
    stamps: dict[str, pl.Series] = {}
    for f in fields:
        if f.column is None or f.column not in frame.columns:
            exprs.append(pl.lit(None, f.dtype).alias(f.name))
            if f.parse in ("timestamp", "number") or f.name == "type":
                exprs.append(pl.lit(None, f.dtype).alias(_RAW + f.name))
            continue
        dtype = frame.schema[f.column]
        if f.parse in ("timestamp", "number") or f.name == "type":
            # Quoted in examples: text as read (empty is null), native values as they are.
            raw = text_expr(f.column, dtype) if dtype == pl.String else pl.col(f.column)
            exprs.append(raw.alias(_RAW + f.name))
        if f.parse == "timestamp":
            stamps[f.name] = parse_timestamps(
                frame.get_column(f.column), config.data.timezone, config.data.date_formats
            )
            continue
        if f.parse == "id":
            expr = id_expr(f.column, dtype)
        elif f.parse == "number":
            expr = number_expr(f.column, dtype)
        elif f.parse == "lower":
            expr = text_expr(f.column, dtype).str.to_lowercase()
        else:
            expr = text_expr(f.column, dtype)
        exprs.append(expr.cast(f.dtype).alias(f.name))
    out = frame.select(exprs)
    if stamps:
        out = out.with_columns(s.alias(name) for name, s in stamps.items())
    return out


def _judge(frame: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    """Add the first failing rule of each row as ``__reason`` (null when the row is good)."""
    reason: Any = pl.lit(None, pl.String())
    for name, (condition, _) in reversed(list(rules.items())):
        reason = pl.when(condition.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    return frame.with_columns(reason.alias(_REASON))


@dataclass
class _Tally:
    """Counts and examples of rejected rows, per reason."""

    counts: dict[str, int]
    examples: dict[str, list[str]]

    def add(self, reason: str, count: int, examples: Iterable[str]) -> None:
        if count <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + count
        kept = self.examples.setdefault(reason, [])
        for example in examples:
            if len(kept) >= MAX_EXAMPLES:
                break
            kept.append(example)

    def add_rows(self, reason: str, rows: pl.DataFrame, file: str, quoted: str | None) -> None:
        sample = rows.head(MAX_EXAMPLES)
        values = sample.get_column(quoted).to_list() if quoted else [None] * sample.height
        numbers = sample.get_column(ROW).to_list()
        self.add(
            reason,
            rows.height,
            (_example(file, n, v) for n, v in zip(numbers, values, strict=True)),
        )


def _example(file: str, row: int, value: Any = None) -> str:
    if value is None:
        return f"{file}:{row}"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{file}:{row} {text!r}"


# --- an input ----------------------------------------------------------------------------------


def _read(
    kind: Kind,
    source: str,
    fields: list[_Field],
    config: TrainingConfig,
    rules: Rules,
    *,
    unique_key: str | None = None,
    duplicate_reason: str = "",
    synthesize_key: str | None = None,
) -> IngestResult:
    """Read every file of ``source``: parse ``fields``, reject rows by ``rules``, then keep
    only the first row of each ``unique_key`` (the others are ``duplicate_reason``).
    ``synthesize_key`` names a field without a source column, filled with ``file#row``."""
    _check_timezone(config.data.timezone)
    root = Path(source)
    try:
        files, ignored = list_input_files(root)
    except (FileNotFoundError, ValueError) as exc:
        raise IngestError(f"data.{kind}: {exc}") from exc
    names = [p.name if root.is_file() else p.relative_to(root).as_posix() for p in files]
    tally = _Tally({}, {})
    frames: list[pl.DataFrame] = []
    rows_read = 0
    seen: set[str] | None = None  # columns of the files whose header could be read
    for index, (path, name) in enumerate(zip(files, names, strict=True)):
        fmt = file_format(path)
        assert fmt is not None
        try:
            schema = read_schema(path, fmt)
            seen = set(schema) if seen is None else seen | set(schema)
            missing = [
                f.column
                for f in fields
                if f.required and f.column is not None and f.column not in schema
            ]
            if missing:
                raise Unreadable(
                    f"no column {', '.join(map(repr, missing))} "
                    f"(it has {', '.join(map(repr, list(schema)[:12]))})"
                )
            wanted = [f.column for f in fields if f.column is not None and f.column in schema]
            raw, malformed = read_rows(path, fmt, list(dict.fromkeys(wanted)), schema)
        except Unreadable as exc:
            tally.add("unreadable_file", 1, [f"{name}: {exc}"])
            continue
        rows_read += raw.height + len(malformed)
        tally.add("malformed_row", len(malformed), (_example(name, n) for n in malformed))
        judged = _judge(_parse(raw, fields, config), rules)
        del raw
        rejected = judged.filter(pl.col(_REASON).is_not_null())
        for reason, (_, quoted) in rules.items():
            tally.add_rows(reason, rejected.filter(pl.col(_REASON) == reason), name, quoted)
        good = judged.filter(pl.col(_REASON).is_null()).select(
            ROW, *(f.name for f in fields), pl.lit(index, pl.UInt32()).alias(_FILE)
        )
        frames.append(good)
    absent = [
        f.column
        for f in fields
        if seen is not None
        and f.column is not None
        and f.column not in seen
        and not f.optional_if_absent
    ]
    if absent:
        raise ColumnError(
            f"{kind}: column(s) {', '.join(map(repr, absent))} named in the config are in "
            f"none of the files of {source} (set [columns.{kind}] to the names they use)"
        )
    empty = {ROW: pl.UInt32(), **{f.name: f.dtype for f in fields}, _FILE: pl.UInt32()}
    data = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=empty)
    if unique_key is not None:
        first = pl.col(unique_key).is_first_distinct()
        dups = data.filter(~first)
        if dups.height:
            for file_index, part in dups.partition_by(
                _FILE, as_dict=True, maintain_order=True
            ).items():
                tally.add_rows(duplicate_reason, part, names[file_index[0]], unique_key)
            data = data.filter(first)
    if synthesize_key is not None:
        file_names = pl.Series(names, dtype=pl.String())
        data = data.with_columns(
            pl.format(
                "{}#{}",
                pl.col(_FILE).replace_strict(list(range(len(names))), file_names),
                pl.col(ROW),
            ).alias(synthesize_key)
        )
    data = data.select(pl.col(f.name).cast(f.dtype) for f in fields)
    order = {r: i for i, r in enumerate(_REASONS[kind])}
    report = InputReport(
        kind=kind,
        source=str(source),
        files=names,
        ignored_files=[
            p.name if root.is_file() else p.relative_to(root).as_posix() for p in ignored
        ],
        rows_read=rows_read,
        rows_accepted=data.height,
        rejected=dict(sorted(tally.counts.items(), key=lambda kv: order[kv[0]])),
        examples=dict(sorted(tally.examples.items(), key=lambda kv: order[kv[0]])),
    )
    return IngestResult(frame=data, report=report)


def _check_timezone(timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise IngestError(f"data.timezone: unknown time zone {timezone!r}") from exc


def _limit(config: TrainingConfig, now: datetime | None, cutoff: datetime | None) -> datetime:
    """The newest acceptable time: a day after ``now``, or the cutoff if earlier."""
    now = now if now is not None else datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    limit = now.astimezone(UTC) + timedelta(days=1)
    cutoff = cutoff if cutoff is not None else config.cutoff
    if cutoff is not None:
        if cutoff.tzinfo is None:
            raise ValueError("cutoff must be timezone-aware")
        limit = min(limit, cutoff.astimezone(UTC))
    return limit


def _fields(
    schema: Mapping[str, pl.DataType], specs: list[tuple[str, str | None, str, bool, str | None]]
) -> list[_Field]:
    return [
        _Field(name, column, parse, schema[name], required, default)  # type: ignore[arg-type]
        for name, column, parse, required, default in specs
    ]


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
