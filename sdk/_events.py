"""Background delivery of feedback events, for :class:`sdk.Client` and :class:`sdk.AsyncClient`.

``track`` only appends to a bounded in-memory queue; a background worker (a daemon thread, or
an asyncio task) sends batches when ``batch_size`` events wait or ``interval`` seconds after
the first. ``flush`` waits for what is queued, ``close`` flushes and stops the worker. A full
queue drops and counts new events (``dropped``); refused or failing batches are counted
(``failed``) and logged. The worker starts lazily, so a forked child starts empty.

Must import only the standard library and sdk.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

from sdk.schema import Event

__all__ = ["AsyncEventSender", "EventSender"]

log = logging.getLogger("tailor")

#: The schema's largest EventBatch.
MAX_BATCH = 100


class _Sender:
    """Settings and counters shared by both senders."""

    def __init__(self, batch_size: int, interval: float, max_queue: int) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in 1..{MAX_BATCH}")
        self.batch_size = batch_size
        self.interval = interval
        self.max_queue = max_queue
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._queue: deque[Event] = deque()

    def _take(self) -> list[Event]:
        return [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]


class EventSender(_Sender):
    """Queues events and sends them in batches from a daemon thread.

    Args:
        post: sends one batch; raises on failure (after its own retries).
        batch_size: events per batch (at most 100).
        interval: seconds an event may wait for companions before its batch is sent.
        max_queue: events kept at most; more are dropped.
    """

    def __init__(
        self,
        post: Callable[[list[Event]], None],
        *,
        batch_size: int = MAX_BATCH,
        interval: float = 1.0,
        max_queue: int = 10_000,
    ) -> None:
        super().__init__(batch_size, interval, max_queue)
        self._post = post
        self._init_process_state()
        _live.add(self)

    def _init_process_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Event] = deque()
        self._first_at = 0.0
        self._busy = 0
        self._closed = False
        self._flushing = 0
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def put(self, event: Event) -> bool:
        """Queue ``event``; False when it was dropped (queue full or sender closed)."""
        with self._cond:
            if self._closed or len(self._queue) >= self.max_queue:
                self.dropped += 1
                return False
            if not self._queue:
                self._first_at = time.monotonic()
            self._queue.append(event)
            self._start()
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()
            return True

    def _start(self) -> None:  # holding the lock
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tailor-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._queue and (
                        len(self._queue) >= self.batch_size
                        or self._flushing
                        or self._closed
                        or time.monotonic() - self._first_at >= self.interval
                    ):
                        break
                    if self._closed and not self._queue:
                        return
                    wait = None
                    if self._queue:
                        wait = max(0.0, self._first_at + self.interval - time.monotonic())
                    self._cond.wait(wait)
                batch = self._take()
                self._first_at = time.monotonic()
                self._busy += 1
            try:
                self._post(batch)
                self.sent += len(batch)
            except Exception as exc:  # the worker must survive anything a post raises
                self.failed += len(batch)
                log.warning("tailor: %d events not delivered: %s", len(batch), exc)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def pending(self) -> int:
        """Events queued or being sent."""
        with self._cond:
            return len(self._queue) + self._busy

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; True when done within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._thread is None:
                return not self._queue
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._queue or self._busy:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush, then stop the worker; later events are dropped. True when all were sent."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        _live.discard(self)
        return done

    def _after_fork_in_child(self) -> None:
        self._init_process_state()


class AsyncEventSender(_Sender):
    """:class:`EventSender` for one asyncio event loop: the worker is a task."""

    def __init__(
        self,
        post: Callable[[list[Event]], Awaitable[None]],
        *,
        batch_size: int = MAX_BATCH,
        interval: float = 1.0,
        max_queue: int = 10_000,
    ) -> None:
        super().__init__(batch_size, interval, max_queue)
        self._post = post
        self._busy = 0
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._flushing = 0

    def put(self, event: Event) -> bool:
        """Queue ``event`` (call it from the event loop); False when dropped."""
        if self._closed or len(self._queue) >= self.max_queue:
            self.dropped += 1
            return False
        self._queue.append(event)
        if self._task is None:
            self._wake = asyncio.Event()
            self._idle = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tailor-events")
        assert self._idle is not None and self._wake is not None
        self._idle.clear()
        if len(self._queue) >= self.batch_size:
            self._wake.set()
        elif len(self._queue) == 1:
            self._wake.set()  # start the interval of this first event
        return True

    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        while True:
            if not self._queue:
                self._idle.set()
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._queue) < self.batch_size and not (self._flushing or self._closed):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
            batch = self._take()
            if not batch:
                continue
            self._busy += 1
            try:
                await self._post(batch)
                self.sent += len(batch)
            except Exception as exc:  # the worker must survive anything a post raises
                self.failed += len(batch)
                log.warning("tailor: %d events not delivered: %s", len(batch), exc)
            finally:
                self._busy -= 1

    def pending(self) -> int:
        """Events queued or being sent."""
        return len(self._queue) + self._busy

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; True when done within ``timeout`` seconds."""
        if self._task is None or self._idle is None or self._wake is None:
            return not self._queue
        self._flushing += 1
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._flushing -= 1

    async def close(self, timeout: float | None = 5.0) -> bool:
        """Flush, then stop the worker; later events are dropped."""
        done = await self.flush(timeout)
        self._closed = True
        if self._task is not None:
            assert self._wake is not None
            self._wake.set()
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return done


_live: weakref.WeakSet[EventSender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sender in list(_live):
        sender._after_fork_in_child()


def _flush_at_exit() -> None:
    for sender in list(_live):
        try:
            sender.close(timeout=2.0)
        except Exception:  # nothing may escape at interpreter exit
            log.exception("tailor: flushing events at exit failed")


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)
