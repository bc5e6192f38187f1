"""The decision and event log: the one definition of its records, how they are built, and
one typed, streaming reader of log files.

The server writes these records (``server.eventlog``), training, offline evaluation, the
VW export and the experiment reports read them here. A log is a directory of JSON Lines files;
every line is one record tagged by ``kind`` (``decision``, ``event``, ``erasure``) and carries
``logVersion`` (:data:`LOG_VERSION`). What each record holds, and what it never holds, is in
``docs/contract.md``.

Must not import server or model_export.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

from sdk.consent import LogPermissions
from sdk.errors import TailorError
from sdk.features import FeatureRow
from sdk.referrer import campaign_keys
from sdk.schema import Behavior, Campaign, Consent, DecideRequest, Decision, Event
from sdk.sensitive import Sensitivity

__all__ = [
    "ANONYMOUS_PREFIX",
    "FULL_LOG",
    "LOG_VERSION",
    "MAX_CLOCK_SKEW",
    "DecisionRecord",
    "ErasureRecord",
    "EventRecord",
    "LogNotFoundError",
    "LogReader",
    "LogRecord",
    "LoggedOffer",
    "LoggedSignals",
    "LoggedSlot",
    "anonymous_id",
    "decision_record",
    "encode_record",
    "erasure_record",
    "event_record",
    "is_anonymous",
    "logged_path",
    "logged_slots",
    "logged_url",
    "read_log",
    "visitor_hash",
]

#: Version of the record formats; bumped on any incompatible change, written on every line.
LOG_VERSION = 1
#: Clock skew tolerated on a client's event timestamp; later ones are replaced by receipt time.
MAX_CLOCK_SKEW = timedelta(minutes=5)


#: What a record holds when consent allows everything (storage and personalization).
FULL_LOG = LogPermissions(record=True, ids=True, behavior=True, context=True)
#: Start of the stand-in visitor id of a record logged without storage consent.
ANONYMOUS_PREFIX = "anon-"


class LogNotFoundError(TailorError):
    """A log path given to :func:`read_log` does not exist."""


def visitor_hash(visitor_id: str) -> str:
    """The pseudonymous id of a visitor in erasure markers: SHA-256 hex of a domain-separated
    ``visitor_id``. Not anonymous: whoever knows an id can recompute it."""
    return hashlib.sha256(b"tailor-erasure-v1\0" + visitor_id.encode()).hexdigest()


def anonymous_id(decision_id: str | None) -> str:
    """The visitor id logged without storage consent: ``anon-`` and the decision id (an event
    of the decision gets the same one, so reports join them), or a random one when there is no
    decision. It links nothing beyond that one decision."""
    return ANONYMOUS_PREFIX + (decision_id or uuid.uuid4().hex)


def is_anonymous(visitor_id: str) -> bool:
    """Whether a logged ``visitor_id`` is an :func:`anonymous_id` stand-in."""
    return visitor_id.startswith(ANONYMOUS_PREFIX)


def logged_url(url: str | None) -> str | None:
    """``url`` as it is logged: no user info, no fragment, and of its query only the campaign
    keys (:func:`sdk.referrer.campaign_keys`); None for no URL or one that does not parse."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    keep = campaign_keys()
    query = "&".join(
        pair for pair in parts.query.split("&") if unquote(pair.partition("=")[0]).lower() in keep
    )
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, query, "")) or None


def logged_path(path: str | None) -> str | None:
    """A page path as it is logged: without any query string or fragment."""
    if not path:
        return None
    return path.partition("?")[0].partition("#")[0] or None


# --- records -------------------------------------------------------------------------------


