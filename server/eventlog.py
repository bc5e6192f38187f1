"""A durable local event log: decisions, feedback events and erasure markers as JSON Lines.

Each worker process appends to its own file ``<dir>/events-YYYYMMDD-HHMMSS-<pid>.jsonl`` (UTC
time of opening; ``-1``, ``-2``... is appended when that name is taken), so workers never
interleave writes in one file. A file is rotated when it would grow past ``max_bytes`` or is
``max_age`` old; a rotated file is closed and made read-only (mode ``0o440``), which is how
:meth:`EventLog.purge_visitor` recognises closed files of other processes.

Durability: appends only add an encoded line to an in-memory buffer (no I/O on the request
path). A background thread writes the buffer, then ``flush`` + ``os.fsync`` (one fsync per
batch), every ``flush_interval`` seconds or as soon as ``max_batch`` records wait, and
:meth:`EventLog.close` writes what is left. **A crash loses at most the records of the last
flush interval** (and leaves at most one torn last line, which readers count as malformed).
The thread is started lazily by the first append of each process (threads do not survive
``fork``); an EventLog inherited through ``fork`` drops the parent's buffer and starts afresh.

Errors: an unusable directory (cannot be created or written) raises :class:`EventLogError` at
construction. Later failures (disk full, I/O errors) never reach the request path: the records
of the failed batch are counted in :attr:`EventLog.dropped`, logged once per failure streak,
and the next batch starts a new file. Records are also dropped (and counted) when
``max_pending`` records wait unwritten, or after :meth:`EventLog.close`.

Record kinds (``kind``), camelCase like the wire schema; every line also has ``logVersion``
(:data:`LOG_VERSION`), ``type`` and ``timestamp``, so ``model_export.inputs.ingest.read_events`` can
read every file of the directory (it counts decision and erasure lines as rejected rows):

* ``decision``: what offline policy evaluation needs: decision id, model version, visitor,
  session and user ids, consent, the feature-relevant context (enrichment signals without
  search terms, time zone, behaviour counters when personalization was allowed), persona,
  segment, lifecycle, experiment arms, ranked candidate offers with scores, and per slot the
  chosen variant, offer and propensity, the candidate variants with their probabilities and
  the deciding arm. A decision line with ``experiment`` arms is the **exposure** record of
  those experiments (reports count visitors from it). Never an IP address, a raw user agent
  or a page URL.
* ``event``: one :class:`sdk.schema.Event` flattened to the columns of
  ``model_export.inputs.config.EventColumns``; ``propensity`` (and a missing ``offerId``/``userId``/
  ``timezone``) is copied from the decision when this process still remembers the event's
  ``decisionId`` and ``slot``. Only the ``category``, ``url`` and ``referrer`` string properties
  are kept; other properties are not logged.
* ``erasure``: a visitor asked to be forgotten; it carries only :func:`visitor_hash` of the id,
  so the marker survives the purge without re-identifying anyone.

GDPR erasure: :meth:`EventLog.purge_visitor` (one visitor) and :meth:`EventLog.purge_erased`
(every visitor with an erasure marker) rewrite closed files without that visitor's lines. They
are the offline erasure tool: run them from a job, not on the request path.

Must not import model_export.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec

from sdk.features import FeatureRow, merge_behavior
from sdk.schema import Behavior, Campaign, Consent, DecideRequest, Decision, Event
from server.lru import LruTtlCache

__all__ = [
    "LOG_VERSION",
    "MAX_CLOCK_SKEW",
    "DecisionRecord",
    "ErasureRecord",
    "EventLog",
    "EventLogError",
    "EventRecord",
    "LoggedOffer",
    "LoggedSignals",
    "LoggedSlot",
    "visitor_hash",
]

log = logging.getLogger("tailor.server.eventlog")

#: Version of the line formats below; bumped on any incompatible change, written on every line.
LOG_VERSION = 1
#: Clock skew tolerated on a client's event timestamp; later ones are replaced by receipt time.
MAX_CLOCK_SKEW = timedelta(minutes=5)
_FILE_RE = re.compile(r"^events-(\d{8})-(\d{6})-(\d+)(?:-(\d+))?\.jsonl$")
_VISITOR_RE = re.compile(rb'"visitorId":"([^"\\]*)"')
_OPEN_MODE = 0o640
_CLOSED_MODE = 0o440
_THREAD_NAME = "tailor-eventlog-flusher"


class EventLogError(Exception):
    """The log directory cannot be created or written (raised by :class:`EventLog`)."""


def visitor_hash(visitor_id: str) -> str:
    """The pseudonymous id of a visitor in erasure markers: SHA-256 hex of a domain-separated
    ``visitor_id``. Not anonymous: whoever knows an id can recompute it."""
    return hashlib.sha256(b"tailor-erasure-v1\0" + visitor_id.encode()).hexdigest()


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
    """A ``kind: decision`` line."""

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


class EventRecord(_Record, frozen=True, kw_only=True, tag="event"):
    """A ``kind: event`` line: the columns ``model_export`` reads, plus the decision keys."""

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


class ErasureRecord(_Record, frozen=True, kw_only=True, tag="erasure"):
    """A ``kind: erasure`` line: the visitor (by :func:`visitor_hash`) asked to be forgotten."""

    type: Literal["erasure"]
    timestamp: datetime
    visitor_hash: str


class _LineView(msgspec.Struct, kw_only=True, rename="camel"):
    """What purging reads of a line."""

    kind: str | None = None
    visitor_id: str | None = None
    visitor_hash: str | None = None


_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(_LineView)


class _Remembered(msgspec.Struct, frozen=True, array_like=True):
    """What an event needs from its decision: visitor, user, time zone and chosen slots.

    Kept msgpack-encoded (bytes) while remembered: one object per decision that the garbage
    collector never scans, instead of half a dozen it would walk on every collection."""

    visitor_id: str
    user_id: str | None
    timezone: str | None
    slots: dict[str, LoggedSlot]


_remembered_encoder = msgspec.msgpack.Encoder()
_remembered_decoder = msgspec.msgpack.Decoder(_Remembered)


def _recalled(raw: bytes | None) -> _Remembered | None:
    return _remembered_decoder.decode(raw) if raw is not None else None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(properties: dict[str, Any], key: str, limit: int) -> str | None:
    value = properties.get(key)
    return value[:limit] if isinstance(value, str) and value else None


def _fsync_dir(directory: Path) -> None:
    """Make a created or renamed directory entry durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the log -------------------------------------------------------------------------------


