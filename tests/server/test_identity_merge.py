"""Identity merge (issue 16): a visitor identified as a user (a decide with a trusted
``userId``) is linked to the user and its profile merged into the user's, so that the phone and
the laptop of one person, or one browser before and after logging in, are one profile. The
pure merge first, then both stores through the same tests (process memory and a real
``redis-server``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sdk.schema import Behavior, Consent, Context, DecideRequest, Event
from server.stores import MemoryProfileStore, VisitWrite
from server.stores.base import MAX_CATEGORIES, ProfileRecord, merged
from server.stores.redis import RedisProfileStore
from server.stores.redis_conn import RedisState

NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)
STORE = Consent(personalization=True, storage=True)
HOUR = timedelta(hours=1)


def record(**kwargs: Any) -> ProfileRecord:
    return ProfileRecord(**{"first_seen": NOW, "last_seen": NOW, **kwargs})


# --- the pure merge ---------------------------------------------------------------------------


def test_merge_sums_counts_and_keeps_the_later_session() -> None:
    phone = record(
        first_seen=NOW - 48 * HOUR,
        last_seen=NOW - HOUR,
        session_id="p9",
        sessions=3,
        page_views=7,
        purchases=1,
        revenue=20.0,
        first_purchase=NOW - 40 * HOUR,
        last_purchase=NOW - 40 * HOUR,
        cart_items=2.0,
    )
    laptop = record(
        first_seen=NOW - 5 * HOUR,
        last_seen=NOW,
        session_id="l2",
        sessions=2,
        page_views=1,
        purchases=2,
        revenue=35.5,
        first_purchase=NOW - 4 * HOUR,
        last_purchase=NOW - 2 * HOUR,
    )
    for out in (merged(phone, laptop), merged(laptop, phone)):
        assert out is not None
        assert (out.sessions, out.purchases, out.revenue) == (5, 3, 55.5)
        assert (out.session_id, out.page_views) == ("l2", 1)  # the session going on now
        assert out.first_seen == NOW - 48 * HOUR and out.last_seen == NOW
        assert out.first_purchase == NOW - 40 * HOUR and out.last_purchase == NOW - 2 * HOUR
        assert out.cart_items == 2.0  # the later record knows no cart: the earlier one's


def test_merge_keeps_categories_and_suppressions_by_recency_and_sums_dismissals() -> None:
    old = record(
        last_seen=NOW - HOUR,
        categories=("shoes", "bags"),
        suppressed=("o1",),
        dismissed={"o2": 2, "o3": 1},
    )
    new = record(categories=("hats", "shoes"), suppressed=("o4", "o1"), dismissed={"o2": 1})
    out = merged(old, new)
    assert out is not None
    assert out.categories == ("bags", "hats", "shoes")
    assert out.suppressed == ("o4", "o1")
    assert out.dismissed == {"o3": 1, "o2": 3}


def test_merge_stays_bounded_and_with_nothing_on_one_side_is_the_other() -> None:
    many = record(categories=tuple(f"c{i}" for i in range(MAX_CATEGORIES)))
    more = record(last_seen=NOW + HOUR, categories=("new",))
    out = merged(many, more)
    assert out is not None and len(out.categories) == MAX_CATEGORIES
    assert out.categories[-1] == "new" and "c0" not in out.categories
    assert merged(None, many) is many and merged(many, None) is many
    assert merged(None, None) is None


# --- both stores ------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[list[Any]]:
    """Two "workers" of one store: the same store twice in memory, two connections sharing
    one prefix on Redis (what one worker writes, the other reads)."""
    if request.param == "memory":
        store = MemoryProfileStore(clock=lambda: NOW)
        yield [store, store]
        return
    server = request.getfixturevalue("redis_server")
    prefix = f"merge{uuid.uuid4().hex[:8]}"
    pair = [
        RedisProfileStore(RedisState(server.url, prefix=prefix, timeout=2.0), clock=lambda: NOW)
        for _ in range(2)
    ]
    yield pair
    for s in pair:
        await s.state.close()


def visit(visitor: str, session: str, user: str | None = None, *cats: str) -> DecideRequest:
    return DecideRequest(
        visitor_id=visitor,
        session_id=session,
        user_id=user,
        consent=STORE,
        context=Context(),
        behavior=Behavior(categories_viewed=list(cats)),
    )


async def decide(store: Any, request: DecideRequest, now: datetime = NOW) -> bool:
    """One decide's read then write, as the server does; whether its decision was pinned."""
    (read,) = await store.load_visits([(request.visitor_id, None)])
    write = VisitWrite(visitor_id=request.visitor_id, request=request, read=read)
    (pinned,) = await store.commit_visits([write], now=now)
    return bool(pinned)


def sale(visitor: str, value: float) -> Event:
    return Event(type="conversion", visitor_id=visitor, value=value, timestamp=NOW)


