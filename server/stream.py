"""The event stream: with Redis, every worker's decisions, events and erasure markers go to one
Redis Stream, which ``python -m server.sink`` consumers turn into the log files training reads.

Each stream entry holds a record id (``id``) and the JSON line exactly as the local log would
hold it (``r``, :func:`sdk.logs.encode_record`). The id is what the sink deduplicates by:
``d:<decisionId>`` for a decision, ``e:<digest of type, decision id and eventId>`` for an event
with an id (a retried batch gets the same ids), a random ``g:`` id otherwise.

:class:`StreamOutput` is an :class:`server.eventlog.LogOutput`: the event log's writer thread
hands it each batch, and it sends the batch in one pipeline of ``XADD ... MAXLEN ~ N`` with a
synchronous client of its own (in that thread, off the event loop: a slow Redis holds up the
writer, never a request, and the batching is already there). When Redis fails, or its circuit
breaker is open, the batch goes to a local spool (``spool-*.jsonl`` files, one per worker,
each line ``{"id": ..., "r": <record>}``, fsynced, capped by a
:class:`~server.logfiles.Retention`); while a spool exists new batches are appended to it, so
records reach the stream in the order they were logged. Each flush interval the writer replays
the spool (its own files and those of dead workers, each under an exclusive ``flock``), and
deletes a file once all its entries are in the stream. A record sent twice (a pipeline that
failed half way, a crash before a replayed file was deleted) keeps its id, so the sink
writes it once.

Must not import model_export or litestar.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import redis
from prometheus_client import Counter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from sdk import CircuitBreaker
from server.eventlog import EventLog
from server.eventlog_purge import closed_files, file_pid, fsync_dir, log_files, pid_alive
from server.logfiles import Losses, Retention, RotatingFiles

if TYPE_CHECKING:
    from datetime import datetime

    from server.settings import Settings

__all__ = [
    "RECORD_FIELD",
    "RECORD_ID_FIELD",
    "StreamOutput",
    "decode_spooled",
    "lost_records_counter",
    "open_event_log",
    "record_id",
    "stream_key",
    "uses_stream",
]

log = logging.getLogger("tailor.server.stream")

#: Fields of a stream entry: the record id, and the record's JSON line.
RECORD_ID_FIELD = b"id"
RECORD_FIELD = b"r"
_SPOOL_PREFIX = "spool"
_REPLAY_BATCH = 1000


class _IdView(msgspec.Struct, kw_only=True, rename="camel"):
    """What a record id is made of."""

    kind: str | None = None
    type: str | None = None
    decision_id: str | None = None
    event_id: str | None = None


class _Spooled(msgspec.Struct, frozen=True):
    """One spool line: the record id and the record itself (embedded as it is)."""

    id: str
    r: msgspec.Raw


_id_decoder = msgspec.json.Decoder(_IdView)
_spool_encoder = msgspec.json.Encoder()
_spool_decoder = msgspec.json.Decoder(_Spooled)


def record_id(line: bytes) -> str:
    """The id the sink deduplicates ``line`` (an encoded log record) by."""
    try:
        view = _id_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        view = _IdView()
    if view.kind == "decision" and view.decision_id:
        return f"d:{view.decision_id}"
    if view.kind == "event" and view.event_id:
        key = f"{view.type}\0{view.decision_id or ''}\0{view.event_id}".encode()
        return f"e:{hashlib.blake2b(key, digest_size=12).hexdigest()}"
    return f"g:{uuid.uuid4().hex}"


def _spool_line(rid: str, line: bytes) -> bytes:
    return _spool_encoder.encode(_Spooled(rid, msgspec.Raw(line.rstrip(b"\n")))) + b"\n"


def decode_spooled(raw: bytes) -> tuple[str, bytes] | None:
    """The record id and JSON line (with its newline) of a spool line; None for a torn one."""
    if not raw.endswith(b"\n"):
        return None
    try:
        spooled = _spool_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return spooled.id, bytes(spooled.r) + b"\n"


def stream_key(prefix: str) -> str:
    """The stream's key for a key prefix (``RedisState.key("log")``)."""
    return f"{prefix}:log"


