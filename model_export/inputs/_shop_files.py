"""Writing a simulated shop as files, for :mod:`model_export.inputs.synth_shop`: timestamp styles,
CSV / JSON Lines / parquet parts, and the bad rows of a messy export.

Must not import server.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import polars as pl

__all__ = [
    "DAYFIRST",
    "NATIVE",
    "SUFFIX",
    "TS_STYLES",
    "Item",
    "Malformed",
    "bad_events",
    "bad_transactions",
    "cell",
    "inject",
    "part_formats",
    "render_ts",
    "split",
    "write_part",
    "write_parts",
]

#: Day-first format of some timestamps when ``mixed_timezones`` (listed in the config).
DAYFIRST = "%d/%m/%Y %H:%M:%S"
#: How a transaction time may be written when ``mixed_timezones``.
TS_STYLES = ("iso_z", "iso_offset", "naive_space", "naive_t", "epoch_s", "epoch_ms", "dayfirst")


# --- rendering -----------------------------------------------------------------------------


class Malformed(msgspec.Struct, frozen=True):
    """A raw line that cannot be parsed as a record (CSV and JSON Lines only)."""

    text: str


Item = dict[str, Any] | Malformed
#: Key of an item's native values, used by typed parquet parts instead of the text renderings.
NATIVE = "__native"


def _ambiguous(local: datetime) -> bool:
    return local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()


def render_ts(ts: datetime, style: str, zone: ZoneInfo) -> str | int:
    if style == "iso_z":
        return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == "epoch_s":
        return int(ts.timestamp())
    if style == "epoch_ms":
        return int(ts.timestamp()) * 1000
    local = ts.astimezone(zone)
    if style == "iso_offset" or _ambiguous(local):
        return local.isoformat()
    if style == "naive_t":
        return local.strftime("%Y-%m-%dT%H:%M:%S")
    if style == "dayfirst":
        return local.strftime(DAYFIRST)
    return local.strftime("%Y-%m-%d %H:%M:%S")


def cell(value: Any) -> str:
    """A value as CSV text: empty for None, the shortest round-trip repr for floats."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def write_part(
    path: Path,
    fmt: str,
    columns: list[str],
    items: list[Item],
    typed: dict[str, pl.DataType] | None,
) -> None:
    """Write one part. ``typed`` gives parquet dtypes; None writes every column as text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for item in items:
            if isinstance(item, Malformed):
                buf.write(item.text + "\n")
            else:
                writer.writerow([cell(item.get(c)) for c in columns])
        path.write_text(buf.getvalue(), encoding="utf-8")
    elif fmt == "jsonl":
        encoder = msgspec.json.Encoder()
        with path.open("wb") as fh:
            for item in items:
                if isinstance(item, Malformed):
                    fh.write(item.text.encode() + b"\n")
                else:
                    fh.write(encoder.encode({c: item.get(c) for c in columns}) + b"\n")
    else:
        rows = [i for i in items if not isinstance(i, Malformed)]
        if typed is None:
            data = {
                c: [None if r.get(c) is None else cell(r.get(c)) for r in rows] for c in columns
            }
            frame = pl.DataFrame(data, schema=dict.fromkeys(columns, pl.String()))
        else:
            # Typed parts take native values (e.g. datetimes) over their text renderings.
            data = {c: [r.get(NATIVE, {}).get(c, r.get(c)) for r in rows] for c in columns}
            frame = pl.DataFrame(
                data, schema={c: typed.get(c, pl.String()) for c in columns}, strict=False
            )
        frame.write_parquet(path)


def split(items: list[Item], parts: int) -> list[list[Item]]:
    size = -(-len(items) // parts) if items else 0
    return [items[i * size : (i + 1) * size] for i in range(parts)]


def part_formats(fmt: str, parts: int) -> list[str]:
    """The format of each part: ``fmt``, or csv, jsonl, parquet in turn for ``"mixed"``."""
    if fmt == "mixed":
        return [("csv", "jsonl", "parquet")[i % 3] for i in range(parts)]
    return [fmt] * parts


SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}


# --- messy rows ----------------------------------------------------------------------------


def bad_transactions(
    rng: random.Random, valid: list[dict[str, Any]], now: datetime
) -> dict[str, list[dict[str, Any]]]:
    """Bad rows per reason; each has exactly one defect."""
    n = [0]

    def fresh() -> dict[str, Any]:
        n[0] += 1
        row = dict(rng.choice(valid))
        row["Invoice"] = f"BAD{n[0]:05d}"
        return row

    def bad(**change: Any) -> dict[str, Any]:
        return fresh() | change

    return {
        "missing_customer_id": [bad(**{"Customer ID": v}) for v in ("", "   ", None, "")],
        "unparseable_timestamp": [
            bad(InvoiceDate=v) for v in ("not a date", "2025-13-45 10:00:00", "31/02/2025 10:00:00")
        ],
        "future_timestamp": [
            bad(InvoiceDate=(now + timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ"))
            for d in (30, 90, 400)
        ],
        "unparseable_amount": [bad(Total=v) for v in ("abc", "", "12.3.4")],
        "negative_amount": [bad(Total=v) for v in (-19.99, -5.0)],
        "absurd_amount": [bad(Total=v) for v in (250_000.0, 1e9)],
    }


def bad_events(
    rng: random.Random, valid: list[dict[str, Any]], now: datetime
) -> dict[str, list[dict[str, Any]]]:
    pageviews = [e for e in valid if e["type"].lower() == "pageview"]
    impressions = [e for e in valid if e["type"].lower() == "impression"]
    conversions = [e for e in valid if e["type"].lower() == "conversion"] or impressions

    def bad(pool: list[dict[str, Any]], **change: Any) -> dict[str, Any]:
        return dict(rng.choice(pool)) | change

    future = (now + timedelta(days=45)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        # the server's own log interleaves decision and erasure records with events
        "not_an_event": [bad(pageviews, type=v) for v in ("decision", "erasure")],
        "missing_visitor_id": [bad(pageviews, visitorId=v) for v in ("", None, " ")],
        "unknown_event_type": [bad(pageviews, type=v) for v in ("hover", "page_view", "")],
        "unparseable_timestamp": [bad(pageviews, timestamp=v) for v in ("yesterday", "2025-02-30")],
        "future_timestamp": [bad(pageviews, timestamp=future), bad(impressions, timestamp=future)],
        "unparseable_value": [bad(conversions, value=v) for v in ("lots", "1.2.3")],
        "negative_value": [bad(conversions, value=-10.0)],
        "invalid_propensity": [bad(impressions, propensity=v) for v in (0.0, 1.5)],
    }


def inject(
    rng: random.Random,
    parts: list[list[Item]],
    formats: list[str],
    bad: dict[str, list[dict[str, Any]]],
    counts: dict[str, int],
) -> None:
    for reason, rows in bad.items():
        for row in rows:
            part = rng.randrange(len(parts))
            parts[part].insert(rng.randint(0, len(parts[part])), row)
            counts[reason] = counts.get(reason, 0) + 1
    text_parts = [i for i, f in enumerate(formats) if f in ("csv", "jsonl")]
    for k in range(2 if text_parts else 0):
        part = text_parts[k % len(text_parts)]
        line = '{"broken": ' if formats[part] == "jsonl" else "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p"
        parts[part].insert(rng.randint(0, len(parts[part])), Malformed(line))
        counts["malformed_row"] = counts.get("malformed_row", 0) + 1


def write_parts(
    root: Path,
    kind: str,
    folder: bool,
    formats: list[str],
    columns: list[str],
    parts: list[list[Item]],
    typed: dict[str, pl.DataType] | None,
    corrupt: bool,
) -> list[str]:
    """Write one input as parts (or one file), plus a corrupt parquet part when ``corrupt``;
    return the names written, relative to ``root``."""
    names = []
    for i, (fmt, items) in enumerate(zip(formats, parts, strict=True)):
        name = f"{kind}/part-{i:03d}{SUFFIX[fmt]}" if folder else f"{kind}{SUFFIX[fmt]}"
        write_part(root / name, fmt, columns, items, typed if fmt == "parquet" else None)
        names.append(name)
    if corrupt:
        name = f"{kind}/part-999.parquet"
        (root / name).write_bytes(b"PAR1" + hashlib.sha256(kind.encode()).digest() * 8)
        names.append(name)
    return names
