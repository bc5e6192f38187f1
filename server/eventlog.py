"""The server's durable event log: decisions, feedback events and erasure markers, appended
as JSON Lines records of :mod:`sdk.logs` by each worker process to files of its own.

Appends only buffer an encoded line; a background thread (started lazily per process) hands
each batch to the log's output every ``flush_interval`` seconds: by default local files
(:class:`server.logfiles.RotatingFiles`: one fsync per batch, rotated by size and age, the
directory capped by a :class:`~server.logfiles.Retention`), or, with Redis, the event stream
(:class:`server.stream.StreamOutput`, spooled to local files while Redis is away). What could
not be written is counted (:attr:`EventLog.dropped`, :meth:`EventLog.health`), never raised.
Decisions are remembered for a while so that their events get the propensity, offer, user and
time zone of the decision. File naming and the offline erasure of closed files are in
:mod:`server.eventlog_purge`.

Must not import model_export.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import msgspec

from sdk.consent import LogPermissions, log_policy
from sdk.features import FeatureRow, merge_behavior
from sdk.logs import (
    FULL_LOG,
    EventRecord,
    LoggedSlot,
    decision_record,
    encode_record,
    erasure_record,
    event_record,
    logged_slots,
)
from sdk.schema import Behavior, DecideRequest, Decision, Event
from server.eventlog_purge import (
    closed_files,
    erased_by_hash,
    erased_hashes,
    log_files,
    purge,
)
from server.logfiles import Losses, Retention, RotatingFiles, WriteFailed, describe
from server.lru import LruTtlCache

__all__ = ["EventLog", "EventLogError", "LogOutput"]

log = logging.getLogger("tailor.server.eventlog")

_THREAD_NAME = "tailor-eventlog-flusher"


class EventLogError(Exception):
    """The log directory cannot be created or written (raised by :class:`EventLog`)."""


class LogOutput(Protocol):
    """Where the writer thread puts each batch: local files (:class:`RotatingFiles`) or the
    Redis stream (:class:`server.stream.StreamOutput`). Called from one thread at a time."""

    @property
    def current(self) -> Path | None:
        """The local file being written, if any."""
        ...

    def write(self, lines: list[bytes], now: datetime) -> None:
        """Put ``lines`` durably somewhere; raises :class:`WriteFailed` when it could not."""
        ...

    def tick(self, now: datetime) -> None:
        """Periodic work without new lines: close an aged file, replay a spool."""
        ...

    def close(self) -> None:
        """Close what is open (idempotent)."""
        ...

    def forget(self) -> None:
        """In a child after ``fork``: drop the parent's files and connections unused."""
        ...

    def health(self) -> dict[str, Any]:
        """What ``/readyz`` shows of the output."""
        ...


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


