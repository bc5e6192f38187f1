"""The decision plan: what a bundle's rules and targeting decide, memoised on the few values
each one reads.

A condition's result is a function of the values at the attribute paths it reads
(:func:`sdk.conditions.condition_paths`), and in a decision those are a handful of discrete
values: lifecycle stage, persona, device type, referrer class, country, page path, campaign.
A :class:`Memo` keys a function of the attributes on those values, each with its type (the
condition language tells ``true`` from ``1``), and keeps at most ``limit`` results, starting
afresh when full. A path its conditions only compare with numbers
(:func:`sdk.conditions.numeric_thresholds`) is keyed, for a number, by where it lies among
those numbers: days since the last purchase has a handful of kinds, not one per value. A
value that cannot be a key (an object or an array) is computed directly. A memo of limit 0
always computes: the decider's reference path (``Decider(plan=False)``), which the
differential tests compare with the plan byte for byte.

The hit rates (:meth:`Memo.stats`) are reported by ``python -m benchmarks.decide`` on fresh
distinct visitors.

Must import only the standard library and sdk's condition modules.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sdk._condition_compile import path_getter

__all__ = ["MEMO_LIMIT", "Memo"]

T = TypeVar("T")

#: The most results a memo keeps before it starts afresh.
MEMO_LIMIT = 4096


Getter = Callable[[Mapping[str, Any]], Any]


def _typed(get: Getter) -> Getter:
    """The value at a path with its type: ``true`` and ``1`` are different keys."""

    def key(attributes: Mapping[str, Any]) -> Any:
        value = get(attributes)
        return (value, type(value))

    return key


def _position(get: Getter, cuts: Sequence[float]) -> Getter:
    """A number at a path by where it lies among ``cuts`` (how many are below it, how many
    are not above it: every comparison with each cut follows); anything else by value and
    type."""

    def key(attributes: Mapping[str, Any]) -> Any:
        value = get(attributes)
        kind = type(value)
        if (kind is float or kind is int) and value == value:  # a number, not NaN or a bool
            return (bisect_left(cuts, value), bisect_right(cuts, value))
        return (value, kind)

    return key


class Memo(Generic[T]):
    """``fn(attributes)`` memoised on the values at ``paths``.

    Args:
        name: what the memo decides (the benchmark's report names it).
        paths: the attribute paths ``fn`` reads; its result must depend on nothing else.
        fn: the function, e.g. a compiled condition or the set of offers whose eligibility
            holds.
        limit: the most results kept (0: never memoise, always call ``fn``).
        thresholds: for paths ``fn`` only compares with numbers, those numbers sorted
            (:func:`sdk.conditions.numeric_thresholds`).
    """

    __slots__ = ("_fn", "_getters", "_limit", "_table", "hits", "misses", "name", "paths")

    def __init__(
        self,
        name: str,
        paths: Iterable[str],
        fn: Callable[[Mapping[str, Any]], T],
        limit: int = MEMO_LIMIT,
        thresholds: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        self.name = name
        self.paths = tuple(dict.fromkeys(paths))
        cuts = thresholds or {}
        self._getters = [
            _position(path_getter(p), cuts[p]) if p in cuts else _typed(path_getter(p))
            for p in self.paths
        ]
        self._fn = fn
        self._limit = limit
        self._table: dict[tuple[Any, ...], T] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, attributes: Mapping[str, Any]) -> T:
        if not self._limit:
            return self._fn(attributes)
        key = tuple([get(attributes) for get in self._getters])
        table = self._table
        try:
            found = table[key]
        except KeyError:
            pass
        except TypeError:  # an object or an array at a path: no key, computed directly
            return self._fn(attributes)
        else:
            self.hits += 1
            return found
        self.misses += 1
        made = self._fn(attributes)
        if len(table) >= self._limit:
            table.clear()
        table[key] = made
        return made

    def stats(self) -> dict[str, float]:
        """Hits, misses and hit rate since the memo was made or :meth:`reset`."""
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "rate": round(self.hits / total, 4) if total else 0.0,
            "size": len(self._table),
        }

    def reset(self) -> None:
        """Forget every result and the counts (a cold start, for measuring)."""
        self._table.clear()
        self.hits = self.misses = 0
