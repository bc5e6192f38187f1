"""The embedded profile store: profiles in process memory, bounded and expiring.

:class:`MemoryProfileStore` keeps each :class:`~server.stores.base.ProfileRecord`
msgpack-encoded in a :class:`server.lru.LruTtlCache` behind a lock: bytes, which the garbage
collector neither scans nor counts; a visitor's sticky experiment arms, when there are any,
sit beside it in a second cache of the same bounds, refreshed by every write of the profile.
A visitor identified as a user (a decide with a trusted ``userId``) is linked to the user: its
record is merged into the user's (:func:`~server.stores.base.merged`), and from then on its
reads and writes go to the user's record, shared by every visitor linked to the user.
Each worker process has its own store.

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
    History,
    PipelineWrite,
    ProfileRecord,
    Pushed,
    VisitorProfile,
    VisitState,
    VisitWrite,
    as_utc,
    behavior_at,
    merged,
    snapshot_of,
    updated_by_events,
    updated_by_visit,
    with_history,
)

__all__ = ["MemoryProfileStore"]

_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(ProfileRecord)
_arms_decoder = msgspec.msgpack.Decoder(dict[str, str])
_UNKNOWN = VisitState()
_NO_ARMS: dict[str, str] = {}


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryProfileStore:
    """Profiles in process memory: at most ``max_visitors`` (least recently used evicted
    first), each forgotten ``ttl_seconds`` after its last write. Thread-safe; its coroutines
    never suspend.

    Every worker process has its own store, so with several workers a visitor's profile is
    split between them; use a shared store when running more than one.

    Args:
        backend: how ``/readyz`` names it: ``memory``, or ``per-worker`` when several workers
            each keep their own (``TAILOR_STATE=per-worker``).
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
        backend: str = "memory",
    ) -> None:
        self.backend = backend
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[bytes | None, ProfileRecord | None] = (None, None)
        self._cache: LruTtlCache[str, bytes] = LruTtlCache(
            max_visitors, ttl_seconds, timer=lambda: clock().timestamp()
        )
        self._arms: LruTtlCache[str, bytes] = LruTtlCache(
            max_visitors, ttl_seconds, timer=lambda: clock().timestamp()
        )
        # identity: visitor -> user, user -> record, user -> its linked visitors
        self._links: LruTtlCache[str, str] = LruTtlCache(
            max_visitors, ttl_seconds, timer=lambda: clock().timestamp()
        )
        self._users: LruTtlCache[str, bytes] = LruTtlCache(
            max_visitors, ttl_seconds, timer=lambda: clock().timestamp()
        )
        self._members: LruTtlCache[str, tuple[str, ...]] = LruTtlCache(
            max_visitors, ttl_seconds, timer=lambda: clock().timestamp()
        )

    def _read(self, visitor_id: str) -> ProfileRecord | None:
        # the caller holds the lock; a decide reads the same record three times in a row
        # (profile, suppressions, visit), so the last record decoded is kept with the bytes it
        # came from: stored bytes are never changed in place, only replaced
        user_id = self._links.get(visitor_id)
        raw = self._cache.get(visitor_id) if user_id is None else self._users.get(user_id)
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
        user_id = self._links.get(visitor_id)
        if user_id is None:
            self._cache[visitor_id] = raw
        else:  # the link and the user's visitors live as long as the user's record
            self._users[user_id] = raw
            self._links[visitor_id] = user_id
            self._members[user_id] = self._members.get(user_id) or ()
        self._last = (raw, record)
        arms = self._arms.get(visitor_id)
        if arms is not None:  # they live as long as the profile
            self._arms[visitor_id] = arms

    def _read_arms(self, visitor_id: str) -> dict[str, str]:
        raw = self._arms.get(visitor_id)
        return _arms_decoder.decode(raw) if raw is not None else _NO_ARMS

    def __len__(self) -> int:
        with self._lock:
            self._cache.expire()
            return len(self._cache)

    def _now(self, now: datetime | None) -> datetime:
        return as_utc(now if now is not None else self._clock())

    def _state(self, visitor_id: str, arms: bool, user: str | None = None) -> VisitState:
        with self._lock:
            record = self._read(visitor_id)
            user_id = self._links.get(visitor_id)
            if user_id is None and user is not None:  # to be linked: read as it will be
                raw = self._users.get(user)
                if raw is not None:
                    record = merged(_record_decoder.decode(raw), record)
            if arms:
                return VisitState(record=record, arms=self._read_arms(visitor_id), user_id=user_id)
        if record is None:
            return _UNKNOWN
        return VisitState(record=record, user_id=user_id)

    def _link(self, visitor_id: str, user_id: str) -> bool:
        """Merge the visitor's own record into the user's and link the visitor to the user
        (the caller holds the lock); whether it was linked now (one already linked keeps its
        user)."""
        if self._links.get(visitor_id) is not None:
            return False
        own = self._cache.pop(visitor_id, None)
        raw = self._users.get(user_id)
        record = merged(
            _record_decoder.decode(raw) if raw is not None else None,
            _record_decoder.decode(own) if own is not None else None,
        )
        members = self._members.get(user_id) or ()
        self._members[user_id] = (*(m for m in members if m != visitor_id), visitor_id)
        self._links[visitor_id] = user_id
        if record is not None:
            self._users[user_id] = _record_encoder.encode(record)
        self._last = (None, None)
        return True

    async def load_visit(
        self, visitor_id: str, visit: str | None, *, arms: bool = False
    ) -> VisitState:
        """The stored record (and sticky arms); nothing is pinned here (the per-process
        decision cache is the pin of a single process)."""
        return self._state(visitor_id, arms)

    async def load_visits(
        self,
        visits: Sequence[tuple[str, str | None]],
        *,
        arms: bool = False,
        users: Sequence[str | None] | None = None,
    ) -> list[VisitState]:
        """The stored records (and sticky arms), in order; a visitor not linked to the user
        its visit names reads the user's record merged with its own."""
        named = users if users is not None else [None] * len(visits)
        return [
            self._state(visitor_id, arms, user)
            for (visitor_id, _), user in zip(visits, named, strict=True)
        ]

    async def push_histories(
        self, histories: Sequence[tuple[str, History]], *, now: datetime
    ) -> list[Pushed]:
        """Store each pushed history as its user's base; see
        :meth:`ProfileStore.push_histories`."""
        now = as_utc(now)
        out: list[Pushed] = []
        with self._lock:
            self._last = (None, None)
            for user_id, history in histories:
                raw = self._users.get(user_id)
                old = _record_decoder.decode(raw) if raw is not None else None
                if (
                    old is not None
                    and old.history is not None
                    and history.as_of < old.history.as_of
                ):
                    out.append(Pushed("stale"))
                    continue
                new = with_history(old, history, now)
                members = self._members.get(user_id) or ()
                if raw is not None and new == old:
                    status = "unchanged"  # its life renewed, as a write would
                else:
                    status, raw = "written", _record_encoder.encode(new)
                self._users[user_id] = raw
                if members:
                    self._members[user_id] = members
                    for member in members:
                        self._links[member] = user_id
                out.append(Pushed(status, members if status == "written" else ()))
        return out

    async def get(self, visitor_id: str, *, now: datetime | None = None) -> Behavior | None:
        """The stored behaviour, or None."""
        with self._lock:
            record = self._read(visitor_id)
        return None if record is None else behavior_at(record, self._now(now))

    async def snapshot(
        self, visitor_id: str, *, now: datetime | None = None
    ) -> VisitorProfile | None:
        """Everything stored about the visitor, or None."""
        with self._lock:
            record = self._read(visitor_id)
        return None if record is None else snapshot_of(visitor_id, record, self._now(now))

    def _visit(self, visitor_id: str, request: DecideRequest, now: datetime) -> ProfileRecord:
        with self._lock:
            record = updated_by_visit(self._read(visitor_id), request, now)
            self._write(visitor_id, record)
        return record

    async def record_visit(
        self, visitor_id: str, request: DecideRequest, *, now: datetime
    ) -> Behavior:
        """Record the visit; see :meth:`ProfileStore.record_visit`."""
        if not permissions(request.consent).store:
            return Behavior()
        now = as_utc(now)
        return behavior_at(self._visit(visitor_id, request, now), now)

    async def commit_visits(
        self,
        visits: Sequence[VisitWrite],
        *,
        now: datetime,
        also: PipelineWrite | None = None,
    ) -> list[bool]:
        """Record the visits and their new sticky arms (a process has nothing to pin: its
        decision cache does); a visit with a ``user_id`` of a visitor not yet linked links it
        first (its decision, made on the visitor's own past, is not to be re-served).

        Raises:
            ValueError: ``also`` was given (a process has no pipeline to send it in).
        """
        if also is not None:
            raise ValueError("the embedded store sends no other module's writes")
        now = as_utc(now)
        reusable = [True] * len(visits)
        for i, visit in enumerate(visits):
            if permissions(visit.request.consent).store:
                if visit.request.user_id is not None:
                    with self._lock:  # decided on the visitor's own past: not re-served
                        reusable[i] = not self._link(visit.visitor_id, visit.request.user_id)
                self._visit(visit.visitor_id, visit.request, now)
                if visit.arms:
                    with self._lock:
                        arms = {**self._read_arms(visit.visitor_id), **visit.arms}
                        self._arms[visit.visitor_id] = _record_encoder.encode(arms)
        return reusable

    async def apply(
        self,
        visitor_id: str,
        events: Sequence[Event],
        *,
        now: datetime,
        create: bool = True,
        apply_id: str | None = None,
    ) -> Behavior | None:
        """Apply the visitor's events (``apply_id`` is not needed: an update here cannot fail
        half-way, so it is never replayed).

        Raises:
            ValueError: an event belongs to another visitor.
        """
        if any(e.visitor_id != visitor_id for e in events):
            raise ValueError(f"events of another visitor given for {visitor_id!r}")
        now = as_utc(now)
        with self._lock:
            old = self._read(visitor_id)
            if old is None and not create:
                return None
            record = updated_by_events(old, events, now)
            self._write(visitor_id, record)
        return behavior_at(record, now)

    async def delete(self, visitor_id: str) -> bool:
        """Forget the visitor; a visitor linked to a user: the user's record and every visitor
        linked to the user (the person, not one of their browsers)."""
        with self._lock:
            self._last = (None, None)
            user_id = self._links.get(visitor_id)
            erased = False
            if user_id is not None:
                erased = self._users.pop(user_id, None) is not None
            for member in self._linked(visitor_id):
                self._links.pop(member, None)
                self._arms.pop(member, None)
                erased = self._cache.pop(member, None) is not None or erased
            if user_id is not None:
                self._members.pop(user_id, None)
            return erased

    def _linked(self, visitor_id: str) -> tuple[str, ...]:
        user_id = self._links.get(visitor_id)
        members = (self._members.get(user_id) or ()) if user_id is not None else ()
        return (visitor_id, *(m for m in members if m != visitor_id))

    async def linked(self, visitor_id: str) -> tuple[str, ...]:
        """The visitor and every other visitor linked to its user."""
        with self._lock:
            return self._linked(visitor_id)

    async def suppressed(self, visitor_id: str) -> frozenset[str]:
        """Offers the visitor is not interested in."""
        with self._lock:
            record = self._read(visitor_id)
        return frozenset(record.suppressed) if record is not None else frozenset()
