"""The MongoDB-style condition language of rules and targeting, as GrowthBook targeting uses.

Conditions are data, never ``eval``: :func:`check_condition` validates one when a bundle loads,
:func:`compile_condition` turns it into a function once, and :func:`evaluate_condition` is the
total form that validates, evaluates and never raises (it documents the language). The
implementation lives in the private ``sdk._operators``, ``sdk._condition_check``,
``sdk._condition_compile`` and ``sdk._patterns`` modules.

Must import only the standard library and sdk's errors and condition modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sdk._condition_check import MAX_DEPTH, check_condition, check_node
from sdk._condition_compile import Predicate, compile_tree
from sdk._operators import match_condition
from sdk._patterns import version_key

__all__ = [
    "MAX_DEPTH",
    "Predicate",
    "check_condition",
    "compile_condition",
    "condition_paths",
    "evaluate",
    "evaluate_condition",
    "numeric_thresholds",
    "version_key",
]


def compile_condition(condition: Mapping[str, Any]) -> Predicate:
    """``condition`` turned once into a function of the attributes, equal to
    ``lambda attributes: evaluate(condition, attributes)`` but without re-reading the condition
    on every call (the decider compiles its bundle's conditions when it loads).

    Raises:
        ConditionError: the condition is malformed (see :func:`check_condition`).
    """
    check_condition(condition)
    return compile_tree(condition)


def _fields(condition: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every ``(path, spec)`` entry of ``condition``, through ``$and``, ``$or``, ``$nor`` and
    ``$not``."""
    for key, spec in condition.items():
        if key in ("$and", "$or", "$nor"):
            for child in spec:
                yield from _fields(child)
        elif key == "$not":
            yield from _fields(spec)
        else:
            yield key, spec


def condition_paths(condition: Mapping[str, Any]) -> tuple[str, ...]:
    """The attribute paths ``condition`` reads, in first-use order: its keys that are not
    logical operators, through ``$and``, ``$or``, ``$nor`` and ``$not``. The condition's
    result is a function of the values at these paths alone (what an operator such as
    ``$elemMatch`` reads inside an array element is part of the value at its path), which lets
    a caller memoise it on those values (:mod:`sdk._plan`).

    Args:
        condition: a condition already accepted by :func:`check_condition`.
    """
    return tuple(dict.fromkeys(path for path, _ in _fields(condition)))


#: Operators whose result on a number is fixed by where it lies among the operands.
_ORDERINGS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})


def _is_number(value: Any) -> bool:
    return (type(value) is int or type(value) is float) and value == value  # not NaN


def numeric_thresholds(conditions: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, ...]]:
    """The paths every one of ``conditions`` only compares with numbers, and those numbers,
    sorted: a number at such a path matters only by where it lies among them, so the
    decision plan keys it by that position instead of its value (``purchases`` read by
    ``{"$gte": 1}`` and ``{"$gte": 5}`` has five kinds of values, not one per number). A path
    read in any other way (a string, ``$in``, ``$exists``, ``$type``, a field ``$not``...) is
    left out.

    Args:
        conditions: conditions already accepted by :func:`check_condition`.
    """
    numbers: dict[str, set[float]] = {}
    other: set[str] = set()
    for condition in conditions:
        for key, spec in _fields(condition):
            if _is_number(spec):
                numbers.setdefault(key, set()).add(spec)
            elif (
                isinstance(spec, Mapping)
                and spec
                and all(op in _ORDERINGS and _is_number(v) for op, v in spec.items())
            ):
                numbers.setdefault(key, set()).update(spec.values())
            else:
                other.add(key)
    return {path: tuple(sorted(found)) for path, found in numbers.items() if path not in other}


def evaluate(condition: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    """Whether ``attributes`` satisfy ``condition``. An empty condition matches everything.

    Args:
        condition: a condition already accepted by :func:`check_condition`.
        attributes: nested mapping of attribute values; dotted paths reach into it.
    """
    return match_condition(condition, attributes)


def evaluate_condition(attributes: Mapping[str, Any], condition: Mapping[str, Any]) -> bool:
    """Whether ``attributes`` satisfy ``condition``, in the condition language below.

    Never raises: a malformed condition (unknown operator, wrong operand type, invalid regular
    expression or version, nesting deeper than :data:`MAX_DEPTH`, not an object) and attributes
    that are not a mapping give ``False``, even where a ``$not`` would otherwise turn a failure
    into a match. An empty condition matches everything.

    A condition is a JSON object; every entry must hold (an empty condition matches everything).
    Keys are logical operators or attribute paths:

    - ``$and`` / ``$or`` / ``$nor`` take a list of conditions (an empty ``$or`` or ``$nor`` holds);
      ``$not`` takes one condition.
    - Any other key is a dot-separated path into the attributes (``device.type``); a part made of
      ASCII digits also indexes into an array (``items.0.sku``). A path that leads nowhere is
      *missing*, which is not the same as ``null``.

    The value under a path is either a literal, meaning equality, or an object whose keys are all
    operators (an object mixing operators and plain keys is malformed):

    - ``$eq $ne``: JSON equality. ``true`` never equals ``1``; ``1`` equals ``1.0``; ``null``
      matches only ``null``, never a missing value; arrays and objects compare deeply. ``$ne``
      is the negation of ``$eq`` (so a missing value is ``$ne`` anything).
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
        check_node(condition, 1)
        return match_condition(condition, attributes)
    except Exception:  # a promise to callers: anything odd is a non-match
        return False
