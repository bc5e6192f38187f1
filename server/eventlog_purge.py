"""The files of an event log directory and the offline GDPR erasure that rewrites closed ones.

Names the log files (``events-YYYYMMDD-HHMMSS-<pid>[-n].jsonl``; the stream spool's start with
``spool-`` instead), lists them in the order they were opened, tells closed files (read-only,
or whose writer process is gone) from ones still being written, and rewrites closed files
without the lines of erased visitors.

Must not import model_export or litestar.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import msgspec

from sdk.logs import visitor_hash

__all__ = [
    "CLOSED_MODE",
    "OPEN_MODE",
    "closed_files",
    "erased_by_hash",
    "erased_hashes",
    "file_pid",
    "fsync_dir",
    "log_files",
    "pid_alive",
    "purge",
]

#: Mode of a file being written, and of a closed one (read-only: the mark of a closed file).
OPEN_MODE = 0o640
CLOSED_MODE = 0o440
_FILE_RE = re.compile(r"^(events|spool)-(\d{8})-(\d{6})-(\d+)(?:-(\d+))?\.jsonl$")
_VISITOR_RE = re.compile(rb'"visitorId":"([^"\\]*)"')


class _LineView(msgspec.Struct, kw_only=True, rename="camel"):
    """What purging reads of a line."""

    kind: str | None = None
    visitor_id: str | None = None
    visitor_hash: str | None = None


_line_decoder = msgspec.json.Decoder(_LineView)


def fsync_dir(directory: Path) -> None:
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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_pid(path: Path) -> int | None:
    """The pid in a log file's name (the process that wrote it), or None for another name."""
    match = _FILE_RE.match(path.name)
    return int(match.group(4)) if match is not None else None


def log_files(directory: Path, prefix: str = "events") -> list[Path]:
    """Every log file in ``directory`` (all processes') whose name starts with ``prefix``, in
    the order they were opened (by the time in the name, then pid, then number)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _FILE_RE.match(path.name)
        if match is not None and match.group(1) == prefix:
            _, day, time, pid, n = match.groups()
            found.append(((day, time, int(pid), int(n or 0)), path))
    return [path for _, path in sorted(found)]


def closed_files(directory: Path, current: Path | None, prefix: str = "events") -> list[Path]:
    """The log files no process is writing: read-only ones (closed by rotation or close), and
    those whose writer process no longer runs on this machine (after a crash); never
    ``current``, the file this process is writing."""
    out = []
    for path in log_files(directory, prefix):
        if path == current:
            continue
        pid = file_pid(path)
        assert pid is not None
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IWUSR or not pid_alive(pid):
            out.append(path)
    return out


def erased_hashes(files: list[Path]) -> set[str]:
    """The visitor hashes of every erasure marker in ``files``."""
    hashes: set[str] = set()
    for path in files:
        for line in _read_lines(path):
            view = _view(line)
            if view is not None and view.kind == "erasure" and view.visitor_hash:
                hashes.add(view.visitor_hash)
    return hashes


def purge(directory: Path, files: list[Path], erased: Callable[[str], bool]) -> int:
    """Rewrite ``files`` (closed files of ``directory``) without the lines of visitors for
    which ``erased(visitor_id)`` holds; each file is replaced atomically. Returns how many
    lines were removed."""
    removed = 0
    for path in files:
        lines = _read_lines(path)
        kept = [line for line in lines if not _belongs(line, erased)]
        if len(kept) == len(lines):
            continue
        tmp = path.with_name(f".{path.name}.purge-{os.getpid()}")  # sinks may purge at once
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OPEN_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(kept)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, CLOSED_MODE)
        os.replace(tmp, path)
        fsync_dir(directory)
        removed += len(lines) - len(kept)
    return removed


def erased_by_hash(hashes: set[str]) -> Callable[[str], bool]:
    """The ``erased`` predicate of :func:`purge` for visitors with these :func:`visitor_hash`."""
    return lambda visitor_id: visitor_hash(visitor_id) in hashes


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
