"""Visitor profile stores: what the server remembers about a visitor between requests.

:class:`ProfileStore` is the synchronous interface the handlers use (so a Redis store can be
added without touching them); :class:`MemoryProfileStore` is the embedded default, a bounded
TTL cache in process memory (:class:`server.lru.LruTtlCache`) behind a lock, which keeps each
record msgpack-encoded: bytes, which the garbage collector neither scans nor counts (a record's
tuples and dict would be counted towards the next collection on every visit). The update
rules are pure functions over a :class:`ProfileRecord` (a msgspec Struct, so another store can
serialise it as it is) and follow the browser tag's own first-party profile where they can:

* a visit (decide request) opens a new session when its ``sessionId`` differs from the stored
  one (without a session id: on the first visit or after 30 idle minutes), counts a page view
  in the session, adds the request's categories (unique, most recent last, at most 50) and
  keeps the latest searches and cart counters the page sent;
* ``daysSinceLastVisit`` counts from the last recorded visit. The decide handler reads the
  profile before recording the visit, so a decision sees the time since the previous request,
  as training does (there it is the time from the last event to the cutoff);
* a ``conversion`` event counts a purchase, adds its ``value`` to revenue and empties the cart;
  ``not_interested`` suppresses the offer for the visitor; ``dismiss`` is counted per offer but
  suppresses nothing; ``pageview`` counts a page view like a visit; impressions and clicks
  change nothing.

Nothing is stored without storage consent (:meth:`ProfileStore.record_visit` is then a no-op),
and no IP address or user agent is ever stored. A write is visible to the next read in the same
process (read-your-writes); across processes only a shared store (Redis) gives that.

Must not import model_export or litestar.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec

from sdk.schema import Behavior, DecideRequest, Event
from server.lru import LruTtlCache

__all__ = [
    "MAX_CATEGORIES",
    "MAX_OFFERS",
    "SESSION_TIMEOUT",
    "MemoryProfileStore",
    "ProfileRecord",
    "ProfileStore",
    "VisitorProfile",
    "behavior_at",
    "updated_by_events",
    "updated_by_visit",
]

#: Idle time after which a visit without a session id opens a new session (as the tag does).
SESSION_TIMEOUT = timedelta(minutes=30)
#: Categories kept per visitor (unique, most recent last), as the tag keeps them.
MAX_CATEGORIES = 50
#: Offers kept per visitor in the suppressed and dismissed sets (oldest dropped first).
MAX_OFFERS = 200
_DAY = 86_400.0


class ProfileRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The stored state of one visitor. Times are UTC; counters the page alone knows (searches,
    cart) are None until it sends them.

    Not tracked by the garbage collector (``gc=False``): a record holds only strings, numbers,
    datetimes, tuples of strings and a dict of counters, so it can never be part of a reference
    cycle, and a store of a hundred thousand visitors then adds nothing to a collection."""

    first_seen: datetime
    last_seen: datetime
    session_id: str | None = None
    sessions: int = 0
    #: Page views of the current session.
    page_views: int = 0
    categories: tuple[str, ...] = ()
    searches: float | None = None
    searches_without_results: float | None = None
    cart_items: float | None = None
    cart_value: float | None = None
    purchases: int = 0
    revenue: float = 0.0
    first_purchase: datetime | None = None
    last_purchase: datetime | None = None
    suppressed: tuple[str, ...] = ()
    dismissed: dict[str, int] = {}


