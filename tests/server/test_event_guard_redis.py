"""What only the Redis event guard does (its shared checks run in ``test_event_guard.py``):
times to live on the keys, one atomic check across clients, and decisions issued while Redis
is down written when it returns; against real redis-server processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sdk.schema import Consent, Context, DecideRequest, Event
from server.stores import PipelineWrite, VisitWrite
from server.stores.guard import DECISION_TTL, ORDER_TTL, MemoryEventGuard
from server.stores.memory import MemoryProfileStore
from server.stores.redis import RedisProfileStore
from server.stores.redis_conn import RedisState, StateUnavailable
from server.stores.redis_guard import CATCH_UP, RedisEventGuard
from tests.redis_server import RedisServer

T = TypeVar("T")


def ev(kind: str = "click", event_id: str = "e1", decision: str = "d1") -> Event:
    return Event(
        type=kind,  # type: ignore[arg-type]
        visitor_id="v1",
        decision_id=decision,
        event_id=event_id,
    )


async def _once_back(call: Callable[[], Awaitable[T]], attempts: int = 20) -> T:
    """``call()``'s answer once Redis answers again: the breaker may still be open for a moment
    after a restart (it lets a trial call through within its reset time)."""
    for _ in range(attempts):
        try:
            return await call()
        except StateUnavailable:
            await asyncio.sleep(0.05)
    pytest.fail("Redis did not come back")


def _state(url: str, prefix: str) -> RedisState:
    return RedisState(url, prefix=prefix, timeout=2.0)


def test_keys_live_a_day_and_orders_thirty_days(redis_server: RedisServer) -> None:
    prefix = f"gttl-{uuid.uuid4().hex}"

    async def body() -> None:
        state = _state(redis_server.url, prefix)
        guard = RedisEventGuard(state)
        try:
            await guard.issue("d1", "v1")
            assert await guard.check_and_record([ev("conversion")]) is None
            assert (await guard.claim_orders(["o-9"]))[0] is True
            client = state.client
            for part in ("gd:d1", "ge:e1", "gc:d1"):
                ttl = await client.pttl(state.visitor_key("v1", part))
                assert DECISION_TTL * 1000 - 60_000 < ttl <= DECISION_TTL * 1000, part
            ttl = await client.pttl(state.key("order", "o-9"))
            assert ORDER_TTL * 1000 - 60_000 < ttl <= ORDER_TTL * 1000
            # everything of the visitor shares one hash tag (one Redis Cluster slot)
            keys = [k.decode() async for k in client.scan_iter(match=f"{prefix}:*")]
            assert sorted(k for k in keys if "{v:v1}" in k) == sorted(
                f"{prefix}:{{v:v1}}:{p}" for p in ("gd:d1", "ge:e1", "gc:d1")
            )
        finally:
            await state.close()

    asyncio.run(body())


def test_two_replicas_checking_one_batch_at_once_pass_it_once(redis_server: RedisServer) -> None:
    prefix = f"gcon-{uuid.uuid4().hex}"

    async def body() -> None:
        states = [_state(redis_server.url, prefix) for _ in range(4)]  # four "workers"
        guards = [RedisEventGuard(s) for s in states]
        try:
            await guards[0].issue("d1", "v1")
            batch = [ev("impression", "i1"), ev("conversion", "c1")]
            results = await asyncio.gather(*(g.check_and_record(batch) for g in guards * 4))
            assert [r is None for r in results].count(True) == 1
            assert {r.kind for r in results if r is not None} == {"replayed-event"}
        finally:
            for s in states:
                await s.close()

    asyncio.run(body())


class _Outage:
    """A redis-server of the test's own that it can kill and start again on the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers = [RedisServer(root).start()]

    def kill(self) -> None:
        self.servers[0].kill()

    def restart(self) -> None:
        self.servers.append(RedisServer(self.root, port=self.servers[0].port).start())


