"""Token-bucket rate limits, keyed by any hashable (an API key id, a hashed IP): per process
(:class:`RateLimiter`) or shared by every worker and replica (:class:`SharedRateLimiter`).

A limit of ``r`` a minute refills ``r / 60`` tokens a second into a bucket of at most
``max(1, r * burst_seconds / 60)`` tokens. Per process, buckets live in a bounded LRU cache
behind a lock and the clock is injected so tests advance time instead of sleeping. Shared,
all the buckets of a request are taken by one Lua script in Redis (:data:`TOKEN_BUCKET_LUA`)
on the Redis server's clock, so replicas with skewed clocks agree; a bucket key lives as long
as the bucket takes to refill, after which a missing bucket is a full one. When Redis fails,
the per-process limiter answers instead (counted in ``fallbacks``): never refuse everything,
never an error.

Must not import litestar or model_export.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import LRUCache

from server.stores.redis_conn import RedisState, StateUnavailable

__all__ = ["TOKEN_BUCKET_LUA", "RateLimiter", "SharedRateLimiter"]


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


#: KEYS: the buckets; ARGV: two numbers per bucket, tokens a second and capacity. Takes one
#: token from every bucket or from none; returns 0 (granted) or the wait in microseconds.
TOKEN_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local have, wait = {}, 0
for i = 1, #KEYS do
  local rate, cap = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local b = redis.call('HMGET', KEYS[i], 't', 'u')
  local tokens = cap
  if b[1] then
    tokens = math.min(cap, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate)
  end
  have[i] = tokens
  if tokens < 1 then wait = math.max(wait, (1 - tokens) / rate) end
end
if wait > 0 then return math.ceil(wait * 1000000) end
for i = 1, #KEYS do
  local rate, cap = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 't', tostring(have[i] - 1), 'u', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate * 1000))
end
return 0
"""


def _bucket_name(key: Hashable) -> str:
    """A bucket key as text, the same in every process: bytes as hex, parts joined by ``:``."""
    parts = key if isinstance(key, tuple) else (key,)
    return ":".join(p.hex() if isinstance(p, bytes) else str(p) for p in parts)


class SharedRateLimiter:
    """:class:`RateLimiter`'s ``acquire``, awaited: in Redis once :meth:`attach` gave it a
    store, else (and whenever Redis fails) by the per-process ``local`` limiter.

    Args:
        local: the per-process limiter (its ``burst_seconds`` sizes the shared buckets too).
        name: the key part of these buckets (``rl``: request limits, ``np``: new profiles).
    """

    def __init__(self, local: RateLimiter, *, name: str = "rl") -> None:
        self.local = local
        self.name = name
        self.redis: RedisState | None = None
        self._script: Any = None
        #: requests decided by the per-process limiter because Redis failed
        self.fallbacks = 0

    def attach(self, state: RedisState | None) -> None:
        """Share the buckets through ``state`` (None: per process again)."""
        self.redis = state
        self._script = state.client.register_script(TOKEN_BUCKET_LUA) if state else None

    async def acquire(self, *limits: tuple[Hashable, int]) -> int:
        """Take one token from every ``(bucket key, requests per minute)`` bucket (a rate of 0
        is no limit); 0 when granted, else the whole seconds to wait (at least 1)."""
        state, script = self.redis, self._script
        active = [(key, per_minute) for key, per_minute in limits if per_minute > 0]
        if state is None or not active:
            return self.local.acquire(*limits)
        keys = [state.key(self.name, _bucket_name(key)) for key, _ in active]
        args: list[float] = []
        for _, per_minute in active:
            args += [per_minute / 60.0, self.local.capacity(per_minute)]
        try:
            micros = await state.call(lambda c: script(keys=keys, args=args, client=c))
        except StateUnavailable:
            self.fallbacks += 1
            return self.local.acquire(*limits)
        if not micros:
            return 0
        return max(1, math.ceil(round(int(micros) / 1e6, 6)))