def _log_all(_visitor_id: str) -> LogPermissions:
    return FULL_LOG


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
        retention: size and age caps of ``directory``, applied when a file is opened.
        output: where batches go instead of the files of ``directory`` (the event stream).
        losses: where lost records are counted (shared with ``output``; feeds a metric).

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
        retention: Retention | None = None,
        output: LogOutput | None = None,
        losses: Losses | None = None,
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
        self._losses = losses or getattr(output, "losses", None) or Losses()
        self._output: LogOutput = output or RotatingFiles(
            self.directory, max_bytes=max_bytes, max_age=max_age, retention=retention
        )
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
        self._withheld = 0
        self._failing = False
        self._recent: LruTtlCache[str, bytes] = LruTtlCache(
            self._remember, self._remember_for, timer=lambda: self._clock().timestamp()
        )

    def _check_fork(self) -> None:
        """In a child after ``fork``: forget the parent's buffer, thread, locks and file."""
        if os.getpid() != self._pid:
            self._output.forget()  # the child's copies of the parent's descriptors
            self._reset_process_state()

    # -- public surface -----------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records lost so far: failed writes, a full buffer, appends after close, or spooled
        records that the spool's caps deleted before they could be replayed."""
        return self._losses.count

    @property
    def withheld(self) -> int:
        """Decisions and events not logged because their consent allows no record."""
        return self._withheld

    @property
    def current(self) -> Path | None:
        """The file this process is writing, or None."""
        return self._output.current

    def health(self) -> dict[str, Any]:
        """What ``/readyz`` shows of this worker's log: ``lostRecords``, ``lastError``,
        ``lastErrorAt`` and the output's state (``output``: ``files`` or ``stream``; for the
        stream ``streamAvailable`` and ``spooledBytes``)."""
        return {**self._losses.health(), **self._output.health()}

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
        policy = log_policy(request.consent)
        if not policy.record:
            self._withhold(1)  # a refusal: counted, not logged, not remembered
            return
        behavior = None
        if policy.behavior:
            # the row's behaviour is that merge already (the features were built on it)
            behavior = (
                row.behavior if row is not None else merge_behavior(request.behavior, profile)
            )
        slots = logged_slots(decision)
        record = decision_record(
            decision,
            request,
            timestamp=self._clock(),
            behavior=behavior,
            row=row,
            slots=slots,
            policy=policy,
        )
        remembered = _Remembered(
            decision.visitor_id, request.user_id, request.context.timezone, slots
        )
        self._append([encode_record(record)], remember=(decision.decision_id, remembered))

    def append_events(
        self,
        events: Sequence[Event],
        *,
        received_at: datetime,
        policy: Callable[[str], LogPermissions] = _log_all,
        trusted: bool = False,
    ) -> None:
        """Log feedback events, each as one ``kind: event`` line.

        Args:
            events: decoded events (of any visitors).
            received_at: timezone-aware time the server received them; stands in for a missing
                event timestamp or one too far in the future (:data:`sdk.logs.MAX_CLOCK_SKEW`).
            policy: what the log may hold of a visitor's events
                (:func:`sdk.consent.event_log_policy`); events it does not let be recorded
                are only counted (:attr:`withheld`).
            trusted: whether the sender is trusted (a secret key or a confirmed conversion,
                :attr:`sdk.logs.EventRecord.trusted`); browsers' events are not.
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
        policies = {v: policy(v) for v in {e.visitor_id for e in events}}
        kept = [e for e in events if policies[e.visitor_id].record]
        if len(kept) < len(events):
            self._withhold(len(events) - len(kept))
        lines = [
            encode_record(_event_record(e, received, known, policies[e.visitor_id], trusted))
            for e in kept
        ]
        if lines:
            self._append(lines)

    def append_erasure(self, visitor_id: str) -> None:
        """Log that ``visitor_id`` asked to be erased (as :func:`sdk.logs.visitor_hash` only)."""
        self._append([encode_record(erasure_record(visitor_id, self._clock()))])

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
            self._output.close()

    def files(self) -> list[Path]:
        """Every log file in the directory (all processes'), in the order they were opened."""
        return log_files(self.directory)

    def closed_files(self) -> list[Path]:
        """The log files no process is writing (see :func:`server.eventlog_purge.closed_files`)."""
        return closed_files(self.directory, self.current)

    def purge_visitor(self, visitor_id: str) -> int:
        """Rewrite closed files without the lines of ``visitor_id``; the offline erasure tool.

        Files still being written are skipped: run it again once they are closed (at most
        ``max_age`` later), or use :meth:`purge_erased` from a periodic job.

        Returns:
            How many lines were removed.
        """
        return purge(self.directory, self.closed_files(), lambda vid: vid == visitor_id)

    def purge_erased(self) -> int:
        """Rewrite closed files without the lines of every visitor that has an erasure marker
        in any file of the directory. The markers stay. Returns how many lines were removed."""
        hashes = erased_hashes(self.files())
        if not hashes:
            return 0
        return purge(self.directory, self.closed_files(), erased_by_hash(hashes))

    # -- appending ----------------------------------------------------------------------------

    def _withhold(self, n: int) -> None:
        self._check_fork()
        with self._lock:
            self._withheld += n

    def _append(
        self, lines: list[bytes], *, remember: tuple[str, _Remembered] | None = None
    ) -> None:
        self._check_fork()
        with self._lock:
            if remember is not None:
                self._recent[remember[0]] = _remembered_encoder.encode(remember[1])
            if self._closed:
                self._losses.add(len(lines), "closed")
                return
            room = self.max_pending - len(self._buffer)
            if room < len(lines):
                self._losses.add(len(lines) - max(room, 0), "buffer", "the write buffer is full")
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
            self._output.tick(now)
            if lines:
                self._write(lines, now)

    def _write(self, lines: list[bytes], now: datetime) -> None:
        try:
            self._output.write(lines, now)
        except WriteFailed as exc:
            self._losses.add(len(lines) - exc.written, "write", describe(exc.error))
            if not self._failing:
                log.warning("event log write failed, records dropped: %s", exc.error)
            self._failing = True
            return
        if self._failing:
            log.warning("event log writes succeed again (%d records dropped)", self.dropped)
        self._failing = False


def _event_record(
    event: Event,
    received: datetime,
    known: dict[str, _Remembered | None],
    policy: LogPermissions,
    trusted: bool,
) -> EventRecord:
    """The record of ``event`` with what its remembered decision, if any, tells about it."""
    decision = known.get(event.decision_id) if event.decision_id is not None else None
    if decision is not None and decision.visitor_id != event.visitor_id:
        decision = None  # someone else's decision id: copy nothing from it
    chosen = decision.slots.get(event.slot) if decision is not None and event.slot else None
    if chosen is not None and (
        event.offer_id not in (None, chosen.offer_id)
        or event.variant_id not in (None, chosen.variant_id)
    ):
        chosen = None  # the event is about another variant than the one logged
    if decision is None:
        return event_record(event, received, chosen=chosen, policy=policy, trusted=trusted)
    return event_record(
        event,
        received,
        chosen=chosen,
        user_id=decision.user_id,
        timezone=decision.timezone,
        policy=policy,
        trusted=trusted,
    )
