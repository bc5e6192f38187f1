"""The batch spool: public-key event batches the shared event guard could not check, kept on
local disk and checked when Redis answers again.

A browser's batch must pass the event guard before anything of it is applied or logged. When
the guard's Redis is down, accepting the batch unchecked would let forged and replayed events
in, and refusing it would lose real ones; so the batch is appended (as received, after the
sensitive categories were scrubbed) to ``batches-<pid>.jsonl`` in ``Settings.spool_dir``,
beside the profile spool (:mod:`server.stores.spool`), and answered 202. Each worker's
replay loop claims any batch file of the directory by an atomic rename (two workers never
replay one file), checks each batch with the guard under the id it was first checked with (a
check that reached Redis before its answer was lost is recognised, not refused as a replay)
and hands the batches that pass to the events handler's own path; refused ones are counted
and dropped. Writers lock the file while appending, as the profile spool's do. The directory
holds at most ``Settings.spool_max_mib`` of batch files; past it batches are dropped and
counted.

Must not import model_export or litestar.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import msgspec

from sdk.schema import EventBatch
from server.stores.redis_conn import StateUnavailable

__all__ = ["BatchSpool", "SpooledBatch"]

log = logging.getLogger("tailor.server.state")

_PREFIX = "batches-"


class SpooledBatch(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A public-key batch waiting for the event guard, as a spool line."""

    batch_id: str
    received_at: datetime
    batch: EventBatch


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SpooledBatch)


class BatchSpool:
    """Spooled event batches of one worker, in ``directory``.

    Args:
        directory: the spool directory (shared by the workers of one machine).
        max_bytes: most bytes of batch files in the directory; past it batches are dropped.
    """

    def __init__(self, directory: str | Path, max_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.path = self.directory / f"{_PREFIX}{os.getpid()}.jsonl"
        #: batches spooled, dropped (spool full or unwritable), replayed (passed the guard
        #: and recorded) and refused by the guard on replay
        self.spooled = 0
        self.dropped = 0
        self.replayed = 0
        self.refused = 0

    def pending_bytes(self) -> int:
        """Bytes of spooled batches waiting in the directory (any worker's)."""
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if entry.name.startswith((_PREFIX, "replaying-")):
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat().st_size
        return total

    def append(self, items: list[SpooledBatch]) -> bool:
        """Append batches to this worker's file; False (and counted) when the spool is full or
        cannot be written."""
        if not items:
            return True
        data = b"".join(_encoder.encode(item) + b"\n" for item in items)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self.pending_bytes() + len(data) > self.max_bytes:
                raise OSError("the batch spool is full")
            while True:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    try:  # claimed (renamed) between open and lock: append to a new file
                        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                    except FileNotFoundError:
                        same = False
                    if same:
                        os.write(fd, data)
                        os.fsync(fd)
                        break
                finally:
                    os.close(fd)
        except OSError as exc:
            self.dropped += len(items)
            log.error("event batches dropped (%d): %s", len(items), exc)
            return False
        self.spooled += len(items)
        return True

    def _claim(self) -> Path | None:
        """Rename one batch file (or one a dead worker was replaying) to a name only this
        worker replays; None when there is none."""
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except FileNotFoundError:
            return None
        for entry in entries:
            name = entry.name
            mine = name.startswith(_PREFIX) and name.endswith(".jsonl")
            orphan = name.startswith("replaying-") and not _alive(name)
            if not (mine or orphan):
                continue
            claimed = self.directory / f"replaying-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            try:
                os.rename(entry.path, claimed)
            except FileNotFoundError:
                continue  # another worker claimed it first
            return claimed
        return None

    async def replay(self, handle: Callable[[SpooledBatch], Awaitable[bool]]) -> int:
        """Hand every spooled batch to ``handle`` (True: recorded, False: refused by the
        guard) until none is left or Redis fails again (the rest is spooled again); how many
        were handled."""
        handled = 0
        while (claimed := self._claim()) is not None:
            fd = os.open(claimed, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # a writer that opened it before the claim
                with os.fdopen(os.dup(fd), "rb") as fh:
                    lines = fh.read().splitlines()
            finally:
                os.close(fd)
            items: list[SpooledBatch] = []
            for line in lines:
                try:
                    items.append(_decoder.decode(line))
                except msgspec.DecodeError:
                    self.dropped += 1  # a torn last line of a crashed worker
            for i, item in enumerate(items):
                try:
                    recorded = await handle(item)
                except StateUnavailable:
                    if self.append(items[i:]):
                        self.spooled -= len(items) - i  # put back, not new
                    claimed.unlink(missing_ok=True)
                    return handled
                handled += 1
                if recorded:
                    self.replayed += 1
                else:
                    self.refused += 1
            claimed.unlink(missing_ok=True)
        return handled


def _alive(name: str) -> bool:
    """Whether the worker named in a ``replaying-<pid>-...`` file still runs."""
    try:
        pid = int(name.split("-")[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