def sync_client(url: str, timeout: float) -> redis.Redis:
    """A blocking Redis client that fails within ``timeout`` and never retries by itself."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


class StreamOutput:
    """The event log's output to a Redis Stream, with a local spool (see the module).

    Args:
        url: the Redis URL.
        key: the stream's key.
        maxlen: the stream is trimmed to about this many entries (``MAXLEN ~``).
        spool_dir: where batches wait while Redis is away (created if missing).
        timeout: seconds one pipeline may take before the batch is spooled.
        retention: caps of the spool directory (spooled records they delete are lost).
        losses: where lost records are counted (the event log's).
        max_bytes: a spool file is rotated before it would grow past this size.
        max_age: a spool file is closed (and replayable) once it is this old.
        breaker: skips Redis after consecutive failures, then tries again.
        replay_budget: seconds of replay per flush interval, at most.
        client: a ready client (tests); by default one is made per process.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str,
        maxlen: int,
        spool_dir: Path,
        timeout: float = 1.0,
        retention: Retention | None = None,
        losses: Losses | None = None,
        max_bytes: int = 16 * 1024 * 1024,
        max_age: timedelta = timedelta(minutes=1),
        breaker: CircuitBreaker | None = None,
        replay_budget: float = 0.5,
        client: redis.Redis | None = None,
    ) -> None:
        self.url = url
        self.key = key
        self.maxlen = maxlen
        self.timeout = timeout
        self.losses = losses or Losses()
        self.breaker = breaker or CircuitBreaker(failures=1, reset_after=1.0)
        self.replay_budget = replay_budget
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool = RotatingFiles(
            spool_dir,
            prefix=_SPOOL_PREFIX,
            max_bytes=max_bytes,
            max_age=max_age,
            retention=retention,
            before_delete=self._deleting,
        )
        self._given = client
        self._client: redis.Redis | None = client
        self._pid = os.getpid()
        self._offsets: dict[Path, int] = {}
        #: entries sent to the stream, of them replayed from the spool, and lines spooled
        self.sent = 0
        self.replayed = 0
        self.spooled = 0

    # -- LogOutput ----------------------------------------------------------------------------

    @property
    def current(self) -> Path | None:
        """The spool file being written, if any."""
        return self.spool.current

    def write(self, lines: list[bytes], now: datetime) -> None:
        """Send ``lines`` to the stream, or spool them (behind an existing spool, always).

        Raises:
            server.logfiles.WriteFailed: the spool could not be written either.
        """
        entries = [(record_id(line), line) for line in lines]
        if self._pending():
            self._replay()
        if not self._pending() and self.breaker.allow():
            try:
                self._send(entries)
                return
            except (RedisError, OSError) as exc:
                self._failed(exc)
        self._to_spool(entries, now)

    def tick(self, now: datetime) -> None:
        """Close an aged spool file; replay the spool when Redis may answer."""
        self.spool.rotate_if_old(now)
        if self._pending():
            self._replay()

    def close(self) -> None:
        """Close the spool file and the connection (what is spooled is replayed on start)."""
        self.spool.close()
        if self._client is not None and self._client is not self._given:
            with contextlib.suppress(RedisError, OSError):
                self._client.close()
        self._client = self._given

    def forget(self) -> None:
        """In a child after ``fork``: a connection and spool file of its own."""
        self.spool.forget()
        self._client = self._given
        self._offsets = {}
        self._pid = os.getpid()
        self.breaker.reset()

    def health(self) -> dict[str, Any]:
        """``output: stream``, whether Redis is being written (``streamAvailable``), and the
        bytes waiting in this machine's spool (``spooledBytes``)."""
        spooled = 0
        for path in log_files(self.spool.directory, _SPOOL_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                spooled += path.stat().st_size
        return {
            "output": "stream",
            "streamAvailable": self.breaker.state != "open",
            "spooledBytes": spooled,
        }

    # -- Redis --------------------------------------------------------------------------------

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = sync_client(self.url, self.timeout)
        return self._client

    def _send(self, entries: list[tuple[str, bytes]]) -> None:
        if not entries:
            return
        pipe = self._redis().pipeline(transaction=False)
        for rid, line in entries:
            pipe.xadd(
                self.key,
                {RECORD_ID_FIELD: rid, RECORD_FIELD: line},
                maxlen=self.maxlen,
                approximate=True,
            )
        pipe.execute()
        self.breaker.success()
        self.sent += len(entries)

    def _failed(self, exc: Exception) -> None:
        if self.breaker.state != "open":
            log.warning("event stream unavailable, spooling: %s", type(exc).__name__)
        self.breaker.failure()

    # -- the spool ----------------------------------------------------------------------------

    def _to_spool(self, entries: list[tuple[str, bytes]], now: datetime) -> None:
        self.spool.write([_spool_line(rid, line) for rid, line in entries], now)
        self.spooled += len(entries)

    def _replayable(self) -> list[Path]:
        """Closed spool files of this process or of processes gone, oldest first."""
        mine = os.getpid()
        return [
            path
            for path in closed_files(self.spool.directory, self.spool.current, _SPOOL_PREFIX)
            if file_pid(path) == mine or not pid_alive(file_pid(path) or 0)
        ]

    def _pending(self) -> bool:
        return self.spool.size > 0 or bool(self._replayable())

    def _replay(self) -> None:
        """Send spooled entries, oldest file first, within the replay budget."""
        if not self.breaker.allow():
            return
        deadline = time.monotonic() + self.replay_budget
        busy: set[Path] = set()
        while time.monotonic() < deadline:
            files = [p for p in self._replayable() if p not in busy]
            if not files:
                if self.spool.size > 0 and not busy:
                    self.spool.close()  # the current file last: then the spool is empty
                    continue
                self.breaker.success()
                return
            try:
                done = self._replay_file(files[0], deadline)
            except (RedisError, OSError) as exc:
                self._failed(exc)
                return
            if done is None:
                busy.add(files[0])  # another worker is replaying it
            elif not done:
                self.breaker.success()
                return  # out of time; the rest next interval

    def _replay_file(self, path: Path, deadline: float) -> bool | None:
        """Send one spool file's entries and delete it; False when out of time, None when
        another process holds it."""
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return True
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            try:
                if os.fstat(fh.fileno()).st_ino != path.stat().st_ino:
                    return True  # replayed and deleted meanwhile
            except FileNotFoundError:
                return True
            offset = self._offsets.get(path, 0)
            fh.seek(offset)
            batch: list[tuple[str, bytes]] = []
            for raw in fh:
                entry = decode_spooled(raw)
                if entry is None:
                    self.losses.add(1, "spool", "a torn spool line")
                else:
                    batch.append(entry)
                if len(batch) >= _REPLAY_BATCH:
                    self._send(batch)
                    self.replayed += len(batch)
                    batch = []
                    self._offsets[path] = fh.tell()
                    if time.monotonic() >= deadline:
                        return False
            self._send(batch)
            self.replayed += len(batch)
            path.unlink()
            fsync_dir(path.parent)
        self._offsets.pop(path, None)
        return True

    def _deleting(self, path: Path) -> None:
        """Retention deletes a spool file: its entries not yet replayed are lost."""
        try:
            with path.open("rb") as fh:
                fh.seek(self._offsets.pop(path, 0))
                n = sum(1 for _ in fh)
        except FileNotFoundError:
            return
        self.losses.add(n, "spool", "the spool went past its size or age cap")


# --- wiring ------------------------------------------------------------------------------------

_counters: weakref.WeakKeyDictionary[Any, Callable[[int, str], None]] = weakref.WeakKeyDictionary()


def lost_records_counter(metrics: Any) -> Callable[[int, str], None] | None:
    """``on_lost`` for :class:`~server.logfiles.Losses`: the ``tailor_log_lost_records_total``
    counter (by reason) in the registry of ``metrics`` (a
    :class:`server.observability.Metrics`), made once per registry."""
    if metrics is None:
        return None
    found = _counters.get(metrics)
    if found is None:
        counter = Counter(
            f"{metrics.namespace}_log_lost_records",
            "Decision and event records that could not be written (a full or failing disk, "
            "a full write buffer, a spool past its caps), by reason.",
            ["reason"],
            registry=metrics.registry,
        )

        def found(n: int, reason: str) -> None:
            counter.labels(reason).inc(n)

        _counters[metrics] = found
    return found


def uses_stream(settings: Settings) -> bool:
    """Whether the event log goes to the Redis stream: ``event_sink`` ``stream``, or ``auto``
    with a ``redis_url`` and a log (``event_log_dir`` set)."""
    if settings.event_sink == "stream":
        return True
    return (
        settings.event_sink == "auto"
        and bool(settings.redis_url)
        and settings.event_log_dir is not None
    )


def open_event_log(settings: Settings, metrics: Any = None) -> EventLog | None:
    """The event log the settings ask for: none, local files in ``event_log_dir``, or the
    stream with its spool in ``<spool_dir>/events``; both capped by ``log_max_bytes`` and
    ``log_max_age_days``; lost records counted in ``metrics``.

    Raises:
        EventLogError: the directory cannot be created or written.
        ValueError: the stream was asked for without a ``redis_url``.
    """
    days = settings.log_max_age_days
    retention = Retention(
        max_bytes=settings.log_max_bytes or None,
        max_age=timedelta(days=days) if days else None,
    )
    losses = Losses(lost_records_counter(metrics))
    # files small enough that the size cap is kept by deleting whole old ones
    file_bytes = min(64 << 20, max(64 << 10, settings.log_max_bytes // 4 or 64 << 20))
    if not uses_stream(settings):
        if settings.event_log_dir is None:
            return None
        return EventLog(
            settings.event_log_dir, max_bytes=file_bytes, retention=retention, losses=losses
        )
    if not settings.redis_url:
        raise ValueError("TAILOR_EVENT_SINK=stream needs TAILOR_REDIS_URL")
    spool = Path(settings.spool_dir) / "events"
    output = StreamOutput(
        settings.redis_url,
        key=stream_key(settings.redis_prefix),
        maxlen=settings.stream_maxlen,
        spool_dir=spool,
        retention=retention,
        losses=losses,
        max_bytes=min(file_bytes, 16 << 20),
    )
    return EventLog(spool, output=output, losses=losses)
