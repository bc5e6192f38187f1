"""The profile stores, both backends through the same tests (``store`` is parametrized:
process memory and a real ``redis-server``), then what only one of them does: the memory
store's bound and expiry, Redis's pins, safe concurrent writes and idempotent replays."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from sdk.features import merge_behavior
from sdk.schema import Behavior, Consent, Context, DecideRequest, Event
from server.stores import MAX_CATEGORIES, MemoryProfileStore, Pinned, ProfileStore, VisitWrite
from server.stores.redis import RedisProfileStore
from server.stores.redis_conn import RedisState

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"
STORE = Consent(personalization=True, storage=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def redis_store(url: str, clock: Clock, prefix: str | None = None) -> RedisProfileStore:
    """A store on its own connection ("a worker"), keys under a prefix of its test."""
    state = RedisState(url, prefix=prefix or f"t{uuid.uuid4().hex[:8]}", timeout=2.0)
    return RedisProfileStore(state, clock=clock)


@pytest.fixture
async def redis_stores(redis_server: Any, clock: Clock) -> AsyncIterator[list[RedisProfileStore]]:
    """Four stores on four connections sharing one prefix: four workers of two replicas."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    stores = [redis_store(redis_server.url, clock, prefix) for _ in range(4)]
    yield stores
    for s in stores:
        await s.state.close()


async def raw_record(store: Any, visitor_id: str) -> bytes:
    if isinstance(store, MemoryProfileStore):
        return store._cache.get(visitor_id) or b""
    raw: bytes = await store._raw(visitor_id)
    return raw


def visit(session: str | None = "s1", visitor: str = "v1", **kwargs: Any) -> DecideRequest:
    kwargs.setdefault("consent", STORE)
    return DecideRequest(visitor_id=visitor, session_id=session, **kwargs)


def event(type_: str, visitor: str = "v1", **kwargs: Any) -> Event:
    return Event(type=type_, visitor_id=visitor, **kwargs)  # type: ignore[arg-type]


async def test_each_store_satisfies_the_protocol(store: Any) -> None:
    typed: ProfileStore = store
    assert await typed.get("nobody") is None and await typed.suppressed("nobody") == frozenset()


async def test_visits_count_sessions_and_page_views(store: Any, clock: Clock) -> None:
    first = await store.record_visit("v1", visit("s1"), now=clock.now)
    assert first.session_count == 1 and first.page_views == 1
    assert first.purchases == 0 and first.days_since_last_visit == 0
    await store.record_visit("v1", visit("s1"), now=clock.advance(minutes=2))
    # read before the next visit, as the decide handler does: the previous visit was 2 days ago
    clock.advance(days=2)
    before = await store.get("v1")
    assert before is not None
    assert before.session_count == 1 and before.page_views == 2
    assert before.days_since_last_visit == pytest.approx(2.0)
    after = await store.record_visit("v1", visit("s2"), now=clock.now)
    assert after.session_count == 2 and after.page_views == 1  # page views are per session


async def test_without_session_id_a_new_session_starts_after_30_idle_minutes(
    store: Any, clock: Clock
) -> None:
    await store.record_visit("v1", visit(None), now=clock.now)
    b = await store.record_visit("v1", visit(None), now=clock.advance(minutes=29))
    assert b.session_count == 1 and b.page_views == 2
    b = await store.record_visit("v1", visit(None), now=clock.advance(minutes=30))
    assert b.session_count == 2 and b.page_views == 1


async def test_visits_keep_categories_unique_recent_and_bounded(store: Any, clock: Clock) -> None:
    await store.record_visit(
        "v1", visit(behavior=Behavior(categories_viewed=["books", "home"])), now=clock.now
    )
    b = await store.record_visit(
        "v1", visit(behavior=Behavior(categories_viewed=["books", " sports "])), now=clock.now
    )
    assert b.categories_viewed == ["home", "books", "sports"]
    many = Behavior(categories_viewed=[f"c{i}" for i in range(80)])
    b = await store.record_visit("v1", visit(behavior=many), now=clock.now)
    assert len(b.categories_viewed) == MAX_CATEGORIES and b.categories_viewed[-1] == "c79"


async def test_the_profile_read_before_a_visit_merges_without_double_counting(
    store: Any, clock: Clock
) -> None:
    await store.record_visit(
        "v1", visit(behavior=Behavior(categories_viewed=["books"])), now=clock.now
    )
    req = visit(behavior=Behavior(categories_viewed=["home"], page_views=7))
    profile = await store.get("v1")
    merged = merge_behavior(req.behavior, profile)
    assert merged.categories_viewed == ["books", "home"] and merged.page_views == 7


