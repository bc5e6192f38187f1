from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from sdk.features import merge_behavior
from sdk.schema import Behavior, Consent, Context, DecideRequest, Event
from server.stores import MAX_CATEGORIES, MemoryProfileStore, ProfileStore

NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"
STORE = Consent(personalization=True, storage=True)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryProfileStore:
    return MemoryProfileStore(clock=clock)


def visit(session: str | None = "s1", visitor: str = "v1", **kwargs: Any) -> DecideRequest:
    kwargs.setdefault("consent", STORE)
    return DecideRequest(visitor_id=visitor, session_id=session, **kwargs)


def event(type_: str, visitor: str = "v1", **kwargs: Any) -> Event:
    return Event(type=type_, visitor_id=visitor, **kwargs)  # type: ignore[arg-type]


def test_memory_store_satisfies_the_protocol(store: MemoryProfileStore) -> None:
    typed: ProfileStore = store
    assert typed.get("nobody") is None and typed.suppressed("nobody") == frozenset()


def test_visits_count_sessions_and_page_views(store: MemoryProfileStore, clock: Clock) -> None:
    first = store.record_visit("v1", visit("s1"), now=clock.now)
    assert first.session_count == 1 and first.page_views == 1
    assert first.purchases == 0 and first.days_since_last_visit == 0
    store.record_visit("v1", visit("s1"), now=clock.advance(minutes=2))
    # read before the next visit, as the decide handler does: the previous visit was 2 days ago
    clock.advance(days=2)
    before = store.get("v1")
    assert before is not None
    assert before.session_count == 1 and before.page_views == 2
    assert before.days_since_last_visit == pytest.approx(2.0)
    after = store.record_visit("v1", visit("s2"), now=clock.now)
    assert after.session_count == 2 and after.page_views == 1  # page views are per session


def test_without_session_id_a_new_session_starts_after_30_idle_minutes(
    store: MemoryProfileStore, clock: Clock
) -> None:
    store.record_visit("v1", visit(None), now=clock.now)
    b = store.record_visit("v1", visit(None), now=clock.advance(minutes=29))
    assert b.session_count == 1 and b.page_views == 2
    b = store.record_visit("v1", visit(None), now=clock.advance(minutes=30))
    assert b.session_count == 2 and b.page_views == 1


def test_visits_keep_categories_unique_recent_and_bounded(
    store: MemoryProfileStore, clock: Clock
) -> None:
    store.record_visit(
        "v1", visit(behavior=Behavior(categories_viewed=["books", "home"])), now=clock.now
    )
    b = store.record_visit(
        "v1", visit(behavior=Behavior(categories_viewed=["books", " sports "])), now=clock.now
    )
    assert b.categories_viewed == ["home", "books", "sports"]
    many = Behavior(categories_viewed=[f"c{i}" for i in range(80)])
    b = store.record_visit("v1", visit(behavior=many), now=clock.now)
    assert len(b.categories_viewed) == MAX_CATEGORIES and b.categories_viewed[-1] == "c79"


def test_the_profile_read_before_a_visit_merges_without_double_counting(
    store: MemoryProfileStore, clock: Clock
) -> None:
    store.record_visit("v1", visit(behavior=Behavior(categories_viewed=["books"])), now=clock.now)
    req = visit(behavior=Behavior(categories_viewed=["home"], page_views=7))
    profile = store.get("v1")
    merged = merge_behavior(req.behavior, profile)
    assert merged.categories_viewed == ["books", "home"] and merged.page_views == 7


def test_page_counters_keep_the_latest_value_sent(store: MemoryProfileStore, clock: Clock) -> None:
    store.record_visit(
        "v1", visit(behavior=Behavior(searches=3, cart_items=2, cart_value=40)), now=clock.now
    )
    b = store.record_visit("v1", visit(behavior=Behavior(cart_items=1)), now=clock.now)
    assert (b.searches, b.cart_items, b.cart_value) == (3, 1, 40)


def test_no_storage_consent_stores_nothing(store: MemoryProfileStore, clock: Clock) -> None:
    for consent in (Consent(), Consent(personalization=True, storage=False)):
        b = store.record_visit("v1", visit(consent=consent), now=clock.now)
        assert b == Behavior()
    assert store.get("v1") is None and len(store) == 0


def test_no_ip_or_user_agent_is_stored(store: MemoryProfileStore, clock: Clock) -> None:
    req = visit(context=Context(user_agent=UA, timezone="Europe/Paris"))
    store.record_visit("v1", req, now=clock.now)
    snapshot = store.snapshot("v1")
    assert snapshot is not None
    dumped = msgspec.json.encode(snapshot).decode() + repr(store._cache.get("v1"))
    assert "iPhone" not in dumped and "Mozilla" not in dumped and "userAgent" not in dumped


