"""Building blocks of the model card's HTML: escaped fragments, tags, tables, and how numbers
and targeting conditions are written.

Must not import server or sklearn.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["format_condition", "format_number"]


class _Html(str):
    """A trusted HTML fragment: inserted as is. Every other ``str`` is escaped."""

    __slots__ = ()


def _e(value: object) -> _Html:
    if isinstance(value, _Html):
        return value
    return _Html(html.escape(str(value), quote=True))


def _join(parts: Iterable[str]) -> _Html:
    return _Html("".join(_e(p) for p in parts))


def _tag(name: str, body: object = "", **attrs: object) -> _Html:
    attributes = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{_e(v)}"' for k, v in attrs.items() if v is not None
    )
    return _Html(f"<{name}{attributes}>{_e(body)}</{name}>")


def format_number(value: float | int) -> str:
    """How the card prints a number: integers with thousands separators, four significant
    digits in between, scientific notation for tiny values."""
    v = float(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    a = abs(v)
    if a >= 1e4:
        return f"{v:,.1f}"
    if a >= 1e-3:
        return f"{v:.4g}"
    return f"{v:.2e}"


def _signed(value: float) -> str:
    text = format_number(value)
    return text if text.startswith(("-", "n/a")) or value == 0 else f"+{text}"


def _share(value: float) -> str:
    return "<0.1%" if 0 < value < 0.0005 else f"{value:.1%}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any, limit: int = 2000) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return _truncate(text, limit)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _scalar(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return format_number(value)
    return str(value)


def _table(
    headers: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Iterable[int] = (),
    cls: str | None = None,
) -> _Html:
    right = set(numeric)
    head = _join(_tag("th", h, class_="num" if i in right else None) for i, h in enumerate(headers))
    body = _join(
        _tag(
            "tr",
            _join(_tag("td", c, class_="num" if i in right else None) for i, c in enumerate(row)),
        )
        for row in rows
    )
    table = _tag("table", _join([_tag("thead", _tag("tr", head)), _tag("tbody", body)]), class_=cls)
    return _tag("div", table, class_="scroll")


def _kv(items: Iterable[tuple[object, object]]) -> _Html:
    rows = _join(_tag("tr", _join([_tag("th", k), _tag("td", v)])) for k, v in items)
    return _tag("table", _tag("tbody", rows), class_="kv")


def _pill(text: str, kind: str) -> _Html:
    return _tag("span", text, class_=f"pill {kind}")


def _note(text: object) -> _Html:
    return _tag("p", text, class_="note")


def _chip(color: str) -> _Html:
    return _Html(f'<span class="chip" style="background:{_e(color)}"></span>')


# --- conditions ------------------------------------------------------------------------------

_COMPARE = {"$eq": "=", "$ne": "≠", "$gt": ">", "$gte": "≥", "$lt": "<", "$lte": "≤"}


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, default=str)


def _is_operator_spec(spec: Any) -> bool:
    return isinstance(spec, Mapping) and bool(spec) and all(str(k).startswith("$") for k in spec)


def _field(path: str, spec: Any) -> str:
    if not _is_operator_spec(spec):
        return f"{path} = {_literal(spec)}"
    parts = []
    for op, expected in spec.items():
        if op in _COMPARE:
            parts.append(f"{path} {_COMPARE[op]} {_literal(expected)}")
        elif op == "$in":
            parts.append(f"{path} in {_literal(expected)}")
        elif op == "$nin":
            parts.append(f"{path} not in {_literal(expected)}")
        elif op == "$exists":
            parts.append(f"{path} is set" if expected else f"{path} is not set")
        elif op == "$regex":
            parts.append(f"{path} matches /{expected}/")
        elif op == "$not":
            parts.append(f"not ({_field(path, expected)})")
        else:
            parts.append(f"{path} {op} {_literal(expected)}")
    return " and ".join(parts)


def _grouped(condition: Any) -> str:
    text = format_condition(condition)
    compound = isinstance(condition, Mapping) and (
        len(condition) > 1 or any(k in ("$and", "$or") for k in condition)
    )
    return f"({text})" if compound and text != "always" else text


def format_condition(condition: Mapping[str, Any]) -> str:
    """A condition of the MongoDB-style rule language as one readable line, e.g.
    ``daysSinceLastPurchase ≥ 180 and purchases ≥ 1``. An empty condition reads ``always``."""
    if not isinstance(condition, Mapping):
        return _literal(condition)
    if not condition:
        return "always"
    parts = []
    for key, spec in condition.items():
        if key in ("$and", "$or") and isinstance(spec, list):
            joiner = " and " if key == "$and" else " or "
            text = joiner.join(_grouped(c) for c in spec) or "always"
            parts.append(f"({text})" if len(condition) > 1 and len(spec) > 1 else text)
        elif key == "$not":
            parts.append(f"not ({format_condition(spec)})")
        else:
            parts.append(_field(str(key), spec))
    return " and ".join(parts)
