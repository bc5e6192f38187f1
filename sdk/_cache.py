"""The client's per-visit decision cache and request coalescing.

:class:`VisitCache` keeps each visit's decision (visitor, session, consent) for its ``ttl``
behind a lock, and answers a call it covers every slot of; requests without a session id are
never cached. :class:`Coalescer` (threads) and :class:`AsyncCoalescer` (one event loop) make
concurrent identical calls share one in-flight call.

Must import only the standard library, cachetools and sdk.schema.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from cachetools import TLRUCache

from sdk.schema import DecideRequest, Decision

__all__ = ["AsyncCoalescer", "Coalescer", "VisitCache", "visit_key"]

T = TypeVar("T")
VisitKey = tuple[str, str, bool, bool]


def visit_key(request: DecideRequest) -> VisitKey | None:
    """The visit a request belongs to, or None when it has no session id."""
    if request.session_id is None:
        return None
    c = request.consent
    return (request.visitor_id, request.session_id, c.personalization, c.storage)


class VisitCache:
    """Bounded cache of decisions by visit, each kept for ``min(ttl, decision.ttl)`` seconds.

    Args:
        maxsize: most visits kept (least recently used dropped first).
        ttl: longest time in seconds a decision is re-served.
        timer: monotonic seconds (injectable for tests).
    """

    def __init__(
        self, maxsize: int = 10_000, ttl: float = 300.0, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl

        def expires(_key: Any, decision: Decision, now: float) -> float:
            return now + min(self.ttl, float(decision.ttl))

        self._cache: TLRUCache[VisitKey, Decision] = TLRUCache(
            maxsize=maxsize, ttu=expires, timer=timer
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, request: DecideRequest) -> Decision | None:
        """The visit's cached decision when it covers every slot of ``request``."""
        key = visit_key(request)
        if key is None:
            return None
        with self._lock:
            decision = self._cache.get(key)
            if decision is not None and all(s in decision.slots for s in request.slots):
                self.hits += 1
                return decision
            self.misses += 1
            return None

    def put(self, request: DecideRequest, decision: Decision) -> None:
        """Remember ``decision`` for the visit of ``request`` (not when its ttl is 0)."""
        key = visit_key(request)
        if key is None or decision.ttl <= 0:
            return
        with self._lock:
            self._cache[key] = decision

    def forget(self, visitor_id: str) -> int:
        """Drop every cached decision of a visitor; returns how many."""
        with self._lock:
            keys = [k for k in self._cache if k[0] == visitor_id]
            # pop: an entry may expire between listing and removing it
            return sum(self._cache.pop(k, None) is not None for k in keys)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)


class Coalescer(Generic[T]):
    """Runs one call per key at a time; concurrent callers with the same key share its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future[T]] = {}
        self.shared = 0

    def run(self, key: Hashable, call: Callable[[], T]) -> T:
        """``call()``, or the result of the identical call already running."""
        with self._lock:
            future = self._inflight.get(key)
            leader = future is None
            if future is None:
                future = self._inflight[key] = Future()
            else:
                self.shared += 1
        if not leader:
            return future.result()
        try:
            result = call()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            with self._lock:
                del self._inflight[key]

    def reset(self) -> None:
        """Forget in-flight calls (after fork: their threads do not exist in the child)."""
        with self._lock:
            self._inflight.clear()


class AsyncCoalescer(Generic[T]):
    """:class:`Coalescer` for coroutines of one event loop.

    The shared call runs in its own task, and every caller (the first included) awaits it
    through :func:`asyncio.shield`: a caller that is cancelled (a client disconnecting, a
    ``wait_for`` timing out) stops waiting, while the call goes on for the others.
    """

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Task[T]] = {}
        self.shared = 0

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, or the result of the identical call already running."""
        task = self._inflight.get(key)
        if task is not None:
            self.shared += 1
        else:

            async def run_call() -> T:
                return await call()

            task = asyncio.get_running_loop().create_task(run_call())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    def _done(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" report when nobody waited
