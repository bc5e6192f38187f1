"""``python -m server.sink`` (``tailor sink``): the consumer that turns the event stream into the
log files training, the reports and offline evaluation read.

Several sinks may run in one consumer group, writing one directory (on one machine: whether a
file's writer still runs is told by its pid). Each reads batches with ``XREADGROUP``, writes
them to its own rotating JSON Lines files (``events-...-<pid>.jsonl``, the layout
:func:`sdk.logs.read_log` and :mod:`server.eventlog_purge` know), ``fsync``s, and only then
``XACK``s: at-least-once delivery, made exactly-once in the files by record ids
(:func:`server.stream.record_id`):

- before writing, a sink claims each record id in Redis (``SET <id> <consumer, entry> NX GET``
  with a TTL, the dedupe window); an id already written (``w``) or claimed for another entry
  (a retried event batch, a replayed spool) is acknowledged and dropped; after the fsync the
  ids are marked written and the entries acknowledged in one pipeline;
- entries of a sink that stopped answering are claimed after ``claim_idle`` seconds
  (``XAUTOCLAIM``); an entry whose id its first consumer claimed but did not mark written
  (it died between the fsync and the acknowledgement) is looked up in the last two files of
  every writer of the directory, and written only when it is not there;
- erasure markers: their visitor hashes go to a Redis set shared by the group; records of an
  erased visitor are dropped, and each sink, seeing the set grow, closes its file and purges
  the closed files of the directory (:func:`server.eventlog_purge.purge`). The markers stay.

A write that fails (a full disk) acknowledges nothing: the entries stay pending and are
retried, so the stream, not the sink, holds them meanwhile (up to ``TAILOR_STREAM_MAXLEN``).

Must not import model_export or litestar.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import signal
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import redis
from redis.exceptions import RedisError, ResponseError

from sdk.logs import visitor_hash
from server.eventlog_purge import closed_files, erased_by_hash, file_pid, log_files, purge
from server.logfiles import Retention, RotatingFiles, WriteFailed, describe
from server.stream import RECORD_FIELD, RECORD_ID_FIELD, stream_key, sync_client

__all__ = ["Sink", "SinkStats", "main"]

log = logging.getLogger("tailor.server.sink")

_WRITTEN = b"w"
Entry = tuple[bytes, dict[bytes, bytes] | None]


class _View(msgspec.Struct, kw_only=True, rename="camel"):
    """What the sink reads of a record: its kind and whose it is."""

    kind: str | None = None
    visitor_id: str | None = None
    visitor_hash: str | None = None


_view_decoder = msgspec.json.Decoder(_View)


def _digest(line: bytes) -> bytes:
    return hashlib.blake2b(line, digest_size=16).digest()


@dataclass
class SinkStats:
    """What a sink did, since it started."""

    written: int = 0
    duplicates: int = 0
    erased: int = 0
    malformed: int = 0
    #: entries trimmed from the stream (``MAXLEN``) before this group read them
    trimmed: int = 0
    write_failures: int = 0
    purged: int = 0
    last_error: str | None = None
    claimed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class _Item:
    entry_id: bytes
    rid: str
    line: bytes
    view: _View


class Sink:
    """One consumer of the event stream (see the module).

    Args:
        client: a Redis client (``decode_responses=False``).
        directory: where the log files go (created if missing; shared by the group's sinks).
        prefix: the Redis key prefix (``TAILOR_REDIS_PREFIX``).
        group: the consumer group (one per set of files; every group reads every entry).
        name: this consumer's name, unique in the group.
        batch: entries read at a time.
        block_ms: how long one read waits for new entries.
        claim_idle: seconds an entry may stay unacknowledged before another sink claims it.
        dedupe_window: how long record ids are remembered in Redis (a duplicate arriving
            later is written again).
        max_bytes, max_age: rotation of this sink's files.
        retention: caps of the directory.
        clock: timezone-aware now (file names, rotation, retention).
    """

    def __init__(
        self,
        client: redis.Redis,
        directory: Path,
        *,
        prefix: str = "tailor",
        group: str = "sink",
        name: str | None = None,
        batch: int = 500,
        block_ms: int = 1000,
        claim_idle: float = 30.0,
        dedupe_window: timedelta = timedelta(hours=1),
        max_bytes: int = 64 * 1024 * 1024,
        max_age: timedelta = timedelta(hours=1),
        retention: Retention | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = stream_key(prefix)
        self.group = group
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self.dedupe_ms = int(dedupe_window.total_seconds() * 1000)
        self._keys = f"{prefix}:sink:{group}"
        self._clock = clock
        self.files = RotatingFiles(
            self.directory, max_bytes=max_bytes, max_age=max_age, retention=retention
        )
        self.stats = SinkStats()
        self._erased: set[str] = set()
        self._erasures_seen: bytes | None = None
        self._written: OrderedDict[bytes, None] = OrderedDict()  # digests of lines written
        self._scanned: dict[Path, int] = {}
        self._own_pending = True  # entries a previous run under this name left unacknowledged
        self._next_claim = 0.0

    # -- set-up ---------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing, reading from the start."""
        try:
            self.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _id_key(self, rid: str) -> str:
        return f"{self._keys}:id:{rid}"

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> SinkStats:
        """Consume until ``stop`` is set; Redis failures are logged and retried each second,
        and a consumer group lost with Redis's data is made again."""
        ready = False
        while not stop.is_set():
            try:
                if not ready:
                    self.ensure_group()
                    ready = True
                self.step()
            except (RedisError, OSError) as exc:
                if "NOGROUP" in str(exc):
                    log.warning("the consumer group is gone (Redis restarted empty?); making it")
                    ready = False
                    continue
                self.stats.last_error = type(exc).__name__
                log.warning("sink step failed, retrying: %s", exc)
                stop.wait(1.0)
        self.close()
        return self.stats

    def step(self) -> int:
        """Read one batch (own pending entries first, then entries of dead consumers, then new
        ones) and write it; returns how many entries were handled."""
        now = self._clock()
        self.files.rotate_if_old(now)
        self._refresh_erased()
        entries: list[Entry] = []
        if self._own_pending:
            entries = self._read("0", block=False)
            self._own_pending = bool(entries)
        if not entries and self._claim_due(now):
            entries = self._autoclaim()
        if not entries:
            entries = self._read(">", block=True)
        if entries:
            self.process(entries)
        return len(entries)

    def close(self) -> None:
        """Close the current file (read-only: closed)."""
        self.files.close()

    def _read(self, start: str, *, block: bool) -> list[Entry]:
        reply: Any = self.client.xreadgroup(
            self.group,
            self.name,
            {self.key: start},
            count=self.batch,
            block=self.block_ms if block else None,
        )
        return [e for _, entries in reply or [] for e in entries]

    def _claim_due(self, now: datetime) -> bool:
        if now.timestamp() < self._next_claim:
            return False
        self._next_claim = now.timestamp() + self.claim_idle_ms / 2000
        return True

    def _autoclaim(self) -> list[Entry]:
        """Entries idle for ``claim_idle`` in other consumers (dead or stuck), taken over."""
        found: list[Entry] = []
        start = "0-0"
        while len(found) < self.batch:
            reply = self.client.xautoclaim(
                self.key, self.group, self.name, self.claim_idle_ms, start, count=self.batch
            )
            start, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                self.stats.trimmed += len(deleted)
                log.warning("%d pending entries were trimmed from the stream", len(deleted))
            found.extend(entries)
            if start in (b"0-0", "0-0"):
                break
        self.stats.claimed += len(found)
        return found

    # -- one batch ----------------------------------------------------------------------------

    def process(self, entries: Iterable[Entry]) -> None:
        """Write the records of ``entries`` not written yet, then acknowledge them all."""
        items: list[_Item] = []
        done: list[bytes] = []  # acknowledged without writing
        for entry_id, fields in entries:
            item = self._item(entry_id, fields)
            if item is None:
                done.append(entry_id)
            else:
                items.append(item)
        markers = {
            i.view.visitor_hash
            for i in items
            if i.view.kind == "erasure" and i.view.visitor_hash is not None
        }
        claims = self._claim(items, markers)
        fresh = markers - self._erased
        self._erased |= markers
        to_write: list[_Item] = []
        ambiguous: list[_Item] = []
        for item, previous in zip(items, claims, strict=True):
            mine = self._claim_value(item.entry_id)
            if self._erased_record(item):
                self.stats.erased += 1
                done.append(item.entry_id)
            elif previous is None:
                to_write.append(item)
            elif previous == _WRITTEN or previous.split(b"\0", 1)[-1] != item.entry_id:
                self.stats.duplicates += 1  # written, or another entry of the record is
                done.append(item.entry_id)
            elif previous == mine and _digest(item.line) in self._written:
                self.stats.duplicates += 1  # our own earlier attempt wrote it
                done.append(item.entry_id)
            else:  # claimed for this entry by us before a restart, or by a sink that stopped
                ambiguous.append(item)
        if ambiguous:
            self._scan_recent()
            for item in ambiguous:
                if _digest(item.line) in self._written:
                    self.stats.duplicates += 1
                    done.append(item.entry_id)
                else:
                    to_write.append(item)
        written = self._write(to_write)
        self._finish(written, done)
        if fresh:
            self._purge(fresh)

    def _item(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> _Item | None:
        if not fields:  # trimmed while pending
            self.stats.trimmed += 1
            return None
        rid, line = fields.get(RECORD_ID_FIELD), fields.get(RECORD_FIELD)
        if not rid or not line:
            self.stats.malformed += 1
            return None
        try:
            view = _view_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.stats.malformed += 1
            return None
        if not line.endswith(b"\n"):
            line += b"\n"
        return _Item(entry_id, rid.decode(), line, view)

    def _claim_value(self, entry_id: bytes) -> bytes:
        return self.name.encode() + b"\0" + entry_id

    def _claim(self, items: list[_Item], markers: set[str]) -> list[bytes | None]:
        """Claim every record id (``SET NX GET``); share new erasure markers. Returns what
        each id held before (None: it is ours now)."""
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            pipe.set(
                self._id_key(item.rid),
                self._claim_value(item.entry_id),
                nx=True,
                get=True,
                px=self.dedupe_ms,
            )
        if markers:
            pipe.sadd(f"{self._keys}:erased", *sorted(markers))
            pipe.incr(f"{self._keys}:erasures")
        replies = pipe.execute()
        return list(replies[: len(items)])

    def _erased_record(self, item: _Item) -> bool:
        if item.view.kind == "erasure" or not item.view.visitor_id or not self._erased:
            return False
        return visitor_hash(item.view.visitor_id) in self._erased

    def _write(self, items: list[_Item]) -> list[_Item]:
        """Append and fsync; returns the items durably written (all, unless the disk failed:
        then the rest stay pending and are retried)."""
        if not items:
            return []
        try:
            self.files.write([i.line for i in items], self._clock())
        except WriteFailed as exc:
            self.stats.write_failures += 1
            self.stats.last_error = describe(exc.error)
            log.warning("sink write failed, %d entries left pending: %s", len(items), exc.error)
            self._own_pending = True
            items = items[: exc.written]
        for item in items:
            self._remember(_digest(item.line))
            kind = item.view.kind or "?"
            self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
        self.stats.written += len(items)
        return items

    def _finish(self, written: list[_Item], done: list[bytes]) -> None:
        """Mark written ids and acknowledge written and dropped entries, in one pipeline."""
        acked = [i.entry_id for i in written] + done
        if not acked:
            return
        pipe = self.client.pipeline(transaction=False)
        for item in written:
            pipe.set(self._id_key(item.rid), _WRITTEN, px=self.dedupe_ms)
        pipe.xack(self.key, self.group, *acked)
        pipe.execute()

    def _remember(self, digest: bytes, limit: int = 1_000_000) -> None:
        self._written[digest] = None
        if len(self._written) > limit:
            self._written.popitem(last=False)

    def _scan_recent(self) -> None:
        """Remember the lines of the last two files of every writer of the directory (read
        from where the last scan stopped)."""
        by_pid: dict[int, list[Path]] = {}
        for path in log_files(self.directory):
            by_pid.setdefault(file_pid(path) or 0, []).append(path)
        for paths in by_pid.values():
            for path in paths[-2:]:
                try:
                    with path.open("rb") as fh:
                        fh.seek(self._scanned.get(path, 0))
                        for raw in fh:
                            if raw.endswith(b"\n"):
                                self._remember(_digest(raw))
                        self._scanned[path] = fh.tell()
                except FileNotFoundError:
                    continue

    # -- erasure ------------------------------------------------------------------------------

    def _refresh_erased(self) -> None:
        """When another sink added erasure markers, take them and purge."""
        count: Any = self.client.get(f"{self._keys}:erasures")
        if count == self._erasures_seen:
            return
        self._erasures_seen = count
        members: Any = self.client.smembers(f"{self._keys}:erased")
        known = {m.decode() for m in members}
        fresh = known - self._erased
        self._erased |= known
        if fresh:
            self._purge(fresh)

    def _purge(self, hashes: set[str]) -> None:
        """Close this sink's file and rewrite the directory's closed files without the lines
        of the visitors of ``hashes`` (other sinks purge their own open files likewise)."""
        self.files.close()
        removed = purge(self.directory, closed_files(self.directory, None), erased_by_hash(hashes))
        self._scanned.clear()
        self.stats.purged += removed
        if removed:
            log.info("purged %d lines of %d erased visitor(s)", removed, len(hashes))


# --- the program ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m server.sink",
        description="Write the event stream to log files (JSON Lines), deduplicated by record "
        "id; several sinks may run in one consumer group.",
    )
    parser.add_argument(
        "--dir",
        default=env("TAILOR_SINK_DIR", "var/events"),
        help="where the log files go (TAILOR_SINK_DIR; default var/events)",
    )
    parser.add_argument(
        "--redis-url", default=env("TAILOR_REDIS_URL"), help="Redis URL (TAILOR_REDIS_URL)"
    )
    parser.add_argument(
        "--prefix", default=env("TAILOR_REDIS_PREFIX", "tailor"), help="TAILOR_REDIS_PREFIX"
    )
    parser.add_argument("--group", default="sink", help="consumer group (one per set of files)")
    parser.add_argument("--name", default=None, help="consumer name (default host-pid)")
    parser.add_argument("--batch", type=int, default=500, help="entries read at a time")
    parser.add_argument(
        "--claim-idle",
        type=float,
        default=30.0,
        help="seconds before a stuck sink's entries are claimed",
    )
    parser.add_argument(
        "--dedupe-hours", type=float, default=1.0, help="how long record ids are remembered"
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=int(env("TAILOR_LOG_MAX_BYTES") or 10 * 1024**3),
        help="most bytes of files in the directory (TAILOR_LOG_MAX_BYTES; 0: no cap)",
    )
    parser.add_argument(
        "--max-age-days",
        type=float,
        default=float(env("TAILOR_LOG_MAX_AGE_DAYS") or 0),
        help="closed files older than this are deleted (TAILOR_LOG_MAX_AGE_DAYS; 0: no cap)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sink until SIGTERM or SIGINT; exit code 2 on bad arguments."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.redis_url:
        log.error("refusing to start: no Redis URL (--redis-url or TAILOR_REDIS_URL)")
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sink = Sink(
        sync_client(args.redis_url, timeout=10.0),
        Path(args.dir),
        prefix=args.prefix,
        group=args.group,
        name=args.name,
        batch=args.batch,
        claim_idle=args.claim_idle,
        dedupe_window=timedelta(hours=args.dedupe_hours),
        retention=Retention(
            max_bytes=args.max_bytes or None,
            max_age=timedelta(days=args.max_age_days) if args.max_age_days else None,
        ),
    )
    log.info("sink %s writing %s (group %s)", sink.name, sink.directory, sink.group)
    stats = sink.run(stop)
    log.info("sink %s stopped: %s", sink.name, _summary(stats))
    return 0


def _summary(stats: SinkStats) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(stats).items() if v}


if __name__ == "__main__":
    raise SystemExit(main())
