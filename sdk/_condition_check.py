"""Validation of conditions: :func:`check_condition` and the checks it runs.

A condition is checked once, when a bundle loads or a condition is compiled, so evaluation can
trust its shape. Errors name the JSON path of the first malformed part.

Must import only the standard library and sdk's errors and condition modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from sdk._operators import (
    LOGICAL,
    OPERATORS,
    TYPES,
    elem_match_operators,
    is_array,
    is_number,
    is_operators,
)
from sdk._patterns import RegexError, compiled_regex, version_key
from sdk.errors import ConditionError, MissingExtraError

__all__ = ["MAX_DEPTH", "Malformed", "check_condition", "check_node"]

#: The deepest nesting of JSON objects and arrays a condition may have.
MAX_DEPTH: Final = 64


class Malformed(ConditionError):
    """A condition is malformed (inside the checker: :func:`check_condition` raises a
    :class:`ConditionError` naming the path). ``where`` collects path parts, innermost first."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.where: list[str] = []


def _check_items(items: Any, check: Callable[[Any, int], None], depth: int) -> None:
    """``check(item, depth)`` for each item of a list; a failure names the item's index."""
    for i, item in enumerate(items):
        try:
            check(item, depth)
        except Malformed as exc:
            exc.where.append(f"[{i}]")
            raise


def check_node(condition: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Malformed(f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(condition, Mapping):
        raise Malformed("a condition must be an object")
    key: Any = None
    try:
        for key, spec in condition.items():
            if not isinstance(key, str):
                raise Malformed(f"a condition's keys must be strings, not {key!r}")
            if key in LOGICAL:
                if not is_array(spec):
                    raise Malformed(f"{key} takes a list of conditions")
                if depth + 1 > MAX_DEPTH:
                    raise Malformed(f"nested deeper than {MAX_DEPTH} levels")
                _check_items(spec, check_node, depth + 2)
            elif key == "$not":
                check_node(spec, depth + 1)
            elif key.startswith("$"):
                raise Malformed(f"unknown operator {key!r}")
            else:
                _check_spec(spec, depth + 1)
    except Malformed as exc:
        exc.where.append(f".{key}")
        raise


def _check_literal(value: Any, depth: int) -> None:
    if value is None or isinstance(value, bool | int | float | str):
        return
    if depth > MAX_DEPTH:
        raise Malformed(f"nested deeper than {MAX_DEPTH} levels")
    if is_array(value):
        for item in value:
            _check_literal(item, depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Malformed(f"object keys must be strings, not {key!r}")
            _check_literal(item, depth + 1)
    else:
        raise Malformed(f"{type(value).__name__} is not a JSON value")


def _check_spec(spec: Any, depth: int) -> None:
    """Check what follows an attribute path: a literal or an operator object."""
    if not is_operators(spec):
        if isinstance(spec, Mapping) and any(
            isinstance(k, str) and k.startswith("$") for k in spec
        ):
            raise Malformed("an object mixes operators and plain keys")
        _check_literal(spec, depth)
        return
    if depth > MAX_DEPTH:
        raise Malformed(f"nested deeper than {MAX_DEPTH} levels")
    op = ""
    try:
        for op, expected in spec.items():
            _check_operator(op, expected, depth + 1)
    except Malformed as exc:
        exc.where.append(f".{op}")
        raise


def _check_operator(op: str, expected: Any, depth: int) -> None:
    if op not in OPERATORS:
        raise Malformed(f"unknown operator {op!r}")
    if depth > MAX_DEPTH and isinstance(expected, Mapping | list | tuple):
        raise Malformed(f"nested deeper than {MAX_DEPTH} levels")
    if op in ("$eq", "$ne"):
        _check_literal(expected, depth)
    elif op in ("$gt", "$gte", "$lt", "$lte"):
        if not (isinstance(expected, bool | str) or is_number(expected)):
            raise Malformed(f"{op} takes a number, a string or a boolean")
    elif op.startswith("$v"):
        if version_key(expected) is None:
            raise Malformed(f"{op} takes a version string such as '1.2.3'")
    elif op in ("$in", "$nin", "$all"):
        if not is_array(expected):
            raise Malformed(f"{op} takes a list")
        _check_items(expected, _check_spec if op == "$all" else _check_literal, depth + 1)
    elif op == "$elemMatch":
        if not isinstance(expected, Mapping):
            raise Malformed("$elemMatch takes an object")
        if elem_match_operators(expected):
            _check_spec(expected, depth)
        else:
            check_node(expected, depth)
    elif op == "$size":
        if is_operators(expected):
            _check_spec(expected, depth)
        elif not is_number(expected):
            raise Malformed("$size takes a number or an operator object")
    elif op == "$exists":
        if not isinstance(expected, bool):
            raise Malformed("$exists takes true or false")
    elif op == "$type":
        if not (isinstance(expected, str) and expected in TYPES):
            raise Malformed(f"$type takes one of {', '.join(sorted(TYPES))}")
    elif op == "$regex":
        if not isinstance(expected, str):
            raise Malformed("$regex takes a string")
        try:
            compiled_regex(expected)
        except RegexError as exc:
            raise Malformed(f"invalid regular expression ({exc})") from exc
        except MissingExtraError as exc:  # refused at load, not at the first visit
            raise Malformed(f"$regex cannot be evaluated: {exc}") from exc
    else:  # "$not"
        _check_spec(expected, depth)


def check_condition(condition: Any, where: str = "$") -> None:
    """Raise :class:`ConditionError` unless ``condition`` is well formed.

    Args:
        condition: the parsed JSON value to check.
        where: JSON path of the condition, used in error messages.

    Raises:
        ConditionError: naming the JSON path of the first malformed part.
    """
    try:
        check_node(condition, 1)
    except Malformed as exc:
        path = where + "".join(reversed(exc.where))
        raise ConditionError(f"{exc.message} - at {path}") from None
