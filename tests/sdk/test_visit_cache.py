"""The client's per-visit decision cache and call coalescing (threads and asyncio).

``visit`` and ``decision_for`` build requests and decisions without a bundle; the client tests
import them too.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from sdk._cache import AsyncCoalescer, Coalescer, VisitCache, visit_key
from sdk.schema import (
    Consent,
    Content,
    DecideRequest,
    Decision,
    Lifecycle,
    Page,
    Reason,
    Signals,
    SlotDecision,
)
from sdk.schema import Context as RequestContext


def visit(
    visitor: str = "v1",
    session: str | None = "s1",
    *,
    slots: Sequence[str] = ("hero",),
    personalization: bool = True,
    storage: bool = True,
    url: str = "https://shop.example.com/",
) -> DecideRequest:
    """A decide request for one visit."""
    return DecideRequest(
        visitor_id=visitor,
        session_id=session,
        consent=Consent(personalization=personalization, storage=storage),
        context=RequestContext(page=Page(url=url)),
        slots=list(slots),
    )


def decision_for(
    request: DecideRequest,
    *,
    slots: Sequence[str] | None = None,
    ttl: int = 1800,
    model_version: str = "test-model",
) -> Decision:
    """A decision for ``request`` with a fresh id; ``slots`` default to the requested ones."""
    wanted = list(slots) if slots is not None else (request.slots or ["hero", "banner"])
    return Decision(
        decision_id=f"d-{uuid.uuid4().hex}",
        model_version=model_version,
        visitor_id=request.visitor_id,
        session_id=request.session_id,
        personalized=request.consent.personalization,
        persona=None,
        segment=None,
        lifecycle=Lifecycle(stage="new", rule="default"),
        offers=[],
        slots={
            s: SlotDecision(
                variant_id=f"{s}-a",
                offer_id=None,
                content=Content(type="text", text=f"{s} for {request.visitor_id}"),
                propensity=0.5,
                reason="test",
            )
            for s in wanted
        },
        signals=Signals(
            device_type="desktop",
            os=None,
            browser=None,
            touch=False,
            referrer_class="direct",
            referrer_source=None,
            search_terms=None,
            country=None,
            local_hour=12,
            local_weekday=2,
        ),
        reasons=[Reason(code="test", message="made by the test")],
        ttl=ttl,
    )


class FakeTimer:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- VisitCache ----------------------------------------------------------------------------


def test_visit_key_is_visitor_session_and_consent() -> None:
    assert visit_key(visit("v1", "s1", personalization=True, storage=False)) == (
        "v1",
        "s1",
        True,
        False,
    )
    assert visit_key(visit("v1", None)) is None


def test_put_then_get_same_visit() -> None:
    cache = VisitCache()
    request = visit()
    decision = decision_for(request)
    assert cache.get(request) is None
    cache.put(request, decision)
    assert cache.get(request) is decision
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)


def test_other_parts_of_the_request_do_not_change_the_visit() -> None:
    cache = VisitCache()
    decision = decision_for(visit())
    cache.put(visit(url="https://shop.example.com/a"), decision)
    assert cache.get(visit(url="https://shop.example.com/b")) is decision


@pytest.mark.parametrize(
    "other",
    [
        visit("v2", "s1"),
        visit("v1", "s2"),
        visit("v1", "s1", personalization=False),
        visit("v1", "s1", storage=False),
    ],
    ids=["visitor", "session", "personalization", "storage"],
)
def test_another_visit_is_a_miss(other: DecideRequest) -> None:
    cache = VisitCache()
    cache.put(visit(), decision_for(visit()))
    assert cache.get(other) is None


def test_requests_without_a_session_are_never_cached() -> None:
    cache = VisitCache()
    request = visit(session=None)
    cache.put(request, decision_for(request))
    assert len(cache) == 0
    assert cache.get(request) is None


def test_cached_decision_answers_only_when_it_covers_the_slots() -> None:
    cache = VisitCache()
    decision = decision_for(visit(), slots=["hero", "banner"])
    cache.put(visit(slots=["hero", "banner"]), decision)
    assert cache.get(visit(slots=["hero"])) is decision
    assert cache.get(visit(slots=["banner", "hero"])) is decision
    assert cache.get(visit(slots=["hero", "recommendation"])) is None
    assert cache.get(visit(slots=["recommendation"])) is None


@pytest.mark.parametrize(
    ("cache_ttl", "decision_ttl", "lifetime"),
    [(300.0, 60, 60.0), (300.0, 1800, 300.0), (30.5, 31, 30.5)],
)
def test_decision_lives_for_the_shorter_ttl(
    cache_ttl: float, decision_ttl: int, lifetime: float
) -> None:
    timer = FakeTimer(100.0)
    cache = VisitCache(ttl=cache_ttl, timer=timer)
    decision = decision_for(visit(), ttl=decision_ttl)
    cache.put(visit(), decision)
    timer.now = 100.0 + lifetime - 0.001
    assert cache.get(visit()) is decision
    timer.now = 100.0 + lifetime
    assert cache.get(visit()) is None
    assert len(cache) == 0


@pytest.mark.parametrize("ttl", [0, -1])
def test_decisions_with_no_ttl_are_not_cached(ttl: int) -> None:
    cache = VisitCache()
    cache.put(visit(), decision_for(visit(), ttl=ttl))
    assert len(cache) == 0
    assert cache.get(visit()) is None


def test_a_newer_decision_replaces_the_visit_entry() -> None:
    cache = VisitCache()
    first, second = decision_for(visit()), decision_for(visit())
    cache.put(visit(), first)
    cache.put(visit(), second)
    assert cache.get(visit()) is second
    assert len(cache) == 1


def test_forget_drops_only_that_visitor() -> None:
    cache = VisitCache()
    for request in (visit("v1", "s1"), visit("v1", "s2"), visit("v2", "s1")):
        cache.put(request, decision_for(request))
    assert cache.forget("v1") == 2
    assert cache.get(visit("v1", "s1")) is None
    assert cache.get(visit("v1", "s2")) is None
    assert cache.get(visit("v2", "s1")) is not None
    assert cache.forget("nobody") == 0
    assert len(cache) == 1


def test_forget_survives_an_entry_expiring_while_it_runs() -> None:
    # A timer that moves on every read: the entry is alive when forget() lists the keys and
    # has expired when it deletes it (with time.monotonic this is a rare but real race).
    ticks = iter(range(100))
    cache = VisitCache(ttl=300.0, timer=lambda: float(next(ticks)))
    request = visit()
    cache.put(request, decision_for(request, ttl=2))  # stored at t=0, expires at t=2
    assert cache.forget("v1") in (0, 1)
    assert cache.get(request) is None


def test_clear_drops_everything() -> None:
    cache = VisitCache()
    cache.put(visit("a"), decision_for(visit("a")))
    cache.put(visit("b"), decision_for(visit("b")))
    cache.clear()
    assert len(cache) == 0


def test_maxsize_bounds_the_cache_least_recently_used_first() -> None:
    cache = VisitCache(maxsize=3)
    for v in "abc":
        cache.put(visit(v), decision_for(visit(v)))
    assert cache.get(visit("a")) is not None  # "b" is now the least recently used
    cache.put(visit("d"), decision_for(visit("d")))
    assert len(cache) == 3
    assert cache.get(visit("b")) is None
    assert all(cache.get(visit(v)) is not None for v in "acd")


def test_cache_is_thread_safe() -> None:
    cache = VisitCache(maxsize=64)
    requests = [visit(f"v{i % 40}", f"s{i % 3}") for i in range(120)]
    decisions = {visit_key(r): decision_for(r) for r in requests}
    start = threading.Barrier(8)

    def hammer(offset: int) -> tuple[int, int]:
        start.wait()
        wrong = gets = 0
        for i in range(1500):
            request = requests[(offset + i) % len(requests)]
            if i % 7 < 3:
                cache.put(request, decisions[visit_key(request)])
            elif i % 101 == 0:
                cache.forget(request.visitor_id)
            else:
                gets += 1
                hit = cache.get(request)
                wrong += hit is not None and hit is not decisions[visit_key(request)]
        return wrong, gets

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked cache would corrupt
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(hammer, range(0, 120, 15)))
    finally:
        sys.setswitchinterval(interval)
    assert sum(wrong for wrong, _ in outcomes) == 0
    assert cache.hits + cache.misses == sum(gets for _, gets in outcomes)  # no lost update
    assert cache.hits > 0
    assert len(cache) <= 64


# --- Coalescer (threads) -------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition()`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.001)  # polling a condition, not waiting for a result


def test_concurrent_identical_calls_run_once() -> None:
    coalescer: Coalescer[object] = Coalescer()
    release = threading.Event()
    calls: list[int] = []
    result = object()

    def call() -> object:
        calls.append(1)
        assert release.wait(5)
        return result

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(coalescer.run, "key", call) for _ in range(8)]
        wait_until(lambda: coalescer.shared == 7)
        release.set()
        results = [f.result(timeout=5) for f in futures]
    assert calls == [1]
    assert all(r is result for r in results)


def test_an_exception_reaches_every_waiter() -> None:
    coalescer: Coalescer[object] = Coalescer()
    release = threading.Event()
    calls: list[int] = []

    def call() -> object:
        calls.append(1)
        assert release.wait(5)
        raise ValueError("server exploded")

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(coalescer.run, "key", call) for _ in range(6)]
        wait_until(lambda: coalescer.shared == 5)
        release.set()
        errors = [f.exception(timeout=5) for f in futures]
    assert calls == [1]
    assert all(isinstance(e, ValueError) and str(e) == "server exploded" for e in errors)
    assert coalescer.run("key", lambda: "again") == "again"  # the key is free afterwards


def test_different_keys_run_independently() -> None:
    coalescer: Coalescer[str] = Coalescer()
    started = {"a": threading.Event(), "b": threading.Event()}

    def call(key: str, other: str) -> str:
        started[key].set()
        assert started[other].wait(5), "the other key's call never started alongside"
        return key

    with ThreadPoolExecutor(max_workers=2) as pool:
        a = pool.submit(coalescer.run, "a", lambda: call("a", "b"))
        b = pool.submit(coalescer.run, "b", lambda: call("b", "a"))
        assert (a.result(timeout=5), b.result(timeout=5)) == ("a", "b")
    assert coalescer.shared == 0


def test_a_finished_call_is_not_reused() -> None:
    coalescer: Coalescer[int] = Coalescer()
    calls: list[int] = []

    def call() -> int:
        calls.append(1)
        return len(calls)

    assert coalescer.run("key", call) == 1
    assert coalescer.run("key", call) == 2
    assert coalescer.shared == 0


def test_reset_forgets_calls_in_flight() -> None:
    # What a forked child inherits: an in-flight call whose thread exists only in the parent.
    coalescer: Coalescer[str] = Coalescer()
    coalescer._inflight["key"] = Future()
    coalescer.reset()
    assert coalescer.run("key", lambda: "fresh") == "fresh"  # did not wait for the orphan


# --- AsyncCoalescer ------------------------------------------------------------------------


async def _until(condition: Any, rounds: int = 10_000) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


def test_async_concurrent_identical_calls_run_once() -> None:
    async def main() -> None:
        coalescer: AsyncCoalescer[object] = AsyncCoalescer()
        gate = asyncio.Event()
        calls: list[int] = []
        result = object()

        async def call() -> object:
            calls.append(1)
            await gate.wait()
            return result

        async def release() -> None:
            await _until(lambda: coalescer.shared == 7)
            gate.set()

        results, _ = await asyncio.gather(
            asyncio.gather(*(coalescer.run("key", call) for _ in range(8))), release()
        )
        assert calls == [1]
        assert all(r is result for r in results)

    asyncio.run(main())


def test_async_exception_reaches_every_waiter() -> None:
    async def main() -> None:
        coalescer: AsyncCoalescer[object] = AsyncCoalescer()
        gate = asyncio.Event()
        calls: list[int] = []

        async def call() -> object:
            calls.append(1)
            await gate.wait()
            raise ValueError("server exploded")

        tasks = [asyncio.create_task(coalescer.run("key", call)) for _ in range(5)]
        await _until(lambda: coalescer.shared == 4)
        gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert calls == [1]
        assert all(isinstance(o, ValueError) for o in outcomes)

        async def again() -> str:
            return "again"

        assert await coalescer.run("key", again) == "again"

    asyncio.run(main())


def test_async_different_keys_and_finished_calls() -> None:
    async def main() -> None:
        coalescer: AsyncCoalescer[str] = AsyncCoalescer()
        started = {"a": asyncio.Event(), "b": asyncio.Event()}
        calls: list[str] = []

        async def call(key: str, other: str) -> str:
            calls.append(key)
            started[key].set()
            await started[other].wait()
            return key

        both = await asyncio.gather(
            coalescer.run("a", lambda: call("a", "b")),
            coalescer.run("b", lambda: call("b", "a")),
        )
        assert list(both) == ["a", "b"]
        started["b"].set()
        assert await coalescer.run("a", lambda: call("a", "b")) == "a"
        assert calls == ["a", "b", "a"]
        assert coalescer.shared == 0

    asyncio.run(main())


def test_async_lone_failure_logs_no_unretrieved_exception() -> None:
    async def main() -> list[dict[str, Any]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        coalescer: AsyncCoalescer[str] = AsyncCoalescer()

        async def call() -> str:
            raise ValueError("alone")

        with pytest.raises(ValueError, match="alone"):
            await coalescer.run("key", call)
        gc.collect()
        return reported

    assert asyncio.run(main()) == []


def test_async_leader_cancelled_does_not_cancel_the_callers_sharing_its_call() -> None:
    # One caller giving up (asyncio.wait_for, a client disconnect) must not cancel the
    # other callers that joined its call: they were not cancelled and still want the result.
    async def main() -> None:
        coalescer: AsyncCoalescer[int] = AsyncCoalescer()
        gate = asyncio.Event()

        async def call() -> int:
            await gate.wait()
            return 42

        leader = asyncio.create_task(coalescer.run("key", call))
        await _until(lambda: "key" in coalescer._inflight)
        follower = asyncio.create_task(coalescer.run("key", call))
        await _until(lambda: coalescer.shared == 1)
        leader.cancel()
        await asyncio.sleep(0)
        gate.set()
        outcomes = await asyncio.gather(leader, follower, return_exceptions=True)
        assert isinstance(outcomes[0], asyncio.CancelledError)
        assert not follower.cancelled()
        assert outcomes[1] == 42

    asyncio.run(main())
