"""One pass over the log records the experiment reports need: exposures, decisions,
conversions and interactions, with the keys and running totals the reports share.

Must not import server or model_export.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import overload

from sdk.analysis._means import RunningStats
from sdk.logs import DecisionRecord, EventRecord, LogRecord

#: The group key of visitors whose decision had no segment (no consent: no profile).
UNKNOWN_SEGMENT = "unknown"
REPORTED_EVENTS = frozenset({"impression", "click", "conversion"})
#: What the reports say when browsers reported conversion values: they are not revenue.
UNCONFIRMED_NOTE = (
    "revenue counts confirmed conversions only (POST /v1/conversions, or events sent with a "
    "secret key); {amount:.2f} in conversion values reported by browsers is left out of it "
    "(unconfirmedRevenue)"
)


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """``value`` with UTC as its time zone when it has none."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def in_window(when: datetime, start: datetime | None, end: datetime | None) -> bool:
    """Whether ``when`` is in ``[start, end)`` (an absent bound does not limit)."""
    return (start is None or when >= start) and (end is None or when < end)


def segment_key(value: int | str | None) -> str:
    """The group key of a decision's segment, persona or lifecycle."""
    if value is None or value == "":
        return UNKNOWN_SEGMENT
    return str(value)


def segment_order(key: str) -> tuple[int, float, str]:
    """Sort key of group keys: numbers in numeric order, then names, then ``unknown``."""
    if key == UNKNOWN_SEGMENT:
        return (2, 0.0, key)
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def value_of(value: float | None) -> float:
    """An event's value, 0 when absent or not finite."""
    return value if value is not None and math.isfinite(value) else 0.0


@dataclass(slots=True)
class Exposure:
    """One visitor in one experiment."""

    arms: set[str]
    first: datetime
    last: datetime
    segment: str


@dataclass(slots=True)
class DecisionRef:
    """What an event needs of the decision it names."""

    visitor: str
    arms: dict[str, str]
    slot_arms: dict[str, str]


@dataclass(slots=True)
class Conversion:
    """A conversion event; ``trusted``: confirmed by the site's backend (its value is
    revenue), else reported by a browser (or logged before events were marked)."""

    when: datetime
    value: float
    decision: str | None
    trusted: bool


@dataclass(slots=True)
class Cell:
    """Running totals of one (group, arm)."""

    visitors: int = 0
    conversions: int = 0
    orders: int = 0
    #: of ``orders``, the confirmed ones (trusted conversions); ``revenue`` is their value
    confirmed_orders: int = 0
    revenue: float = 0.0
    #: values of unconfirmed (browser-reported) conversions, kept apart from ``revenue``
    unconfirmed_revenue: float = 0.0
    impressions: int = 0
    clicks: int = 0
    rpv: RunningStats = field(default_factory=RunningStats)


@dataclass
class Log:
    """The parts of the log the reports need, gathered in one pass."""

    exposures: dict[str, dict[str, Exposure]] = field(default_factory=lambda: defaultdict(dict))
    decisions: dict[str, DecisionRef] = field(default_factory=dict)
    conversions: dict[str, list[Conversion]] = field(default_factory=lambda: defaultdict(list))
    #: (event type, decision id, slot, visitor): impressions and clicks, deduplicated
    interactions: set[tuple[str, str, str | None, str]] = field(default_factory=set)
    currencies: set[str] = field(default_factory=set)

    @classmethod
    def gather(
        cls, records: Iterable[LogRecord], start: datetime | None, end: datetime | None
    ) -> Log:
        """Gather ``records`` in ``[start, end)`` (erasure markers are not report data)."""
        log = cls()
        for record in records:
            if isinstance(record, DecisionRecord):
                log._decision(record, start, end)
            elif isinstance(record, EventRecord):
                log._event(record, start, end)
        return log

    def _decision(
        self, record: DecisionRecord, start: datetime | None, end: datetime | None
    ) -> None:
        arms = record.experiment
        when = aware(record.timestamp)
        if not arms or not in_window(when, start, end):
            return
        visitor = record.visitor_id
        segment = segment_key(record.segment)
        for exp, arm in arms.items():
            seen = self.exposures[exp].get(visitor)
            if seen is None:
                self.exposures[exp][visitor] = Exposure({arm}, when, when, segment)
                continue
            seen.arms.add(arm)
            if when < seen.first:
                seen.first, seen.segment = when, segment
            seen.last = max(seen.last, when)
        slot_arms = {name: s.arm for name, s in record.slots.items() if s.arm is not None}
        self.decisions[record.decision_id] = DecisionRef(visitor, dict(arms), slot_arms)

    def _event(self, record: EventRecord, start: datetime | None, end: datetime | None) -> None:
        kind = record.type
        when = aware(record.timestamp)
        if kind not in REPORTED_EVENTS or not in_window(when, start, end):
            return
        visitor = record.visitor_id
        decision = record.decision_id
        if kind == "conversion":
            self.conversions[visitor].append(
                Conversion(when, value_of(record.value), decision, record.trusted)
            )
            if record.currency:
                self.currencies.add(record.currency.upper())
        elif decision is not None:
            self.interactions.add((kind, decision, record.slot, visitor))
