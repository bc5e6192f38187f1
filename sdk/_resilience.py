"""Retries with backoff and jitter, and a circuit breaker, for the HTTP client.

Pure policy objects: :class:`Retry` says whether a failed attempt may be repeated and after
how long, :class:`CircuitBreaker` whether a call may be attempted at all (its state behind a
lock never held across I/O); the client acts.

Must import only the standard library.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CircuitBreaker", "Retry"]

#: Statuses answered before the request was processed: retrying cannot apply it twice.
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, kw_only=True)
class Retry:
    """When and how often a failed call is attempted again.

    Only failures that cannot have been processed by the server are retried: a connection that
    could not be opened, and the statuses in ``statuses`` (429 rate limited, 503 unavailable).
    A read timeout is not retried: the server may have acted on the request. The wait before
    retry ``n`` (0-based) is drawn uniformly from ``[0, min(cap, base * 2**n)]`` ("full
    jitter"), or is the server's ``Retry-After`` (whole seconds), capped at ``cap``: a caller
    waiting for a decision cannot wait longer than that.

    Attributes:
        attempts: total attempts, the first included (1 turns retries off).
        base: seconds; the backoff's scale.
        cap: seconds; the longest single wait.
        statuses: HTTP statuses that are retried.
    """

    attempts: int = 2
    base: float = 0.05
    cap: float = 1.0
    statuses: frozenset[int] = RETRY_STATUSES

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Retry.attempts must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("Retry.base and Retry.cap must not be negative")

    def delay(
        self,
        retry: int,
        retry_after: str | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        after = retry_after.strip() if retry_after is not None else ""
        if after.isascii() and after.isdigit():
            return min(float(after), self.cap)
        return rand() * min(self.cap, self.base * 2.0**retry)


class CircuitBreaker:
    """Stops calling a failing server for a while, then lets one trial call through.

    Closed: calls go through; ``failures`` consecutive failures open it. Open: calls are refused
    (the client answers with its fallback at once) for ``reset_after`` seconds. Half-open: one
    trial call goes through; its success closes the breaker, its failure opens it again.

    Args:
        failures: consecutive failures that open the breaker.
        reset_after: seconds the breaker stays open before a trial call.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        failures: int = 5,
        reset_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        self.failures = failures
        self.reset_after = reset_after
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at >= self.reset_after:
                return "half-open"
            return "open"

    def allow(self) -> bool:
        """Whether a call may be attempted now (claims the trial call when half-open)."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.reset_after or self._trial:
                return False
            self._trial = True
            return True

    def success(self) -> None:
        """Record a call that got an answer the server meant (including 4xx)."""
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._trial = False

    def failure(self) -> None:
        """Record a call that failed: no connection, a timeout, 429 or 5xx."""
        with self._lock:
            self._consecutive += 1
            if self._trial or self._consecutive >= self.failures:
                self._opened_at = self._clock()
            self._trial = False

    def reset(self) -> None:
        """Close the breaker (after fork, or by hand)."""
        self.success()