class VisitorProfile(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Everything stored about a visitor, as ``GET /v1/visitors/{id}`` returns it."""

    visitor_id: str
    behavior: Behavior
    suppressed_offers: list[str]
    dismissed_offers: dict[str, int]
    session_id: str | None
    first_seen: datetime
    last_seen: datetime


class ProfileStore(Protocol):
    """Where visitor profiles live. Synchronous and thread-safe; ``now`` is timezone-aware."""

    def get(self, visitor_id: str, *, now: datetime | None = None) -> Behavior | None:
        """The stored behaviour (days computed against ``now``), or None when unknown."""
        ...

    def snapshot(self, visitor_id: str, *, now: datetime | None = None) -> VisitorProfile | None:
        """Everything stored about the visitor (for access requests), or None when unknown."""
        ...

    def record_visit(self, visitor_id: str, request: DecideRequest, *, now: datetime) -> Behavior:
        """Record a decide request as a visit; the stored behaviour after it.

        Without ``request.consent.storage`` this is a no-op: nothing is read or stored and an
        empty :class:`Behavior` is returned. Read the profile for a decision with :meth:`get`
        *before* recording its visit, so the request's own categories are not counted twice
        by the decider's merge.
        """
        ...

    def apply(self, visitor_id: str, events: Sequence[Event], *, now: datetime) -> Behavior:
        """Apply feedback events of the visitor (creating the profile if absent); the result."""
        ...

    def delete(self, visitor_id: str) -> bool:
        """Forget the visitor; whether anything was stored."""
        ...

    def suppressed(self, visitor_id: str) -> frozenset[str]:
        """Offers the visitor said ``not_interested`` to (empty when unknown)."""
        ...


# --- pure update rules -----------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return value.astimezone(UTC)


def _days(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else max((now - since).total_seconds() / _DAY, 0.0)


def _recent_unique(old: Iterable[str], new: Iterable[str], limit: int) -> tuple[str, ...]:
    """``old`` then ``new``, each value once at its latest position, the last ``limit``."""
    kept = dict.fromkeys(old)
    for value in new:
        kept.pop(value, None)
        kept[value] = None
    return tuple(kept)[-limit:]


def _page_view(
    record: ProfileRecord | None, session_id: str | None, now: datetime
) -> ProfileRecord:
    """``record`` after one page view at ``now`` in session ``session_id``."""
    if record is None:
        return ProfileRecord(
            first_seen=now, last_seen=now, session_id=session_id, sessions=1, page_views=1
        )
    if session_id is not None:
        new_session = session_id != record.session_id
    else:
        new_session = record.sessions == 0 or now - record.last_seen >= SESSION_TIMEOUT
    if new_session:
        return msgspec.structs.replace(
            record,
            last_seen=max(now, record.last_seen),
            session_id=session_id,
            sessions=record.sessions + 1,
            page_views=1,
        )
    return msgspec.structs.replace(
        record, last_seen=max(now, record.last_seen), page_views=record.page_views + 1
    )


def updated_by_visit(
    record: ProfileRecord | None, request: DecideRequest, now: datetime
) -> ProfileRecord:
    """``record`` after the visit ``request`` at ``now`` (consent is the caller's business)."""
    now = _utc(now)
    out = _page_view(record, request.session_id, now)
    b = request.behavior
    categories = (c.strip()[:64] for c in b.categories_viewed)
    return msgspec.structs.replace(
        out,
        categories=_recent_unique(out.categories, (c for c in categories if c), MAX_CATEGORIES),
        searches=b.searches if b.searches is not None else out.searches,
        searches_without_results=(
            b.searches_without_results
            if b.searches_without_results is not None
            else out.searches_without_results
        ),
        cart_items=b.cart_items if b.cart_items is not None else out.cart_items,
        cart_value=b.cart_value if b.cart_value is not None else out.cart_value,
    )


def updated_by_events(
    record: ProfileRecord | None, events: Iterable[Event], now: datetime
) -> ProfileRecord:
    """``record`` after feedback ``events`` received at ``now`` (created when None).

    A conversion is dated by its timestamp (naive ones read as UTC), never later than ``now``.
    """
    now = _utc(now)
    out = record if record is not None else ProfileRecord(first_seen=now, last_seen=now)
    for event in events:
        if event.type == "conversion":
            when = now
            if event.timestamp is not None:
                stamp = event.timestamp
                stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
                when = min(stamp.astimezone(UTC), now)
            first = out.first_purchase
            last = out.last_purchase
            out = msgspec.structs.replace(
                out,
                purchases=out.purchases + 1,
                revenue=out.revenue + (event.value or 0.0),
                first_purchase=when if first is None else min(first, when),
                last_purchase=when if last is None else max(last, when),
                cart_items=0.0,
                cart_value=0.0,
            )
        elif event.type == "not_interested" and event.offer_id:
            suppressed = _recent_unique(out.suppressed, [event.offer_id], MAX_OFFERS)
            out = msgspec.structs.replace(out, suppressed=suppressed)
        elif event.type == "dismiss" and event.offer_id:
            dismissed = dict(out.dismissed)
            count = dismissed.pop(event.offer_id, 0) + 1
            dismissed[event.offer_id] = count
            while len(dismissed) > MAX_OFFERS:
                del dismissed[next(iter(dismissed))]
            out = msgspec.structs.replace(out, dismissed=dismissed)
        elif event.type == "pageview":
            out = _page_view(out, event.session_id, now)
            category = event.properties.get("category")
            if isinstance(category, str) and category.strip():
                categories = _recent_unique(out.categories, [category.strip()[:64]], MAX_CATEGORIES)
                out = msgspec.structs.replace(out, categories=categories)
    return out


def behavior_at(record: ProfileRecord, now: datetime) -> Behavior:
    """The stored behaviour of ``record``, with days counted to ``now``."""
    now = _utc(now)
    bought = record.purchases > 0
    return Behavior(
        page_views=float(record.page_views) if record.sessions else None,
        session_count=float(record.sessions) if record.sessions else None,
        categories_viewed=list(record.categories),
        searches=record.searches,
        searches_without_results=record.searches_without_results,
        cart_items=record.cart_items,
        cart_value=record.cart_value,
        purchases=float(record.purchases),
        revenue=record.revenue,
        days_since_last_visit=_days(record.last_seen, now) if record.sessions else None,
        days_since_last_purchase=_days(record.last_purchase, now) if bought else None,
        days_since_first_purchase=_days(record.first_purchase, now) if bought else None,
    )


# --- the in-memory store ---------------------------------------------------------------------

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
        return _utc(now if now is not None else self._clock())

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
        if not request.consent.storage:
            return Behavior()
        now = _utc(now)
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
        now = _utc(now)
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
