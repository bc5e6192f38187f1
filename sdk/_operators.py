"""The condition language's operators and matcher, over JSON-like values.

JSON equality (booleans are not numbers, containers compare deeply), dotted path lookup, the
operator table (``$eq`` ... ``$not``) and :func:`match_condition`, which evaluates a condition
already checked by :mod:`sdk._condition_check`. :mod:`sdk.conditions` documents the language.

Must import only the standard library and sdk's condition modules.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from sdk._patterns import compiled_regex, version_key

__all__ = [
    "LOGICAL",
    "MISSING",
    "OPERATORS",
    "TYPES",
    "elem_match_operators",
    "eq",
    "equal",
    "field_matches",
    "is_array",
    "is_in",
    "is_number",
    "is_operators",
    "lookup",
    "match_condition",
]

MISSING: Final = object()
LOGICAL: Final = frozenset({"$and", "$or", "$nor"})
TYPES: Final = frozenset({"string", "number", "boolean", "array", "object", "null", "undefined"})
# below this many pairs, a linear scan beats building a set for $in / $all
_LINEAR_PAIRS: Final = 64


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_array(value: Any) -> bool:
    return isinstance(value, list | tuple)


def is_operators(spec: Any) -> bool:
    return (
        isinstance(spec, Mapping)
        and bool(spec)
        and all(isinstance(k, str) and k.startswith("$") for k in spec)
    )


def _type_name(value: Any) -> str:
    if value is MISSING:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if is_array(value):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "unknown"


def equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, containers compare deeply, other types never."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a):
        return is_number(b) and bool(a == b)
    if isinstance(a, str):
        return isinstance(b, str) and a == b
    if a is None:
        return b is None
    if is_array(a):
        return is_array(b) and len(a) == len(b) and all(map(equal, a, b))
    if isinstance(a, Mapping):
        return (
            isinstance(b, Mapping)
            and len(a) == len(b)
            and all(k in b and equal(v, b[k]) for k, v in a.items())
        )
    return False


def _key(value: Any) -> tuple[Any, ...] | None:
    """A hashable stand-in for a scalar that is equal exactly when :func:`equal` says so."""
    if isinstance(value, bool):
        return (1, value)
    if is_number(value):
        return None if value != value else (2, value)  # NaN equals nothing
    if isinstance(value, str):
        return (3, value)
    if value is None:
        return (0,)
    return None


def _any_equal(items: Any, options: Any) -> bool:
    """Whether some item equals some option."""
    if len(items) * len(options) <= _LINEAR_PAIRS:
        return any(equal(i, o) for i in items for o in options)
    keys: set[tuple[Any, ...]] = set()
    others: list[Any] = []
    for option in options:
        key = _key(option)
        if key is None:
            others.append(option)
        else:
            keys.add(key)
    for item in items:
        key = _key(item)
        if key is None:
            if any(equal(item, o) for o in others):
                return True
        elif key in keys:
            return True
    return False


def lookup(attributes: Mapping[str, Any], path: str) -> Any:
    value: Any = attributes
    for part in path.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                return MISSING
            value = value[part]
        elif is_array(value) and part.isascii() and part.isdigit() and len(part) < 19:
            index = int(part)
            if index >= len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


def eq(actual: Any, expected: Any) -> bool:
    if actual is MISSING:
        return False
    if equal(actual, expected):
        return True
    return is_array(actual) and any(equal(item, expected) for item in actual)


def _ne(actual: Any, expected: Any) -> bool:
    return not eq(actual, expected)


def _ordering(test: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def one(actual: Any, expected: Any) -> bool:
        if isinstance(actual, bool) or isinstance(expected, bool):
            same = isinstance(actual, bool) and isinstance(expected, bool)
        else:
            same = (is_number(actual) and is_number(expected)) or (
                isinstance(actual, str) and isinstance(expected, str)
            )
        return same and bool(test(actual, expected))

    def op(actual: Any, expected: Any) -> bool:
        if is_array(actual):
            return any(one(item, expected) for item in actual)
        return one(actual, expected)

    return op


def _versioned(test: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def op(actual: Any, expected: Any) -> bool:
        wanted = version_key(expected)
        if wanted is None:
            return False
        items = actual if is_array(actual) else (actual,)
        for item in items:
            key = version_key(item)
            if key is not None and test(key, wanted):
                return True
        return False

    return op


_veq = _versioned(operator.eq)


def _vne(actual: Any, expected: Any) -> bool:
    return not _veq(actual, expected)


def is_in(actual: Any, expected: Any) -> bool:
    if actual is MISSING:
        return False
    if is_array(actual):
        if any(equal(actual, option) for option in expected if is_array(option)):
            return True
        return _any_equal(actual, expected)
    return _any_equal((actual,), expected)


def _nin(actual: Any, expected: Any) -> bool:
    return not is_in(actual, expected)


def _all(actual: Any, expected: Any) -> bool:
    if not is_array(actual):
        return False
    index: set[tuple[Any, ...] | None] | None = None  # keys of the elements, built once
    for item in expected:
        if is_operators(item):
            found = any(field_matches(element, item) for element in actual)
        elif (key := _key(item)) is None or len(actual) <= _LINEAR_PAIRS:
            found = any(equal(element, item) for element in actual)
        else:
            if index is None:
                index = {_key(element) for element in actual}
            found = key in index
        if not found:
            return False
    return True


def elem_match_operators(spec: Mapping[str, Any]) -> bool:
    """Whether an ``$elemMatch`` operand applies operators to elements (else: a condition)."""
    return is_operators(spec) and not LOGICAL.intersection(spec)


def _elem_match(actual: Any, expected: Any) -> bool:
    if not is_array(actual):
        return False
    if elem_match_operators(expected):
        return any(field_matches(item, expected) for item in actual)
    return any(isinstance(item, Mapping) and match_condition(expected, item) for item in actual)


def _size(actual: Any, expected: Any) -> bool:
    if not is_array(actual):
        return False
    if is_operators(expected):
        return field_matches(len(actual), expected)
    return bool(len(actual) == expected)


def _exists(actual: Any, expected: Any) -> bool:
    return (actual is not MISSING and actual is not None) == bool(expected)


def _type(actual: Any, expected: Any) -> bool:
    return _type_name(actual) == str(expected)


def _regex_op(actual: Any, expected: Any) -> bool:
    pattern = compiled_regex(expected)
    items = actual if is_array(actual) else (actual,)
    return any(isinstance(item, str) and pattern.search(item) is not None for item in items)


def _not(actual: Any, expected: Any) -> bool:
    return not field_matches(actual, expected)


OPERATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "$eq": eq,
    "$ne": _ne,
    "$gt": _ordering(operator.gt),
    "$gte": _ordering(operator.ge),
    "$lt": _ordering(operator.lt),
    "$lte": _ordering(operator.le),
    "$veq": _veq,
    "$vne": _vne,
    "$vgt": _versioned(operator.gt),
    "$vgte": _versioned(operator.ge),
    "$vlt": _versioned(operator.lt),
    "$vlte": _versioned(operator.le),
    "$in": is_in,
    "$nin": _nin,
    "$all": _all,
    "$elemMatch": _elem_match,
    "$size": _size,
    "$exists": _exists,
    "$type": _type,
    "$regex": _regex_op,
    "$not": _not,
}


def field_matches(actual: Any, spec: Any) -> bool:
    if not is_operators(spec):
        return eq(actual, spec)
    return all(OPERATORS[op](actual, expected) for op, expected in spec.items())


def match_condition(condition: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    for key, spec in condition.items():
        if key == "$and":
            ok = all(match_condition(c, attributes) for c in spec)
        elif key == "$or":
            ok = not spec or any(match_condition(c, attributes) for c in spec)
        elif key == "$nor":
            ok = not any(match_condition(c, attributes) for c in spec)
        elif key == "$not":
            ok = not match_condition(spec, attributes)
        else:
            ok = field_matches(lookup(attributes, key), spec)
        if not ok:
            return False
    return True