@pytest.mark.anyio
async def test_phone_and_laptop_become_one_profile(stores: list[Any]) -> None:
    a, b = stores
    phone, laptop, user = (f"{n}-{uuid.uuid4().hex[:6]}" for n in ("phone", "laptop", "user"))
    for i in range(3):  # the phone: 3 sessions and a purchase, anonymous
        await decide(a, visit(phone, f"p{i}", None, "shoes"), NOW - 10 * HOUR + i * HOUR)
    await a.apply(phone, [sale(phone, 40.0)], now=NOW - 6 * HOUR)
    for i in range(2):  # the laptop: 2 sessions and 2 purchases, anonymous
        await decide(b, visit(laptop, f"l{i}", None, "hats"), NOW - 5 * HOUR + i * HOUR)
    await b.apply(laptop, [sale(laptop, 10.0), sale(laptop, 5.0)], now=NOW - 3 * HOUR)

    # both log in: the first decide of each with the user id links and merges (not pinned)
    assert await decide(a, visit(phone, "p9", user)) is False
    assert await decide(b, visit(laptop, "l9", user), NOW + HOUR) is False
    for store in (a, b):
        for visitor in (phone, laptop):
            profile = await store.snapshot(visitor, now=NOW + HOUR)
            assert profile is not None
            # 3 + 1 + 2 + 1 sessions, every purchase of both devices
            assert profile.behavior.session_count == 7
            assert (profile.behavior.purchases, profile.behavior.revenue) == (3, 55.0)
            assert set(profile.behavior.categories_viewed) == {"shoes", "hats"}
            state = await store.load_visit(visitor, None)
            assert state.user_id == user
    assert set(await a.linked(phone)) == set(await b.linked(laptop)) == {phone, laptop}
    assert (await a.linked(laptop))[0] == laptop

    # afterwards, visits and events through either visitor go to the one profile
    await a.apply(phone, [sale(phone, 1.0)], now=NOW + HOUR)
    assert await decide(b, visit(laptop, "l10", user), NOW + 2 * HOUR) is True
    behavior = await a.get(phone, now=NOW + 2 * HOUR)
    assert behavior is not None
    assert (behavior.session_count, behavior.purchases, behavior.revenue) == (8, 4, 56.0)
    # a later decide without the user id (logged out) still reads the person's profile
    await decide(a, visit(phone, "p10"), NOW + 3 * HOUR)
    assert (await b.get(laptop, now=NOW + 3 * HOUR)).session_count == 9  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_linked_visitor_keeps_its_user(stores: list[Any]) -> None:
    a, b = stores
    vid = f"v-{uuid.uuid4().hex[:6]}"
    first, second = f"u1-{vid}", f"u2-{vid}"
    await decide(a, visit(vid, "s1", first))
    await decide(b, visit(vid, "s2", second))  # another account on the same browser
    assert (await a.load_visit(vid, None)).user_id == first
    assert await a.linked(vid) == (vid,)
    assert (await b.get(vid)).session_count == 2  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_without_storage_consent_nothing_is_linked(stores: list[Any]) -> None:
    a, _ = stores
    vid, user = f"nc-{uuid.uuid4().hex[:6]}", f"user-{uuid.uuid4().hex[:6]}"
    request = DecideRequest(
        visitor_id=vid,
        session_id="s1",
        user_id=user,
        consent=Consent(personalization=True, storage=False),
        context=Context(),
    )
    await decide(a, request)
    assert await a.get(vid) is None
    assert (await a.load_visit(vid, None)).user_id is None
    assert await a.linked(vid) == (vid,)


@pytest.mark.anyio
async def test_erasing_one_linked_visitor_erases_the_person(stores: list[Any]) -> None:
    a, b = stores
    phone, laptop, other = (f"{n}-{uuid.uuid4().hex[:6]}" for n in ("phone", "laptop", "other"))
    user = f"user-{uuid.uuid4().hex[:6]}"
    await decide(a, visit(phone, "p1"))
    await decide(a, visit(phone, "p2", user))
    await decide(b, visit(laptop, "l1", user))
    await decide(b, visit(other, "o1"))  # someone else, untouched
    assert await a.delete(laptop) is True
    for store in (a, b):
        for visitor in (phone, laptop):
            assert await store.get(visitor) is None
            assert (await store.load_visit(visitor, None)).user_id is None
        assert await store.linked(phone) == (phone,)
        assert await store.get(other) is not None
    assert await a.delete(phone) is False
    if isinstance(a, RedisProfileStore):  # not one key of either visitor or the user is left
        keys = await a.state.call(lambda c: c.keys(f"{a.state.prefix}:*"))
        names = b" ".join(keys).decode()
        assert phone not in names and laptop not in names and user not in names
        assert other in names
    # the same user identified again later starts a new profile
    await decide(a, visit(phone, "p3", user))
    assert (await b.get(laptop)) is None
    assert (await b.get(phone)).session_count == 1  # type: ignore[union-attr]
