"""What a profile store is: the :class:`ProfileStore` protocol every backend implements, the
stored :class:`ProfileRecord` and the pure rules that update it from visits and events.

The rules follow the browser tag's own first-party profile: a visit opens a session or counts a
page view and keeps the page's categories, searches and cart; a ``conversion`` counts a
purchase, ``not_interested`` suppresses an offer, ``dismiss`` is counted, ``pageview`` counts a
page view. No IP address or user agent is ever stored.

A user's record may have a :class:`History`, the order history the site's backend pushed
(:func:`with_history`): it is then the base of the purchase counts as of its ``as_of``, and
the purchases recorded live (kept as time and value, :data:`MAX_LIVE` at most) count on top
only when dated at or after it; a later history replaces the base and drops the live purchases
it now contains, so nothing counts twice.

Must not import model_export or litestar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import msgspec

from sdk.schema import Behavior, DecideRequest, Event

__all__ = [
    "DECISIVE_EVENTS",
    "MAX_CATEGORIES",
    "MAX_LIVE",
    "MAX_OFFERS",
    "SESSION_TIMEOUT",
    "History",
    "Pinned",
    "PipelineWrite",
    "ProfileRecord",
    "ProfileStore",
    "Pushed",
    "VisitState",
    "VisitWrite",
    "VisitorProfile",
    "as_utc",
    "behavior_at",
    "merged",
    "snapshot_of",
    "updated_by_events",
    "updated_by_visit",
    "with_history",
]

#: Idle time after which a visit without a session id opens a new session (as the tag does).
SESSION_TIMEOUT = timedelta(minutes=30)
#: Categories kept per visitor (unique, most recent last), as the tag keeps them.
MAX_CATEGORIES = 50
#: Offers kept per visitor in the suppressed and dismissed sets (oldest dropped first).
MAX_OFFERS = 200
#: Live purchases kept per profile (time and value) for the order-history rule; beyond it, a
#: profile with a history folds the oldest into it, one without forgets their times.
MAX_LIVE = 100
_DAY = 86_400.0
#: Event types after which a visit's pinned decision is dropped and decided again.
DECISIVE_EVENTS = frozenset({"conversion", "not_interested"})


class History(msgspec.Struct, frozen=True, kw_only=True, array_like=True, gc=False):
    """The order history the site's backend pushed for a user (``POST /v1/profiles/import``):
    aggregates as of ``as_of`` (UTC), never order rows."""

    as_of: datetime
    purchases: int = 0
    revenue: float = 0.0
    first_purchase: datetime | None = None
    last_purchase: datetime | None = None
    categories: tuple[str, ...] = ()


class ProfileRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
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
    #: the pushed order history (None: none); the purchase counts and times above are then
    #: the history's plus those of ``live``
    history: History | None = None
    #: purchases recorded live, (UTC unix seconds, value), oldest first; with a history only
    #: those at or after its ``as_of``
    live: tuple[tuple[float, float], ...] = ()


class VisitorProfile(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Everything stored about a visitor, as ``GET /v1/visitors/{id}`` returns it."""

    visitor_id: str
    behavior: Behavior
    suppressed_offers: list[str]
    dismissed_offers: dict[str, int]
    session_id: str | None
    first_seen: datetime
    last_seen: datetime


class Pinned(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The decision pinned to a visit: the visit's key (visitor, session, consent, key kind,
    model version: :meth:`server.decisions.DecisionCache.key`), the ids of its slots
    (space-separated) and its encoded JSON."""

    visit: str
    slots: str
    payload: bytes

    def covers(self, visit: str | None, slots: Sequence[str]) -> bool:
        """Whether this decision answers ``visit`` asking for ``slots``."""
        return visit == self.visit and (not slots or set(slots) <= set(self.slots.split(" ")))


class VisitState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a decide reads in one call: the stored record (None when unknown), the
    decision pinned to the visit (None when not pinned or the store does not pin) and the
    visitor's sticky experiment arms."""

    record: ProfileRecord | None = None
    pinned: Pinned | None = None
    #: the store's own token for a safe write of this visit (its record as read)
    version: bytes | None = None
    #: stored sticky arms (``<experiment>:<bucket version>`` -> arm key); None: not read
    arms: dict[str, str] | None = None
    #: the user the visitor is linked to (``record`` is then the user's), None when not linked
    user_id: str | None = None


