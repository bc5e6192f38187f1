"""Per-process token-bucket rate limits, keyed by any hashable (an API key id, a hashed IP).

A limit of ``r`` a minute refills ``r / 60`` tokens a second into a bucket of at most
``max(1, r * burst_seconds / 60)`` tokens; buckets live in a bounded LRU cache behind a lock.
The clock is injected so tests advance time instead of sleeping.

Must not import litestar or model_export.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable

from cachetools import LRUCache

__all__ = ["RateLimiter"]


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """Token buckets taken all-or-nothing: a request costs one token from each of its buckets.

    Args:
        burst_seconds: how many seconds' worth of the rate a full bucket holds.
        maxsize: most buckets kept; the least recently used go first.
        clock: a monotonic clock in seconds.
    """

    def __init__(
        self,
        *,
        burst_seconds: float = 10.0,
        maxsize: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst_seconds <= 0:
            raise ValueError("burst_seconds must be positive")
        self.burst_seconds = burst_seconds
        self.clock = clock
        self._buckets: LRUCache[Hashable, _Bucket] = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()

    def capacity(self, per_minute: int) -> float:
        """Tokens a full bucket holds for a limit of ``per_minute``."""
        return max(1.0, per_minute * self.burst_seconds / 60.0)

    def acquire(self, *limits: tuple[Hashable, int]) -> int:
        """Take one token from every ``(bucket key, requests per minute)`` bucket.

        A rate of 0 means no limit and is skipped. Either every bucket pays or none does.

        Returns:
            0 when granted; otherwise the whole seconds (at least 1) until every bucket would
            grant, suitable for ``Retry-After``.
        """
        wait = 0.0
        with self._lock:
            now = self.clock()
            taken: list[_Bucket] = []
            for key, per_minute in limits:
                if per_minute <= 0:
                    continue
                rate = per_minute / 60.0
                cap = max(1.0, per_minute * self.burst_seconds / 60.0)
                bucket = self._buckets.get(key)  # a hit also marks it recently used
                if bucket is None:
                    bucket = self._buckets[key] = _Bucket(cap, now)
                else:
                    elapsed = max(0.0, now - bucket.updated)
                    bucket.tokens = min(cap, bucket.tokens + elapsed * rate)
                    bucket.updated = max(bucket.updated, now)
                if bucket.tokens < 1.0:
                    wait = max(wait, (1.0 - bucket.tokens) / rate)
                taken.append(bucket)
            if wait == 0.0:
                for bucket in taken:
                    bucket.tokens -= 1.0
        if wait == 0.0:
            return 0
        # round to the microsecond first so float noise never adds a whole second
        return max(1, math.ceil(round(wait, 6)))

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)
