"""The connection to the shared state store (Redis or Valkey): one asyncio client per worker
process, a key layout whose keys of one visitor share a hash tag (Redis Cluster puts them in
one slot), a deadline on every call and a circuit breaker, so a slow or dead Redis costs a
request at most the deadline and, once the breaker is open, nothing at all.

Every backend module (profiles, the event guard, rate limits, pub/sub) goes through
:meth:`RedisState.call`; a failure of any kind is raised as :class:`StateUnavailable`, which
callers turn into a contextual decision (reason ``state.unavailable``), a spooled event or an
open rate limit, never a 5xx.

Must not import model_export or litestar.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sdk import CircuitBreaker

__all__ = [
    "ATTEMPTS",
    "DECIDE_READ",
    "RedisState",
    "StateUnavailable",
    "check_redis_url",
    "lost",
]

T = TypeVar("T")

#: Attempts of an optimistic write whose record keeps changing underneath before it counts as
#: failed (each lost attempt means another write succeeded: contention, not a stall).
ATTEMPTS = 32
#: The longest wait after a lost attempt (seconds), whatever the attempt.
BACKOFF_CAP = 0.05
#: The longest wait after the first lost attempt (seconds); it doubles with each one after.
BACKOFF_BASE = 0.0005

#: True in a task while it reads what a decide needs: its calls are counted apart
#: (:attr:`RedisState.read_calls`), the round trips before an answer.
DECIDE_READ: ContextVar[bool] = ContextVar("tailor_decide_read", default=False)


class StateUnavailable(Exception):
    """The shared store did not answer in time, failed, or its breaker is open."""


async def lost(attempt: int) -> None:
    """Wait after the ``attempt``-th optimistic write (from 0) lost to a concurrent one: a random
    time up to ``BACKOFF_BASE * 2**attempt`` (at most :data:`BACKOFF_CAP`), "full jitter". Writers
    that keep colliding spread out instead of retrying in lockstep, where one of them could lose
    every attempt. Called between calls, never inside one (it would spend the call's deadline)."""
    await asyncio.sleep(
        random.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 16)))
    )


def check_redis_url(url: str) -> str:
    """``url`` when it is a ``redis://``, ``rediss://`` or ``unix://`` URL; else ValueError
    (the message never repeats a password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"TAILOR_REDIS_URL must start with redis://, rediss:// or unix://, not {parts.scheme!r}"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("TAILOR_REDIS_URL names no host")
    return url


class RedisState:
    """One worker's handle on the shared store.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS) or ``unix://``.
        prefix: the first part of every key, so several sites or environments share one Redis.
        timeout: seconds a call may take (connect, send, answer) before it counts as failed.
        breaker: opens after consecutive failures; while open, calls fail at once.
        clock: monotonic seconds (the breaker's), injectable for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tailor",
        timeout: float = 0.05,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.url = check_redis_url(url)
        self.prefix = prefix
        self.timeout = timeout
        self.breaker = breaker or CircuitBreaker(failures=3, reset_after=2.0)
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            # the client's own socket timeout stays: without it, calls under a saturated event
            # loop were all cancelled by call()'s deadline and the breaker never closed again
            # (measured at 128 connections on 2 workers)
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
            retry_on_timeout=False,
            # no silent retries: the deadline and the breaker decide what a failure costs
            retry=AsyncRetry(NoBackoff(), 0),
            decode_responses=False,
        )
        #: calls attempted (each one round trip: a command, a pipeline or a script)
        self.calls = 0
        #: of those, the calls made while a decide waited for its read (before its answer;
        #: :data:`DECIDE_READ`)
        self.read_calls = 0
        #: calls that failed (timeouts, errors), and refused while the breaker was open
        self.failures = 0
        self.refused = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def visitor_key(self, visitor_id: str, part: str) -> str:
        """The key of one part of a visitor's state; all of a visitor's keys share the hash
        tag ``{v:<id>}``, so a visitor's reads and writes stay on one Redis Cluster slot."""
        return f"{self.prefix}:{{v:{visitor_id}}}:{part}"

    def key(self, *parts: str) -> str:
        """A key not tied to a visitor (rate-limit buckets, channels, streams)."""
        return ":".join((self.prefix, *parts))

    @property
    def available(self) -> bool:
        """Whether calls are being attempted (the breaker is not open)."""
        return self.breaker.state != "open"

    async def call(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``await fn(client)`` within the deadline, through the breaker.

        Raises:
            StateUnavailable: the breaker is open, or the call failed or timed out.
        """
        if not self.breaker.allow():
            self.refused += 1
            raise StateUnavailable("the shared store is unavailable (circuit open)")
        self.calls += 1
        self.read_calls += DECIDE_READ.get()
        try:
            # a deadline on this task (no task of its own, unlike wait_for: the hot path)
            async with asyncio.timeout(self.timeout):
                result = await fn(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            self.failures += 1
            self.last_error = type(exc).__name__
            self.last_error_at = time.time()
            raise StateUnavailable(f"the shared store failed: {type(exc).__name__}") from exc
        self.breaker.success()
        return result

    async def close(self) -> None:
        await self.client.aclose()
