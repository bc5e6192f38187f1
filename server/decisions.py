"""Per-visit decision stability: a bounded TTL cache of decisions by visit.

A visitor keeps the same persona, segment and variants for the whole visit: the decision is
cached under (visitor, session, model version, consent) and re-served while the session lasts
(at most the decision's ``ttl``). A new session, new consent or a new bundle make a new key, so
the next visit reflects what the profile store learned from this one (read-your-writes across
visits). Requests without a session id (backend callers) are not cached. The cache
(:class:`server.lru.LruTtlCache`) is not thread-safe, so every access holds a lock.

The cache keeps each decision as its encoded JSON (bytes) with the ids of its slots: a hit is
answered without encoding again. Nothing it stores is a container to the garbage collector:
the key is a string, the entry a ``gc=False`` struct of a string and bytes, so a hundred thousand
cached visits add nothing to a collection and caching a decision does not count towards the
next one (see :mod:`server.lru`). Erasure finds a visitor's visits by scanning the keys (a few
milliseconds for a full cache; erasure is rare), rather than keeping an index per visitor.

Must not import model_export.
"""

from __future__ import annotations

import threading

import msgspec

from sdk.schema import DecideRequest
from server.lru import LruTtlCache

__all__ = ["DecisionCache"]

#: A visit: ``"{visitor} {session} {consent} {model version}"``. Visitor and session ids are
#: validated to contain no space, so the visitor is everything before the first one.
Key = str


class Entry(msgspec.Struct, frozen=True, gc=False):
    """A cached decision: the ids of its slots (space-separated) and its encoded JSON."""

    slots: str
    payload: bytes


#: Bytes an entry costs besides its JSON: key, slot ids and the cache's own bookkeeping.
ENTRY_OVERHEAD = 600


def _entry_size(entry: Entry) -> int:
    return len(entry.payload) + ENTRY_OVERHEAD


class DecisionCache:
    """Bounded TTL cache of decisions by visit.

    Args:
        max_bytes: most bytes of encoded decisions remembered, counting each entry's JSON plus
            :data:`ENTRY_OVERHEAD` (least recently used are dropped first).
        ttl: seconds a decision is re-served.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, ttl: float = 1800.0) -> None:
        self._cache: LruTtlCache[Key, Entry] = LruTtlCache(max_bytes, ttl, getsizeof=_entry_size)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(request: DecideRequest, version: str) -> Key | None:
        """The visit key of a request, or None when it has no session id (not cached)."""
        if request.session_id is None:
            return None
        consent = request.consent
        flags = f"{consent.personalization:d}{consent.storage:d}"
        return f"{request.visitor_id} {request.session_id} {flags} {version}"

    def get(self, key: Key | None, slots: list[str]) -> bytes | None:
        """The encoded decision of this visit, if it covers every slot asked for."""
        if key is None:
            return None
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and (not slots or set(slots) <= set(entry.slots.split(" "))):
                self.hits += 1
                return entry.payload
            self.misses += 1
            return None

    def put(self, key: Key | None, slots: list[str], payload: bytes) -> None:
        """Remember the decision of a visit: the ids of its slots and its encoded JSON."""
        if key is None:
            return
        with self._lock:
            self._cache[key] = Entry(slots=" ".join(slots), payload=payload)

    def invalidate(self, visitor_id: str) -> int:
        """Forget every cached decision of a visitor (erasure); returns how many."""
        if " " in visitor_id:
            return 0  # not a valid visitor id: no visit of it can be cached
        prefix = visitor_id + " "
        with self._lock:
            keys = [k for k in self._cache if k.startswith(prefix)]
            return sum(self._cache.pop(k, None) is not None for k in keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