def _through_an_outage(
    tmp_path: Path, prefix: str, body: Callable[[RedisState, _Outage], Awaitable[None]]
) -> None:
    """``body(state, outage)`` on a Redis connection (short deadline, a breaker that lets a
    trial call through at once) to a server the body may kill and restart."""
    outage = _Outage(tmp_path / "redis")
    try:

        async def main() -> None:
            state = RedisState(outage.servers[0].url, prefix=prefix, timeout=0.5)
            state.breaker.reset_after = 0.05  # let the test reconnect at once
            try:
                await body(state, outage)
            finally:
                await state.close()

        asyncio.run(main())
    finally:
        for server in outage.servers:
            server.stop()


def test_decisions_issued_while_redis_is_down_count_when_it_returns(tmp_path: Path) -> None:
    async def body(state: RedisState, outage: _Outage) -> None:
        guard = RedisEventGuard(state)
        outage.kill()
        await guard.issue("d1", "v1")  # never raises: buffered
        assert guard.pending == 1
        with pytest.raises(StateUnavailable):
            await guard.check_and_record([ev()])
        with pytest.raises(StateUnavailable):
            (await guard.claim_orders(["o-1"]))[0]
        outage.restart()
        result = await _once_back(lambda: guard.check_and_record([ev()]))
        assert result is None  # the buffered decision was written first
        assert guard.pending == 0

    _through_an_outage(tmp_path, "gdown", body)


def test_a_backlog_of_issued_decisions_drains_a_bounded_batch_per_call(tmp_path: Path) -> None:
    """After an outage, a decide's call writes its own issued decision and at most CATCH_UP of
    the buffered ones, the oldest first: one short pipeline each, never the whole backlog in a
    call that could run past its deadline and hand everything back. ``flush`` writes the rest,
    CATCH_UP per call, and every decision issued during the outage is then known."""

    async def body(state: RedisState, outage: _Outage) -> None:
        guard = RedisEventGuard(state)

        async def known(*decisions: str) -> list[int]:
            keys = [state.visitor_key("v1", "gd:" + d) for d in decisions]

            async def exists(c: Any) -> list[int]:
                pipe = c.pipeline(transaction=False)
                for key in keys:
                    pipe.exists(key)
                return list(await pipe.execute())

            return await state.call(exists)

        outage.kill()
        backlog = 2 * CATCH_UP + 10
        for i in range(backlog):
            await guard.issue(f"d{i}", "v1")  # never raises: buffered
        assert guard.pending == backlog
        outage.restart()
        await _once_back(lambda: state.call(lambda c: c.ping()))

        await guard.issue("now", "v1")
        assert guard.pending == backlog - CATCH_UP
        first, last = f"d{CATCH_UP - 1}", f"d{CATCH_UP}"
        assert await known("now", "d0", first, last) == [1, 1, 1, 0]

        also = guard.issuing([("also", "v1")])  # the visit write's pipeline: bounded too
        assert guard.pending == backlog - 2 * CATCH_UP
        also.failed()  # that pipeline failed: all of it back, the oldest first
        assert guard.pending == backlog - CATCH_UP + 1

        calls = state.calls
        await guard.flush()
        assert guard.pending == 0 and state.calls == calls + 2  # 267 in two calls
        issued = [f"d{i}" for i in range(backlog)]
        assert await known(*issued, "now", "also") == [1] * (backlog + 2)
        assert guard.pending_dropped == 0

    _through_an_outage(tmp_path, "gbacklog", body)


def test_a_full_buffer_of_issued_decisions_drops_the_oldest(tmp_path: Path) -> None:
    """The buffer is bounded: past ``max_pending``, the oldest decisions issued during the
    outage are dropped and counted; the newest are written when Redis returns."""

    async def body(state: RedisState, outage: _Outage) -> None:
        guard = RedisEventGuard(state, max_pending=5)
        outage.kill()
        for i in range(8):
            await guard.issue(f"d{i}", "v1")
        assert guard.pending == 5 and guard.pending_dropped == 3
        outage.restart()
        await _once_back(lambda: state.call(lambda c: c.ping()))
        await guard.flush()
        keys = [state.visitor_key("v1", f"gd:d{i}") for i in range(8)]
        found = [await state.call(lambda c, k=k: c.exists(k)) for k in keys]
        assert found == [0, 0, 0, 1, 1, 1, 1, 1]

    _through_an_outage(tmp_path, "gfull", body)


