"""A bounded LRU cache with a time to live whose entries the garbage collector never sees: each
entry is a ``gc=False`` struct in an ``OrderedDict``, ordered by recency of use; the least
recently used go first when the size budget is exceeded, expired ones when read or at the
front. Not thread-safe: callers hold a lock.

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
