"""Rotating, fsynced JSON Lines files of one process in a log directory, the size and age caps
of that directory, and the count of records that could not be written.

:class:`RotatingFiles` appends batches of lines to ``<prefix>-YYYYMMDD-HHMMSS-<pid>[-n].jsonl``
with one fsync per batch, starts a new file before one would grow past ``max_bytes`` or once
it is ``max_age`` old, and makes closed files read-only. Each time it opens a file,
:class:`Retention` deletes the directory's closed files past the caps, oldest first. The event
log (:mod:`server.eventlog`), the stream spool (:mod:`server.stream`) and the sink
(:mod:`server.sink`) all write through it; a failed write raises :class:`WriteFailed` and the
caller counts what was lost in :class:`Losses` (never a failed request).

Must not import model_export or litestar.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from server.eventlog_purge import CLOSED_MODE, OPEN_MODE, closed_files, fsync_dir, log_files

__all__ = ["CHUNK_BYTES", "Losses", "Retention", "RotatingFiles", "WriteFailed", "describe"]

log = logging.getLogger("tailor.server.logfiles")


#: The most bytes of a batch written (and synced) at once, each part all or nothing.
CHUNK_BYTES = 256 * 1024


class WriteFailed(Exception):
    """Writing a batch failed part way (``ENOSPC``, ``EFBIG``, ``EIO``...); the first
    ``written`` lines of it are durable, the rest are not."""

    def __init__(self, written: int, error: OSError) -> None:
        super().__init__(f"{written} lines written, then: {error}")
        self.written = written
        self.error = error


class Losses:
    """Records that could not be written (a full disk, a full buffer, a spool past its cap),
    with the last error; thread-safe. ``on_lost(n, reason)`` feeds a metric."""

    def __init__(self, on_lost: Callable[[int, str], None] | None = None) -> None:
        self.on_lost = on_lost
        self._lock = threading.Lock()
        self.count = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def add(self, n: int, reason: str, error: str | None = None) -> None:
        """Count ``n`` lost records; ``reason`` is a short label (``write``, ``buffer``...)."""
        if n <= 0:
            return
        with self._lock:
            self.count += n
            if error is not None:
                self.last_error = error
                self.last_error_at = time.time()
        if self.on_lost is not None:
            with contextlib.suppress(Exception):  # a metric never breaks the writer
                self.on_lost(n, reason)

    def health(self) -> dict[str, Any]:
        """``lostRecords``, ``lastError`` and ``lastErrorAt`` (ISO 8601 UTC) for ``/readyz``."""
        at = self.last_error_at
        return {
            "lostRecords": self.count,
            "lastError": self.last_error,
            "lastErrorAt": None if at is None else datetime.fromtimestamp(at, UTC).isoformat(),
        }


def describe(exc: OSError) -> str:
    """An error as shown in ``/readyz``: its errno name and text (``ENOSPC: No space left on
    device``), never a path."""
    if exc.errno is None:
        return type(exc).__name__
    return f"{errno.errorcode.get(exc.errno, exc.errno)}: {os.strerror(exc.errno)}"


@dataclass(frozen=True)
class Retention:
    """Caps of one log directory: its files together at most ``max_bytes``, closed files at
    most ``max_age`` since their last write (None: no cap). Files still being written (by this
    or another live process) are never deleted."""

    max_bytes: int | None = None
    max_age: timedelta | None = None

    def enforce(
        self,
        directory: Path,
        *,
        prefix: str,
        current: Path | None,
        now: datetime,
        before_delete: Callable[[Path], None] | None = None,
        reserve: int = 0,
    ) -> list[Path]:
        """Delete closed files past the caps, oldest first; returns the deleted paths.

        ``reserve``: bytes the file being opened may still grow by (the writer's rotation
        size), kept free so that the directory never goes past ``max_bytes``.
        ``before_delete(path)`` runs first for each (the spool counts its lines as lost)."""
        if self.max_bytes is None and self.max_age is None:
            return []
        sizes: dict[Path, int] = {}
        for path in log_files(directory, prefix):
            with contextlib.suppress(FileNotFoundError):
                sizes[path] = path.stat().st_size
        total = sum(sizes.values())
        cutoff = None if self.max_age is None else now.timestamp() - self.max_age.total_seconds()
        deleted: list[Path] = []
        for path in closed_files(directory, current, prefix):
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            too_old = cutoff is not None and mtime < cutoff
            too_big = self.max_bytes is not None and total + reserve > self.max_bytes
            if not (too_old or too_big):
                continue
            if before_delete is not None:
                before_delete(path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted.append(path)
            total -= sizes.get(path, 0)
        if deleted:
            fsync_dir(directory)
            log.info("retention deleted %d closed file(s) in %s", len(deleted), directory)
        return deleted


class RotatingFiles:
    """The files one process appends to in ``directory``; not thread-safe (one writer thread).

    Args:
        directory: where the files go (must exist).
        prefix: the first part of the file names (``events``, ``spool``).
        max_bytes: a file is rotated before it would grow past this size.
        max_age: a file is closed once it is this old (:meth:`rotate_if_old`).
        retention: the directory's caps, applied whenever a file is opened.
        before_delete: called with each file retention is about to delete.
    """

    def __init__(
        self,
        directory: Path,
        *,
        prefix: str = "events",
        max_bytes: int = 64 * 1024 * 1024,
        max_age: timedelta = timedelta(hours=1),
        retention: Retention | None = None,
        before_delete: Callable[[Path], None] | None = None,
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.retention = retention or Retention()
        self.before_delete = before_delete
        self._fd: int | None = None
        self.current: Path | None = None
        self.opened_at: datetime | None = None
        self.size = 0
        self._last = ("", 0)

    def write(self, lines: list[bytes], now: datetime) -> None:
        """Append ``lines`` (each ending in a newline) and fsync, rotating by size.

        Raises:
            WriteFailed: a write, fsync or open failed; the file is closed, and the next
                batch starts a new one.
        """
        chunk: list[bytes] = []
        size = self.size
        chunk_bytes = 0
        done = 0
        try:
            if self._fd is None:
                self._open(now)
                size = 0
            for line in lines:
                if (chunk or size) and size + len(line) > self.max_bytes:
                    self._write_chunk(chunk)
                    done += len(chunk)
                    chunk, chunk_bytes = [], 0
                    self.close()
                    self._open(now)
                    size = 0
                elif chunk and chunk_bytes + len(line) > CHUNK_BYTES:
                    # written (and made durable) a part at a time: a disk that fills up
                    # loses only the parts that no longer fit, not the whole batch
                    self._write_chunk(chunk)
                    done += len(chunk)
                    chunk, chunk_bytes = [], 0
                chunk.append(line)
                size += len(line)
                chunk_bytes += len(line)
            self._write_chunk(chunk)
        except OSError as exc:
            self.close(quiet=True)
            raise WriteFailed(done, exc) from exc

    def tick(self, now: datetime) -> None:
        """Periodic work of the writer thread: close the current file once it is old."""
        self.rotate_if_old(now)

    def health(self) -> dict[str, Any]:
        """What ``/readyz`` shows of this output."""
        return {"output": "files"}

    def rotate_if_old(self, now: datetime) -> bool:
        """Close the current file when it is ``max_age`` old; returns whether it did."""
        if self.opened_at is not None and now - self.opened_at >= self.max_age:
            self.close()
            return True
        return False

    def close(self, *, quiet: bool = False) -> None:
        """Close the current file and make it read-only: the mark of a closed file. An empty
        one (its only write failed) is removed instead."""
        fd, path, size = self._fd, self.current, self.size
        self._fd, self.current, self.opened_at, self.size = None, None, None, 0
        if fd is None or path is None:
            return
        try:
            os.close(fd)
            if size == 0:
                path.unlink()
                return
            os.chmod(path, CLOSED_MODE)
        except OSError as exc:
            if not quiet:
                log.warning("closing log file %s failed: %s", path, exc)

    def forget(self) -> None:
        """In a child after ``fork``: close the child's copy of the parent's file, unchanged."""
        fd = self._fd
        self._fd, self.current, self.opened_at, self.size = None, None, None, 0
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _write_chunk(self, chunk: list[bytes]) -> None:
        if not chunk or self._fd is None:
            return
        data = memoryview(b"".join(chunk))
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError:
            # all or nothing: no torn line, and no line both on disk and counted as lost
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
            raise
        self.size += sum(map(len, chunk))

    def _open(self, now: datetime) -> None:
        stem = f"{self.prefix}-{now.astimezone(UTC):%Y%m%d-%H%M%S}-{os.getpid()}"
        # numbers only grow within a second, even when retention deleted an earlier file
        first = self._last[1] + 1 if self._last[0] == stem else 0
        for n in range(first, first + 1000):
            path = self.directory / (f"{stem}.jsonl" if n == 0 else f"{stem}-{n}.jsonl")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, OPEN_MODE)
            except FileExistsError:
                continue
            break
        else:
            raise OSError(f"no free log file name for {stem}")
        self._last = (stem, n)
        self._fd = fd
        self.current = path
        self.size = 0
        self.opened_at = now
        fsync_dir(self.directory)
        try:
            self.retention.enforce(
                self.directory,
                prefix=self.prefix,
                current=path,
                now=now,
                before_delete=self.before_delete,
                reserve=self.max_bytes,
            )
        except OSError as exc:  # retention never stops the writing
            log.warning("retention in %s failed: %s", self.directory, exc)
