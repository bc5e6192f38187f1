"""Per-visit decision stability: a bounded TTL cache of encoded decisions keyed by visitor,
session, model version, consent and the kind of key that asked, so a visitor keeps the same
persona and variants for the whole visit (a public key's decisions carry a visitor token and
no private scores: they are never re-served to a secret key, nor the other way round).
Requests without a session id are not cached; every access holds a lock; entries are
``gc=False`` structs the garbage collector never scans.

With a shared store this cache is each worker's small first level in front of the decision
pinned in Redis (:class:`server.stores.base.Pinned`): it is filled only once a visit's pin is
written, and every worker drops a visitor's entries when an erasure or a decisive event is
published on the ``invalidate`` channel (the whole cache after a reconnection, since messages
sent meanwhile were missed). An entry may so be served stale only for the time a published
invalidation takes to arrive (milliseconds).

Must not import model_export.
"""

from __future__ import annotations

import threading

import msgspec

from sdk.schema import DecideRequest
from server.lru import LruTtlCache

__all__ = ["DecisionCache"]

#: A visit: ``"{visitor} {session} {consent}{p|s} {model version}"`` (``p``: a public key).
#: Visitor and session ids are validated to contain no space, so the visitor is everything
#: before the first one.
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
        self.ttl = ttl
        self._cache: LruTtlCache[Key, Entry] = LruTtlCache(max_bytes, ttl, getsizeof=_entry_size)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(request: DecideRequest, version: str, *, public: bool = False) -> Key | None:
        """The visit key of a request, or None when it has no session id (not cached);
        ``public``: asked with a public key (after its identity checks)."""
        if request.session_id is None:
            return None
        consent = request.consent
        flags = f"{consent.personalization:d}{consent.storage:d}{'p' if public else 's'}"
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

    def clear(self) -> None:
        """Forget every cached decision (invalidations may have been missed)."""
        with self._lock:
            old = self._cache
            self._cache = LruTtlCache(old.maxsize, old.ttl, getsizeof=_entry_size)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
