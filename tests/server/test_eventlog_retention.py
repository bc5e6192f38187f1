"""Size and age caps of a log directory (checked when a file is opened), and what the event
log tells ``/readyz`` about records it could not write."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sdk.schema import Event
from server.eventlog import EventLog
from server.eventlog_purge import log_files
from server.logfiles import CHUNK_BYTES, Losses, Retention, RotatingFiles, WriteFailed

NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)


def _line(i: int, size: int = 100) -> bytes:
    return (f'{{"n":{i},"pad":"' + "x" * (size - 20) + '"}').encode()[: size - 1] + b"\n"


def test_the_oldest_closed_files_go_first_when_the_directory_is_over_its_size_cap(
    tmp_path: Path,
) -> None:
    files = RotatingFiles(tmp_path, max_bytes=1000, retention=Retention(max_bytes=3000))
    for i in range(60):  # 6,000 bytes in 100-byte lines: 6 files of 1,000
        files.write([_line(i)], NOW)
    files.close()
    kept = log_files(tmp_path)  # in the order they were opened
    total = sum(p.stat().st_size for p in kept)
    assert total <= 3000
    numbers = [
        int(x.split(b",")[0].removeprefix(b'{"n":'))
        for p in kept
        for x in p.read_bytes().splitlines()
    ]
    assert numbers == list(range(60 - len(numbers), 60))  # the newest lines, in order
    assert len(numbers) >= 20  # the cap holds what it can: only whole old files go


def test_files_past_the_age_cap_go_and_the_file_being_written_never(tmp_path: Path) -> None:
    old = tmp_path / "events-20260101-000000-1.jsonl"  # a closed file of a gone process
    old.write_bytes(_line(0))
    os.chmod(old, 0o440)
    two_days = (NOW - timedelta(days=2)).timestamp()
    os.utime(old, (two_days, two_days))
    fresh = tmp_path / "events-20260615-000000-1.jsonl"
    fresh.write_bytes(_line(1))
    os.chmod(fresh, 0o440)
    files = RotatingFiles(tmp_path, retention=Retention(max_age=timedelta(days=1)))
    files.write([_line(2)], NOW)  # opening a file applies the caps
    assert not old.exists() and fresh.exists() and files.current is not None
    assert files.current.exists()


def test_another_live_process_file_is_not_deleted(tmp_path: Path) -> None:
    other = tmp_path / f"events-20260101-000000-{os.getppid()}.jsonl"  # writable, pid alive
    other.write_bytes(_line(0) * 50)
    files = RotatingFiles(tmp_path, retention=Retention(max_bytes=10))
    files.write([_line(1)], NOW)
    assert other.exists()


def test_a_failed_write_says_how_many_lines_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = RotatingFiles(tmp_path, max_bytes=250)
    real = os.write
    calls = {"n": 0}

    def second_write_fails(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.EFBIG, "File too large")
        return real(fd, data)

    monkeypatch.setattr(os, "write", second_write_fails)
    with pytest.raises(WriteFailed) as failed:
        files.write([_line(i) for i in range(5)], NOW)  # two per file: the 2nd file fails
    assert failed.value.written == 2 and failed.value.error.errno == errno.EFBIG
    assert files.current is None  # the next batch opens a new file


def test_health_counts_lost_records_with_the_last_error_and_no_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, str]] = []
    log = EventLog(
        tmp_path / "log", flush_interval=3600, losses=Losses(lambda n, r: seen.append((n, r)))
    )
    assert log.health() == {
        "lostRecords": 0,
        "lastError": None,
        "lastErrorAt": None,
        "output": "files",
    }
    log.append_events([Event(type="click", visitor_id="v")] * 3, received_at=NOW)

    def disk_full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    with monkeypatch.context() as m:
        m.setattr(os, "write", disk_full)
        log.flush()
    health = log.health()
    log.close()
    assert health["lostRecords"] == 3 == log.dropped
    assert health["lastError"] == "ENOSPC: No space left on device"
    assert str(tmp_path) not in str(health)
    assert datetime.fromisoformat(health["lastErrorAt"]).tzinfo is not None
    assert seen == [(3, "write")]


def test_the_event_log_applies_its_retention_on_rotation(tmp_path: Path) -> None:
    log = EventLog(
        tmp_path / "log", flush_interval=3600, max_bytes=2000, retention=Retention(max_bytes=5000)
    )
    for i in range(30):
        log.append_events([Event(type="click", visitor_id=f"v{i}")] * 5, received_at=NOW)
        log.flush()
    log.close()
    assert sum(p.stat().st_size for p in log.files()) <= 5000
    assert len(log.files()) >= 2


def test_a_batch_larger_than_the_free_space_keeps_the_parts_that_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk loses only the parts of a batch that no longer fit: the batch is written
    and synced a part (:data:`CHUNK_BYTES`) at a time, each part all or nothing."""
    from server import logfiles

    free = int(2.5 * CHUNK_BYTES)
    real_write = os.write
    used = 0

    def disk_write(fd: int, data: Any) -> int:
        nonlocal used
        if used + len(data) > free:
            raise OSError(errno.ENOSPC, "No space left on device")
        used += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(logfiles.os, "write", disk_write)
    files = RotatingFiles(tmp_path, max_bytes=1 << 30)
    line = b'{"n":' + b"0" * 1000 + b"}\n"
    lines = [line] * (4 * CHUNK_BYTES // len(line))
    with pytest.raises(WriteFailed) as failed:
        files.write(lines, NOW)
    per_part = CHUNK_BYTES // len(line)
    assert failed.value.written == 2 * per_part  # two whole parts are durable, then the disk
    (written,) = tmp_path.glob("events-*.jsonl")
    assert written.read_bytes() == line * (2 * per_part)  # no torn line
