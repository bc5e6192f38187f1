"""A bounded LRU cache with a time to live whose entries the garbage collector never sees.

cachetools' ``TTLCache`` keeps a linked-list node object per entry, and those nodes are tracked
by CPython's cyclic garbage collector: a hundred thousand cached visitors are a hundred thousand
objects every full collection walks, and the server's p99 latency under load was those pauses.
Here an entry is an :class:`_Entry` in an ``OrderedDict`` (whose own nodes are not Python
objects). ``_Entry`` is a ``gc=False`` struct: not a container to the collector at all, so
creating one does not count towards the next young collection, as a tuple would (a tuple is
tracked when made and untracked only by the collection that first scans it: with one new
entry per request, that was a 3 to 8 ms young collection every second or so under load, and
a 15 to 35 ms middle one every ten). Values should be of the same kind (strings, bytes,
numbers, ``gc=False`` structs) for the cache to stay out of the collector's way.

Order is recency of use (``get`` and ``set`` move an entry to the end); the least recently used
entries are dropped first when the size budget is exceeded, and expired entries are dropped
when they are read or reach the front. Not thread-safe: callers hold a lock.

Must not import model_export.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["LruTtlCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Entry(msgspec.Struct, gc=False):
    """One cached value, its expiry (``timer`` seconds) and its size."""

    expires: float
    value: Any
    size: int


class LruTtlCache(Generic[K, V]):
    """At most ``maxsize`` (entries, or the sum of ``getsizeof`` over entries), each for ``ttl``
    seconds of ``timer`` after it was last set.

    Args:
        maxsize: the budget: entry count, or total size with ``getsizeof``.
        ttl: seconds an entry lives after it was set.
        timer: the clock (seconds).
        getsizeof: the size of a value (default: 1 per entry).

    Raises:
        ValueError: a budget or ttl that is not positive.
    """

    def __init__(
        self,
        maxsize: float,
        ttl: float,
        *,
        timer: Callable[[], float] = time.monotonic,
        getsizeof: Callable[[V], int] | None = None,
    ) -> None:
        if not maxsize > 0 or not ttl > 0:
            raise ValueError("maxsize and ttl must be positive")
        self.maxsize = maxsize
        self.ttl = ttl
        self.currsize = 0
        self._timer = timer
        self._sizeof = getsizeof
        self._data: OrderedDict[K, _Entry] = OrderedDict()

    def get(self, key: K, default: V | None = None) -> V | None:
        """The live value of ``key`` (now the most recently used), or ``default``."""
        item = self._data.get(key)
        if item is None:
            return default
        if item.expires <= self._timer():
            self._drop(key)
            return default
        self._data.move_to_end(key)
        value: V = item.value
        return value

    def __setitem__(self, key: K, value: V) -> None:
        size = self._sizeof(value) if self._sizeof is not None else 1
        old = self._data.pop(key, None)
        if old is not None:
            self.currsize -= old.size
        if size > self.maxsize:
            return  # larger than the whole budget: not kept
        self._data[key] = _Entry(self._timer() + self.ttl, value, size)
        self.currsize += size
        while self.currsize > self.maxsize:
            _, dropped = self._data.popitem(last=False)
            self.currsize -= dropped.size
        self.expire(limit=2)

    def __contains__(self, key: object) -> bool:
        item = self._data.get(key)  # type: ignore[arg-type]
        return item is not None and item.expires > self._timer()

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove ``key``; its value if it was live, else ``default``."""
        item = self._data.pop(key, None)
        if item is None:
            return default
        self.currsize -= item.size
        value: V = item.value
        return value if item.expires > self._timer() else default

    def expire(self, limit: int | None = None) -> None:
        """Drop expired entries: every one, or with ``limit`` at most that many from the front
        (the least recently used, a cheap step taken on every set)."""
        now = self._timer()
        data = self._data
        if limit is None:
            for key in [k for k, item in data.items() if item.expires <= now]:
                self._drop(key)
            return
        while data and limit > 0:
            key, item = next(iter(data.items()))
            if item.expires > now:
                break
            self._drop(key)
            limit -= 1

    def _drop(self, key: K) -> None:
        item = self._data.pop(key)
        self.currsize -= item.size

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)
