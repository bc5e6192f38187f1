"""Background event delivery: batching, interval, flush, close, bounds, failures, fork."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator

import pytest

from sdk._events import AsyncEventSender, EventSender
from sdk.schema import Event
from tests.sdk.test_visit_cache import wait_until

#: Long enough that only size, flush or close can send a batch during a test.
NEVER = 60.0


def events(n: int, start: int = 0) -> list[Event]:
    return [Event(type="impression", visitor_id=f"v{i}") for i in range(start, start + n)]


def worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "tailor-events"}


class Posts:
    """A ``post`` that records batches; ``gate`` (when given) holds each post until set."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[Event]] = []
        self.gate = gate
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, batch: list[Event]) -> None:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        with self.lock:
            self.batches.append(batch)

    @property
    def sizes(self) -> list[int]:
        with self.lock:
            return [len(b) for b in self.batches]

    @property
    def sent(self) -> list[Event]:
        with self.lock:
            return [e for b in self.batches for e in b]


@pytest.fixture
def make_sender() -> Iterator[Callable[..., EventSender]]:
    """EventSender factory; every sender is closed (its gate opened first) after the test."""
    made: list[tuple[EventSender, Posts]] = []

    def make(posts: Posts | None = None, **kwargs: float) -> EventSender:
        posts = posts or Posts()
        kwargs.setdefault("interval", NEVER)
        sender = EventSender(posts, **kwargs)  # type: ignore[arg-type]
        made.append((sender, posts))
        return sender

    yield make
    for sender, posts in made:
        if posts.gate is not None:
            posts.gate.set()
        sender.close(timeout=5)