def test_conversions_add_purchases_and_revenue_and_empty_the_cart(
    store: MemoryProfileStore, clock: Clock
) -> None:
    store.record_visit("v1", visit(behavior=Behavior(cart_items=2, cart_value=50)), now=clock.now)
    b = store.apply(
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
    later = store.get("v1", now=NOW + timedelta(days=1))
    assert later is not None and later.days_since_last_purchase == pytest.approx(1.0)


def test_not_interested_suppresses_and_dismiss_only_counts(
    store: MemoryProfileStore, clock: Clock
) -> None:
    store.record_visit("v1", visit(), now=clock.now)
    store.apply(
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
    assert store.suppressed("v1") == frozenset({"offer-a"})
    snapshot = store.snapshot("v1")
    assert snapshot is not None and snapshot.dismissed_offers == {"offer-b": 2}
    assert snapshot.suppressed_offers == ["offer-a"]


def test_pageview_events_count_like_visits(store: MemoryProfileStore, clock: Clock) -> None:
    store.record_visit("v1", visit("s1"), now=clock.now)
    b = store.apply(
        "v1",
        [event("pageview", session_id="s1", properties={"category": "books"})],
        now=clock.now,
    )
    assert b.page_views == 2 and b.categories_viewed == ["books"]


def test_events_are_visible_to_the_next_read(store: MemoryProfileStore, clock: Clock) -> None:
    store.record_visit("v1", visit(), now=clock.now)
    store.apply("v1", [event("conversion", value=9.0)], now=clock.now)
    b = store.get("v1")
    assert b is not None and b.purchases == 1 and b.revenue == 9.0


def test_events_of_another_visitor_are_refused(store: MemoryProfileStore, clock: Clock) -> None:
    with pytest.raises(ValueError, match="another visitor"):
        store.apply("v1", [event("click", visitor="v2")], now=clock.now)


def test_naive_now_is_refused(store: MemoryProfileStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_visit("v1", visit(), now=datetime(2026, 6, 15))  # noqa: DTZ001


def test_profiles_expire_after_the_ttl_since_the_last_write(clock: Clock) -> None:
    store = MemoryProfileStore(ttl_seconds=30 * 86_400, clock=clock)
    store.record_visit("v1", visit(), now=clock.now)
    store.record_visit("v2", visit(), now=clock.now)
    clock.advance(days=20)
    store.record_visit("v2", visit(), now=clock.now)  # a write renews v2
    clock.advance(days=10, seconds=1)
    assert store.get("v1") is None
    assert store.get("v2") is not None and len(store) == 1


def test_the_store_is_bounded(clock: Clock) -> None:
    store = MemoryProfileStore(max_visitors=3, clock=clock)
    for v in ("a", "b", "c"):
        store.record_visit(v, visit(visitor=v), now=clock.now)
    store.get("a")  # recently used
    store.record_visit("d", visit(visitor="d"), now=clock.now)
    assert len(store) == 3
    assert store.get("b") is None and store.get("a") is not None


def test_delete_forgets_profile_and_suppressions(store: MemoryProfileStore, clock: Clock) -> None:
    store.record_visit("v1", visit(), now=clock.now)
    store.apply("v1", [event("not_interested", offer_id="offer-a")], now=clock.now)
    assert store.delete("v1") is True
    assert store.get("v1") is None and store.suppressed("v1") == frozenset()
    assert store.delete("v1") is False


def test_concurrent_updates_lose_nothing(store: MemoryProfileStore, clock: Clock) -> None:
    store.record_visit("shared", visit(visitor="shared"), now=clock.now)

    def work(i: int) -> None:
        store.apply("shared", [event("conversion", visitor="shared", value=1.0)], now=clock.now)
        store.record_visit(f"v{i}", visit(f"s{i}", visitor=f"v{i}"), now=clock.now)
        store.record_visit("shared", visit(f"s{i}", visitor="shared"), now=clock.now)
        store.get("shared")
        store.suppressed("shared")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(2000)))
    b = store.get("shared")
    assert b is not None and b.purchases == 2000 and b.revenue == 2000.0
    assert len(store) == 2001


def test_interleaved_visitors_each_read_their_own_record(
    store: MemoryProfileStore, clock: Clock
) -> None:
    store.record_visit("v1", visit("s1"), now=clock.now)
    store.record_visit("v2", visit("s1", visitor="v2"), now=clock.now)
    store.record_visit("v2", visit("s2", visitor="v2"), now=clock.now)
    store.apply("v1", [event("not_interested", offer_id="o1")], now=clock.now)
    one, two = store.get("v1"), store.get("v2")
    assert one is not None and two is not None
    assert (one.session_count, two.session_count) == (1, 2)
    assert store.suppressed("v1") == {"o1"} and store.suppressed("v2") == frozenset()
    assert store.delete("v1") and store.get("v1") is None
    assert store.get("v2") == two
