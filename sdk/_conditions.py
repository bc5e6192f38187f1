"""A MongoDB-style condition language for rules and targeting, as GrowthBook targeting uses.

A condition is a JSON object. Keys are attribute paths (dot-separated) or the logical
operators ``$and``, ``$or``, ``$not``; values are either literals (equality) or objects of
operators ``$eq $ne $gt $gte $lt $lte $in $nin $exists $regex``. Conditions are data: they are
validated once (:func:`check_condition`) when a bundle loads and evaluated without ``eval``.

Must not import anything but the standard library and ``sdk._errors``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sdk._errors import ConditionError

__all__ = ["check_condition", "evaluate"]

_MISSING = object()
_COMPARE_OPS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
_FIELD_OPS = _COMPARE_OPS | {"$in", "$nin", "$exists", "$regex", "$not"}


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _lookup(attributes: Mapping[str, Any], path: str) -> Any:
    value: Any = attributes
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str)
    )


def _equal(a: Any, b: Any) -> bool:
    """Equality that does not confuse booleans with the numbers 0 and 1."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op == "$eq":
        return actual is not _MISSING and _equal(actual, expected)
    if op == "$ne":
        return actual is _MISSING or not _equal(actual, expected)
    if actual is _MISSING or actual is None or not _comparable(actual, expected):
        return False
    if op == "$gt":
        return bool(actual > expected)
    if op == "$gte":
        return bool(actual >= expected)
    if op == "$lt":
        return bool(actual < expected)
    return bool(actual <= expected)


def _field_matches(actual: Any, spec: Any) -> bool:
    if not (isinstance(spec, Mapping) and spec and all(str(k).startswith("$") for k in spec)):
        return actual is not _MISSING and _equal(actual, spec)
    for op, expected in spec.items():
        if op in _COMPARE_OPS:
            ok = _compare(op, actual, expected)
        elif op == "$in":
            ok = _in(actual, expected)
        elif op == "$nin":
            ok = not _in(actual, expected)
        elif op == "$exists":
            ok = (actual is not _MISSING and actual is not None) == bool(expected)
        elif op == "$regex":
            ok = isinstance(actual, str) and _regex(expected).search(actual) is not None
        else:  # "$not"
            ok = not _field_matches(actual, expected)
        if not ok:
            return False
    return True


def _in(actual: Any, options: list[Any]) -> bool:
    if actual is _MISSING:
        return False
    items = actual if isinstance(actual, list) else [actual]
    return any(_equal(item, option) for item in items for option in options)


def evaluate(condition: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    """Whether ``attributes`` satisfy ``condition``. An empty condition matches everything.

    Args:
        condition: a condition already accepted by :func:`check_condition`.
        attributes: nested mapping of attribute values; dotted paths reach into it.
    """
    for key, spec in condition.items():
        if key == "$and":
            ok = all(evaluate(c, attributes) for c in spec)
        elif key == "$or":
            ok = not spec or any(evaluate(c, attributes) for c in spec)
        elif key == "$not":
            ok = not evaluate(spec, attributes)
        else:
            ok = _field_matches(_lookup(attributes, key), spec)
        if not ok:
            return False
    return True


def check_condition(condition: Any, where: str = "$") -> None:
    """Raise :class:`ConditionError` unless ``condition`` is well formed.

    Args:
        condition: the parsed JSON value to check.
        where: JSON path of the condition, used in error messages.
    """
    if not isinstance(condition, Mapping):
        raise ConditionError(f"a condition must be an object - at {where}")
    for key, spec in condition.items():
        path = f"{where}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(spec, list):
                raise ConditionError(f"{key} takes a list of conditions - at {path}")
            for i, sub in enumerate(spec):
                check_condition(sub, f"{path}[{i}]")
        elif key == "$not":
            check_condition(spec, path)
        elif key.startswith("$"):
            raise ConditionError(f"unknown operator {key!r} - at {path}")
        else:
            _check_field(spec, path)


def _check_field(spec: Any, where: str) -> None:
    if not (isinstance(spec, Mapping) and spec and all(str(k).startswith("$") for k in spec)):
        return
    for op, expected in spec.items():
        path = f"{where}.{op}"
        if op not in _FIELD_OPS:
            raise ConditionError(f"unknown operator {op!r} - at {path}")
        if op in ("$in", "$nin") and not isinstance(expected, list):
            raise ConditionError(f"{op} takes a list - at {path}")
        if op == "$regex":
            if not isinstance(expected, str):
                raise ConditionError(f"$regex takes a string - at {path}")
            try:
                _regex(expected)
            except re.error as exc:
                raise ConditionError(f"invalid regular expression ({exc}) - at {path}") from exc
        if op == "$not":
            _check_field(expected, path)