class VisitWrite(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One decided visit to record: the request, what :meth:`ProfileStore.load_visit` read
    for it, and the decision to pin (None: not pinned)."""

    visitor_id: str
    request: DecideRequest
    read: VisitState
    pin: Pinned | None = None
    #: sticky arms to store (``<experiment>:<bucket version>`` -> arm key)
    arms: dict[str, str] = {}


class PipelineWrite(NamedTuple):
    """Writes of one shared-state module sent in another's pipeline, so that everything that
    follows a decision costs one round trip: ``queue`` adds the commands to a pipeline (their
    answers are not read), ``failed`` is called when that pipeline failed (the owner keeps the
    writes for a later call)."""

    queue: Callable[[Any], None]
    failed: Callable[[], None]


class Pushed(NamedTuple):
    """What became of one pushed history (:meth:`ProfileStore.push_histories`): ``written``,
    ``unchanged`` (its life renewed) or ``stale`` (a later history is stored, or the user was
    erased while it was pushed), and the visitors linked to the user whose cached decisions
    are now out of date."""

    status: str
    visitors: tuple[str, ...] = ()


class ProfileStore(Protocol):
    """Where visitor profiles live. Asynchronous; ``now`` is timezone-aware.

    A decide reads with :meth:`load_visit` (one call: record and pinned decision), decides,
    then writes with :meth:`record_visit` (the visit and the decision pinned, one call). A
    shared store raises :class:`~server.stores.redis_conn.StateUnavailable` when it cannot
    answer; the embedded store never does.
    """

    #: ``memory``, ``per-worker`` or ``redis``, as ``/readyz`` reports it
    backend: str

    async def load_visit(
        self, visitor_id: str, visit: str | None, *, arms: bool = False
    ) -> VisitState:
        """The visitor's record and the decision pinned to ``visit`` (one call); with
        ``arms``, its sticky experiment arms too (else ``VisitState.arms`` is None)."""
        ...

    async def load_visits(
        self,
        visits: Sequence[tuple[str, str | None]],
        *,
        arms: bool = False,
        users: Sequence[str | None] | None = None,
    ) -> list[VisitState]:
        """:meth:`load_visit` for several (visitor, visit) pairs in one call, in order;
        ``users[i]``: the user the i-th visit names, whose record is merged into the record
        read when its visitor is not linked yet (the visit links it when it is recorded)."""
        ...

    async def push_histories(
        self, histories: Sequence[tuple[str, History]], *, now: datetime
    ) -> list[Pushed]:
        """Make each (user id, history) the base of the user's record (:func:`with_history`;
        created when none is stored), in order; a history older than the one stored is
        ``stale`` and changes nothing. The user's linked visitors' pinned decisions are
        dropped."""
        ...

    async def get(self, visitor_id: str, *, now: datetime | None = None) -> Behavior | None:
        """The stored behaviour (days computed against ``now``), or None when unknown."""
        ...

    async def snapshot(
        self, visitor_id: str, *, now: datetime | None = None
    ) -> VisitorProfile | None:
        """Everything stored about the visitor (for access requests), or None when unknown."""
        ...

    async def record_visit(
        self, visitor_id: str, request: DecideRequest, *, now: datetime
    ) -> Behavior:
        """Record a decide request as a visit; the stored behaviour after it.

        Without storage consent (:func:`sdk.consent.permissions`) this is a no-op: nothing is
        read or stored and an empty :class:`Behavior` is returned. Read the profile for a
        decision *before* recording its visit, so the request's own categories are not counted
        twice by the decider's merge.
        """
        ...

    async def commit_visits(
        self,
        visits: Sequence[VisitWrite],
        *,
        now: datetime,
        also: PipelineWrite | None = None,
    ) -> list[bool]:
        """Record decided visits, pin their decisions and store their new sticky arms
        (``VisitWrite.arms``, living as long as the profile) in one call for all; for each, whether
        its decision may be re-served: False when the profile changed since it was read (the
        visit is then recorded on the changed profile, and the decision not pinned) or was
        erased meanwhile (nothing is written: an erasure wins over a visit in flight).
        Visits without storage consent store nothing (and answer True). ``also``: writes of
        another module sent in the same call (a shared store only; ``also.failed()`` is
        called when that call fails)."""
        ...

    async def apply(
        self,
        visitor_id: str,
        events: Sequence[Event],
        *,
        now: datetime,
        create: bool = True,
        apply_id: str | None = None,
    ) -> Behavior | None:
        """Apply feedback events of the visitor; the result, or None when ``create`` is False
        and no profile is stored. A :data:`DECISIVE_EVENTS` event unpins the visitor's
        decision. ``apply_id``: an id of this update, so that applying it again (a replay)
        changes nothing."""
        ...

    async def delete(self, visitor_id: str) -> bool:
        """Forget the visitor (profile, pinned decision, everything); whether a profile was
        stored."""
        ...

    async def suppressed(self, visitor_id: str) -> frozenset[str]:
        """Offers the visitor said ``not_interested`` to (empty when unknown)."""
        ...

    async def linked(self, visitor_id: str) -> tuple[str, ...]:
        """The visitors an erasure of ``visitor_id`` erases: every visitor linked to the same
        user (``visitor_id`` first), or ``visitor_id`` alone when it is not linked."""
        ...


# --- pure update rules -----------------------------------------------------------------------


def as_utc(value: datetime) -> datetime:
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
    now = as_utc(now)
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
    now = as_utc(now)
    out = record if record is not None else ProfileRecord(first_seen=now, last_seen=now)
    for event in events:
        if event.type == "conversion":
            when = now
            if event.timestamp is not None:
                stamp = event.timestamp
                stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
                when = min(stamp.astimezone(UTC), now)
            out = _purchased(out, when, event.value or 0.0)
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


def _purchased(record: ProfileRecord, when: datetime, value: float) -> ProfileRecord:
    """``record`` after a purchase of ``value`` at ``when``: counted, and kept in ``live``; one
    dated before the pushed history's ``as_of`` is in that history, and only empties the cart."""
    record = msgspec.structs.replace(record, cart_items=0.0, cart_value=0.0)
    history = record.history
    if history is not None and when < history.as_of:
        return record
    live = tuple(sorted((*record.live, (when.timestamp(), value))))
    if history is not None:
        return _based(record, history, live)
    first, last = record.first_purchase, record.last_purchase
    return msgspec.structs.replace(
        record,
        purchases=record.purchases + 1,
        revenue=record.revenue + value,
        first_purchase=when if first is None else min(first, when),
        last_purchase=when if last is None else max(last, when),
        live=live[-MAX_LIVE:],
    )


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _based(
    record: ProfileRecord, history: History, live: tuple[tuple[float, float], ...]
) -> ProfileRecord:
    """``record`` with purchase counts and times of ``history`` plus ``live`` (all at or after
    its ``as_of``); beyond :data:`MAX_LIVE`, the oldest live purchases are folded into it."""
    if len(live) > MAX_LIVE:
        folded, live = live[: len(live) - MAX_LIVE], live[len(live) - MAX_LIVE :]
        history = msgspec.structs.replace(
            history,
            purchases=history.purchases + len(folded),
            revenue=history.revenue + sum(v for _, v in folded),
            first_purchase=_min(history.first_purchase, _at(folded[0][0])),
            last_purchase=_max(history.last_purchase, _at(folded[-1][0])),
        )
    return msgspec.structs.replace(
        record,
        history=history,
        live=live,
        purchases=history.purchases + len(live),
        revenue=history.revenue + sum(v for _, v in live),
        first_purchase=_min(history.first_purchase, _at(live[0][0]) if live else None),
        last_purchase=_max(history.last_purchase, _at(live[-1][0]) if live else None),
    )


