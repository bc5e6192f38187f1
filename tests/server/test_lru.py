"""The server's LRU cache with a time to live: budget, recency, expiry, sizes, and entries the
garbage collector does not track."""

from __future__ import annotations

import gc

import pytest

from server.lru import LruTtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_entries_go_first() -> None:
    cache: LruTtlCache[str, int] = LruTtlCache(3, 60)
    for i, key in enumerate("abc"):
        cache[key] = i
    assert cache.get("a") == 0  # a is now the most recent
    cache["d"] = 3
    assert "b" not in cache and list(cache) == ["c", "a", "d"]
    cache["c"] = 9  # setting refreshes recency too
    cache["e"] = 4
    assert list(cache) == ["d", "c", "e"] and cache.get("c") == 9


def test_entries_expire_ttl_seconds_after_they_were_set() -> None:
    clock = Clock()
    cache: LruTtlCache[str, str] = LruTtlCache(10, 60, timer=clock)
    cache["a"] = "x"
    clock.now += 30
    cache["b"] = "y"
    assert cache.get("a") == "x"  # reading does not extend its life
    clock.now += 31
    assert cache.get("a") is None and "a" not in cache
    assert cache.get("b") == "y"
    clock.now += 30
    assert cache.pop("b") is None  # expired: removed, not returned
    assert len(cache) == 0 and cache.currsize == 0


def test_expire_drops_every_expired_entry_wherever_it_sits() -> None:
    clock = Clock()
    cache: LruTtlCache[str, int] = LruTtlCache(10, 60, timer=clock)
    cache["old"] = 1
    clock.now += 50
    cache["new"] = 2
    cache.get("old")  # the oldest entry is now at the back
    clock.now += 20
    cache.expire()
    assert list(cache) == ["new"]


def test_a_size_budget_counts_what_getsizeof_says() -> None:
    cache: LruTtlCache[str, bytes] = LruTtlCache(100, 60, getsizeof=len)
    cache["a"] = b"x" * 40
    cache["b"] = b"x" * 40
    assert cache.currsize == 80
    cache["c"] = b"x" * 40
    assert list(cache) == ["b", "c"] and cache.currsize == 80
    cache["huge"] = b"x" * 101  # more than the whole budget: not kept, nothing evicted
    assert "huge" not in cache and list(cache) == ["b", "c"]
    cache["b"] = b"x"  # replacing an entry replaces its size
    assert cache.currsize == 41


def test_entries_are_invisible_to_the_garbage_collector() -> None:
    cache: LruTtlCache[str, bytes] = LruTtlCache(10_000, 60)
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for i in range(2000):
            cache[f"v{i}"] = b"{}"
        allocated = gc.get_count()[0] - before
    finally:
        gc.enable()
    # a tuple per entry would count 2,000 towards the next young collection
    assert allocated < 20
    assert not any(gc.is_tracked(item) for item in cache._data.values())


@pytest.mark.parametrize(("maxsize", "ttl"), [(0, 60), (10, 0), (-1, 1)])
def test_a_budget_or_ttl_that_is_not_positive_is_refused(maxsize: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        LruTtlCache(maxsize, ttl)