class _Part(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """Base of the parts of log lines: camelCase, absent (None) fields omitted."""


class _Record(_Part, frozen=True, kw_only=True, tag_field="kind"):
    """Base of log lines: ``kind`` first, then ``logVersion``, then the fields of the record."""

    log_version: int


class LoggedSignals(_Part, frozen=True, kw_only=True):
    """The enrichment signals of a decision, without the referrer's search terms."""

    device_type: str
    os: str | None = None
    browser: str | None = None
    touch: bool
    referrer_class: str
    referrer_source: str | None = None
    country: str | None = None
    local_hour: int
    local_weekday: int


class LoggedOffer(_Part, frozen=True, kw_only=True):
    """A candidate offer of a decision with its score and rank."""

    id: str
    score: float
    rank: int


class LoggedSlot(_Part, frozen=True, kw_only=True):
    """The variant chosen for a slot, its offer and the probability it was chosen with; the
    candidate variants with their probabilities (when the choice was randomized) and the
    experiment arm (``experiment:arm``) that decided the slot, if any."""

    variant_id: str
    offer_id: str | None = None
    propensity: float
    candidates: dict[str, float] | None = None
    arm: str | None = None


class DecisionRecord(_Record, frozen=True, kw_only=True, tag="decision"):
    """A ``kind: decision`` line: what offline policy evaluation and the experiment reports
    need. A decision with ``experiment`` arms is the exposure record of those experiments."""

    type: Literal["decision"]
    timestamp: datetime
    decision_id: str
    model_version: str
    visitor_id: str
    session_id: str | None = None
    user_id: str | None = None
    consent: Consent
    personalized: bool
    signals: LoggedSignals
    timezone: str | None = None
    #: the merged behaviour the features were built from (personalized decisions only)
    behavior: dict[str, Any] | None = None
    persona: str | None = None
    segment: int | None = None
    lifecycle: str
    experiment: dict[str, str] | None = None
    offers: list[LoggedOffer]
    slots: dict[str, LoggedSlot]
    #: for replaying the decision offline (:meth:`sdk.Decider.replay`): the feature row it was
    #: made from, its feature set, the page path (no host, no query) and the UTM campaign
    features: list[float | None] | None = None  # NaN (a missing value) is logged as null
    feature_set: str | None = None
    path: str | None = None
    campaign: dict[str, str] | None = None

    def behavior_struct(self) -> Behavior | None:
        """The logged behaviour as the wire :class:`~sdk.schema.Behavior`."""
        if self.behavior is None:
            return None
        return msgspec.convert(self.behavior, Behavior)

    def campaign_struct(self) -> Campaign:
        """The logged UTM campaign as the wire :class:`~sdk.schema.Campaign`."""
        return msgspec.convert(self.campaign or {}, Campaign)


class EventRecord(_Record, frozen=True, kw_only=True, tag="event"):
    """A ``kind: event`` line: one feedback event with the keys of its decision.

    ``trusted`` says where it came from: True for events sent with a secret key and for
    conversions a backend confirmed (``POST /v1/conversions``, with their ``orderId``); False,
    and absent from the line, for events from browsers (public keys), whose values nobody
    vouches for. Lines written before the field existed read as untrusted too. ``eventId``
    is the sender's random id of the event (required from browsers), for deduplication."""

    type: str
    timestamp: datetime
    received_at: datetime
    visitor_id: str
    session_id: str | None = None
    user_id: str | None = None
    decision_id: str | None = None
    slot: str | None = None
    variant_id: str | None = None
    offer_id: str | None = None
    propensity: float | None = None
    value: float | None = None
    currency: str | None = None
    category: str | None = None
    url: str | None = None
    referrer: str | None = None
    timezone: str | None = None
    order_id: str | None = None
    event_id: str | None = None
    trusted: bool = False


class ErasureRecord(_Record, frozen=True, kw_only=True, tag="erasure"):
    """A ``kind: erasure`` line: the visitor (by :func:`visitor_hash`) asked to be forgotten."""

    type: Literal["erasure"]
    timestamp: datetime
    visitor_hash: str


#: Any line of the log.
LogRecord: TypeAlias = DecisionRecord | EventRecord | ErasureRecord

_encoder = msgspec.json.Encoder()


def encode_record(record: LogRecord) -> bytes:
    """One JSON line (with its newline) for ``record``."""
    return _encoder.encode(record) + b"\n"


# --- building records ----------------------------------------------------------------------


def logged_slots(decision: Decision) -> dict[str, LoggedSlot]:
    """The slots of ``decision`` as they are logged."""
    return {
        name: LoggedSlot(
            variant_id=s.variant_id,
            offer_id=s.offer_id,
            propensity=s.propensity,
            candidates=(
                {c.variant_id: c.probability for c in s.candidates}
                if s.candidates is not None
                else None
            ),
            arm=s.arm,
        )
        for name, s in decision.slots.items()
    }


def _behavior_fields(behavior: Behavior) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.to_builtins(behavior)
    return {k: v for k, v in raw.items() if v is not None and v != []}


def _campaign(c: Campaign) -> dict[str, str] | None:
    fields = {"source": c.source, "medium": c.medium, "name": c.name, "content": c.content}
    kept = {k: v for k, v in fields.items() if v}
    return kept or None


def _signals(decision: Decision, context: bool) -> LoggedSignals:
    sig = decision.signals
    return LoggedSignals(
        device_type=sig.device_type,
        os=sig.os if context else None,
        browser=sig.browser if context else None,
        touch=sig.touch,
        referrer_class=sig.referrer_class,
        referrer_source=sig.referrer_source,
        country=sig.country if context else None,
        local_hour=sig.local_hour,
        local_weekday=sig.local_weekday,
    )


def decision_record(
    decision: Decision,
    request: DecideRequest,
    *,
    timestamp: datetime,
    behavior: Behavior | None,
    row: FeatureRow | None,
    slots: dict[str, LoggedSlot] | None = None,
    policy: LogPermissions = FULL_LOG,
    sensitivity: Sensitivity | None = None,
) -> DecisionRecord:
    """The log record of ``decision``.

    Args:
        decision: what the decider answered.
        request: the request as the decider saw it (after the consent gate and enrichment).
        timestamp: when it was logged (timezone-aware).
        behavior: the merged behaviour the features were built from, or None when it may not
            be logged (see :mod:`sdk.consent`).
        row: the feature row the decision was made from (logged for offline replay).
        slots: :func:`logged_slots` of ``decision`` when already computed.
        policy: what the visit's consent lets the record hold
            (:func:`sdk.consent.log_policy`): without ``ids`` the visitor id is an
            :func:`anonymous_id` and there is no session or user id; without ``context`` no
            path, time zone, country, OS or browser.
        sensitivity: the decider's :class:`~sdk.sensitive.Sensitivity`: sensitive categories
            and a sensitive page path are scrubbed from ``request`` and ``behavior`` first.
    """
    if sensitivity is not None:
        request = sensitivity.scrub_request(request)
        behavior = None if behavior is None else sensitivity.scrub_behavior(behavior)
    ids, context = policy.ids, policy.context
    return DecisionRecord(
        log_version=LOG_VERSION,
        type="decision",
        timestamp=timestamp,
        decision_id=decision.decision_id,
        model_version=decision.model_version,
        visitor_id=decision.visitor_id if ids else anonymous_id(decision.decision_id),
        session_id=decision.session_id if ids else None,
        user_id=request.user_id if ids else None,
        consent=request.consent,
        personalized=decision.personalized,
        signals=_signals(decision, context),
        timezone=request.context.timezone if context else None,
        behavior=_behavior_fields(behavior) if behavior is not None and policy.behavior else None,
        persona=decision.persona.id if decision.persona is not None else None,
        segment=decision.segment.id if decision.segment is not None else None,
        lifecycle=decision.lifecycle.stage,
        experiment=decision.experiment,
        offers=[LoggedOffer(id=o.id, score=o.score, rank=o.rank) for o in decision.offers],
        slots=slots if slots is not None else logged_slots(decision),
        features=list(row.values) if row is not None else None,
        feature_set=row.version if row is not None else None,
        path=logged_path(request.context.page.path) if context else None,
        campaign=_campaign(request.context.campaign),
    )


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(properties: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = properties.get(key)
    return value[:limit] if isinstance(value, str) and value else None


def event_record(
    event: Event,
    received: datetime,
    *,
    chosen: LoggedSlot | None = None,
    user_id: str | None = None,
    timezone: str | None = None,
    policy: LogPermissions = FULL_LOG,
    trusted: bool = False,
    sensitivity: Sensitivity | None = None,
) -> EventRecord:
    """The log record of ``event``, received at ``received`` (UTC).

    Args:
        event: a decoded feedback event.
        received: when the server received it; stands in for a missing event timestamp or one
            more than :data:`MAX_CLOCK_SKEW` in the future.
        chosen: the logged slot of the event's decision, when known and about the same
            variant: its propensity, variant and offer are copied onto the record.
        user_id: the user id of the event's decision, when known.
        timezone: the time zone of the event's decision, when known.
        policy: what the sender's consent lets the record hold
            (:func:`sdk.consent.event_log_policy`): without ``ids`` the visitor id is the
            :func:`anonymous_id` of the event's decision and there is no session or user id;
            without ``context`` no URL, referrer or time zone. URLs are always
            :func:`logged_url`.
        trusted: the sender is trusted (a secret key, a confirmed conversion): its value
            counts as revenue in reports and retraining. The ``orderId`` property is logged
            as ``order_id`` (with ``ids`` only).
        sensitivity: the decider's :class:`~sdk.sensitive.Sensitivity`: a sensitive
            ``category`` and sensitive URLs are dropped from the properties first.
    """
    if sensitivity is not None:
        event = sensitivity.scrub_event(event)
    when = _as_utc(event.timestamp) if event.timestamp is not None else received
    if when > received + MAX_CLOCK_SKEW:
        when = received
    propensity = chosen.propensity if chosen is not None and chosen.propensity > 0 else None
    props = event.properties
    ids, context = policy.ids, policy.context
    return EventRecord(
        log_version=LOG_VERSION,
        type=event.type,
        timestamp=when,
        received_at=received,
        visitor_id=event.visitor_id if ids else anonymous_id(event.decision_id),
        session_id=event.session_id if ids else None,
        user_id=user_id if ids else None,
        decision_id=event.decision_id,
        slot=event.slot,
        variant_id=event.variant_id or (chosen.variant_id if chosen is not None else None),
        offer_id=event.offer_id or (chosen.offer_id if chosen is not None else None),
        propensity=propensity,
        value=event.value,
        currency=event.currency,
        category=_text(props, "category", 64),
        url=logged_url(_text(props, "url", 4096)) if context else None,
        referrer=logged_url(_text(props, "referrer", 4096)) if context else None,
        timezone=(_text(props, "timezone", 64) or timezone) if context else None,
        order_id=_text(props, "orderId", 128) if ids else None,
        event_id=event.event_id,
        trusted=trusted,
    )


def erasure_record(visitor_id: str, timestamp: datetime) -> ErasureRecord:
    """The marker that ``visitor_id`` asked to be erased (as :func:`visitor_hash` only)."""
    return ErasureRecord(
        log_version=LOG_VERSION,
        type="erasure",
        timestamp=timestamp,
        visitor_hash=visitor_hash(visitor_id),
    )


# --- reading -------------------------------------------------------------------------------


class _Kind(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    kind: Any = None
    log_version: Any = None


_record_decoder: msgspec.json.Decoder[LogRecord] = msgspec.json.Decoder(LogRecord)
_kind_decoder = msgspec.json.Decoder(_Kind)
_KINDS = frozenset({"decision", "event", "erasure"})


class LogReader:
    """The records of log files, in file order, decoded to :data:`LogRecord`; iterable more
    than once, streaming (one line in memory at a time).

    A directory contributes its ``*.jsonl`` files (not hidden ones) sorted by name, which for
    the server's log is the order they were opened. A file that disappears between listing and
    reading (rotated or purged meanwhile) is skipped. Blank lines are skipped; other lines that
    are not records are skipped and counted by reason.

    Attributes:
        files: the files read by the last iteration.
        lines: the non-blank lines read by the last iteration.
        malformed: lines that are not a valid record of a known kind (a torn last line after
            a crash, a line being written, a hand-edited line).
        newer: lines of a newer :data:`LOG_VERSION` than this reader knows.
        unknown_kind: well-formed lines of a ``kind`` this version does not know.
    """

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(paths)
        self.files: list[Path] = []
        self.lines = 0
        self.malformed = 0
        self.newer = 0
        self.unknown_kind = 0

    @property
    def skipped(self) -> dict[str, int]:
        """The lines skipped by the last iteration, by reason (zero counts left out)."""
        counts = {
            "malformed": self.malformed,
            "newer_log_version": self.newer,
            "unknown_kind": self.unknown_kind,
        }
        return {k: v for k, v in counts.items() if v}

    def _list(self) -> list[Path]:
        found: list[Path] = []
        for path in self.paths:
            if path.is_dir():
                found.extend(
                    sorted(
                        p
                        for p in path.iterdir()
                        if p.suffix == ".jsonl" and not p.name.startswith(".") and p.is_file()
                    )
                )
            else:
                found.append(path)
        return found

    def _skip(self, raw: bytes) -> None:
        try:
            view = _kind_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1
            return
        version = view.log_version
        if isinstance(version, int) and not isinstance(version, bool) and version > LOG_VERSION:
            self.newer += 1
        elif isinstance(view.kind, str) and view.kind not in _KINDS:
            self.unknown_kind += 1
        else:
            self.malformed += 1

    def __iter__(self) -> Iterator[LogRecord]:
        self.files = self._list()
        self.lines = self.malformed = self.newer = self.unknown_kind = 0
        for path in self.files:
            try:
                fh = path.open("rb")
            except (FileNotFoundError, PermissionError):
                continue  # rotated away or purged meanwhile
            with fh:
                for raw in fh:
                    if not raw.strip():
                        continue
                    self.lines += 1
                    try:
                        record = _record_decoder.decode(raw)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        self._skip(raw)
                        continue
                    if record.log_version > LOG_VERSION:
                        self.newer += 1
                        continue
                    yield record


def read_log(paths: str | Path | Iterable[str | Path], *, missing_ok: bool = False) -> LogReader:
    """The records of a log directory, of log files, or of several of either.

    Args:
        paths: directories (their ``*.jsonl`` files) and files.
        missing_ok: treat a path that does not exist as an empty log (a server that has not
            logged anything yet) instead of raising.

    Raises:
        LogNotFoundError: a path does not exist and ``missing_ok`` is false.
    """
    given = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    existing = [p for p in given if p.exists()]
    if not missing_ok and len(existing) < len(given):
        gone = next(p for p in given if not p.exists())
        raise LogNotFoundError(f"event log {gone} does not exist")
    return LogReader(existing)