def with_history(record: ProfileRecord | None, history: History, now: datetime) -> ProfileRecord:
    """``record`` (created at ``now`` when None) with ``history`` as the base of its purchase
    counts: its live purchases dated before ``history.as_of`` are dropped (the history has
    them), later ones count on top; the history's categories go before the record's own.
    Applying the same history twice gives the same record."""
    now = as_utc(now)
    out = record if record is not None else ProfileRecord(first_seen=now, last_seen=now)
    cut = history.as_of.timestamp()
    categories = _recent_unique(history.categories, out.categories, MAX_CATEGORIES)
    out = msgspec.structs.replace(out, categories=categories)
    return _based(out, history, tuple(p for p in out.live if p[0] >= cut))


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def merged(user: ProfileRecord | None, visitor: ProfileRecord | None) -> ProfileRecord | None:
    """One person's record from two (a user's and a visitor's identified as that user):
    counts summed, the current session (its id, page views and page counters) of the record
    seen last, categories and suppressions merged by recency, dismissals summed, first times
    the earliest and last times the latest; with a pushed history (the later of two), the
    purchases are its base plus the live ones at or after it. Symmetric but for ties, which
    the user wins."""
    if user is None or visitor is None:
        return user if visitor is None else visitor
    early, late = (user, visitor) if visitor.last_seen > user.last_seen else (visitor, user)
    dismissed = dict(early.dismissed)
    for offer, count in late.dismissed.items():
        dismissed[offer] = dismissed.pop(offer, 0) + count
    while len(dismissed) > MAX_OFFERS:
        del dismissed[next(iter(dismissed))]
    first_purchase = _min(early.first_purchase, late.first_purchase)
    last_purchase = _max(early.last_purchase, late.last_purchase)
    live = tuple(sorted((*early.live, *late.live)))
    histories = [h for h in (user.history, visitor.history) if h is not None]
    history = max(histories, key=lambda h: h.as_of) if histories else None
    out = ProfileRecord(
        first_seen=min(early.first_seen, late.first_seen),
        last_seen=late.last_seen,
        session_id=late.session_id,
        sessions=early.sessions + late.sessions,
        page_views=late.page_views,
        categories=_recent_unique(early.categories, late.categories, MAX_CATEGORIES),
        searches=late.searches if late.searches is not None else early.searches,
        searches_without_results=(
            late.searches_without_results
            if late.searches_without_results is not None
            else early.searches_without_results
        ),
        cart_items=late.cart_items if late.cart_items is not None else early.cart_items,
        cart_value=late.cart_value if late.cart_value is not None else early.cart_value,
        purchases=early.purchases + late.purchases,
        revenue=early.revenue + late.revenue,
        first_purchase=first_purchase,
        last_purchase=last_purchase,
        suppressed=_recent_unique(early.suppressed, late.suppressed, MAX_OFFERS),
        dismissed=dismissed,
        live=live[-MAX_LIVE:],
    )
    if history is None:
        return out
    # one history is the base: live purchases before it are in it
    cut = history.as_of.timestamp()
    return _based(out, history, tuple(p for p in live if p[0] >= cut))


def behavior_at(record: ProfileRecord, now: datetime) -> Behavior:
    """The stored behaviour of ``record``, with days counted to ``now``."""
    now = as_utc(now)
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


def snapshot_of(visitor_id: str, record: ProfileRecord, now: datetime) -> VisitorProfile:
    """Everything stored in ``record``, as an access request returns it."""
    return VisitorProfile(
        visitor_id=visitor_id,
        behavior=behavior_at(record, now),
        suppressed_offers=list(record.suppressed),
        dismissed_offers=dict(record.dismissed),
        session_id=record.session_id,
        first_seen=record.first_seen,
        last_seen=record.last_seen,
    )