async def test_page_counters_keep_the_latest_value_sent(store: Any, clock: Clock) -> None:
    await store.record_visit(
        "v1", visit(behavior=Behavior(searches=3, cart_items=2, cart_value=40)), now=clock.now
    )
    b = await store.record_visit("v1", visit(behavior=Behavior(cart_items=1)), now=clock.now)
    assert (b.searches, b.cart_items, b.cart_value) == (3, 1, 40)


async def test_no_storage_consent_stores_nothing(store: Any, clock: Clock) -> None:
    for consent in (Consent(), Consent(personalization=True, storage=False)):
        b = await store.record_visit("v1", visit(consent=consent), now=clock.now)
        assert b == Behavior()
    assert await store.get("v1") is None and await raw_record(store, "v1") == b""


async def test_no_ip_or_user_agent_is_stored(store: Any, clock: Clock) -> None:
    req = visit(context=Context(user_agent=UA, timezone="Europe/Paris"))
    await store.record_visit("v1", req, now=clock.now)
    snapshot = await store.snapshot("v1")
    assert snapshot is not None
    dumped = msgspec.json.encode(snapshot).decode() + repr(await raw_record(store, "v1"))
    assert "iPhone" not in dumped and "Mozilla" not in dumped and "userAgent" not in dumped


async def test_conversions_add_purchases_and_revenue_and_empty_the_cart(
    store: Any, clock: Clock
) -> None:
    await store.record_visit(
        "v1", visit(behavior=Behavior(cart_items=2, cart_value=50)), now=clock.now
    )
    b = await store.apply(
        "v1",
        [
            event("conversion", value=30.0, timestamp=NOW - timedelta(days=10)),
            event("conversion", value=20.5, timestamp=datetime(2026, 6, 14, 12, 30)),  # noqa: DTZ001
            event("conversion", timestamp=NOW + timedelta(days=3)),  # future: now
        ],
        now=clock.now,
    )
    assert b.purchases == 3 and b.revenue == pytest.approx(50.5)
    assert b.days_since_first_purchase == pytest.approx(10.0)
    assert b.days_since_last_purchase == 0
    assert (b.cart_items, b.cart_value) == (0, 0)
    later = await store.get("v1", now=NOW + timedelta(days=1))
    assert later is not None and later.days_since_last_purchase == pytest.approx(1.0)


async def test_not_interested_suppresses_and_dismiss_only_counts(store: Any, clock: Clock) -> None:
    await store.record_visit("v1", visit(), now=clock.now)
    await store.apply(
        "v1",
        [
            event("not_interested", offer_id="offer-a"),
            event("dismiss", offer_id="offer-b"),
            event("dismiss", offer_id="offer-b"),
            event("not_interested"),  # no offer: nothing to suppress
            event("impression", offer_id="offer-c"),
            event("click", offer_id="offer-c"),
        ],
        now=clock.now,
    )
    assert await store.suppressed("v1") == frozenset({"offer-a"})
    snapshot = await store.snapshot("v1")
    assert snapshot is not None and snapshot.dismissed_offers == {"offer-b": 2}
    assert snapshot.suppressed_offers == ["offer-a"]


async def test_pageview_events_count_like_visits(store: Any, clock: Clock) -> None:
    await store.record_visit("v1", visit("s1"), now=clock.now)
    b = await store.apply(
        "v1",
        [event("pageview", session_id="s1", properties={"category": "books"})],
        now=clock.now,
    )
    assert b.page_views == 2 and b.categories_viewed == ["books"]


async def test_events_are_visible_to_the_next_read(store: Any, clock: Clock) -> None:
    await store.record_visit("v1", visit(), now=clock.now)
    await store.apply("v1", [event("conversion", value=9.0)], now=clock.now)
    b = await store.get("v1")
    assert b is not None and b.purchases == 1 and b.revenue == 9.0


async def test_events_of_another_visitor_are_refused(store: Any, clock: Clock) -> None:
    with pytest.raises(ValueError, match="another visitor"):
        await store.apply("v1", [event("click", visitor="v2")], now=clock.now)


async def test_naive_now_is_refused(store: Any) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.record_visit("v1", visit(), now=datetime(2026, 6, 15))  # noqa: DTZ001


async def test_memory_profiles_expire_after_the_ttl_since_the_last_write(clock: Clock) -> None:
    store = MemoryProfileStore(ttl_seconds=30 * 86_400, clock=clock)
    await store.record_visit("v1", visit(), now=clock.now)
    await store.record_visit("v2", visit(), now=clock.now)
    clock.advance(days=20)
    await store.record_visit("v2", visit(), now=clock.now)  # a write renews v2
    clock.advance(days=10, seconds=1)
    assert await store.get("v1") is None
    assert await store.get("v2") is not None and len(store) == 1


