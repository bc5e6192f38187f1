"""Local mode against a hostile bundle server: a real HTTP server on 127.0.0.1 offering unsafe
names, device files, oversized and slow files. Each is refused with its typed error, nothing
outside the cache directory is read or written, and the refresh thread keeps the old bundle."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sdk import Bundle, load_bundle
from sdk._download import DownloadLimits, check_file_name, check_source_url
from sdk._local import LocalEngine
from sdk.errors import InsecureURLError, UnsafeBundleFileError

LIMITS = DownloadLimits(
    max_file_bytes=1 << 20, max_total_bytes=(1 << 20) + (1 << 19), file_timeout=0.5
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Hostile:
    """What the server answers: the ``/v1/bundle`` JSON and each file's bytes (``None``: trickle
    one byte every 20 ms; ``chunked``: no Content-Length)."""

    def __init__(self, files: dict[str, bytes | None], info_files: dict[str, str] | None = None):
        manifest = json.dumps({"files": {n: _sha(b or b"") for n, b in files.items()}}).encode()
        self.files: dict[str, bytes | None] = {"manifest.json": manifest, **files}
        self.digest = _sha(manifest)
        listed = {n: _sha(b or b"") for n, b in files.items()}
        self.info = {"digest": self.digest, "files": {"manifest.json": self.digest, **listed}}
        if info_files is not None:
            self.info["files"] = {"manifest.json": self.digest, **info_files}
        self.unannounced: set[str] = set()
        self.requested: list[str] = []
        self.stop = threading.Event()


@pytest.fixture
def hostile_server() -> Iterator[Callable[[Hostile], str]]:
    servers: list[tuple[ThreadingHTTPServer, Hostile]] = []

    def start(hostile: Hostile) -> str:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                hostile.requested.append(self.path)
                if self.path == "/v1/bundle":
                    return self._send(json.dumps(hostile.info).encode(), "application/json")
                name = self.path.removeprefix("/v1/bundle/files/")
                if name not in hostile.files:
                    self.send_error(404)
                    return None
                body = hostile.files[name]
                if body is None:  # a server that never finishes
                    self.send_response(200)
                    self.send_header("content-length", "1000000")
                    self.end_headers()
                    while not hostile.stop.wait(0.02):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    return None
                return self._send(body, "application/octet-stream", name in hostile.unannounced)

            def _send(self, body: bytes, kind: str, unannounced: bool = False) -> None:
                self.send_response(200)
                self.send_header("content-type", kind)
                if unannounced:
                    self.send_header("connection", "close")
                else:
                    self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, hostile))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, hostile in servers:
        hostile.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


def _refresh_in_the_thread(engine: LocalEngine, bundle: Bundle) -> str:
    """Let the refresher thread try once; return its error after checking nothing changed."""
    assert engine.decider() is not None  # starts the refresher thread
    deadline = time.monotonic() + 20
    while engine.refresh_failures == 0:
        assert time.monotonic() < deadline, "the refresher never finished"
        time.sleep(0.01)  # polling a condition, not waiting for a result
    assert engine.bundle is bundle and engine.refreshes == 0
    assert engine._thread is not None and engine._thread.is_alive()
    assert engine.last_error is not None
    return engine.last_error


def _outside_untouched(root: Path, cache: Path, before: set[Path]) -> None:
    after = {p for p in root.rglob("*") if cache not in p.parents and p != cache}
    assert after == before
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary left


MB = 1 << 20
CASES: dict[str, tuple[Callable[[], Hostile], str]] = {
    "dotdot-in-the-list": (
        lambda: Hostile({"model.onnx": b"m"}, info_files={"../etc/passwd": "0" * 64}),
        "UnsafeBundleFileError: unsafe bundle file name '../etc/passwd'",
    ),
    "device-in-the-manifest": (
        lambda: Hostile({"/dev/zero": b""}, info_files={"model.onnx": "0" * 64}),
        "UnsafeBundleFileError: unsafe bundle file name '/dev/zero'",
    ),
    "oversized": (
        lambda: Hostile({"model.onnx": b"x" * (MB + 1)}),
        "BundleTooLargeError: GET /v1/bundle/files/model.onnx: 1048577 bytes is over the cap",
    ),
    "over-the-total": (
        lambda: Hostile({"a.onnx": b"a" * (MB - 10), "b.onnx": b"b" * (MB - 10)}),
        "BundleTooLargeError: GET /v1/bundle/files/b.onnx",
    ),
    "slow": (
        lambda: Hostile({"model.onnx": None}),
        "BundleTimeoutError: GET /v1/bundle/files/model.onnx: not complete in 0.5 s",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_server_is_refused_and_the_old_bundle_kept(
    case: str, bundle: Bundle, tmp_path: Path, hostile_server: Callable[[Hostile], str]
) -> None:
    make, why = CASES[case]
    hostile = make()
    url = hostile_server(hostile)
    cache = tmp_path / "home" / "cache"
    cache.mkdir(parents=True)
    before = {p for p in tmp_path.rglob("*") if cache not in p.parents and p != cache}
    engine = LocalEngine(
        bundle=bundle, source=url, cache_dir=cache, refresh_interval=3600, limits=LIMITS
    )
    try:
        started = time.monotonic()
        error = _refresh_in_the_thread(engine, bundle)
        assert error.startswith(why), error
        assert time.monotonic() - started < 10
    finally:
        engine.close()
    _outside_untouched(tmp_path, cache, before)
    assert not (cache / hostile.digest).exists()
    unsafe = [p for p in hostile.requested if "/dev/" in p or ".." in p]
    assert unsafe == []  # unsafe names are never even requested


def test_a_cached_copy_naming_a_file_outside_is_not_opened(
    bundle: Bundle, tmp_path: Path, hostile_server: Callable[[Hostile], str]
) -> None:
    """The old file-content oracle: a cached manifest whose list names ``../../fifo``. Opening
    the FIFO would hang; the name is refused first, and the download starts over."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # the list the server sends is harmless; the manifest (cached and served) is not
    hostile = Hostile({"../../fifo": b"s"}, info_files={"model.onnx": "0" * 64})
    url = hostile_server(hostile)
    cache = tmp_path / "cache"
    planted = cache / hostile.digest
    planted.mkdir(parents=True)
    (planted / "manifest.json").write_bytes(hostile.files["manifest.json"] or b"")
    engine = LocalEngine(bundle=bundle, source=url, cache_dir=cache, limits=LIMITS)
    try:
        error = _refresh_in_the_thread(engine, bundle)
    finally:
        engine.close()
    assert error.startswith("UnsafeBundleFileError: unsafe bundle file name '../../fifo'")
    assert fifo.exists()


