"""What keeps browser feedback honest: the decisions the server issued to each visitor, the
event ids already seen, the decisions that converted and the order ids already counted.

A public key lives in every page, so anyone can post events with it. The events handler asks
an :class:`EventGuard` whether each event of a public-key batch refers to a decision the
server issued to that event's visitor, carries an event id never seen before and is not a
second conversion of one decision; the confirmed-conversions route asks it whether an order
id was already counted. The protocol is async, so that a shared guard can ask Redis:
:class:`MemoryEventGuard` is the embedded implementation (per worker process, bounded, least
recently used dropped first, with a time to live); :class:`server.stores.redis_guard.
RedisEventGuard` keeps the same tables in Redis for every worker and replica, and raises
:class:`server.stores.redis_conn.StateUnavailable` when Redis does not answer.

Must not import model_export or litestar.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import msgspec

from sdk.schema import Event
from server.lru import LruTtlCache
from server.stores.base import PipelineWrite

__all__ = [
    "DECISION_TTL",
    "ORDER_TTL",
    "EventGuard",
    "GuardRefusal",
    "MemoryEventGuard",
    "refusal_for",
]

#: Seconds an issued decision, an event id and a converted decision are remembered (24 h).
DECISION_TTL = 86_400.0
#: Seconds an order id of a confirmed conversion is remembered (30 days).
ORDER_TTL = 30 * 86_400.0


class GuardRefusal(msgspec.Struct, frozen=True, kw_only=True):
    """Why a batch is refused: ``forged-event`` (no event id, or a decision id not issued to
    the event's visitor) or ``replayed-event`` (an event id seen before, or a second
    conversion of a decision); ``detail`` names the event (``- at `$.events[3].decisionId` ``)."""

    kind: Literal["forged-event", "replayed-event"]
    detail: str


class EventGuard(Protocol):
    """Issued decisions, seen event ids and counted orders; every method may raise
    :class:`~server.stores.redis_conn.StateUnavailable` (a shared guard whose store is down)."""

    async def issue(self, decision_id: str, visitor_id: str) -> None:
        """Remember that ``decision_id`` was issued to ``visitor_id`` (a public-key decide)."""
        ...

    def issuing(self, issued: Sequence[tuple[str, str]]) -> PipelineWrite | None:
        """Remember the issued ``(decision id, visitor id)`` pairs: an in-process guard
        records them now and returns None; a shared guard returns the writes, for the caller
        to send in the pipeline that records the visits (one round trip after a decide)."""
        ...

    async def check_and_record(
        self, events: Sequence[Event], *, batch_id: str | None = None
    ) -> GuardRefusal | None:
        """Check every event of a public-key batch; when all pass, record their event ids and
        conversions and return None. A refused batch records nothing; the check and the
        record are one atomic step, so a batch sent twice at once passes once. A batch
        checked again under the ``batch_id`` it passed with passes again (a spooled batch
        whose first check reached the store but whose answer did not)."""
        ...

    async def claim_orders(self, order_ids: Sequence[str]) -> list[bool]:
        """Count each order id once, all in one step: True the first time, False for a
        duplicate (also one repeated within ``order_ids``)."""
        ...

    async def flush(self) -> None:
        """Write what waits for the store (issued decisions it could not take)."""
        ...


#: Why an event fails, in the order the checks run (the Redis guard's script returns these).
NO_DECISION, NOT_ISSUED, NO_EVENT_ID, SEEN_EVENT, CONVERTED = 1, 2, 3, 4, 5


def refusal_for(index: int, code: int) -> GuardRefusal:
    """The refusal of event ``index`` failing check ``code`` (:data:`NO_DECISION`...)."""
    if code == NO_DECISION:
        return _forged(index, "decisionId", "an event from a public key needs the decisionId")
    if code == NOT_ISSUED:
        return _forged(
            index,
            "decisionId",
            "this decision was not issued to the event's visitorId (or is older than 24 hours)",
        )
    if code == NO_EVENT_ID:
        return _forged(index, "eventId", "an event from a public key needs an eventId")
    if code == SEEN_EVENT:
        return _replayed(index, "eventId", "this eventId was sent before")
    return _replayed(
        index,
        "decisionId",
        "a decision converts once: this decision already has a conversion "
        "(confirm orders from your backend with POST /v1/conversions)",
    )


def _forged(index: int, field: str, why: str) -> GuardRefusal:
    return GuardRefusal(kind="forged-event", detail=f"{why} - at `$.events[{index}].{field}`")


def _replayed(index: int, field: str, why: str) -> GuardRefusal:
    return GuardRefusal(kind="replayed-event", detail=f"{why} - at `$.events[{index}].{field}`")


class MemoryEventGuard:
    """The in-process :class:`EventGuard`: four bounded TTL tables behind one lock.

    Args:
        max_entries: most entries of each table (issued decisions, event ids, converted
            decisions, orders); the least recently used go first.
        decision_ttl: seconds decisions, event ids and conversions are remembered.
        order_ttl: seconds order ids are remembered.
        timer: the clock (seconds).
    """

    def __init__(
        self,
        max_entries: int = 200_000,
        *,
        decision_ttl: float = DECISION_TTL,
        order_ttl: float = ORDER_TTL,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._issued: LruTtlCache[str, str] = LruTtlCache(max_entries, decision_ttl, timer=timer)
        self._seen: LruTtlCache[str, bool] = LruTtlCache(max_entries, decision_ttl, timer=timer)
        self._converted: LruTtlCache[str, bool] = LruTtlCache(
            max_entries, decision_ttl, timer=timer
        )
        self._orders: LruTtlCache[str, bool] = LruTtlCache(max_entries, order_ttl, timer=timer)

    async def issue(self, decision_id: str, visitor_id: str) -> None:
        with self._lock:
            self._issued[decision_id] = visitor_id

    def issuing(self, issued: Sequence[tuple[str, str]]) -> PipelineWrite | None:
        with self._lock:
            for decision_id, visitor_id in issued:
                self._issued[decision_id] = visitor_id
        return None

    async def check_and_record(
        self, events: Sequence[Event], *, batch_id: str | None = None
    ) -> GuardRefusal | None:
        # in process, an answer is never lost: ``batch_id`` is not needed
        with self._lock:
            refusal = self._check(events)
            if refusal is not None:
                return refusal
            for event in events:
                if event.event_id is not None:
                    self._seen[event.event_id] = True
                if event.type == "conversion" and event.decision_id is not None:
                    self._converted[event.decision_id] = True
        return None

    def _check(self, events: Sequence[Event]) -> GuardRefusal | None:
        """The first refusal among ``events`` (caller holds the lock), or None."""
        ids: set[str] = set()
        converting: set[str] = set()
        for i, event in enumerate(events):
            if event.decision_id is None:
                return refusal_for(i, NO_DECISION)
            if self._issued.get(event.decision_id) != event.visitor_id:
                return refusal_for(i, NOT_ISSUED)
            if event.event_id is None:
                return refusal_for(i, NO_EVENT_ID)
            if event.event_id in ids or event.event_id in self._seen:
                return refusal_for(i, SEEN_EVENT)
            ids.add(event.event_id)
            if event.type == "conversion":
                if event.decision_id in converting or event.decision_id in self._converted:
                    return refusal_for(i, CONVERTED)
                converting.add(event.decision_id)
        return None

    async def flush(self) -> None:
        """Nothing waits: the tables are in this process."""

    async def claim_orders(self, order_ids: Sequence[str]) -> list[bool]:
        claimed: list[bool] = []
        with self._lock:
            for order_id in order_ids:
                new = order_id not in self._orders
                if new:  # a duplicate does not extend the first claim's 30 days
                    self._orders[order_id] = True
                claimed.append(new)
        return claimed

    def __len__(self) -> int:
        """Entries held across the four tables (for tests and metrics)."""
        with self._lock:
            return len(self._issued) + len(self._seen) + len(self._converted) + len(self._orders)
