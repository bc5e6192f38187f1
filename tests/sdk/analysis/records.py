"""Typed log records built by hand for the report tests, and a writer of real log files."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sdk.logs import (
    LOG_VERSION,
    DecisionRecord,
    EventRecord,
    LoggedSignals,
    LoggedSlot,
    LogRecord,
    encode_record,
)
from sdk.schema import Consent

T0 = "2026-05-04T10:00:00Z"
_CONSENT = Consent(personalization=True, storage=True)
_SIGNALS = LoggedSignals(
    device_type="desktop", touch=False, referrer_class="direct", local_hour=10, local_weekday=0
)


def decision(
    visitor: str,
    decision_id: str,
    arms: dict[str, str] | None,
    *,
    segment: int | None = 1,
    at: str = T0,
    slots: dict[str, str | None] | None = None,
    persona: str | None = None,
) -> DecisionRecord:
    """A ``kind: decision`` record; ``slots`` maps slot -> the arm label that decided it."""
    return DecisionRecord(
        log_version=LOG_VERSION,
        type="decision",
        timestamp=datetime.fromisoformat(at),
        decision_id=decision_id,
        model_version="test-1",
        visitor_id=visitor,
        consent=_CONSENT,
        personalized=True,
        signals=_SIGNALS,
        segment=segment,
        persona=persona,
        lifecycle="active",
        experiment=arms or None,
        offers=[],
        slots={
            name: LoggedSlot(variant_id=f"{name}-v", propensity=1.0, arm=arm)
            for name, arm in (slots or {}).items()
        },
    )


def event(
    kind: str,
    visitor: str,
    *,
    decision_id: str | None = None,
    slot: str | None = None,
    value: float | None = None,
    at: str = "2026-05-04T10:01:00Z",
    currency: str | None = None,
    trusted: bool = True,
) -> EventRecord:
    """A ``kind: event`` record of type ``kind``, received when it happened; ``trusted`` (a
    confirmed conversion, or an event sent with a secret key) unless told otherwise."""
    when = datetime.fromisoformat(at)
    return EventRecord(
        log_version=LOG_VERSION,
        type=kind,
        timestamp=when,
        received_at=when,
        visitor_id=visitor,
        decision_id=decision_id,
        slot=slot,
        value=value,
        currency=currency,
        trusted=trusted,
    )


def lines(records: Iterable[LogRecord]) -> str:
    """The JSON Lines of ``records``, as the server writes them."""
    return b"".join(encode_record(r) for r in records).decode()


def write_log(path: Path, records: Iterable[LogRecord], tail: str = "") -> Path:
    """Write ``records`` (then ``tail``, e.g. a torn line) to the log file ``path``."""
    path.write_text(lines(records) + tail)
    return path