def test_a_batch_checked_again_under_its_id_passes_again(redis_server: RedisServer) -> None:
    """A spooled batch whose first check reached Redis but whose answer was lost is not
    refused as its own replay; anyone else replaying it still is."""

    async def body() -> None:
        state = _state(redis_server.url, f"gbid-{uuid.uuid4().hex}")
        guard = RedisEventGuard(state)
        try:
            await guard.issue("d1", "v1")
            batch = [ev("impression", "i1"), ev("conversion", "c1")]
            assert await guard.check_and_record(batch, batch_id="b-1") is None
            assert await guard.check_and_record(batch, batch_id="b-1") is None
            for other in ("b-2", None):
                again = await guard.check_and_record(batch, batch_id=other)
                assert again is not None and again.kind == "replayed-event"
        finally:
            await state.close()

    asyncio.run(body())


def _visit(store: RedisProfileStore) -> Any:
    request = DecideRequest(
        visitor_id="v1",
        context=Context(timezone="Europe/Paris"),
        consent=Consent(personalization=True, storage=True),
    )

    async def read() -> VisitWrite:
        state = await store.load_visit("v1", None)
        return VisitWrite(visitor_id="v1", request=request, read=state)

    return read()


def test_issued_decisions_ride_in_the_visit_write_and_wait_out_an_outage(tmp_path: Path) -> None:
    """What follows a public decide is one call: the visit and the decision issued to its
    visitor in one pipeline; if that call fails the decision waits in the guard's buffer and
    is written first when Redis returns, so the visitor's events still pass."""
    now = datetime.now(UTC)

    async def body(state: RedisState, outage: _Outage) -> None:
        store, guard = RedisProfileStore(state), RedisEventGuard(state)
        write = await _visit(store)
        calls = state.calls
        also = guard.issuing([("d1", "v1")])
        assert isinstance(also, PipelineWrite)
        assert await store.commit_visits([write], now=now, also=also) == [True]
        assert state.calls == calls + 1  # visit and issued decision: one round trip
        assert (await store.get("v1")) is not None
        assert await guard.check_and_record([ev()]) is None  # d1 was issued

        write = await _visit(store)
        outage.kill()
        also = guard.issuing([("d2", "v1")])
        assert guard.pending == 0  # taken into the pipeline
        with pytest.raises(StateUnavailable):
            await store.commit_visits([write], now=now, also=also)
        assert guard.pending == 1  # given back when the call failed
        outage.restart()
        result = await _once_back(lambda: guard.check_and_record([ev("click", "e2", "d2")]))
        assert result is None and guard.pending == 0

    _through_an_outage(tmp_path, "gride", body)


def test_the_memory_guard_records_at_once_and_the_memory_store_sends_no_pipeline() -> None:
    async def body() -> None:
        guard = MemoryEventGuard()
        assert guard.issuing([("d1", "v1")]) is None
        assert await guard.check_and_record([ev()]) is None
        store = MemoryProfileStore()
        write = VisitWrite(
            visitor_id="v1",
            request=DecideRequest(
                visitor_id="v1",
                context=Context(timezone="Europe/Paris"),
                consent=Consent(personalization=True, storage=True),
            ),
            read=await store.load_visit("v1", None),
        )
        also = PipelineWrite(queue=lambda pipe: None, failed=lambda: None)
        with pytest.raises(ValueError, match="no other module"):
            await store.commit_visits([write], now=datetime.now(UTC), also=also)

    asyncio.run(body())