async def test_the_memory_store_is_bounded(clock: Clock) -> None:
    store = MemoryProfileStore(max_visitors=3, clock=clock)
    for v in ("a", "b", "c"):
        await store.record_visit(v, visit(visitor=v), now=clock.now)
    await store.get("a")  # recently used
    await store.record_visit("d", visit(visitor="d"), now=clock.now)
    assert len(store) == 3
    assert await store.get("b") is None and await store.get("a") is not None


async def test_delete_forgets_profile_and_suppressions(store: Any, clock: Clock) -> None:
    await store.record_visit("v1", visit(), now=clock.now)
    await store.apply("v1", [event("not_interested", offer_id="offer-a")], now=clock.now)
    assert await store.delete("v1") is True
    assert await store.get("v1") is None and await store.suppressed("v1") == frozenset()
    assert await store.delete("v1") is False


def test_concurrent_updates_in_threads_lose_nothing(clock: Clock) -> None:
    store = MemoryProfileStore(clock=clock)
    asyncio.run(store.record_visit("shared", visit(visitor="shared"), now=clock.now))

    async def steps(i: int) -> None:
        conversion = event("conversion", visitor="shared", value=1.0)
        await store.apply("shared", [conversion], now=clock.now)
        await store.record_visit(f"v{i}", visit(f"s{i}", visitor=f"v{i}"), now=clock.now)
        await store.record_visit("shared", visit(f"s{i}", visitor="shared"), now=clock.now)
        await store.get("shared")
        await store.suppressed("shared")

    with ThreadPoolExecutor(max_workers=8) as pool:  # each thread runs its own event loop
        list(pool.map(lambda i: asyncio.run(steps(i)), range(2000)))
    b = asyncio.run(store.get("shared"))
    assert b is not None and b.purchases == 2000 and b.revenue == 2000.0
    assert len(store) == 2001


async def test_interleaved_visitors_each_read_their_own_record(store: Any, clock: Clock) -> None:
    await store.record_visit("v1", visit("s1"), now=clock.now)
    await store.record_visit("v2", visit("s1", visitor="v2"), now=clock.now)
    await store.record_visit("v2", visit("s2", visitor="v2"), now=clock.now)
    await store.apply("v1", [event("not_interested", offer_id="o1")], now=clock.now)
    one, two = await store.get("v1"), await store.get("v2")
    assert one is not None and two is not None
    assert (one.session_count, two.session_count) == (1, 2)
    assert await store.suppressed("v1") == {"o1"} and await store.suppressed("v2") == frozenset()
    assert await store.delete("v1") and await store.get("v1") is None
    assert await store.get("v2") == two


# --- what a decide reads and writes -----------------------------------------------------------


async def test_a_decide_reads_the_record_and_writes_the_visit(store: Any, clock: Clock) -> None:
    await store.record_visit("v1", visit("s1"), now=clock.now)
    read = await store.load_visit("v1", "v1 s1 11s m1")
    assert read.record is not None and read.record.sessions == 1
    unknown = (await store.load_visits([("v1", None), ("nobody", None)]))[1]
    assert unknown.record is None and unknown.pinned is None
    write = VisitWrite(visitor_id="v1", request=visit("s2"), read=read)
    assert await store.commit_visits([write], now=clock.now) == [True]
    after = await store.get("v1")
    assert after is not None and after.session_count == 2


async def test_the_pin_of_a_visit_is_read_back_by_any_worker(
    redis_stores: list[RedisProfileStore], clock: Clock
) -> None:
    a, b = redis_stores[0], redis_stores[3]
    read = await a.load_visit("v1", "v1 s1 11s m1")
    pin = Pinned(visit="v1 s1 11s m1", slots="hero banner", payload=b'{"decisionId":"d1"}')
    write = VisitWrite(visitor_id="v1", request=visit("s1"), read=read, pin=pin)
    assert await a.commit_visits([write], now=clock.now) == [True]
    again = await b.load_visit("v1", "v1 s1 11s m1")
    assert again.pinned == pin and again.pinned.covers("v1 s1 11s m1", ["hero"])
    assert not again.pinned.covers("v1 s1 11s m1", ["hero", "footer"])
    # another session, consent, key kind or model version is another visit
    assert (await b.load_visit("v1", "v1 s2 11s m1")).pinned is None
    assert (await b.load_visit("v1", "v1 s1 11p m1")).pinned is None


