"""How one input is read: its files into one clean frame, every rejected row counted under
the first reject rule it fails, with ``file:row`` examples, and the :class:`InputReport`.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import polars as pl

from model_export.errors import ModelExportError
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
from model_export.inputs.config import TrainingConfig

__all__ = [
    "EVENT_REASONS",
    "TRAIT_REASONS",
    "TRANSACTION_REASONS",
    "ColumnError",
    "IngestError",
    "IngestResult",
    "InputReport",
]

Kind = Literal["transactions", "events", "traits"]

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

MAX_EXAMPLES = 3
_STRING = pl.String()
_FILE = "__file"
_REASON = "__reason"
_RAW = "__raw_"

#: A reject rule: reason -> (condition over parsed columns, column quoted in examples or None).
Rules = Mapping[str, tuple[pl.Expr, str | None]]


class IngestError(ModelExportError):
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
