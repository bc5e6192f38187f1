"""The profile spool: event updates a shared store could not take, kept on local disk and
applied when it answers again.

When Redis fails while a batch's events are applied to a profile, the update (visitor, its
events, when they were received and an update id) is appended to a JSON Lines file of
``Settings.spool_dir``, one per worker process. Each worker's :meth:`ProfileSpool.replay`
loop claims any spool file of the directory (an atomic rename, so two workers never replay
one file) and applies its updates again with their ids: an update that reached Redis before
the failure was reported is recognised and not counted twice
(:class:`~server.stores.redis.RedisProfileStore` keeps applied ids for a week). Writers lock
the file while appending and check it was not claimed meanwhile, so nothing appended is lost
to a concurrent claim. The directory is bounded (``Settings.spool_max_mib``): past it,
updates are dropped and counted.

Must not import model_export or litestar.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import msgspec

from sdk.schema import Behavior, Event
from server.stores.base import ProfileStore
from server.stores.redis_conn import StateUnavailable

__all__ = ["ProfileSpool", "SpooledUpdate", "apply_or_spool"]

log = logging.getLogger("tailor.server.state")


class SpooledUpdate(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One visitor's events that could not be applied, as a spool line."""

    visitor_id: str
    apply_id: str
    received_at: datetime
    events: list[Event]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SpooledUpdate)


class ProfileSpool:
    """Spooled profile updates of one worker, in ``directory``.

    Args:
        directory: the spool directory (shared by the workers of one machine).
        max_bytes: most bytes of spool files in the directory; past it updates are dropped.
    """

    def __init__(self, directory: str | Path, max_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.path = self.directory / f"profiles-{os.getpid()}.jsonl"
        #: updates appended, dropped (spool full or unwritable), replayed, and replays skipped
        #: because their visitor has no profile any more
        self.spooled = 0
        self.dropped = 0
        self.replayed = 0
        self.skipped = 0

    def pending_bytes(self) -> int:
        """Bytes of spooled updates waiting in the directory (any worker's)."""
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if entry.name.startswith("profiles-"):
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat().st_size
        return total

    def append(self, updates: Sequence[SpooledUpdate]) -> bool:
        """Append updates to this worker's file; False (and counted) when the spool is full or
        cannot be written."""
        if not updates:
            return True
        data = b"".join(_encoder.encode(u) + b"\n" for u in updates)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self.pending_bytes() + len(data) > self.max_bytes:
                raise OSError("the profile spool is full")
            while True:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    # claimed (renamed) between open and lock: append to a new file instead
                    try:
                        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                    except FileNotFoundError:
                        same = False
                    if same:
                        os.write(fd, data)
                        break
                finally:
                    os.close(fd)
        except OSError as exc:
            self.dropped += len(updates)
            log.error("profile updates dropped (%d): %s", len(updates), exc)
            return False
        self.spooled += len(updates)
        return True

    def _claim(self) -> Path | None:
        """Rename one spool file to a name only this worker replays; None when none."""
        try:
            names = sorted(
                e.name
                for e in os.scandir(self.directory)
                if e.name.startswith("profiles-") and e.name.endswith(".jsonl")
            )
        except FileNotFoundError:
            return None
        for name in names:
            claimed = self.directory / f"replay-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            try:
                os.rename(self.directory / name, claimed)
            except FileNotFoundError:
                continue  # another worker claimed it first
            return claimed
        # a worker that died while replaying left its claimed file: take it over
        for entry in os.scandir(self.directory):
            if entry.name.startswith("replay-") and not _alive(entry.name):
                claimed = self.directory / f"replay-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(entry.path, claimed)
                    return claimed
        return None

    async def replay(self, store: ProfileStore) -> int:
        """Apply spooled updates until none is left or the store fails again (the rest is
        spooled again); how many were applied."""
        applied = 0
        while (claimed := self._claim()) is not None:
            fd = os.open(claimed, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # a writer that opened it before the claim
                with os.fdopen(os.dup(fd), "rb") as fh:
                    lines = fh.read().splitlines()
            finally:
                os.close(fd)
            updates = []
            for line in lines:
                try:
                    updates.append(_decoder.decode(line))
                except msgspec.DecodeError:
                    self.dropped += 1  # a torn last line of a crashed worker
            for i, update in enumerate(updates):
                try:
                    done = await store.apply(
                        update.visitor_id,
                        update.events,
                        now=update.received_at,
                        create=False,
                        apply_id=update.apply_id,
                    )
                except StateUnavailable:
                    if self.append(updates[i:]):
                        self.spooled -= len(updates) - i  # put back, not new
                    claimed.unlink(missing_ok=True)
                    return applied
                if done is None:
                    self.skipped += 1
                else:
                    self.replayed += 1
                    applied += 1
            claimed.unlink(missing_ok=True)
        return applied


def _alive(name: str) -> bool:
    """Whether the worker named in a ``replay-<pid>-...`` file still runs."""
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


async def apply_or_spool(
    store: ProfileStore,
    spool: ProfileSpool | None,
    visitor_id: str,
    events: Sequence[Event],
    *,
    now: datetime,
) -> Behavior | None:
    """Apply a visitor's events to their stored profile (None when there is none); when the
    store is unavailable, spool them for :meth:`ProfileSpool.replay` and return None (what
    the store holds is not known until then)."""
    apply_id = uuid.uuid4().hex[:16]  # unique among one visitor's updates of a week
    try:
        return await store.apply(visitor_id, events, now=now, create=False, apply_id=apply_id)
    except StateUnavailable:
        if spool is not None:
            update = SpooledUpdate(
                visitor_id=visitor_id, apply_id=apply_id, received_at=now, events=list(events)
            )
            spool.append([update])
        return None
