"""Low-level reading for :mod:`model_export.inputs.ingest`: input files, per-format readers that
fall back to reading record by record (a bad record costs that record, not the file), and
parsers of ids, numbers and timestamps that return null instead of raising.

Must not import server.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from model_export.errors import ModelExportError

__all__ = [
    "FORMATS",
    "ROW",
    "Unreadable",
    "file_format",
    "id_expr",
    "list_input_files",
    "number_expr",
    "parse_timestamps",
    "read_rows",
    "read_schema",
    "text_expr",
]

#: File suffixes read, and the reader used for each.
FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: Name of the 1-based record number column of :func:`read_rows`.
ROW = "__row"

_UTC = pl.Datetime("us", "UTC")
_EPOCH_STRING = r"^\d{9,}(\.\d+)?$"
_NUMBER_JUNK = r"[\s$€£¥]"
#: Times before this are placeholders (0, 1900-01-01), not events of an online shop.
_EARLIEST_US = 631_152_000_000_000  # 1990-01-01T00:00:00Z in microseconds
_SAMPLE = 1000


class Unreadable(ModelExportError):
    """A file cannot be read at all; the message says why (ingest turns it into an
    :class:`~model_export.inputs.ingest.IngestError`)."""


# --- files ---------------------------------------------------------------------------------


def file_format(path: Path) -> str | None:
    """The reader of ``path`` by its suffix (csv, jsonl, parquet), or None if unsupported."""
    return FORMATS.get(path.suffix.lower())


def list_input_files(source: str | Path) -> tuple[list[Path], list[Path]]:
    """The files of an input, in reading order, and the files skipped for their suffix.

    A folder is searched recursively in sorted path order; hidden files (``.name``) are skipped.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a file of an unsupported type, or a folder without any supported file.
    """
    path = Path(source)
    kinds = "/".join(FORMATS)
    if path.is_file():
        if file_format(path) is None:
            raise ValueError(f"{path}: unsupported file type (expected {kinds})")
        return [path], []
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files: list[Path] = []
    ignored: list[Path] = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        (files if file_format(p) is not None else ignored).append(p)
    if not files:
        raise ValueError(f"{path}: no {kinds} file in this folder")
    return files, ignored


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def read_schema(path: Path, fmt: str) -> dict[str, pl.DataType]:
    """Column names and dtypes of one file (CSV columns are all strings).

    Raises:
        Unreadable: the file cannot be read.
    """
    try:
        if fmt == "csv":
            schema = pl.scan_csv(path, infer_schema=False).collect_schema()
        elif fmt == "jsonl":
            schema = pl.scan_ndjson(path, infer_schema_length=None).collect_schema()
        else:
            schema = pl.scan_parquet(path).collect_schema()
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        if fmt == "csv":
            raise Unreadable(_short(exc)) from exc
        if fmt == "jsonl":
            # A broken line stops polars; the keys of the lines that do decode are the columns.
            keys = _json_keys(path)
            if keys:
                return dict.fromkeys(keys, pl.String())
        raise Unreadable(_short(exc)) from exc
    return dict(schema)


def _json_keys(path: Path) -> list[str]:
    keys: dict[str, None] = {}
    decoder = msgspec.json.Decoder()
    try:
        with path.open("rb") as fh:
            for line in fh:
                try:
                    obj = decoder.decode(line)
                except msgspec.DecodeError:
                    continue
                if isinstance(obj, dict):
                    keys.update(dict.fromkeys(obj))
    except OSError:
        return []
    return list(keys)


def read_rows(
    path: Path, fmt: str, columns: list[str], schema: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, list[int]]:
    """Read ``columns`` of one file with a 1-based :data:`ROW` number column.

    CSV and JSON Lines values are read as strings (a JSON key may mix strings and numbers);
    parquet keeps its dtypes. Returns the frame and the numbers of the records that could not
    be split into fields or decoded (only when the fast reader failed).

    Raises:
        Unreadable: the file cannot be read.
    """
    try:
        if fmt == "csv":
            lf = pl.scan_csv(path, infer_schema=False)
        elif fmt == "jsonl":
            lf = pl.scan_ndjson(path, schema=dict.fromkeys(columns, pl.String()))
        else:
            lf = pl.scan_parquet(path)
        return lf.select(columns).with_row_index(ROW, offset=1).collect(), []
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        if fmt == "parquet":
            raise Unreadable(_short(exc)) from exc
        error = exc
    frame, bad = _fallback(path, fmt, columns)
    if not frame.height and not bad:
        raise Unreadable(_short(error))
    return frame, bad


def _fallback(path: Path, fmt: str, columns: list[str]) -> tuple[pl.DataFrame, list[int]]:
    """Read a CSV or JSON Lines file record by record: the good records as strings, and the
    numbers of the records that cannot be split into the header's fields or decoded."""
    numbers: list[int] = []
    values: list[list[str | None]] = [[] for _ in columns]
    bad: list[int] = []
    try:
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                header = next(reader, [])
                index = [header.index(c) for c in columns]
                for n, record in enumerate(reader, start=1):
                    if len(record) != len(header):
                        bad.append(n)
                        continue
                    numbers.append(n)
                    for out, i in zip(values, index, strict=True):
                        out.append(record[i])
        else:
            decoder = msgspec.json.Decoder()
            n = 0
            with path.open("rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    n += 1
                    try:
                        obj = decoder.decode(line)
                    except msgspec.DecodeError:
                        obj = None
                    if not isinstance(obj, dict):
                        bad.append(n)
                        continue
                    numbers.append(n)
                    for out, c in zip(values, columns, strict=True):
                        out.append(_json_text(obj.get(c)))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise Unreadable(_short(exc)) from exc
    data: dict[str, Any] = {ROW: pl.Series(ROW, numbers, dtype=pl.UInt32())}
    for c, column in zip(columns, values, strict=True):
        data[c] = pl.Series(c, column, dtype=pl.String())
    return pl.DataFrame(data), bad


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return msgspec.json.encode(value).decode()


# --- values ----------------------------------------------------------------------------------


def text_expr(col: str, dtype: pl.DataType) -> pl.Expr:
    """Text with surrounding whitespace stripped; empty text is null."""
    expr = pl.col(col)
    if dtype != pl.String:
        expr = expr.cast(pl.String, strict=False)
    expr = expr.str.strip_chars()
    return pl.when(expr.str.len_bytes() > 0).then(expr)


def id_expr(col: str, dtype: pl.DataType) -> pl.Expr:
    """An id as text; an integral float (``17850.0``, a spreadsheet artefact) loses its ``.0``."""
    if dtype.is_float():
        value = pl.col(col)
        integral = value.is_finite() & (value == value.round(0)) & (value.abs() < 2**53)
        return (
            pl.when(integral)
            .then(value.cast(pl.Int64, strict=False).cast(pl.String))
            .otherwise(value.cast(pl.String))
        )
    return text_expr(col, dtype).str.replace(r"^(-?\d+)\.0+$", "${1}")


def number_expr(col: str, dtype: pl.DataType) -> pl.Expr:
    """A finite Float64, else null. Text may carry currency symbols and spaces, thousands
    separators (``1,234.50``) or a decimal comma with one or two decimals (``12,50``)."""
    if dtype.is_numeric():
        value = pl.col(col).cast(pl.Float64)
    else:
        text = text_expr(col, dtype).str.replace_all(_NUMBER_JUNK, "")
        text = (
            pl.when(text.str.contains(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$"))
            .then(text.str.replace_all(",", "", literal=True))
            .when(text.str.contains(r"^-?\d+,\d{1,2}$"))
            .then(text.str.replace(",", ".", literal=True))
            .otherwise(text)
        )
        value = text.cast(pl.Float64, strict=False)
    return pl.when(value.is_finite()).then(value)


def _localize(s: pl.Series, timezone: str) -> pl.Series:
    return s.dt.replace_time_zone(
        timezone, ambiguous="earliest", non_existent="null"
    ).dt.convert_time_zone("UTC")


def _epoch(value: pl.Series) -> pl.Series:
    """Epoch numbers (>= 1e8) to UTC datetimes; the unit follows from the magnitude."""
    frame = value.cast(pl.Float64).to_frame("v")
    v = pl.col("v")
    scale = (
        pl.when(v < 1e11)
        .then(1e6)
        .when(v < 1e14)
        .then(1e3)
        .when(v < 1e17)
        .then(1.0)
        .otherwise(1e-3)
    )
    micros = (v * scale).round(0).cast(pl.Int64, strict=False)
    parsed = pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC")
    return frame.select(pl.when(v >= 1e8).then(parsed)).to_series()


def _has_offset(fmt: str) -> bool:
    return any(token in fmt for token in ("%z", "%:z", "%::z", "%#z"))


_DATE = ("%Y-%m-%dT", "%Y-%m-%d ")
#: ISO 8601 layouts, most specific first; chrono parses layouts without ``%.f`` or an offset
#: several times faster, so those come first where they overlap.
_ISO_UTC = tuple(
    f"{d}{t}{z}" for z in ("Z", "z") for d in _DATE for t in ("%H:%M:%S", "%H:%M:%S%.f")
)
_ISO_AWARE = tuple(f"{d}{t}%z" for d in _DATE for t in ("%H:%M:%S", "%H:%M:%S%.f", "%H:%M"))
_ISO_NAIVE = (
    *(f"{d}{t}" for d in _DATE for t in ("%H:%M:%S", "%H:%M:%S%.f", "%H:%M")),
    "%Y-%m-%d",
)


Parser = Callable[[pl.Series], pl.Series]


def _parsers(timezone: str, formats: Iterable[str]) -> list[tuple[str, Parser]]:
    """(name, text -> UTC datetimes) in precedence order: config formats, ISO, epoch."""
    out: list[tuple[str, Parser]] = []

    def aware(fmt: str) -> Parser:
        return lambda t: _to_dt(t, fmt).dt.convert_time_zone("UTC")

    def utc(fmt: str) -> Parser:
        return lambda t: _to_dt(t, fmt).dt.replace_time_zone("UTC")

    def local(fmt: str) -> Parser:
        return lambda t: _localize(_to_dt(t, fmt), timezone)

    for fmt in formats:
        out.append((fmt, aware(fmt) if _has_offset(fmt) else local(fmt)))
    out += [(fmt, utc(fmt)) for fmt in _ISO_UTC]
    out += [(fmt, aware(fmt)) for fmt in _ISO_AWARE]
    out += [(fmt, local(fmt)) for fmt in _ISO_NAIVE]
    out.append(("epoch", _epoch_text))
    return out


def _to_dt(text: pl.Series, fmt: str) -> pl.Series:
    return text.str.to_datetime(fmt, time_unit="us", strict=False, exact=True)


def _epoch_text(text: pl.Series) -> pl.Series:
    numeric = text.to_frame("t").select(
        pl.when(pl.col("t").str.contains(_EPOCH_STRING)).then(
            pl.col("t").cast(pl.Float64, strict=False)
        )
    )
    return _epoch(numeric.to_series())


def parse_timestamps(
    values: pl.Series, timezone: str = "UTC", formats: Iterable[str] = ()
) -> pl.Series:
    """Parse timestamps of any dtype to UTC datetimes (microseconds), null where unparseable.

    Text is tried, per value, with each of ``formats`` (chrono syntax), then ISO 8601 (``T`` or
    a space; seconds, fractions, an offset or ``Z`` all optional; or a date alone), then epoch
    numbers of 9+ digits. Parsers that match part of a sample of values go first and each sees
    only the values still unparsed, so a column in one format costs about one pass. Native datetimes
    are converted; numbers are epochs (seconds, ms, us or ns by magnitude). Values without an
    offset are wall time in ``timezone`` (the earlier instant in a DST fold; null in a DST gap).
    Results before 1990 are null.

    Args:
        values: strings, numbers, dates or datetimes.
        timezone: IANA zone of values without an offset.
        formats: extra chrono formats, tried first (e.g. ``"%d/%m/%Y %H:%M"``).
    """
    dtype = values.dtype
    name = values.name
    if isinstance(dtype, pl.Datetime):
        s = values.cast(pl.Datetime("us", dtype.time_zone))
        parsed = s.dt.convert_time_zone("UTC") if dtype.time_zone else _localize(s, timezone)
    elif isinstance(dtype, pl.Date):
        parsed = _localize(values.cast(pl.Datetime("us")), timezone)
    elif dtype.is_numeric():
        parsed = _epoch(values)
    else:
        parsed = _parse_text(values, timezone, formats)
    return (
        parsed.to_frame("ts")
        .select(pl.when(pl.col("ts").dt.epoch("us") >= _EARLIEST_US).then(pl.col("ts")))
        .to_series()
        .alias(name)
    )


def _parse_text(values: pl.Series, timezone: str, formats: Iterable[str]) -> pl.Series:
    text = values.to_frame("t").select(text_expr("t", values.dtype)).to_series()
    pending = text.is_not_null().arg_true()
    result = pl.Series(values.name, [None] * len(text), dtype=_UTC)
    if pending.len() == 0:
        return result
    parsers = _parsers(timezone, formats)
    sample = text.gather(pending.head(_SAMPLE))
    hits = [p(sample).is_not_null().any() for _, p in parsers]
    # Parsers that match some of the sample go first, in precedence order (config formats,
    # ISO, epoch); the others then see only what is left, usually nothing.
    order = [i for i in range(len(parsers)) if hits[i]]
    order += [i for i in range(len(parsers)) if not hits[i]]
    for i in order:
        if pending.len() == 0:
            break
        whole = pending.len() == len(text)
        parsed = parsers[i][1](text if whole else text.gather(pending))
        ok = parsed.is_not_null()
        if whole and ok.all():
            return parsed.alias(values.name)  # one format throughout: no scatter needed
        if ok.any():
            result = result.scatter(pending.filter(ok), parsed.filter(ok))
            pending = pending.filter(~ok)
    return result
