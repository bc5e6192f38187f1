"""Safe defaults and limits (issue 15), each attack replayed against a real server process on
127.0.0.1: demo mode never with keys, per-client rate limits, batch decide for secret keys only,
the new-profile cap, header and body timeouts, deep nesting, keys redacted in the access log,
geo headers untrusted by default (no paths in public answers: tests/server/test_app.py and
test_decide_api.py)."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.observability.redaction import RedactingFilter, redact
from server.security import hash_key
from tests.conftest import TEST_TOKEN_SECRET, LiveServer, _start_server, start_refused

PUBLIC = "pk_limits_test_abcdefghijklmnopqrstuvwxyz"
TIGHT = "pk_limits_tight_abcdefghijklmnopqrstuvwxyz"
SECRET = "sk_limits_test_abcdefghijklmnopqrstuvwxyz"
ORIGIN = "https://shop.example.com"
NEW_PROFILES_PER_MINUTE = 3
MakeRequest = Callable[..., dict[str, object]]
KEYS: dict[str, Any] = {
    "per_ip_per_minute": 0,
    "keys": [
        {"id": "site", "kind": "public", "sha256": hash_key(PUBLIC), "origins": [ORIGIN]},
        # 30 a minute, a bucket of 5 (burst_seconds 10)
        {
            "id": "tight",
            "kind": "public",
            "sha256": hash_key(TIGHT),
            "origins": [ORIGIN],
            "rate_per_minute": 30,
        },
        {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
    ],
}


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A keyed server (no demo) with short header/body timeouts, the access log on and a cap of
    3 new profiles a minute per public-key client."""
    root = tmp_path_factory.mktemp("limits")
    (root / "keys.json").write_text(json.dumps(KEYS))
    live = _start_server(
        bundle_dir,
        root / "server.log",
        {
            "TAILOR_DEMO": "0",
            "TAILOR_KEYS_FILE": str(root / "keys.json"),
            "TAILOR_TOKEN_SECRETS": TEST_TOKEN_SECRET,
            "TAILOR_ACCESS_LOG": "1",
            "TAILOR_HEADER_TIMEOUT": "1",
            "TAILOR_BODY_TIMEOUT": "1",
            "TAILOR_NEW_PROFILES_PER_MINUTE": str(NEW_PROFILES_PER_MINUTE),
        },
    )
    yield live
    live.process.terminate()
    live.process.wait(timeout=10)


def _client(live: LiveServer, source: str = "127.0.0.1") -> httpx.Client:
    """A client whose connections come from ``source`` (any 127.0.0.0/8 address is local)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=live.url, transport=transport, timeout=10)


def _browser(key: str = PUBLIC) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "origin": ORIGIN}


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"] == f"https://tailor.dev/problems/{slug}"
    return body


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection, within ``seconds``."""
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the connection is still open after {seconds} s: {received!r}")


# -- demo mode -----------------------------------------------------------------------------------