async def test_a_visit_decided_on_a_changed_profile_is_recorded_but_not_pinned(
    redis_stores: list[RedisProfileStore], clock: Clock
) -> None:
    a, b = redis_stores[0], redis_stores[1]
    await a.record_visit("v1", visit("s1"), now=clock.now)
    read = await a.load_visit("v1", "v1 s2 11s m1")
    # meanwhile another replica applies a conversion and a "not interested"
    await b.apply(
        "v1",
        [event("conversion", value=5.0), event("not_interested", offer_id="o1")],
        now=clock.now,
    )
    pin = Pinned(visit="v1 s2 11s m1", slots="hero", payload=b"{}")
    write = VisitWrite(visitor_id="v1", request=visit("s2"), read=read, pin=pin)
    assert await a.commit_visits([write], now=clock.now) == [False]
    stored = await b.snapshot("v1")
    assert stored is not None and stored.behavior.session_count == 2
    assert stored.behavior.purchases == 1 and stored.suppressed_offers == ["o1"]
    assert (await b.load_visit("v1", "v1 s2 11s m1")).pinned is None
    assert a.conflicts == 1


async def test_an_erasure_wins_over_a_visit_in_flight(
    redis_stores: list[RedisProfileStore], clock: Clock
) -> None:
    a, b = redis_stores[0], redis_stores[1]
    await a.record_visit("v1", visit("s1"), now=clock.now)
    read = await a.load_visit("v1", None)
    assert await b.delete("v1") is True
    write = VisitWrite(visitor_id="v1", request=visit("s2"), read=read)
    assert await a.commit_visits([write], now=clock.now) == [False]
    assert await b.get("v1") is None


async def test_concurrent_workers_lose_no_update(
    redis_stores: list[RedisProfileStore], clock: Clock
) -> None:
    """Four connections (workers) update one visitor at once, 30 conversions and 30 visits in
    flight together (far more than one visitor's browser and backend make); every one is
    counted exactly once."""
    await redis_stores[0].record_visit("shared", visit("s0", visitor="shared"), now=clock.now)

    async def convert(i: int) -> None:
        store = redis_stores[i % 4]
        await store.apply(
            "shared", [event("conversion", visitor="shared", value=1.0)], now=clock.now
        )

    async def revisit(i: int) -> None:
        store = redis_stores[(i + 1) % 4]
        read = await store.load_visit("shared", None)
        write = VisitWrite(
            visitor_id="shared", request=visit(f"s{i + 1}", visitor="shared"), read=read
        )
        await store.commit_visits([write], now=clock.now)

    await asyncio.gather(*(f(i) for i in range(30) for f in (convert, revisit)))
    b = await redis_stores[2].get("shared")
    assert b is not None and b.purchases == 30 and b.revenue == 30.0
    assert b.session_count == 31
    assert sum(s.conflicts for s in redis_stores) > 0  # they did collide


async def test_an_update_applied_again_with_its_id_counts_once(
    redis_stores: list[RedisProfileStore], clock: Clock
) -> None:
    a, b = redis_stores[0], redis_stores[1]
    await a.record_visit("v1", visit(), now=clock.now)
    sale = [event("conversion", value=7.0)]
    await a.apply("v1", sale, now=clock.now, create=False, apply_id="u1")
    again = await b.apply("v1", sale, now=clock.now, create=False, apply_id="u1")
    assert again is not None and again.purchases == 1
    other = await b.apply("v1", sale, now=clock.now, create=False, apply_id="u2")
    assert other is not None and other.purchases == 2 and other.revenue == 14.0


async def test_events_of_an_unknown_visitor_create_nothing_unless_asked(
    store: Any, clock: Clock
) -> None:
    sale = [event("conversion", value=7.0)]
    assert await store.apply("v1", sale, now=clock.now, create=False) is None
    assert await store.get("v1") is None
    created = await store.apply("v1", sale, now=clock.now)
    assert created is not None and created.purchases == 1


async def test_a_decisive_event_unpins_and_an_erasure_removes_every_key(
    redis_stores: list[RedisProfileStore], clock: Clock
) -> None:
    a = redis_stores[0]
    read = await a.load_visit("v1", "k")
    pin = Pinned(visit="k", slots="hero", payload=b"{}")
    await a.commit_visits(
        [VisitWrite(visitor_id="v1", request=visit(), read=read, pin=pin)], now=clock.now
    )
    await a.apply("v1", [event("click", offer_id="o1")], now=clock.now)
    assert (await a.load_visit("v1", "k")).pinned == pin  # a click decides nothing
    await a.apply("v1", [event("not_interested", offer_id="o1")], now=clock.now, apply_id="x")
    assert (await a.load_visit("v1", "k")).pinned is None
    keys = [a.state.visitor_key("v1", part) for part in ("p", "d", "b")]
    client = a.state.client
    assert await client.exists(*keys) == 2  # the profile and the applied update ids
    assert await a.delete("v1") is True
    assert await client.exists(*keys) == 0
    assert all("{v:v1}" in k for k in keys)  # one Redis Cluster slot