@pytest.mark.parametrize(
    "name",
    ["../x", "/etc/passwd", ".hidden", "a/b", "a\\b", "a..b", "", "x" * 129, "é.onnx", None, "a."],
)
def test_only_plain_file_names_pass(name: object) -> None:
    with pytest.raises(UnsafeBundleFileError):
        check_file_name(name)


@pytest.mark.parametrize("name", ["manifest.json", "segments.onnx", "parity.jsonl", "a-b_c.1"])
def test_plain_file_names(name: str) -> None:
    assert check_file_name(name) == name


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://tailor.example.com", True),
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000", True),
        ("http://[::1]:8000", True),
        ("http://tailor.example.com", False),
        ("http://10.0.0.5", False),
        ("ftp://tailor.example.com", False),
    ],
)
def test_plain_http_only_to_loopback(url: str, ok: bool) -> None:
    if ok:
        check_source_url(url)
        return
    with pytest.raises(InsecureURLError):
        LocalEngine(source=url)


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_BUNDLE_MAX_FILE_BYTES", "1000")
    monkeypatch.setenv("TAILOR_BUNDLE_MAX_TOTAL_BYTES", "5000")
    monkeypatch.setenv("TAILOR_BUNDLE_FILE_TIMEOUT", "2.5")
    assert DownloadLimits.from_env() == DownloadLimits(
        max_file_bytes=1000, max_total_bytes=5000, file_timeout=2.5
    )
    assert LocalEngine(source="https://tailor.example.com").limits.max_file_bytes == 1000
