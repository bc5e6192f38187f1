"""A MongoDB-style condition language for rules and targeting, as GrowthBook targeting uses.

A condition is a JSON object; every entry must hold (an empty condition matches everything).
Keys are logical operators or attribute paths:

- ``$and`` / ``$or`` / ``$nor`` take a list of conditions (an empty ``$or`` or ``$nor`` holds);
  ``$not`` takes one condition.
- Any other key is a dot-separated path into the attributes (``device.type``); a part made of
  ASCII digits also indexes into an array (``items.0.sku``). A path that leads nowhere is
  *missing*, which is not the same as ``null``.

The value under a path is either a literal, meaning equality, or an object whose keys are all
operators (an object mixing operators and plain keys is malformed):

- ``$eq $ne``: JSON equality. ``true`` never equals ``1``; ``1`` equals ``1.0``; ``null`` matches
  only ``null``, never a missing value; arrays and objects compare deeply. ``$ne`` is the negation
  of ``$eq`` (so a missing value is ``$ne`` anything).
- ``$gt $gte $lt $lte``: number against number, string against string (by code point) or
  boolean against boolean; any other pairing, ``null`` and missing values never match.
- ``$veq $vne $vgt $vgte $vlt $vlte``: version comparison (see :func:`version_key` for the
  rule). The operand must be a version string; an attribute that is not one never matches,
  except that ``$vne`` is the negation of ``$veq``.
- ``$in $nin``: the value equals one of a list; ``$nin`` is the negation (a missing value is
  ``$nin`` anything).
- ``$all`` (a list): the value is an array and every item of the list matches some element; an
  item is a literal or an operator object. ``$elemMatch``: the value is an array and one element
  matches: with an operator object (``{"$gt": 3}``) the operators apply to the element itself;
  with a condition (``{"sku": "a", "qty": {"$gte": 2}}``, or one using ``$and/$or/$nor``) the
  element must be an object satisfying it.
- ``$size``: the value is an array whose length equals the number, or satisfies the operator
  object (``{"$gte": 2}``).
- ``$exists``: ``true`` when the value is present and not ``null``; ``false`` otherwise.
- ``$type``: one of ``string number boolean array object null undefined`` (a missing value).
- ``$regex``: the value is a string in which the Python regular expression is found
  (unanchored, no flags).
- ``$not``: the negation of the literal or operator object it holds.

Arrays, as GrowthBook and MongoDB treat them: a literal, ``$eq``, a comparison, a version
comparison or ``$regex`` applied to an array attribute matches when the array itself matches or
*any element* does (``{"tags": "sale"}`` matches ``["new", "sale"]``); ``$in`` matches when the
array and the list intersect; ``$ne``, ``$nin``, ``$vne`` and ``$not`` negate those, so they
hold when *no* element matches.

Conditions are data, never ``eval``: :func:`check_condition` validates one when a bundle loads
(raising :class:`ConditionError` that names the path) and :func:`evaluate` then runs it.
:func:`evaluate_condition` is the public, total form: it validates and evaluates, and answers
``False`` instead of raising for anything malformed, including a condition nested more than
:data:`MAX_DEPTH` JSON levels deep.

Must not import anything but the standard library and ``sdk._errors``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final

from sdk._errors import ConditionError

__all__ = [
    "MAX_DEPTH",
    "check_condition",
    "compile_condition",
    "evaluate",
    "evaluate_condition",
    "version_key",
]

#: The deepest nesting of JSON objects and arrays a condition may have.
MAX_DEPTH: Final = 64

_MISSING: Final = object()
_LOGICAL: Final = frozenset({"$and", "$or", "$nor"})
_TYPES: Final = frozenset({"string", "number", "boolean", "array", "object", "null", "undefined"})
# below this many pairs, a linear scan beats building a set for $in / $all
_LINEAR_PAIRS: Final = 64

_VERSION: Final = re.compile(
    r"[vV]?(?P<core>[0-9]+(?:\.[0-9]+)*)"
    r"(?:-(?P<pre>[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*))?"
    r"(?:\+[0-9A-Za-z.-]*)?"
)
_ZERO: Final = (0, "")


class _Malformed(Exception):
    """Internal: a condition is malformed. ``where`` collects path parts, innermost first."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.where: list[str] = []