def test_demo_mode_is_refused_together_with_keys(bundle_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(json.dumps(KEYS))
    env = {"TAILOR_KEYS_FILE": str(tmp_path / "keys.json"), "TAILOR_EVENT_LOG_DIR": ""}
    done = start_refused(bundle_dir, env, ["--demo"])
    assert done.returncode == 2
    assert "cannot run with API keys" in done.stderr


def test_keyless_loopback_requests_are_refused_when_keys_are_set(
    server: LiveServer, make_request: MakeRequest
) -> None:
    with _client(server) as client:
        _problem(client.post("/v1/decide", json=make_request()), 401, "missing-key")
        _problem(client.get("/v1/reports/kpis"), 401, "missing-key")
        # a proxy rewriting Host to loopback makes no one "loopback" any more
        r = client.get("/v1/reports/kpis", headers={"host": "localhost"})
        _problem(r, 401, "missing-key")
        assert client.get("/").status_code == 404  # no demo page


# -- rate limits and batch -----------------------------------------------------------------------


def test_one_client_cannot_exhaust_a_public_key_for_everyone(
    server: LiveServer, make_request: MakeRequest
) -> None:
    with _client(server, "127.0.0.3") as a, _client(server, "127.0.0.4") as b:
        statuses = [
            a.post(
                "/v1/decide",
                json=make_request(visitorId=f"rate-a-{i}", sessionId="s"),
                headers=_browser(TIGHT),
            ).status_code
            for i in range(8)
        ]
        assert statuses.count(200) == 5 and statuses[-1] == 429, statuses
        r = b.post("/v1/decide", json=make_request(visitorId="rate-b"), headers=_browser(TIGHT))
        assert r.status_code == 200, r.text


def test_batch_decide_needs_a_secret_key(server: LiveServer, make_request: MakeRequest) -> None:
    batch = [make_request(visitorId=f"batch-{i}") for i in range(3)]
    with _client(server) as client:
        r = client.post("/v1/decide/batch", json=batch, headers=_browser())
        _problem(r, 403, "secret-key-required")
        r = client.post(
            "/v1/decide/batch", json=batch, headers={"authorization": f"Bearer {SECRET}"}
        )
        assert r.status_code == 200 and len(r.json()) == 3


def test_new_profiles_per_client_are_capped(server: LiveServer, make_request: MakeRequest) -> None:
    secret = {"authorization": f"Bearer {SECRET}"}
    with _client(server, "127.0.0.5") as flood, _client(server, "127.0.0.6") as other:
        r = other.post("/v1/decide", json=make_request(visitorId="cap-other"), headers=_browser())
        assert r.status_code == 200
        kept = r.json()["visitorId"]  # new visitors get ids the server mints
        minted: list[dict[str, Any]] = []
        for i in range(NEW_PROFILES_PER_MINUTE + 3):
            r = flood.post(
                "/v1/decide", json=make_request(visitorId=f"cap-{i}"), headers=_browser()
            )
            assert r.status_code == 200, r.text  # still decided, contextually
            minted.append(r.json())
        stored = [
            flood.get(f"/v1/visitors/{d['visitorId']}", headers=secret).status_code for d in minted
        ]
        assert stored == [200] * NEW_PROFILES_PER_MINUTE + [404] * 3
        # a known visitor (with its token) is still recorded, and others' profiles are untouched
        first = minted[0]
        again = make_request(visitorId=first["visitorId"], sessionId="again")
        r = flood.post(
            "/v1/decide", json=again | {"visitorToken": first["visitorToken"]}, headers=_browser()
        )
        assert r.status_code == 200 and r.json()["visitorId"] == first["visitorId"]
        profile = flood.get(f"/v1/visitors/{first['visitorId']}", headers=secret).json()
        assert profile["behavior"]["sessionCount"] == 2
        assert other.get(f"/v1/visitors/{kept}", headers=secret).status_code == 200


# -- connections and bodies ----------------------------------------------------------------------


def _connect(live: LiveServer) -> socket.socket:
    host, port = live.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_partial_headers_are_cut_off(server: LiveServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert _closed_within(sock, 5) == b""


def test_partial_body_is_cut_off(server: LiveServer) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {SECRET}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"visitorId":'
        )
        answer = _closed_within(sock, 5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"body-timeout" in answer


def test_deep_nesting_is_a_400_without_a_traceback(server: LiveServer) -> None:
    body = b'{"visitorId":"deep","context":{"page":{"url":"x"}},"x":' + b"[" * 1000
    body += b"]" * 1000 + b"}"
    with _client(server) as client:
        r = client.post(
            "/v1/decide",
            content=body,
            headers={"authorization": f"Bearer {SECRET}", "content-type": "application/json"},
        )
        _problem(r, 400, "malformed-json")
        assert client.get("/healthz").status_code == 200  # after the request, in the log
    log = server.log.read_text()
    assert "POST /v1/decide HTTP/1.1" in log  # the request reached the log ...
    assert "Traceback" not in log and "RecursionError" not in log  # ... and nothing else did


# -- logs and public answers ---------------------------------------------------------------------


def test_keys_are_redacted_in_every_log_line(server: LiveServer) -> None:
    leaked = ("pk_leak_query_1", "sk_leak_api_2", "tok_leak_3", "pk_leak_405_4")
    with _client(server) as client:
        assert client.get(f"/nothing?key={leaked[0]}&api_key={leaked[1]}").status_code == 404
        assert client.get(f"/v1/nothing?token={leaked[2]}").status_code in (401, 404)
        assert client.get(f"/v1/decide?key={leaked[3]}").status_code in (403, 405)
        assert client.get("/healthz").status_code == 200  # logged after the others
    log = server.log.read_text()
    assert "/nothing?key=redacted&api_key=redacted" in log
    assert "token=redacted" in log
    for secret in leaked:
        assert secret not in log


def test_geo_headers_are_not_trusted_by_default(
    server: LiveServer, make_request: MakeRequest
) -> None:
    with _client(server) as client:
        r = client.post(
            "/v1/decide",
            json=make_request(visitorId="geo"),
            headers={**_browser(), "cf-ipcountry": "JP"},
        )
        assert r.status_code == 200 and r.json()["signals"]["country"] == "GB"  # Europe/London


def test_redaction_covers_headers_and_exceptions() -> None:
    assert (
        redact("GET /x?a=1&KEY=pk_1&api_key=sk_2#f") == "GET /x?a=1&KEY=redacted&api_key=redacted#f"
    )
    assert redact("headers: {'authorization': 'Bearer sk_3'}") == (
        "headers: {'authorization': 'Bearer redacted'}"
    )
    assert redact("X-Tailor-Key: pk_4 and monkey=ok") == "X-Tailor-Key: redacted and monkey=ok"
    try:
        raise ValueError("bad url /v1/decide?token=tok_5")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, "f", 1, "%s", ("?key=pk_6",), sys.exc_info())
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "?key=redacted"
    assert record.exc_text is not None and "tok_5" not in record.exc_text


def test_a_client_gone_mid_body_is_no_error(server: LiveServer) -> None:
    """A client that disconnects before its body arrived leaves no traceback and no 500, and
    the worker keeps answering (the reader's answer to the disconnect is pinned below)."""
    before = len(server.log.read_text())  # other tests of the module log their own
    with _connect(server) as sock:
        sock.sendall(
            b"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {SECRET}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"visitorId":'
        )
    with _client(server) as client:
        assert client.get("/healthz").status_code == 200
    log = server.log.read_text()[before:]
    assert "GET /healthz" in log  # the follow-up reached the log ...
    assert "Traceback" not in log and '" 500' not in log  # ... and no error did


def test_the_body_reader_answers_a_disconnect_with_a_400() -> None:
    import asyncio

    from litestar import Request

    from server.bodies import read_body
    from server.problems import Problem

    messages = [
        {"type": "http.request", "body": b'{"visitorId":', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/v1/decide", "headers": [],
             "query_string": b"", "app": None, "state": {}}  # fmt: skip
    request: Request[Any, Any, Any] = Request(scope, receive=receive)  # type: ignore[arg-type]
    with pytest.raises(Problem) as raised:
        asyncio.run(read_body(request, 10_000, timeout=5))
    assert raised.value.status == 400 and raised.value.slug == "client-disconnected"
