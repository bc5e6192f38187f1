"""Sticky experiment arms in both profile stores (issue 16): read in the same call as the
profile, written in the same call as the visit, living as long as the profile and erased with
it. The Redis store is exercised against a real ``redis-server``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sdk.schema import Consent
from server.stores import MemoryProfileStore, VisitWrite
from server.stores.redis import RedisProfileStore
from tests.server.test_stores import Clock, event, redis_store, visit

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def workers(redis_server: Any, clock: Clock) -> AsyncIterator[list[RedisProfileStore]]:
    """Two stores on two connections sharing one prefix: two workers."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    stores = [redis_store(redis_server.url, clock, prefix) for _ in range(2)]
    yield stores
    for s in stores:
        await s.state.close()


async def _commit(store: Any, clock: Clock, arms: dict[str, str], vid: str = "v1") -> list[bool]:
    read = await store.load_visit(vid, None, arms=True)
    write = VisitWrite(visitor_id=vid, request=visit("s1", visitor=vid), read=read, arms=arms)
    result: list[bool] = await store.commit_visits([write], now=clock.now)
    return result


async def test_arms_are_read_only_when_asked_and_written_with_the_visit(
    store: Any, clock: Clock
) -> None:
    assert (await store.load_visit("v1", None)).arms is None  # not read: unknown, not empty
    assert (await store.load_visit("v1", None, arms=True)).arms == {}
    assert await _commit(store, clock, {"hero:1": "guide"}) == [True]
    read = await store.load_visit("v1", None, arms=True)
    assert read.arms == {"hero:1": "guide"} and read.record is not None
    assert read.record.sessions == 1
    await _commit(store, clock, {"banner:2": "b"})  # a second exposure adds a field
    await _commit(store, clock, {})  # a visit without new exposures keeps them
    both = {"hero:1": "guide", "banner:2": "b"}
    assert (await store.load_visit("v1", None, arms=True)).arms == both
    # a batch reads every visitor's arms in order, in one call
    await _commit(store, clock, {"hero:1": "generic"}, vid="v2")
    loaded = await store.load_visits([("v2", None), ("v1", None), ("v3", None)], arms=True)
    assert [s.arms for s in loaded] == [{"hero:1": "generic"}, both, {}]


async def test_erasure_forgets_the_arms(store: Any, clock: Clock) -> None:
    await _commit(store, clock, {"hero:1": "guide"})
    assert await store.delete("v1") is True
    read = await store.load_visit("v1", None, arms=True)
    assert read.record is None and read.arms == {}


async def test_without_storage_consent_no_arm_is_stored(store: Any, clock: Clock) -> None:
    request = visit("s1", consent=Consent(personalization=True))
    read = await store.load_visit("v1", None, arms=True)
    write = VisitWrite(visitor_id="v1", request=request, read=read, arms={"hero:1": "guide"})
    await store.commit_visits([write], now=clock.now)
    assert (await store.load_visit("v1", None, arms=True)).arms == {}


async def test_memory_arms_live_as_long_as_the_profile(clock: Clock) -> None:
    store = MemoryProfileStore(ttl_seconds=30 * 86_400, clock=clock)
    await _commit(store, clock, {"hero:1": "guide"})
    clock.advance(days=20)
    await store.record_visit("v1", visit("s2"), now=clock.now)  # renews the profile and arms
    clock.advance(days=20)
    assert (await store.load_visit("v1", None, arms=True)).arms == {"hero:1": "guide"}
    clock.advance(days=31)
    read = await store.load_visit("v1", None, arms=True)
    assert read.record is None and read.arms == {}


async def test_redis_arms_share_the_visitor_slot_and_the_profile_ttl(
    workers: list[RedisProfileStore], clock: Clock
) -> None:
    a, b = workers
    await _commit(a, clock, {"hero:1": "guide"})
    key = a.state.visitor_key("v1", "a")
    assert "{v:v1}" in key  # one Redis Cluster slot with the profile
    ttl = await a.state.call(lambda c: c.pttl(key))
    assert 30 * 86_400_000 - 60_000 < ttl <= 30 * 86_400_000
    await a.state.call(lambda c: c.pexpire(key, 5_000))
    await b.apply("v1", [event("dismiss", offer_id="o1")], now=clock.now)  # any profile write
    renewed = await a.state.call(lambda c: c.pttl(key))
    assert renewed > 86_400_000


async def test_redis_arms_follow_a_retried_write_but_never_revive_an_erasure(
    workers: list[RedisProfileStore], clock: Clock
) -> None:
    a, b = workers
    await a.record_visit("v1", visit("s0"), now=clock.now)
    read = await a.load_visit("v1", None, arms=True)
    await b.record_visit("v1", visit("s1"), now=clock.now)  # changes the record underneath
    write = VisitWrite(visitor_id="v1", request=visit("s2"), read=read, arms={"hero:1": "guide"})
    assert await a.commit_visits([write], now=clock.now) == [False]  # recorded on the new one
    assert (await b.load_visit("v1", None, arms=True)).arms == {"hero:1": "guide"}
    read = await a.load_visit("v1", None, arms=True)
    assert await b.delete("v1") is True
    write = VisitWrite(visitor_id="v1", request=visit("s3"), read=read, arms={"x:1": "a"})
    assert await a.commit_visits([write], now=clock.now) == [False]
    key = a.state.visitor_key("v1", "a")
    assert await a.state.call(lambda c: c.exists(key)) == 0


async def test_redis_reads_arms_in_one_call_even_after_a_script_flush(
    workers: list[RedisProfileStore], clock: Clock
) -> None:
    a, _ = workers
    await _commit(a, clock, {"hero:1": "guide"})
    await _commit(a, clock, {"hero:1": "guide"}, vid="v2")
    await a.state.call(lambda c: c.script_flush())  # as after a Redis restart
    calls = 0
    real = a.state.call

    async def counted(fn: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(fn)

    a.state.call = counted  # type: ignore[method-assign]
    one = await a.load_visit("v1", None, arms=True)
    batch = await a.load_visits([("v1", None), ("v2", None)], arms=True)
    assert calls == 2  # one call per decide, one per batch (the script reloaded inside)
    assert one.arms == {"hero:1": "guide"} and [s.arms for s in batch] == [one.arms] * 2
    assert one.record is not None and one.version is not None
