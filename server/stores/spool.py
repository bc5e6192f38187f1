"""Local spools: what Redis could not take, kept on disk and handed back when it answers.

A :class:`JsonlSpool` appends msgspec Structs as JSON lines to ``<name>-<pid>.jsonl`` in
``Settings.spool_dir`` (one file per worker process). Each worker's replay loop claims any
file of that name in the directory by an atomic rename to ``replaying-<name>-<pid>-...``, so
two workers never replay one file, and takes over the claimed files of workers that died
while replaying. Writers lock the file while appending and check it was not claimed
meanwhile, so nothing appended is lost to a concurrent claim. Lines come back in the order
they were appended to a file; what the handler could not take (Redis failed again) is put
back. The directory holds at most ``Settings.spool_max_mib`` of one spool's files; past it
lines are dropped and counted.

Two spools use it. :class:`ProfileSpool` keeps profile updates (visitor, events, when they
were received, an update id): replayed with their ids, an update that reached Redis before
its failure was reported is recognised and not counted twice
(:class:`~server.stores.redis.RedisProfileStore` keeps applied ids for a week).
:mod:`server.stores.batch_spool` keeps public-key batches the event guard could not check.
The event stream's spool (:mod:`server.stream`) is a different kind: rotated, age-capped
files replayed from a thread by offset.

Must not import model_export or litestar.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

import msgspec

from sdk.schema import Behavior, Event
from server.stores.base import ProfileStore
from server.stores.redis_conn import StateUnavailable

__all__ = ["JsonlSpool", "ProfileSpool", "SpooledUpdate", "apply_or_spool"]

log = logging.getLogger("tailor.server.state")

T = TypeVar("T", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


class JsonlSpool(Generic[T]):
    """Spooled lines of one worker, in ``directory`` (see the module).

    Args:
        directory: the spool directory (shared by the workers of one machine).
        name: the spool's file name stem (``profiles``, ``batches``).
        line_type: the Struct each line decodes to.
        max_bytes: most bytes of this spool's files in the directory; past it lines are
            dropped.
        fsync: flush each append to the disk before it is reported written.
    """

    def __init__(
        self,
        directory: str | Path,
        name: str,
        line_type: type[T],
        max_bytes: int = 64 << 20,
        *,
        fsync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.name = name
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.path = self.directory / f"{name}-{os.getpid()}.jsonl"
        self._claimed_prefix = f"replaying-{name}-"
        self._decoder = msgspec.json.Decoder(line_type)
        #: lines appended, dropped (spool full or unwritable, or torn), handed back and taken
        #: (replayed), and handed back and declined by the handler (refused)
        self.spooled = 0
        self.dropped = 0
        self.replayed = 0
        self.refused = 0

    def pending_bytes(self) -> int:
        """Bytes of this spool's files waiting in the directory (any worker's, claimed ones
        too)."""
        return self._bytes(besides=None)

    def append(self, items: Sequence[T]) -> bool:
        """Append items to this worker's file; False (and counted) when the spool is full or
        cannot be written."""
        return self._append(items, besides=None)

    def _bytes(self, besides: Path | None) -> int:
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if self._live(entry.name) or entry.name.startswith(self._claimed_prefix):
                    if besides is not None and entry.name == besides.name:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat().st_size
        return total

    def _append(self, items: Sequence[T], besides: Path | None) -> bool:
        """:meth:`append`, with the file ``besides`` left out of the cap (about to go)."""
        if not items:
            return True
        data = b"".join(_encoder.encode(item) + b"\n" for item in items)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self._bytes(besides) + len(data) > self.max_bytes:
                raise OSError(f"the {self.name} spool is full")
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
                        if self.fsync:
                            os.fsync(fd)
                        break
                finally:
                    os.close(fd)
        except OSError as exc:
            self.dropped += len(items)
            log.error("%s spool: %d dropped: %s", self.name, len(items), exc)
            return False
        self.spooled += len(items)
        return True

    async def replay(self, handle: Callable[[T], Awaitable[bool]]) -> int:
        """Hand every spooled item to ``handle`` (True: taken, False: declined) until none is
        left or it raises :class:`StateUnavailable` (the rest is put back); how many were
        handled."""
        handled = 0
        while (claimed := self._claim()) is not None:
            items = self._read(claimed)
            for i, item in enumerate(items):
                try:
                    taken = await handle(item)
                except StateUnavailable:
                    # put back, not counted anew; the claimed file does not count against
                    # the cap, as it is deleted next
                    if self._append(items[i:], besides=claimed):
                        self.spooled -= len(items) - i
                    claimed.unlink(missing_ok=True)
                    return handled
                handled += 1
                if taken:
                    self.replayed += 1
                else:
                    self.refused += 1
            claimed.unlink(missing_ok=True)
        return handled

    def _live(self, name: str) -> bool:
        return name.startswith(f"{self.name}-") and name.endswith(".jsonl")

    def _claim(self) -> Path | None:
        """Rename one spool file (or one a dead worker was replaying) to a name only this
        worker replays; None when there is none."""
        try:
            names = sorted(e.name for e in os.scandir(self.directory))
        except FileNotFoundError:
            return None
        for name in names:
            orphan = name.startswith(self._claimed_prefix) and not _alive(
                name.removeprefix(self._claimed_prefix)
            )
            if not (self._live(name) or orphan):
                continue
            claimed = self.directory / (
                f"{self._claimed_prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            )
            try:
                os.rename(self.directory / name, claimed)
            except FileNotFoundError:
                continue  # another worker claimed it first
            return claimed
        return None

    def _read(self, claimed: Path) -> list[T]:
        """The items of a claimed file, once a writer that opened it before the claim is
        done; torn lines (a crashed worker's last) dropped and counted."""
        fd = os.open(claimed, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(os.dup(fd), "rb") as fh:
                lines = fh.read().splitlines()
        finally:
            os.close(fd)
        items: list[T] = []
        for line in lines:
            try:
                items.append(self._decoder.decode(line))
            except msgspec.DecodeError:
                self.dropped += 1
        return items


def _alive(rest: str) -> bool:
    """Whether the worker of a claimed file (``<pid>-...`` after its prefix) still runs."""
    try:
        pid = int(rest.split("-")[0])
    except ValueError:
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


class SpooledUpdate(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One visitor's events that could not be applied, as a spool line."""

    visitor_id: str
    apply_id: str
    received_at: datetime
    events: list[Event]


class ProfileSpool(JsonlSpool[SpooledUpdate]):
    """Spooled profile updates of one worker (``profiles-<pid>.jsonl``). Not fsynced: one
    append per visitor of a batch, on the request's path; a power cut loses the tail.

    Args:
        directory: the spool directory (shared by the workers of one machine).
        max_bytes: most bytes of profile spool files in the directory.
    """

    def __init__(self, directory: str | Path, max_bytes: int = 64 << 20) -> None:
        super().__init__(directory, "profiles", SpooledUpdate, max_bytes, fsync=False)

    async def replay_into(self, store: ProfileStore) -> int:
        """Apply spooled updates until none is left or the store fails again (the rest is
        spooled again); how many were applied (an update whose visitor has no profile any
        more is refused)."""
        before = self.replayed

        async def apply(update: SpooledUpdate) -> bool:
            done = await store.apply(
                update.visitor_id,
                update.events,
                now=update.received_at,
                create=False,
                apply_id=update.apply_id,
            )
            return done is not None

        await self.replay(apply)
        return self.replayed - before


async def apply_or_spool(
    store: ProfileStore,
    spool: ProfileSpool | None,
    visitor_id: str,
    events: Sequence[Event],
    *,
    now: datetime,
) -> Behavior | None:
    """Apply a visitor's events to their stored profile (None when there is none); when the
    store is unavailable, spool them for :meth:`ProfileSpool.replay_into` and return None
    (what the store holds is not known until then)."""
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