# --- values -----------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_array(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _is_operators(spec: Any) -> bool:
    return (
        isinstance(spec, Mapping)
        and bool(spec)
        and all(isinstance(k, str) and k.startswith("$") for k in spec)
    )


def _type_name(value: Any) -> str:
    if value is _MISSING:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if _is_array(value):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "unknown"


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, containers compare deeply, other types never."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a):
        return _is_number(b) and bool(a == b)
    if isinstance(a, str):
        return isinstance(b, str) and a == b
    if a is None:
        return b is None
    if _is_array(a):
        return _is_array(b) and len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, Mapping):
        return (
            isinstance(b, Mapping)
            and len(a) == len(b)
            and all(k in b and _equal(v, b[k]) for k, v in a.items())
        )
    return False


def _key(value: Any) -> tuple[Any, ...] | None:
    """A hashable stand-in for a scalar that is equal exactly when :func:`_equal` says so."""
    if isinstance(value, bool):
        return (1, value)
    if _is_number(value):
        return None if value != value else (2, value)  # NaN equals nothing
    if isinstance(value, str):
        return (3, value)
    if value is None:
        return (0,)
    return None


def _any_equal(items: Any, options: Any) -> bool:
    """Whether some item equals some option."""
    if len(items) * len(options) <= _LINEAR_PAIRS:
        return any(_equal(i, o) for i in items for o in options)
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
            if any(_equal(item, o) for o in others):
                return True
        elif key in keys:
            return True
    return False


def _lookup(attributes: Mapping[str, Any], path: str) -> Any:
    value: Any = attributes
    for part in path.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                return _MISSING
            value = value[part]
        elif _is_array(value) and part.isascii() and part.isdigit() and len(part) < 19:
            index = int(part)
            if index >= len(value):
                return _MISSING
            value = value[index]
        else:
            return _MISSING
    return value


# --- versions ---------------------------------------------------------------------------------


def _number_part(digits: str) -> tuple[int, str]:
    stripped = digits.lstrip("0")
    return (len(stripped), stripped)


def version_key(text: Any) -> tuple[Any, ...] | None:
    """The sort key of a version string, or None when ``text`` is not one.

    The rule: an optional leading ``v``/``V`` is dropped, and so is build metadata (``+`` and
    what follows: ASCII letters, digits, ``.`` and ``-``). What remains is a *core* of one or more
    ``.``-separated runs of ASCII digits, then optionally ``-`` and a *pre-release* of ASCII
    alphanumeric identifiers separated by ``.`` or ``-``. Nothing else is a version (no spaces).

    Cores compare part by part as numbers of any size (so ``1.10 > 1.9`` and ``01 == 1``), a
    missing part counting as 0 (``1.2 == 1.2.0``). With equal cores, a version with a pre-release
    sorts before the one without (``1.0.0-rc.1 < 1.0.0``); pre-releases compare identifier by
    identifier: numeric ones as numbers and below alphanumeric ones, alphanumeric ones by ASCII,
    and a shorter list that is a prefix of a longer one sorts first (``1.0-a < 1.0-a.1``).

    Args:
        text: the value to read; anything but a ``str`` is not a version.
    """
    if not isinstance(text, str):
        return None
    match = _VERSION.fullmatch(text)
    if match is None:
        return None
    core = [_number_part(p) for p in match["core"].split(".")]
    while core and core[-1] == _ZERO:
        core.pop()
    pre = match["pre"]
    if pre is None:
        return (tuple(core), 1, ())
    identifiers = tuple(
        (0, *_number_part(p)) if p.isdigit() else (1, 0, p) for p in re.split(r"[.-]", pre)
    )
    return (tuple(core), 0, identifiers)


# --- operators --------------------------------------------------------------------------------


def _eq(actual: Any, expected: Any) -> bool:
    if actual is _MISSING:
        return False
    if _equal(actual, expected):
        return True
    return _is_array(actual) and any(_equal(item, expected) for item in actual)


def _ne(actual: Any, expected: Any) -> bool:
    return not _eq(actual, expected)


