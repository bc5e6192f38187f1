"""The embedded profile store: profiles in process memory, bounded and expiring.

:class:`MemoryProfileStore` keeps each :class:`~server.stores.base.ProfileRecord`
msgpack-encoded in a :class:`server.lru.LruTtlCache` behind a lock: bytes, which the garbage
collector neither scans nor counts. Each worker process has its own store.

Must not import model_export or litestar.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec

from sdk.consent import permissions
from sdk.schema import Behavior, DecideRequest, Event
from server.lru import LruTtlCache
from server.stores.base import (
    ProfileRecord,
    VisitorProfile,
    as_utc,
    behavior_at,
    updated_by_events,
    updated_by_visit,
)

__all__ = ["MemoryProfileStore"]

_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(ProfileRecord)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryProfileStore:
    """Profiles in process memory: at most ``max_visitors`` (least recently used evicted
    first), each forgotten ``ttl_seconds`` after its last write. Thread-safe.

    Every worker process has its own store, so with several workers a visitor's profile is
    split between them; use a shared store when running more than one.

    Args:
        max_visitors: how many visitors are kept.
        ttl_seconds: how long a profile lives after its last visit or event.
        clock: timezone-aware current time; it also drives the expiry (inject it in tests).
    """

    def __init__(
        self,
        max_visitors: int = 100_000,
        ttl_seconds: float = 30 * 86_400,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[bytes | None, ProfileRecord | None] = (None, None)
        self._cache: LruTtlCache[str, bytes] = LruTtlCache(
            max_visitors, ttl_seconds, timer=lambda: clock().timestamp()
        )

    def _read(self, visitor_id: str) -> ProfileRecord | None:
        # the caller holds the lock; a decide reads the same record three times in a row
        # (profile, suppressions, visit), so the last record decoded is kept with the bytes it
        # came from: stored bytes are never changed in place, only replaced
        raw = self._cache.get(visitor_id)
        if raw is None:
            return None
        last_raw, last_record = self._last
        if raw is last_raw:
            return last_record
        record = _record_decoder.decode(raw)
        self._last = (raw, record)
        return record

    def _write(self, visitor_id: str, record: ProfileRecord) -> None:
        raw = _record_encoder.encode(record)
        self._cache[visitor_id] = raw
        self._last = (raw, record)

    def __len__(self) -> int:
        with self._lock:
            self._cache.expire()
            return len(self._cache)

    def _now(self, now: datetime | None) -> datetime:
        return as_utc(now if now is not None else self._clock())

    def get(self, visitor_id: str, *, now: datetime | None = None) -> Behavior | None:
        """The stored behaviour, or None."""
        with self._lock:
            record = self._read(visitor_id)
        return None if record is None else behavior_at(record, self._now(now))

    def snapshot(self, visitor_id: str, *, now: datetime | None = None) -> VisitorProfile | None:
        """Everything stored about the visitor, or None."""
        with self._lock:
            record = self._read(visitor_id)
        if record is None:
            return None
        return VisitorProfile(
            visitor_id=visitor_id,
            behavior=behavior_at(record, self._now(now)),
            suppressed_offers=list(record.suppressed),
            dismissed_offers=dict(record.dismissed),
            session_id=record.session_id,
            first_seen=record.first_seen,
            last_seen=record.last_seen,
        )

    def record_visit(self, visitor_id: str, request: DecideRequest, *, now: datetime) -> Behavior:
        """Record the visit; see :meth:`ProfileStore.record_visit`."""
        if not permissions(request.consent).store:
            return Behavior()
        now = as_utc(now)
        with self._lock:
            record = updated_by_visit(self._read(visitor_id), request, now)
            self._write(visitor_id, record)
        return behavior_at(record, now)

    def apply(self, visitor_id: str, events: Sequence[Event], *, now: datetime) -> Behavior:
        """Apply the visitor's events.

        Raises:
            ValueError: an event belongs to another visitor.
        """
        if any(e.visitor_id != visitor_id for e in events):
            raise ValueError(f"events of another visitor given for {visitor_id!r}")
        now = as_utc(now)
        with self._lock:
            record = updated_by_events(self._read(visitor_id), events, now)
            self._write(visitor_id, record)
        return behavior_at(record, now)

    def delete(self, visitor_id: str) -> bool:
        """Forget the visitor."""
        with self._lock:
            return self._cache.pop(visitor_id, None) is not None

    def suppressed(self, visitor_id: str) -> frozenset[str]:
        """Offers the visitor is not interested in."""
        with self._lock:
            record = self._read(visitor_id)
        return frozenset(record.suppressed) if record is not None else frozenset()
