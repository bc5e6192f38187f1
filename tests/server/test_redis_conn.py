"""The connection every Redis-backed module goes through (``server/stores/redis_conn.py``):
its deadline cancels a call, and a cancelled call never hands its late answer to the next
one; against a real redis-server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from server.stores import redis_conn
from server.stores.redis_conn import DECIDE_READ, RedisState, StateUnavailable, lost
from tests.redis_server import RedisServer

#: Keeps Redis busy for about 0.3 s, then answers "done".
BUSY_LUA = """
local t = redis.call('TIME')
local start = tonumber(t[1]) + tonumber(t[2]) / 1e6
repeat t = redis.call('TIME') until tonumber(t[1]) + tonumber(t[2]) / 1e6 - start > 0.3
return 'done'
"""


def test_a_call_past_its_deadline_fails_and_the_next_call_gets_its_own_answer(
    redis_server: RedisServer,
) -> None:
    async def body() -> None:
        state = RedisState(redis_server.url, prefix=f"c{uuid.uuid4().hex[:8]}", timeout=0.1)
        try:
            await state.call(lambda c: c.set("k", b"mine"))
            assert state.breaker.state == "closed"
            # a script busy past the deadline: the call is cancelled
            with pytest.raises(StateUnavailable, match="TimeoutError"):
                await state.call(lambda c: c.eval(BUSY_LUA, 0))
            assert state.failures == 1 and state.last_error == "TimeoutError"
            # another connection waits until the script has ended (Redis runs one at a time)
            assert await asyncio.to_thread(redis_server.command, "PING") == b"+PONG\r\n"
            # the late "done" of the cancelled call is never the answer of a later call
            for _ in range(5):
                assert await state.call(lambda c: c.get("k")) == b"mine"
        finally:
            await state.close()

    asyncio.run(body())


def test_the_reads_of_a_decide_are_counted_apart(redis_server: RedisServer) -> None:
    async def body() -> None:
        state = RedisState(redis_server.url, prefix=f"c{uuid.uuid4().hex[:8]}", timeout=1.0)
        try:
            await state.call(lambda c: c.get("a"))
            token = DECIDE_READ.set(True)
            try:
                await asyncio.gather(
                    state.call(lambda c: c.get("b")), state.call(lambda c: c.get("c"))
                )
            finally:
                DECIDE_READ.reset(token)
            await state.call(lambda c: c.get("d"))
            assert (state.calls, state.read_calls) == (4, 2)
        finally:
            await state.close()

    asyncio.run(body())


def test_a_lost_write_waits_a_random_time_that_grows_with_its_attempts_up_to_a_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writers that keep colliding spread out ("full jitter"), so none loses every attempt."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(redis_conn.asyncio, "sleep", sleep)

    async def body() -> None:
        for attempt in (0, 3, 20):
            for _ in range(200):
                await lost(attempt)

    asyncio.run(body())
    first, fourth, late = waits[:200], waits[200:400], waits[400:]
    assert all(0.0 <= w <= redis_conn.BACKOFF_BASE for w in first)
    assert all(0.0 <= w <= redis_conn.BACKOFF_BASE * 8 for w in fourth)
    assert all(0.0 <= w <= redis_conn.BACKOFF_CAP for w in late)
    assert max(late) > redis_conn.BACKOFF_CAP / 2  # the cap, not the base, bounds it
    assert max(fourth) > redis_conn.BACKOFF_BASE  # it grew
    assert len(set(first)) == 200  # random, not lockstep
