"""A real server whose event log directory is on a full filesystem: every request still
succeeds, and what could not be written is counted exactly (``tailor_log_lost_records_total``:
the records on disk plus the records counted lost are the records sent). With a size cap
below the filesystem's size, the oldest files go and nothing is lost.

The filesystem is a 1 MiB tmpfs mounted for the test (we are root in the test container). Where
mounting is not permitted, the server instead runs with a file-size limit (``RLIMIT_FSIZE``
set with ``prlimit`` on the running single-worker process; CPython ignores ``SIGXFSZ``, so
writes past it fail with ``EFBIG`` the way a full disk fails them with ``ENOSPC``).
"""

from __future__ import annotations

import re
import resource
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from sdk.logs import DecisionRecord, read_log
from server.security import hash_key
from tests.conftest import LiveServer, keyed_server

_LOST = re.compile(r'^tailor_log_lost_records_total\{reason="(\w+)"\} ([0-9.e+]+)$', re.M)
LIMIT = 1 << 20
SECRET = "sk_full_disk_test_abcdefghijklmnopqrstuvwxyz"
AUTH = {"authorization": f"Bearer {SECRET}"}
KEYS = {
    "per_key_per_minute": 0,
    "per_ip_per_minute": 0,
    "keys": [{"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)}],
}


@contextmanager
def small_filesystem(directory: Path) -> Iterator[str]:
    """A 1 MiB tmpfs at ``directory`` (``tmpfs``), or just the directory (``rlimit``) where
    mounting is not permitted."""
    directory.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={LIMIT}", "tmpfs", str(directory)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield "tmpfs" if mounted else "rlimit"
    finally:
        if mounted:
            subprocess.run(["umount", str(directory)], check=True)


@contextmanager
def server_logging_to(disk: Path, bundle_dir: Path, env: dict[str, str]) -> Iterator[LiveServer]:
    """A server (a secret key, no rate limits) whose event log is ``disk/events-<port>``; its
    output goes beside ``disk`` through a symlink, so its own log is not on the full disk."""
    (disk / "server.log").symlink_to(disk.parent / "server.log")
    with keyed_server(bundle_dir, disk, KEYS, env) as server:
        yield server


def events_dir(disk: Path) -> Path:
    (found,) = disk.glob("events-*")
    return found


def decide(http: httpx.Client, n: int) -> list[str]:
    """``n`` decides of new visits; their decision ids (all answered 200)."""
    ids = []
    for i in range(n):
        body = {
            "visitorId": f"v{i % 50}",
            "sessionId": uuid.uuid4().hex,
            "consent": {"personalization": True, "storage": True},
            "context": {"page": {"url": "https://shop.example.com/", "path": "/" + "p" * 300}},
            "slots": ["hero"],
        }
        answer = http.post("/v1/decide", json=body)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["decisionId"])
    return ids


def lost(http: httpx.Client) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in _LOST.finditer(http.get("/metrics").text)}


def on_disk(directory: Path) -> list[str]:
    reader = read_log(directory, missing_ok=True)
    ids = [r.decision_id for r in reader if isinstance(r, DecisionRecord)]
    assert reader.skipped == {}  # no torn line: a failed batch leaves nothing behind
    return ids


def test_a_full_disk_fails_no_request_and_counts_what_it_lost(
    bundle_dir: Path, tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "disk") as kind:
        disk = tmp_path / "disk"
        env = {"TAILOR_LOG_MAX_BYTES": "0"}  # no cap
        with (
            server_logging_to(disk, bundle_dir, env) as server,
            httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as http,
        ):
            events = events_dir(disk)
            if kind == "rlimit":
                resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
            sent = decide(http, 900)  # about 1.5 MiB of decision lines
            deadline = time.monotonic() + 30
            while len(on_disk(events)) + sum(lost(http).values()) < len(sent):
                assert time.monotonic() < deadline, "the writer never flushed"
                time.sleep(0.1)  # polling: the writer thread flushes every second
            written, counted = on_disk(events), lost(http)
            ready = http.get("/readyz")
        # the worker stays ready and says what it lost, without naming a path
        assert ready.status_code == 200
        health = ready.json()["eventLog"]
        assert health["lostRecords"] == counted.get("write", 0) and health["lastError"]
        assert str(disk) not in ready.text
        assert len(written) + sum(counted.values()) == len(
            sent
        )  # exact: nothing twice, none missed
        assert counted.get("write", 0) > 0 and len(written) > 0
        assert set(written) <= set(sent) and len(set(written)) == len(written)


def test_a_size_cap_below_the_disk_keeps_the_newest_records_and_loses_none(
    bundle_dir: Path, tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "disk") as kind:
        disk = tmp_path / "disk"
        env = {"TAILOR_LOG_MAX_BYTES": str(600_000)}
        with (
            server_logging_to(disk, bundle_dir, env) as server,
            httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as http,
        ):
            events = events_dir(disk)
            if kind == "rlimit":
                resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
            sent = decide(http, 900)
            after = decide(http, 1)  # the writer rotates and applies the cap as it goes
            counted = lost(http)
        written = on_disk(events)  # the server stopped: everything buffered is written
        assert sum(counted.values()) == 0
        assert sum(p.stat().st_size for p in events.glob("*.jsonl")) <= 600_000
        assert set(written) == set((sent + after)[-len(written) :])  # the newest ones
        assert len(written) < len(sent)