class EventLog:
    """Append-only JSON Lines log of one worker process; thread-safe.

    Args:
        directory: where the files go; created if missing.
        flush_interval: seconds between background writes (each followed by one fsync).
        max_bytes: a file is rotated before it would grow past this size.
        max_age: a file is rotated (closed) when it is this old.
        clock: timezone-aware current time; names files, ages them, stamps records.
        max_batch: this many waiting records wake the writer before the interval ends.
        max_pending: records beyond this many waiting ones are dropped (disk stalled).
        remember: how many recent decisions are kept to copy propensities onto events.
        remember_for: how long a decision is remembered for that.

    Raises:
        EventLogError: the directory cannot be created or written.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        flush_interval: float = 1.0,
        max_bytes: int = 64 * 1024 * 1024,
        max_age: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = _utcnow,
        max_batch: int = 1000,
        max_pending: int = 100_000,
        remember: int = 50_000,
        remember_for: timedelta = timedelta(hours=1),
    ) -> None:
        if flush_interval <= 0 or max_bytes <= 0 or max_age <= timedelta(0):
            raise ValueError("flush_interval, max_bytes and max_age must be positive")
        self.directory = Path(directory)
        self.flush_interval = flush_interval
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._clock = clock
        self._remember = remember
        self._remember_for = remember_for.total_seconds()
        self._check_directory()
        self._reset_process_state()

    # -- set-up -------------------------------------------------------------------------------

    def _check_directory(self) -> None:
        probe = self.directory / f".probe-{os.getpid()}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with probe.open("wb") as fh:
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError as exc:
            raise EventLogError(
                f"event log directory {self.directory} is not writable: {exc}"
            ) from exc

    def _reset_process_state(self) -> None:
        """State owned by one process; reset in a child after ``fork``."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._io_lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._dropped = 0
        self._failing = False
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened_at: datetime | None = None
        self._recent: LruTtlCache[str, bytes] = LruTtlCache(
            self._remember, self._remember_for, timer=lambda: self._clock().timestamp()
        )

    def _check_fork(self) -> None:
        """In a child after ``fork``: forget the parent's buffer, thread, locks and file."""
        if os.getpid() != self._pid:
            inherited = self._fd
            self._reset_process_state()
            if inherited is not None:
                with contextlib.suppress(OSError):
                    os.close(inherited)  # the child's copy of the parent's descriptor

    # -- public surface -----------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records lost so far: failed writes, a full buffer, or appends after close."""
        return self._dropped

    @property
    def current(self) -> Path | None:
        """The file this process is writing, or None."""
        return self._path

    def append_decision(
        self,
        decision: Decision,
        request: DecideRequest,
        *,
        profile: Behavior | None = None,
        row: FeatureRow | None = None,
    ) -> None:
        """Log a decision and remember its slots for the events that follow.

        Args:
            decision: what the decider answered.
            request: the request as the decider saw it (after consent gate and enrichment).
            profile: the stored profile passed to the decider, if any: the behaviour logged
                is then the merged one the features were built from.
            row: the feature row the decision was made from (logged for offline replay).
        """
        personal = request.consent.personalization
        behavior = None
        if personal:  # the row's behaviour is that merge already (the features were built on it)
            behavior = (
                row.behavior if row is not None else merge_behavior(request.behavior, profile)
            )
        slots = {
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
        sig = decision.signals
        record = DecisionRecord(
            log_version=LOG_VERSION,
            type="decision",
            timestamp=self._clock(),
            decision_id=decision.decision_id,
            model_version=decision.model_version,
            visitor_id=decision.visitor_id,
            session_id=decision.session_id,
            user_id=request.user_id,
            consent=request.consent,
            personalized=decision.personalized,
            signals=LoggedSignals(
                device_type=sig.device_type,
                os=sig.os,
                browser=sig.browser,
                touch=sig.touch,
                referrer_class=sig.referrer_class,
                referrer_source=sig.referrer_source,
                country=sig.country,
                local_hour=sig.local_hour,
                local_weekday=sig.local_weekday,
            ),
            timezone=request.context.timezone,
            behavior=_behavior_fields(behavior) if behavior is not None else None,
            persona=decision.persona.id if decision.persona is not None else None,
            segment=decision.segment.id if decision.segment is not None else None,
            lifecycle=decision.lifecycle.stage,
            experiment=decision.experiment,
            offers=[LoggedOffer(id=o.id, score=o.score, rank=o.rank) for o in decision.offers],
            slots=slots,
            features=list(row.values) if row is not None else None,
            feature_set=row.version if row is not None else None,
            path=(request.context.page.path or None),
            campaign=_campaign(request.context.campaign),
        )
        line = _encoder.encode(record) + b"\n"
        remembered = _Remembered(
            decision.visitor_id, request.user_id, request.context.timezone, slots
        )
        self._append([line], remember=(decision.decision_id, remembered))

    def append_events(self, events: Sequence[Event], *, received_at: datetime) -> None:
        """Log feedback events, each as one ``kind: event`` line.

        Args:
            events: decoded events (of any visitors).
            received_at: timezone-aware time the server received them; stands in for a missing
                event timestamp or one more than :data:`MAX_CLOCK_SKEW` in the future.
        """
        if received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        received = received_at.astimezone(UTC)
        self._check_fork()
        with self._lock:
            known = {
                e.decision_id: _recalled(self._recent.get(e.decision_id))
                for e in events
                if e.decision_id is not None
            }
        lines = [_encoder.encode(_event_record(e, received, known)) + b"\n" for e in events]
        self._append(lines)

    def append_erasure(self, visitor_id: str) -> None:
        """Log that ``visitor_id`` asked to be erased (as :func:`visitor_hash` only)."""
        record = ErasureRecord(
            log_version=LOG_VERSION,
            type="erasure",
            timestamp=self._clock(),
            visitor_hash=visitor_hash(visitor_id),
        )
        self._append([_encoder.encode(record) + b"\n"])

    def flush(self) -> None:
        """Write and fsync every waiting record now, in the calling thread."""
        self._check_fork()
        self._write_pending()

    def close(self) -> None:
        """Stop the writer thread, write what is left and close the file (idempotent).
        Later appends are dropped and counted."""
        self._check_fork()
        with self._lock:
            self._stopping = True
            self._closed = True
            thread = self._thread
            self._wake.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._write_pending()
        with self._io_lock:
            self._close_file()

    def files(self) -> list[Path]:
        """Every log file in the directory (all processes'), in the order they were opened
        (by the time in the name, then pid, then number)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _FILE_RE.match(path.name)
            if match is not None:
                day, time, pid, n = match.groups()
                found.append(((day, time, int(pid), int(n or 0)), path))
        return [path for _, path in sorted(found)]

    def closed_files(self) -> list[Path]:
        """The log files no process is writing: read-only ones (closed by rotation or close),
        and those whose writer process no longer runs on this machine (after a crash)."""
        out = []
        for path in self.files():
            if path == self._path:
                continue
            match = _FILE_RE.match(path.name)
            assert match is not None
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                continue
            if not mode & stat.S_IWUSR or not _pid_alive(int(match.group(3))):
                out.append(path)
        return out

    def purge_visitor(self, visitor_id: str) -> int:
        """Rewrite closed files without the lines of ``visitor_id``; the offline erasure tool.

        Files still being written are skipped: run it again once they are closed (at most
        ``max_age`` later), or use :meth:`purge_erased` from a periodic job.

        Returns:
            How many lines were removed.
        """
        return self._purge(lambda vid: vid == visitor_id)

    def purge_erased(self) -> int:
        """Rewrite closed files without the lines of every visitor that has an erasure marker
        in any file of the directory. The markers stay. Returns how many lines were removed."""
        hashes: set[str] = set()
        for path in self.files():
            for line in _read_lines(path):
                view = _view(line)
                if view is not None and view.kind == "erasure" and view.visitor_hash:
                    hashes.add(view.visitor_hash)
        if not hashes:
            return 0
        return self._purge(lambda vid: visitor_hash(vid) in hashes)

    # -- appending ----------------------------------------------------------------------------

    def _append(
        self, lines: list[bytes], *, remember: tuple[str, _Remembered] | None = None
    ) -> None:
        self._check_fork()
        with self._lock:
            if remember is not None:
                self._recent[remember[0]] = _remembered_encoder.encode(remember[1])
            if self._closed:
                self._dropped += len(lines)
                return
            room = self.max_pending - len(self._buffer)
            if room < len(lines):
                self._dropped += len(lines) - max(room, 0)
                lines = lines[: max(room, 0)]
            self._buffer.extend(lines)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
                self._thread.start()
            if len(self._buffer) >= self.max_batch:
                self._wake.notify()

    def _run(self) -> None:
        """The writer thread: write every interval, on a full batch, and once more on stop."""
        while True:
            with self._lock:
                if not self._stopping and len(self._buffer) < self.max_batch:
                    self._wake.wait(self.flush_interval)
                stopping = self._stopping
            try:
                self._write_pending()
            except Exception:  # never let the writer die: the next interval tries again
                log.exception("event log writer failed")
            if stopping:
                return

    # -- writing (under the I/O lock) ---------------------------------------------------------

    def _write_pending(self) -> None:
        with self._io_lock:
            with self._lock:
                lines, self._buffer = self._buffer, []
            now = self._clock()
            if self._opened_at is not None and now - self._opened_at >= self.max_age:
                self._close_file()
            if lines:
                self._write(lines, now)

    def _write(self, lines: list[bytes], now: datetime) -> None:
        chunk: list[bytes] = []
        size = self._size
        done = 0
        try:
            if self._fd is None:
                self._open_file(now)
                size = 0
            for line in lines:
                if (chunk or size) and size + len(line) > self.max_bytes:
                    self._write_chunk(chunk)
                    done += len(chunk)
                    chunk = []
                    self._close_file()
                    self._open_file(now)
                    size = 0
                chunk.append(line)
                size += len(line)
            self._write_chunk(chunk)
        except OSError as exc:
            with self._lock:
                self._dropped += len(lines) - done
            if not self._failing:
                log.warning("event log write failed, records dropped: %s", exc)
            self._failing = True
            self._close_file(quiet=True)
            return
        if self._failing:
            log.warning("event log writes succeed again (%d records dropped)", self._dropped)
        self._failing = False

    def _write_chunk(self, chunk: list[bytes]) -> None:
        if not chunk or self._fd is None:
            return
        data = memoryview(b"".join(chunk))
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)
        self._size += sum(map(len, chunk))

    def _open_file(self, now: datetime) -> None:
        stem = f"events-{now.astimezone(UTC):%Y%m%d-%H%M%S}-{os.getpid()}"
        for n in range(1000):
            path = self.directory / (f"{stem}.jsonl" if n == 0 else f"{stem}-{n}.jsonl")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, _OPEN_MODE)
            except FileExistsError:
                continue
            break
        else:
            raise OSError(f"no free event log file name for {stem}")
        self._fd = fd
        self._path = path
        self._size = 0
        self._opened_at = now
        _fsync_dir(self.directory)

    def _close_file(self, *, quiet: bool = False) -> None:
        """Close the current file and make it read-only: the mark of a closed file."""
        fd, path = self._fd, self._path
        self._fd, self._path, self._opened_at, self._size = None, None, None, 0
        if fd is None or path is None:
            return
        try:
            os.close(fd)
            os.chmod(path, _CLOSED_MODE)
        except OSError as exc:
            if not quiet:
                log.warning("closing event log file %s failed: %s", path, exc)

    # -- purging ------------------------------------------------------------------------------

    def _purge(self, erased: Callable[[str], bool]) -> int:
        removed = 0
        for path in self.closed_files():
            lines = _read_lines(path)
            kept = [line for line in lines if not _belongs(line, erased)]
            if len(kept) == len(lines):
                continue
            tmp = path.with_name(f".{path.name}.purge")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _OPEN_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.writelines(kept)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, _CLOSED_MODE)
            os.replace(tmp, path)
            _fsync_dir(self.directory)
            removed += len(lines) - len(kept)
        return removed


def _behavior_fields(behavior: Behavior) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.to_builtins(behavior)
    return {k: v for k, v in raw.items() if v is not None and v != []}


def _event_record(
    event: Event, received: datetime, known: dict[str, _Remembered | None]
) -> EventRecord:
    when = _as_utc(event.timestamp) if event.timestamp is not None else received
    if when > received + MAX_CLOCK_SKEW:
        when = received
    decision = known.get(event.decision_id) if event.decision_id is not None else None
    if decision is not None and decision.visitor_id != event.visitor_id:
        decision = None  # someone else's decision id: copy nothing from it
    chosen = decision.slots.get(event.slot) if decision is not None and event.slot else None
    if chosen is not None and (
        event.offer_id not in (None, chosen.offer_id)
        or event.variant_id not in (None, chosen.variant_id)
    ):
        chosen = None  # the event is about another variant than the one logged
    propensity = chosen.propensity if chosen is not None and chosen.propensity > 0 else None
    props = event.properties
    return EventRecord(
        log_version=LOG_VERSION,
        type=event.type,
        timestamp=when,
        received_at=received,
        visitor_id=event.visitor_id,
        session_id=event.session_id,
        user_id=decision.user_id if decision is not None else None,
        decision_id=event.decision_id,
        slot=event.slot,
        variant_id=event.variant_id or (chosen.variant_id if chosen is not None else None),
        offer_id=event.offer_id or (chosen.offer_id if chosen is not None else None),
        propensity=propensity,
        value=event.value,
        currency=event.currency,
        category=_text(props, "category", 64),
        url=_text(props, "url", 4096),
        referrer=_text(props, "referrer", 4096),
        timezone=_text(props, "timezone", 64) or (decision.timezone if decision else None),
    )


def _read_lines(path: Path) -> list[bytes]:
    try:
        with path.open("rb") as fh:
            return fh.readlines()
    except FileNotFoundError:
        return []


def _view(line: bytes) -> _LineView | None:
    try:
        return _line_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _belongs(line: bytes, erased: Callable[[str], bool]) -> bool:
    """Whether ``line`` is about an erased visitor; a torn line is judged by its raw text."""
    view = _view(line)
    if view is not None:
        return view.visitor_id is not None and erased(view.visitor_id)
    return any(erased(m.decode(errors="replace")) for m in _VISITOR_RE.findall(line))


def _campaign(c: Campaign) -> dict[str, str] | None:
    fields = {"source": c.source, "medium": c.medium, "name": c.name, "content": c.content}
    kept = {k: v for k, v in fields.items() if v}
    return kept or None
