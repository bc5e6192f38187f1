"""Compilation of conditions into plain functions of the attributes.

:func:`compile_tree` turns a checked condition into a :data:`Predicate` once, with fast paths
for the common shapes, so a bundle's conditions are not re-read on every decision.

Must import only the standard library and sdk's condition modules.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from sdk._operators import MISSING, OPERATORS, eq, is_in, is_operators, lookup

__all__ = ["Predicate", "compile_tree", "path_getter"]

Predicate = Callable[[Mapping[str, Any]], bool]


def _always(attributes: Mapping[str, Any]) -> bool:
    return True


def _all_of(parts: list[Predicate]) -> Predicate:
    def match(a: Mapping[str, Any]) -> bool:
        return all(p(a) for p in parts)

    return match


def _any_of(parts: list[Predicate]) -> Predicate:
    def match(a: Mapping[str, Any]) -> bool:
        return not parts or any(p(a) for p in parts)

    return match


def _none_of(parts: list[Predicate]) -> Predicate:
    def match(a: Mapping[str, Any]) -> bool:
        return not any(p(a) for p in parts)

    return match


def _negation(inner: Predicate) -> Predicate:
    def match(a: Mapping[str, Any]) -> bool:
        return not inner(a)

    return match


def _getter(key: str) -> Callable[[Mapping[str, Any]], Any]:
    """``lambda a: lookup(a, key)``, with the path split once and plain dicts walked directly
    (anything else takes :func:`lookup`'s general route)."""
    parts = tuple(key.split("."))
    missing = MISSING

    def get(a: Mapping[str, Any]) -> Any:
        value: Any = a
        for part in parts:
            if type(value) is not dict:
                return lookup(a, key)
            value = value.get(part, missing)
            if value is missing:
                return missing
        return value

    return get


# Fast paths for the common shapes (equality with a string, membership in strings, ordering
# against a number). Each answers directly only where the general operator would give the same
# answer for that type of value, and defers to the operator otherwise.


def _string_eq(get: Callable[[Mapping[str, Any]], Any], expected: str) -> Predicate:
    def match(a: Mapping[str, Any]) -> bool:
        value = get(a)
        if type(value) is str:
            return value == expected
        return eq(value, expected)

    return match


def _string_in(get: Callable[[Mapping[str, Any]], Any], expected: list[str]) -> Predicate:
    options = frozenset(expected)

    def match(a: Mapping[str, Any]) -> bool:
        value = get(a)
        if type(value) is str:
            return value in options
        return is_in(value, expected)

    return match


def _number_order(
    get: Callable[[Mapping[str, Any]], Any],
    test: Callable[[Any, Any], Any],
    general: Callable[[Any, Any], bool],
    expected: float,
) -> Predicate:
    def match(a: Mapping[str, Any]) -> bool:
        value = get(a)
        if type(value) is float or type(value) is int:
            return bool(test(value, expected))
        return general(value, expected)

    return match


_ORDER_TESTS: Final = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def _one_operator(key: str, op: str, expected: Any) -> Predicate:
    get = _getter(key)
    if op == "$eq" and type(expected) is str:
        return _string_eq(get, expected)
    if op == "$in" and isinstance(expected, list) and all(type(e) is str for e in expected):
        return _string_in(get, expected)
    if op in _ORDER_TESTS and (type(expected) is float or type(expected) is int):
        return _number_order(get, _ORDER_TESTS[op], OPERATORS[op], expected)
    fn = OPERATORS[op]

    def one(a: Mapping[str, Any]) -> bool:
        return fn(get(a), expected)

    return one


def _literal(key: str, spec: Any) -> Predicate:
    if type(spec) is str:
        return _string_eq(_getter(key), spec)
    get = _getter(key)

    def match(a: Mapping[str, Any]) -> bool:
        return eq(get(a), spec)

    return match


def _operators(key: str, ops: list[tuple[str, Any]]) -> Predicate:
    if len(ops) == 1:
        ((op, expected),) = ops
        return _one_operator(key, op, expected)
    parts = [_one_operator(key, op, expected) for op, expected in ops]

    def every(a: Mapping[str, Any]) -> bool:
        return all(p(a) for p in parts)

    return every


def compile_tree(condition: Mapping[str, Any]) -> Predicate:
    parts: list[Predicate] = []
    for key, spec in condition.items():
        if key == "$and":
            parts.append(_all_of([compile_tree(c) for c in spec]))
        elif key == "$or":
            parts.append(_any_of([compile_tree(c) for c in spec]))
        elif key == "$nor":
            parts.append(_none_of([compile_tree(c) for c in spec]))
        elif key == "$not":
            parts.append(_negation(compile_tree(spec)))
        elif not is_operators(spec):
            parts.append(_literal(key, spec))
        else:
            parts.append(_operators(key, list(spec.items())))
    if not parts:
        return _always
    if len(parts) == 1:
        return parts[0]
    return _all_of(parts)


#: The value at a dotted path of the attributes, as conditions read it (``MISSING`` when the
#: path leads nowhere): the getter the compiled conditions use, for the decision plan's keys.
path_getter = _getter
