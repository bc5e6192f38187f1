"""The CDP client (tests/js/cdp.py) against a real headless Chromium and a small stdlib HTTP
server on 127.0.0.1: navigation, evaluation, init scripts, waits, requests with their bodies,
console output, screenshots and independent pages."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.js.cdp import Browser, CDPError, JSError, Page, Request

pytestmark = pytest.mark.browser

PAGES = {
    "/title": "<!doctype html><title>Hello CDP</title><p>hello</p>",
    "/other": "<!doctype html><title>Other page</title><p>other</p>",
    "/init": (
        "<!doctype html><title>init</title>"
        "<script>window.seenByPage = String(window.fromInit);</script>"
    ),
    "/flag": (
        "<!doctype html><title>flag</title>"
        "<script>setTimeout(() => { window.ready = 'yes'; }, 150);</script>"
    ),
    "/console": (
        "<!doctype html><title>console</title>"
        "<script>console.error('bad thing', 42);</script>"
        "<script>throw new Error('kaboom');</script>"
    ),
    "/slow-image": '<!doctype html><title>slow</title><img src="/slow.png">',
}


@dataclass
class Site:
    """The test server: its base URL and every POST it received as (path, content type, body)."""

    base: str
    received: list[tuple[str, str, str]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """Serves PAGES on 127.0.0.1 from a thread and records POST bodies."""
    received: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/slow.png":
                time.sleep(0.5)  # keeps the load event well behind DOMContentLoaded
                self._reply(404, b"")
            elif self.path in PAGES:
                self._reply(200, PAGES[self.path].encode())
            else:
                self._reply(404, b"not found")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append((self.path, self.headers.get("Content-Type", ""), body.decode()))
            self._reply(204, b"")

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            if body:
                self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="test-cdp-http", daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole module."""
    with Browser() as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page per test (init scripts and recorded requests do not leak between tests)."""
    p = browser.new_page()
    try:
        yield p
    finally:
        p.close()


def _eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Polls a Python-side condition (the server saw a request) until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.02)


def _only(requests: list[Request], path: str) -> Request:
    found = [r for r in requests if r.url.endswith(path)]
    assert len(found) == 1, [r.url for r in requests]
    return found[0]


def test_goto_then_evaluate_title(page: Page, site: Site) -> None:
    page.goto(site.url("/title"))
    assert page.evaluate("document.title") == "Hello CDP"
    assert page.evaluate("location.href") == site.url("/title")
    assert page.evaluate("({a: [1, 'two', null], b: true})") == {"a": [1, "two", None], "b": True}
    assert page.evaluate("undefined") is None
    assert page.evaluate("-1 / 0") == float("-inf")
    assert page.evaluate("2n ** 70n") == 2**70


def test_goto_domcontentloaded_does_not_wait_for_images(page: Page, site: Site) -> None:
    page.goto(site.url("/slow-image"), wait="domcontentloaded")
    assert page.evaluate("document.readyState") == "interactive"
    assert page.wait_for("document.readyState === 'complete'", timeout=10) is True


def test_goto_refused_connection_raises(page: Page) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    with pytest.raises(CDPError, match="ERR_CONNECTION_REFUSED") as info:
        page.goto(f"http://127.0.0.1:{port}/")
    assert info.value.method == "Page.navigate"


def test_evaluate_raises_jserror(page: Page) -> None:
    with pytest.raises(JSError, match="Error: x") as info:
        page.evaluate('throw new Error("x")')
    assert isinstance(info.value, CDPError)
    with pytest.raises(JSError, match="nope"):
        page.evaluate("Promise.reject(new Error('nope'))")


def test_evaluate_awaits_promises(page: Page) -> None:
    assert page.evaluate("new Promise(r => setTimeout(() => r(42), 50))") == 42


def test_init_script_runs_before_page_scripts(page: Page, site: Site) -> None:
    page.add_init_script("window.fromInit = 'set by init';")
    page.goto(site.url("/init"))
    assert page.evaluate("window.seenByPage") == "set by init"


def test_wait_for_returns_the_value_once_truthy(page: Page, site: Site) -> None:
    page.goto(site.url("/flag"))
    assert page.evaluate("window.ready") is None
    assert page.wait_for("window.ready") == "yes"


def test_wait_for_times_out_naming_the_expression(page: Page, site: Site) -> None:
    page.goto(site.url("/title"))
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"window\.never.*last value: None"):
        page.wait_for("window.never", timeout=0.3)
    assert time.monotonic() - started < 3


def test_requests_see_fetch_post_with_body(page: Page, site: Site) -> None:
    page.goto(site.url("/title"))
    status = page.evaluate(
        "fetch('/collect', {method: 'POST', body: JSON.stringify({a: 1}),"
        " headers: {'Content-Type': 'application/json'}}).then(r => r.status)"
    )
    assert status == 204
    request = _only(page.requests(), "/collect")
    assert (request.method, request.type) == ("POST", "Fetch")
    assert request.post_data == '{"a":1}'
    assert request.headers["Content-Type"] == "application/json"
    assert ("/collect", "application/json", '{"a":1}') in site.received
    document = page.requests()[0]
    assert (document.url, document.method, document.type) == (site.url("/title"), "GET", "Document")
    assert document.post_data is None


def test_requests_see_beacon_with_blob_body(page: Page, site: Site) -> None:
    page.goto(site.url("/title"))
    sent = page.evaluate(
        "navigator.sendBeacon('/beacon', new Blob(['beacon body'], {type: 'text/plain'}))"
    )
    assert sent is True
    _eventually(lambda: any(r[0] == "/beacon" for r in site.received), "the beacon")
    request = _only(page.requests(), "/beacon")
    assert (request.method, request.type) == ("POST", "Ping")
    server_side = next(r for r in site.received if r[0] == "/beacon")
    assert server_side == ("/beacon", "text/plain", "beacon body")
    assert request.post_data == server_side[2]
    assert request.headers["Content-Type"] == "text/plain"


def test_console_sees_errors_and_uncaught_exceptions(page: Page, site: Site) -> None:
    page.goto(site.url("/console"))
    page.evaluate("console.log('later', {k: 1}, null)")
    lines = page.console()
    assert lines[0] == "error: bad thing 42"
    assert lines[1].startswith("exception: Uncaught Error: kaboom")
    assert lines[2] == "log: later Object null"


def test_screenshot_is_a_png_of_the_viewport(browser: Browser, site: Site, tmp_path: Path) -> None:
    page = browser.new_page(width=800, height=600)
    try:
        page.goto(site.url("/title"))
        assert page.evaluate("[innerWidth, innerHeight]") == [800, 600]
        out = tmp_path / "shot.png"
        page.screenshot(out)
    finally:
        page.close()
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (800, 600)


def test_two_pages_are_independent_and_both_visible(browser: Browser, site: Site) -> None:
    first, second = browser.new_page(), browser.new_page()
    try:
        first.goto(site.url("/title"))
        second.goto(site.url("/other"))
        first.evaluate("window.mine = 'first'")
        assert first.evaluate("document.title") == "Hello CDP"
        assert second.evaluate("document.title") == "Other page"
        assert second.evaluate("typeof window.mine") == "undefined"
        assert second.requests()[0].url == site.url("/other")
        assert all(not r.url.endswith("/title") for r in second.requests())
        # A second tab in the same window would hide the first and throttle its timers.
        assert first.evaluate("document.visibilityState") == "visible"
        assert second.evaluate("document.visibilityState") == "visible"
    finally:
        first.close()
        second.close()


def test_missing_chromium_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="make test"):
        Browser(chromium=str(tmp_path / "no-chromium"))


def test_close_does_not_hang_when_chromium_died(site: Site) -> None:
    browser = Browser()
    try:
        page = browser.new_page()
        page.goto(site.url("/title"))
        os.killpg(browser._proc.pid, signal.SIGKILL)
        with pytest.raises(CDPError, match="closed"):
            page.evaluate("1")
    finally:
        started = time.monotonic()
        browser.close()
    assert time.monotonic() - started < 5
    assert browser._proc.returncode is not None