@pytest.mark.parametrize("size", [0, 101, -1])
def test_batch_size_must_fit_an_event_batch(size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        EventSender(lambda batch: None, batch_size=size)
    with pytest.raises(ValueError, match="batch_size"):
        AsyncEventSender(_async_noop, batch_size=size)


async def _async_noop(batch: list[Event]) -> None:
    return None


def test_worker_thread_starts_lazily(make_sender: Callable[..., EventSender]) -> None:
    before = worker_threads()
    sender = make_sender()
    assert worker_threads() - before == set()
    assert sender.flush(1) is True  # nothing queued, nothing started
    assert worker_threads() - before == set()
    sender.put(events(1)[0])
    started = worker_threads() - before
    assert len(started) == 1
    assert next(iter(started)).daemon


def test_batches_by_size(make_sender: Callable[..., EventSender]) -> None:
    posts = Posts()
    sender = make_sender(posts, batch_size=100)
    queued = events(250)
    assert all(sender.put(e) for e in queued)
    wait_until(lambda: posts.sizes == [100, 100])  # the last 50 wait for companions
    assert sender.pending() == 50
    assert sender.flush(5) is True
    assert posts.sizes == [100, 100, 50]
    assert posts.sent == queued  # in order, none lost or repeated
    assert (sender.sent, sender.dropped, sender.failed) == (250, 0, 0)


def test_interval_sends_a_partial_batch(make_sender: Callable[..., EventSender]) -> None:
    posts = Posts()
    sender = make_sender(posts, batch_size=100, interval=0.05)
    for e in events(3):
        sender.put(e)
    wait_until(lambda: len(posts.sent) == 3)  # no flush: the interval sent them
    assert sender.sent == 3
    assert sender.pending() == 0


def test_flush_returns_true_when_everything_is_sent(
    make_sender: Callable[..., EventSender],
) -> None:
    posts = Posts()
    sender = make_sender(posts, batch_size=10)
    for e in events(25):
        sender.put(e)
    assert sender.flush(5) is True
    assert len(posts.sent) == 25
    assert sender.pending() == 0


def test_flush_times_out_while_a_post_is_blocked(make_sender: Callable[..., EventSender]) -> None:
    posts = Posts(gate=threading.Event())
    sender = make_sender(posts, batch_size=1)
    sender.put(events(1)[0])
    assert posts.entered.wait(5)
    assert sender.flush(0.05) is False
    assert sender.pending() == 1  # being sent
    assert posts.gate is not None
    posts.gate.set()
    assert sender.flush(5) is True
    assert sender.sent == 1


def test_close_flushes_then_drops(make_sender: Callable[..., EventSender]) -> None:
    posts = Posts()
    sender = make_sender(posts)
    for e in events(10):
        sender.put(e)
    assert sender.close() is True
    assert len(posts.sent) == 10
    assert sender.put(events(1)[0]) is False
    assert sender.dropped == 1
    assert sender._thread is not None and not sender._thread.is_alive()  # worker stopped


def test_close_without_events_starts_nothing() -> None:
    before = worker_threads()
    sender = EventSender(Posts())
    assert sender.close() is True
    assert worker_threads() - before == set()


def test_full_queue_drops_and_counts(make_sender: Callable[..., EventSender]) -> None:
    posts = Posts()
    sender = make_sender(posts, max_queue=5)
    accepted = [sender.put(e) for e in events(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert sender.dropped == 3
    assert sender.flush(5) is True
    assert [e.visitor_id for e in posts.sent] == ["v0", "v1", "v2", "v3", "v4"]
    assert sender.put(events(1)[0]) is True  # room again


def test_failed_post_is_counted_and_the_worker_goes_on(
    make_sender: Callable[..., EventSender], caplog: pytest.LogCaptureFixture
) -> None:
    delivered: list[list[Event]] = []
    calls: list[int] = []

    def post(batch: list[Event]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("server said no")
        delivered.append(batch)

    sender = EventSender(post, batch_size=2, interval=NEVER)
    try:
        with caplog.at_level(logging.WARNING, logger="tailor"):
            for e in events(4):
                sender.put(e)
            assert sender.flush(5) is True
        assert (sender.failed, sender.sent) == (2, 2)
        assert [e.visitor_id for b in delivered for e in b] == ["v2", "v3"]
        assert "2 events not delivered: server said no" in caplog.text
        sender.put(events(1, start=9)[0])
        assert sender.flush(5) is True
        assert sender.sent == 3
    finally:
        sender.close()


def test_forked_child_starts_with_an_empty_queue_and_its_own_worker() -> None:
    posts = Posts()
    sender = EventSender(posts, batch_size=100, interval=NEVER)
    try:
        for e in events(3):
            sender.put(e)  # the parent's worker is running, its events wait
        parent_worker = sender._thread
        assert parent_worker is not None and parent_worker.is_alive()
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a multi-threaded process; doing so safely is
            # exactly what is being tested
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reports through its exit code
            code = 99
            try:
                if sender.pending() != 0:
                    code = 10  # inherited the parent's queue
                elif sender._thread is not None:
                    code = 11  # believes the parent's worker thread runs here
                else:
                    sender.put(Event(type="click", visitor_id="child"))
                    own = sender._thread
                    if own is None or not own.is_alive() or own is parent_worker:
                        code = 12
                    elif not sender.flush(5):
                        code = 13
                    elif [e.visitor_id for e in posts.sent] != ["child"]:
                        code = 14  # sent the parent's events, or nothing
                    else:
                        code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert sender.pending() == 3  # the parent's events are still the parent's
        assert sender.flush(5) is True
        assert [e.visitor_id for e in posts.sent] == ["v0", "v1", "v2"]
    finally:
        sender.close()


# --- AsyncEventSender ----------------------------------------------------------------------


class AsyncPosts:
    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[Event]] = []
        self.gate = gate
        self.entered = 0

    async def __call__(self, batch: list[Event]) -> None:
        self.entered += 1
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(batch)

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    @property
    def sent(self) -> list[Event]:
        return [e for b in self.batches for e in b]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (on the loop) until ``condition()``; fail after ``timeout`` seconds."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


def test_async_worker_task_starts_lazily() -> None:
    async def main() -> None:
        sender = AsyncEventSender(AsyncPosts(), interval=NEVER)
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert "tailor-events" not in names
        assert await sender.flush(1) is True
        assert sender.put(events(1)[0])
        assert "tailor-events" in {t.get_name() for t in asyncio.all_tasks()}
        assert await sender.close() is True

    asyncio.run(main())


def test_async_batches_by_size() -> None:
    async def main() -> None:
        posts = AsyncPosts()
        sender = AsyncEventSender(posts, batch_size=100, interval=NEVER)
        queued = events(250)
        assert all(sender.put(e) for e in queued)
        await until(lambda: posts.sizes == [100, 100])
        assert sender.pending() == 50
        assert await sender.flush(5) is True
        assert posts.sizes == [100, 100, 50]
        assert posts.sent == queued
        assert (sender.sent, sender.dropped, sender.failed) == (250, 0, 0)
        await sender.close()

    asyncio.run(main())


def test_async_interval_sends_a_partial_batch() -> None:
    async def main() -> None:
        posts = AsyncPosts()
        sender = AsyncEventSender(posts, batch_size=100, interval=0.05)
        for e in events(3):
            sender.put(e)
        await until(lambda: len(posts.sent) == 3)
        assert sender.pending() == 0
        for e in events(2, start=3):
            sender.put(e)  # a second round after the worker went idle
        await until(lambda: len(posts.sent) == 5)
        await sender.close()

    asyncio.run(main())


def test_async_flush_times_out_while_a_post_is_blocked() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        posts = AsyncPosts(gate)
        sender = AsyncEventSender(posts, batch_size=1, interval=NEVER)
        sender.put(events(1)[0])
        await until(lambda: posts.entered == 1)
        assert await sender.flush(0.05) is False
        assert sender.pending() == 1
        gate.set()
        assert await sender.flush(5) is True
        assert sender.sent == 1
        await sender.close()

    asyncio.run(main())


def test_async_close_flushes_then_drops() -> None:
    async def main() -> None:
        posts = AsyncPosts()
        sender = AsyncEventSender(posts, interval=NEVER)
        for e in events(10):
            sender.put(e)
        assert await sender.close() is True
        assert len(posts.sent) == 10
        assert sender._task is not None and sender._task.done()
        assert sender.put(events(1)[0]) is False
        assert sender.dropped == 1

    asyncio.run(main())


def test_async_close_gives_up_on_a_blocked_post() -> None:
    async def main() -> None:
        sender = AsyncEventSender(AsyncPosts(asyncio.Event()), interval=NEVER)
        sender.put(events(1)[0])
        assert await sender.close(timeout=0.05) is False
        assert sender._task is not None and sender._task.done()

    asyncio.run(main())


def test_async_full_queue_drops_and_counts() -> None:
    async def main() -> None:
        posts = AsyncPosts()
        sender = AsyncEventSender(posts, interval=NEVER, max_queue=5)
        assert [sender.put(e) for e in events(8)] == [True] * 5 + [False] * 3
        assert sender.dropped == 3
        assert await sender.flush(5) is True
        assert len(posts.sent) == 5
        await sender.close()

    asyncio.run(main())


def test_async_failed_post_is_counted_and_the_worker_goes_on() -> None:
    async def main() -> None:
        delivered: list[list[Event]] = []
        calls: list[int] = []

        async def post(batch: list[Event]) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("server said no")
            delivered.append(batch)

        sender = AsyncEventSender(post, batch_size=2, interval=NEVER)
        for e in events(4):
            sender.put(e)
        assert await sender.flush(5) is True
        assert (sender.failed, sender.sent) == (2, 2)
        assert [e.visitor_id for b in delivered for e in b] == ["v2", "v3"]
        sender.put(events(1, start=9)[0])
        assert await sender.flush(5) is True
        assert sender.sent == 3
        await sender.close()

    asyncio.run(main())