def _ordering(test: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def one(actual: Any, expected: Any) -> bool:
        if isinstance(actual, bool) or isinstance(expected, bool):
            same = isinstance(actual, bool) and isinstance(expected, bool)
        else:
            same = (_is_number(actual) and _is_number(expected)) or (
                isinstance(actual, str) and isinstance(expected, str)
            )
        return same and bool(test(actual, expected))

    def op(actual: Any, expected: Any) -> bool:
        if _is_array(actual):
            return any(one(item, expected) for item in actual)
        return one(actual, expected)

    return op


def _versioned(test: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def op(actual: Any, expected: Any) -> bool:
        wanted = version_key(expected)
        if wanted is None:
            return False
        items = actual if _is_array(actual) else (actual,)
        for item in items:
            key = version_key(item)
            if key is not None and test(key, wanted):
                return True
        return False

    return op


_veq = _versioned(operator.eq)


def _vne(actual: Any, expected: Any) -> bool:
    return not _veq(actual, expected)


def _in(actual: Any, expected: Any) -> bool:
    if actual is _MISSING:
        return False
    if _is_array(actual):
        if any(_equal(actual, option) for option in expected if _is_array(option)):
            return True
        return _any_equal(actual, expected)
    return _any_equal((actual,), expected)


def _nin(actual: Any, expected: Any) -> bool:
    return not _in(actual, expected)


def _all(actual: Any, expected: Any) -> bool:
    if not _is_array(actual):
        return False
    index: set[tuple[Any, ...] | None] | None = None  # keys of the elements, built once
    for item in expected:
        if _is_operators(item):
            found = any(_field_matches(element, item) for element in actual)
        elif (key := _key(item)) is None or len(actual) <= _LINEAR_PAIRS:
            found = any(_equal(element, item) for element in actual)
        else:
            if index is None:
                index = {_key(element) for element in actual}
            found = key in index
        if not found:
            return False
    return True


def _elem_match_operators(spec: Mapping[str, Any]) -> bool:
    """Whether an ``$elemMatch`` operand applies operators to elements (else: a condition)."""
    return _is_operators(spec) and not _LOGICAL.intersection(spec)


def _elem_match(actual: Any, expected: Any) -> bool:
    if not _is_array(actual):
        return False
    if _elem_match_operators(expected):
        return any(_field_matches(item, expected) for item in actual)
    return any(isinstance(item, Mapping) and _match(expected, item) for item in actual)


def _size(actual: Any, expected: Any) -> bool:
    if not _is_array(actual):
        return False
    if _is_operators(expected):
        return _field_matches(len(actual), expected)
    return bool(len(actual) == expected)


def _exists(actual: Any, expected: Any) -> bool:
    return (actual is not _MISSING and actual is not None) == bool(expected)


def _type(actual: Any, expected: Any) -> bool:
    return _type_name(actual) == str(expected)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regex_op(actual: Any, expected: Any) -> bool:
    pattern = _regex(expected)
    items = actual if _is_array(actual) else (actual,)
    return any(isinstance(item, str) and pattern.search(item) is not None for item in items)


def _not(actual: Any, expected: Any) -> bool:
    return not _field_matches(actual, expected)


_OPERATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "$eq": _eq,
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
    "$in": _in,
    "$nin": _nin,
    "$all": _all,
    "$elemMatch": _elem_match,
    "$size": _size,
    "$exists": _exists,
    "$type": _type,
    "$regex": _regex_op,
    "$not": _not,
}


def _field_matches(actual: Any, spec: Any) -> bool:
    if not _is_operators(spec):
        return _eq(actual, spec)
    return all(_OPERATORS[op](actual, expected) for op, expected in spec.items())


def _match(condition: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    for key, spec in condition.items():
        if key == "$and":
            ok = all(_match(c, attributes) for c in spec)
        elif key == "$or":
            ok = not spec or any(_match(c, attributes) for c in spec)
        elif key == "$nor":
            ok = not any(_match(c, attributes) for c in spec)
        elif key == "$not":
            ok = not _match(spec, attributes)
        else:
            ok = _field_matches(_lookup(attributes, key), spec)
        if not ok:
            return False
    return True


# --- validation -------------------------------------------------------------------------------


def _check_condition(condition: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Malformed(f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(condition, Mapping):
        raise _Malformed("a condition must be an object")
    for key, spec in condition.items():
        try:
            if not isinstance(key, str):
                raise _Malformed(f"a condition's keys must be strings, not {key!r}")
            if key in _LOGICAL:
                if not _is_array(spec):
                    raise _Malformed(f"{key} takes a list of conditions")
                if depth + 1 > MAX_DEPTH:
                    raise _Malformed(f"nested deeper than {MAX_DEPTH} levels")
                for i, sub in enumerate(spec):
                    try:
                        _check_condition(sub, depth + 2)
                    except _Malformed as exc:
                        exc.where.append(f"[{i}]")
                        raise
            elif key == "$not":
                _check_condition(spec, depth + 1)
            elif key.startswith("$"):
                raise _Malformed(f"unknown operator {key!r}")
            else:
                _check_spec(spec, depth + 1)
        except _Malformed as exc:
            exc.where.append(f".{key}")
            raise


def _check_literal(value: Any, depth: int) -> None:
    if value is None or isinstance(value, bool | int | float | str):
        return
    if depth > MAX_DEPTH:
        raise _Malformed(f"nested deeper than {MAX_DEPTH} levels")
    if _is_array(value):
        for item in value:
            _check_literal(item, depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Malformed(f"object keys must be strings, not {key!r}")
            _check_literal(item, depth + 1)
    else:
        raise _Malformed(f"{type(value).__name__} is not a JSON value")


def _check_spec(spec: Any, depth: int) -> None:
    """Check what follows an attribute path: a literal or an operator object."""
    if not _is_operators(spec):
        if isinstance(spec, Mapping) and any(
            isinstance(k, str) and k.startswith("$") for k in spec
        ):
            raise _Malformed("an object mixes operators and plain keys")
        _check_literal(spec, depth)
        return
    if depth > MAX_DEPTH:
        raise _Malformed(f"nested deeper than {MAX_DEPTH} levels")
    for op, expected in spec.items():
        try:
            _check_operator(op, expected, depth + 1)
        except _Malformed as exc:
            exc.where.append(f".{op}")
            raise


def _check_operator(op: str, expected: Any, depth: int) -> None:
    if op not in _OPERATORS:
        raise _Malformed(f"unknown operator {op!r}")
    if depth > MAX_DEPTH and isinstance(expected, Mapping | list | tuple):
        raise _Malformed(f"nested deeper than {MAX_DEPTH} levels")
    if op in ("$eq", "$ne"):
        _check_literal(expected, depth)
    elif op in ("$gt", "$gte", "$lt", "$lte"):
        if not (isinstance(expected, bool | str) or _is_number(expected)):
            raise _Malformed(f"{op} takes a number, a string or a boolean")
    elif op.startswith("$v"):
        if version_key(expected) is None:
            raise _Malformed(f"{op} takes a version string such as '1.2.3'")
    elif op in ("$in", "$nin", "$all"):
        if not _is_array(expected):
            raise _Malformed(f"{op} takes a list")
        for i, item in enumerate(expected):
            try:
                if op == "$all":
                    _check_spec(item, depth + 1)
                else:
                    _check_literal(item, depth + 1)
            except _Malformed as exc:
                exc.where.append(f"[{i}]")
                raise
    elif op == "$elemMatch":
        if not isinstance(expected, Mapping):
            raise _Malformed("$elemMatch takes an object")
        if _elem_match_operators(expected):
            _check_spec(expected, depth)
        else:
            _check_condition(expected, depth)
    elif op == "$size":
        if _is_operators(expected):
            _check_spec(expected, depth)
        elif not _is_number(expected):
            raise _Malformed("$size takes a number or an operator object")
    elif op == "$exists":
        if not isinstance(expected, bool):
            raise _Malformed("$exists takes true or false")
    elif op == "$type":
        if not (isinstance(expected, str) and expected in _TYPES):
            raise _Malformed(f"$type takes one of {', '.join(sorted(_TYPES))}")
    elif op == "$regex":
        if not isinstance(expected, str):
            raise _Malformed("$regex takes a string")
        try:
            _regex(expected)
        except (re.error, RecursionError, OverflowError, ValueError) as exc:
            raise _Malformed(f"invalid regular expression ({exc})") from exc
    else:  # "$not"
        _check_spec(expected, depth)


# --- public -----------------------------------------------------------------------------------


def check_condition(condition: Any, where: str = "$") -> None:
    """Raise :class:`ConditionError` unless ``condition`` is well formed.

    Args:
        condition: the parsed JSON value to check.
        where: JSON path of the condition, used in error messages.

    Raises:
        ConditionError: naming the JSON path of the first malformed part.
    """
    try:
        _check_condition(condition, 1)
    except _Malformed as exc:
        path = where + "".join(reversed(exc.where))
        raise ConditionError(f"{exc.message} - at {path}") from None


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
    """``lambda a: _lookup(a, key)``, with the path split once and plain dicts walked directly
    (anything else takes :func:`_lookup`'s general route)."""
    parts = tuple(key.split("."))
    missing = _MISSING

    def get(a: Mapping[str, Any]) -> Any:
        value: Any = a
        for part in parts:
            if type(value) is not dict:
                return _lookup(a, key)
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
        return _eq(value, expected)

    return match


def _string_in(get: Callable[[Mapping[str, Any]], Any], expected: list[str]) -> Predicate:
    options = frozenset(expected)

    def match(a: Mapping[str, Any]) -> bool:
        value = get(a)
        if type(value) is str:
            return value in options
        return _in(value, expected)

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
        return _number_order(get, _ORDER_TESTS[op], _OPERATORS[op], expected)
    fn = _OPERATORS[op]

    def one(a: Mapping[str, Any]) -> bool:
        return fn(get(a), expected)

    return one


def _literal(key: str, spec: Any) -> Predicate:
    if type(spec) is str:
        return _string_eq(_getter(key), spec)
    get = _getter(key)

    def match(a: Mapping[str, Any]) -> bool:
        return _eq(get(a), spec)

    return match


def _operators(key: str, ops: list[tuple[str, Any]]) -> Predicate:
    if len(ops) == 1:
        ((op, expected),) = ops
        return _one_operator(key, op, expected)
    parts = [_one_operator(key, op, expected) for op, expected in ops]

    def every(a: Mapping[str, Any]) -> bool:
        return all(p(a) for p in parts)

    return every


def _compile(condition: Mapping[str, Any]) -> Predicate:
    parts: list[Predicate] = []
    for key, spec in condition.items():
        if key == "$and":
            parts.append(_all_of([_compile(c) for c in spec]))
        elif key == "$or":
            parts.append(_any_of([_compile(c) for c in spec]))
        elif key == "$nor":
            parts.append(_none_of([_compile(c) for c in spec]))
        elif key == "$not":
            parts.append(_negation(_compile(spec)))
        elif not _is_operators(spec):
            parts.append(_literal(key, spec))
        else:
            parts.append(_operators(key, list(spec.items())))
    if not parts:
        return _always
    if len(parts) == 1:
        return parts[0]
    return _all_of(parts)


def compile_condition(condition: Mapping[str, Any]) -> Predicate:
    """``condition`` turned once into a function of the attributes, equal to
    ``lambda attributes: evaluate(condition, attributes)`` but without re-reading the condition
    on every call (the decider compiles its bundle's conditions when it loads).

    Raises:
        ConditionError: the condition is malformed (see :func:`check_condition`).
    """
    check_condition(condition)
    return _compile(condition)


def evaluate(condition: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    """Whether ``attributes`` satisfy ``condition``. An empty condition matches everything.

    Args:
        condition: a condition already accepted by :func:`check_condition`.
        attributes: nested mapping of attribute values; dotted paths reach into it.
    """
    return _match(condition, attributes)


def evaluate_condition(attributes: Mapping[str, Any], condition: Mapping[str, Any]) -> bool:
    """Whether ``attributes`` satisfy ``condition``, in the language described in this module.

    Never raises: a malformed condition (unknown operator, wrong operand type, invalid regular
    expression or version, nesting deeper than :data:`MAX_DEPTH`, not an object) and attributes
    that are not a mapping give ``False``, even where a ``$not`` would otherwise turn a failure
    into a match. An empty condition matches everything.

    Args:
        attributes: nested mapping of attribute values (JSON-like); dotted paths reach into it.
        condition: the condition, e.g. ``{"country": {"$in": ["GB", "IE"]}, "age": {"$gte": 18}}``.

    Example:
        >>> evaluate_condition({"app": {"version": "2.10.0"}}, {"app.version": {"$vgte": "2.9"}})
        True
    """
    try:
        if not isinstance(attributes, Mapping):
            return False
        _check_condition(condition, 1)
        return _match(condition, attributes)
    except Exception:  # a promise to callers: anything odd is a non-match
        return False
