"""The per-visit decision cache: encoded decisions, bounded by bytes, invalidated per visitor;
and the stored objects the garbage collector never has to scan."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import pytest

from sdk.schema import Behavior, Consent, DecideRequest
from server.decisions import ENTRY_OVERHEAD, DecisionCache
from server.settings import Settings
from server.stores import MemoryProfileStore, ProfileRecord


def _request(visitor: str, session: str | None = "s1", **consent: bool) -> DecideRequest:
    return DecideRequest(
        visitor_id=visitor,
        session_id=session,
        consent=Consent(**consent) if consent else Consent(personalization=True, storage=True),
    )


def test_a_visit_is_re_served_its_encoded_decision_while_it_covers_the_slots() -> None:
    cache = DecisionCache()
    key = cache.key(_request("v1"), "m-1")
    cache.put(key, ["hero", "banner"], b'{"decisionId":"d1"}')
    assert cache.get(key, ["hero"]) == b'{"decisionId":"d1"}'
    assert cache.get(key, []) == b'{"decisionId":"d1"}'
    assert cache.get(key, ["hero", "footer"]) is None  # a slot it did not decide
    assert (cache.hits, cache.misses) == (2, 1)


def test_keys_separate_sessions_bundles_and_consent_and_skip_sessionless_requests() -> None:
    base = DecisionCache.key(_request("v1"), "m-1")
    assert DecisionCache.key(_request("v1", "s2"), "m-1") != base
    assert DecisionCache.key(_request("v1"), "m-2") != base
    assert DecisionCache.key(_request("v1", personalization=True), "m-1") != base
    assert DecisionCache.key(_request("v1", session=None), "m-1") is None
    cache = DecisionCache()
    cache.put(None, ["hero"], b"{}")
    assert len(cache) == 0 and cache.get(None, []) is None


def test_the_cache_holds_at_most_its_bytes_dropping_the_least_recent() -> None:
    payload = b"x" * 1000
    cache = DecisionCache(max_bytes=3 * (len(payload) + ENTRY_OVERHEAD))
    keys = [DecisionCache.key(_request(f"v{i}"), "m") for i in range(5)]
    for key in keys:
        cache.put(key, ["hero"], payload)
    assert len(cache) == 3
    assert [cache.get(k, []) is not None for k in keys] == [False, False, True, True, True]
    assert cache.get(DecisionCache.key(_request("v9"), "m"), []) is None


def test_erasure_forgets_every_visit_of_a_visitor() -> None:
    cache = DecisionCache()
    for session in ("s1", "s2"):
        cache.put(DecisionCache.key(_request("v1", session), "m"), ["hero"], b"{}")
    cache.put(DecisionCache.key(_request("v2"), "m"), ["hero"], b"{}")
    assert cache.invalidate("v1") == 2
    assert len(cache) == 1
    assert cache.invalidate("v1") == 0


def _counted_by_the_collector(fn: Callable[[int], object], n: int = 2000) -> int:
    """How many objects ``fn`` called ``n`` times leaves counted towards the next young
    collection (allocated and not yet freed containers)."""
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for i in range(n):
            fn(i)
        return gc.get_count()[0] - before
    finally:
        gc.enable()


def test_cached_decisions_add_nothing_for_the_garbage_collector() -> None:
    cache = DecisionCache()
    requests = [_request(f"v{i}") for i in range(2000)]

    def put(i: int) -> None:
        cache.put(DecisionCache.key(requests[i], "m-1"), ["hero", "banner"], b'{"d":1}')

    assert _counted_by_the_collector(put) < 20
    assert len(cache) == 2000
    assert cache.get(DecisionCache.key(requests[7], "m-1"), ["banner"]) == b'{"d":1}'


def test_stored_profiles_add_nothing_for_the_garbage_collector() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    record = ProfileRecord(first_seen=now, last_seen=now, categories=("shoes",))
    assert not gc.is_tracked(record)
    store = MemoryProfileStore(max_visitors=5000, ttl_seconds=3600)
    requests = [
        msgspec.structs.replace(_request(f"v{i}"), behavior=Behavior(categories_viewed=["shoes"]))
        for i in range(2000)
    ]

    def visit(i: int) -> None:
        asyncio.run(store.record_visit(f"v{i}", requests[i], now=now))

    # kept as objects, each record's entry and tuple of categories would count 4,000; a little
    # drift remains from the interpreter's own free lists
    assert _counted_by_the_collector(visit) < 400
    stored = asyncio.run(store.get("v3", now=now))
    assert stored is not None and stored.categories_viewed == ["shoes"]


def test_erasure_of_an_id_no_visitor_can_have_forgets_nothing() -> None:
    cache = DecisionCache()
    cache.put(DecisionCache.key(_request("a", "b"), "m"), ["hero"], b"{}")
    assert cache.invalidate("a b") == 0  # ids cannot hold spaces: "a b" is not visitor "a"
    assert len(cache) == 1


def test_memory_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"TAILOR_DECISION_CACHE_MIB": "8", "TAILOR_MAX_VISITORS": "500", "TAILOR_GC_YOUNG": "2000"}
    )
    assert (settings.decision_cache_mib, settings.max_visitors) == (8.0, 500)
    assert settings.gc_young_threshold == 2000
    defaults = Settings.from_env({})
    assert (defaults.decision_cache_mib, defaults.gc_young_threshold) == (64.0, 10_000)
    with pytest.raises(Exception, match="decision_cache_mib"):
        Settings.from_env({"TAILOR_DECISION_CACHE_MIB": "0"})
    with pytest.raises(Exception, match="gc_young_threshold"):
        Settings.from_env({"TAILOR_GC_YOUNG": "1"})
