"""Per-visit decision stability: a bounded TTL cache of decisions by visit.

A visitor keeps the same persona, segment and variants for the whole visit: the decision is
cached under (visitor, session, model version, consent) and re-served while the session lasts
(at most the decision's ``ttl``). A new session, new consent or a new bundle make a new key, so
the next visit reflects what the profile store learned from this one (read-your-writes across
visits). Requests without a session id (backend callers) are not cached. The cache
(:class:`server.lru.LruTtlCache`) is not thread-safe, so every access holds a lock.

The cache keeps each decision as its encoded JSON (bytes) with the ids of its slots: a hit is
answered without encoding again, and a hundred thousand cached visits are a hundred thousand
byte strings, which the garbage collector never scans, rather than millions of small objects
that would make every full collection a latency spike.

Must not import model_export.
"""

from __future__ import annotations

import threading

from sdk.schema import DecideRequest
from server.lru import LruTtlCache

__all__ = ["DecisionCache"]

Key = tuple[str, str, str, bool, bool]
#: A cached decision: the ids of its slots and its encoded JSON.
Entry = tuple[tuple[str, ...], bytes]


#: Bytes an entry costs besides its JSON: key tuple, slot ids and the cache's own bookkeeping.
ENTRY_OVERHEAD = 600


def _entry_size(entry: Entry) -> int:
    return len(entry[1]) + ENTRY_OVERHEAD


class DecisionCache:
    """Bounded TTL cache of decisions by visit.

    Args:
        max_bytes: most bytes of encoded decisions remembered, counting each entry's JSON plus
            :data:`ENTRY_OVERHEAD` (least recently used are dropped first).
        ttl: seconds a decision is re-served.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, ttl: float = 1800.0) -> None:
        self._cache: LruTtlCache[Key, Entry] = LruTtlCache(max_bytes, ttl, getsizeof=_entry_size)
        # visitor -> the keys of its visits, as tuples (untracked by the collector, like the
        # keys themselves): a visitor has a handful of sessions at most
        self._by_visitor: dict[str, tuple[Key, ...]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(request: DecideRequest, version: str) -> Key | None:
        """The visit key of a request, or None when it has no session id (not cached)."""
        if request.session_id is None:
            return None
        consent = request.consent
        return (
            request.visitor_id,
            request.session_id,
            version,
            consent.personalization,
            consent.storage,
        )

    def get(self, key: Key | None, slots: list[str]) -> bytes | None:
        """The encoded decision of this visit, if it covers every slot asked for."""
        if key is None:
            return None
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and all(s in entry[0] for s in slots):
                self.hits += 1
                return entry[1]
            self.misses += 1
            return None

    def put(self, key: Key | None, slots: list[str], payload: bytes) -> None:
        """Remember the decision of a visit: the ids of its slots and its encoded JSON."""
        if key is None:
            return
        with self._lock:
            self._cache[key] = (tuple(slots), payload)
            keys = self._by_visitor.get(key[0], ())
            if key not in keys:
                live = tuple(k for k in keys if k in self._cache)  # drop evicted visits
                self._by_visitor[key[0]] = (*live, key)
            if len(self._by_visitor) > 2 * len(self._cache) + 1024:  # drop stale index entries
                cache = self._cache
                index = {
                    v: tuple(k for k in ks if k in cache) for v, ks in self._by_visitor.items()
                }
                self._by_visitor = {v: ks for v, ks in index.items() if ks}

    def invalidate(self, visitor_id: str) -> int:
        """Forget every cached decision of a visitor (erasure); returns how many."""
        with self._lock:
            keys = self._by_visitor.pop(visitor_id, ())
            return sum(self._cache.pop(k, None) is not None for k in keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
