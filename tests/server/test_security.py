"""Tests of server.security (and its rate limiter): keys, routes, origins, CORS, preflight, limits,
the keyless loopback demo; a tiny Litestar app in process, and a real uvicorn process."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar, Request, Response, delete, get, post
from litestar.testing import TestClient

import server.security as security
from server.security import (
    ApiKey,
    OriginRules,
    Principal,
    SecurityConfig,
    SecurityConfigError,
    SecurityMiddleware,
    generate_key,
    hash_key,
)
from server.security.origins import canonical_origin
from server.security.ratelimit import RateLimiter
from server.security.route_rules import DEFAULT_PUBLIC_ROUTES

ROOT = Path(__file__).resolve().parents[2]
PK = "pk_test_public_shop"
PK_WILD = "pk_test_public_wild"
PK_ANY = "pk_test_public_any"
SK = "sk_test_secret_ops"
SHOP = "https://shop.example.com"
REMOTE = "198.51.100.7"  # TEST-NET-2: a visitor somewhere on the internet
CONFIG_ENV = "TAILOR_TEST_SECURITY_CONFIG"


def make_config(**overrides: Any) -> SecurityConfig:
    """The test keys; keyword arguments override SecurityConfig fields."""
    keys = [
        ApiKey(id="shop", kind="public", sha256=hash_key(PK), origins=[SHOP]),
        ApiKey(
            id="wild", kind="public", sha256=hash_key(PK_WILD), origins=["https://*.example.com"]
        ),
        ApiKey(id="any", kind="public", sha256=hash_key(PK_ANY), origins=["*"]),
        ApiKey(id="ops", kind="secret", sha256=hash_key(SK)),
    ]
    return SecurityConfig(**{"keys": keys, **overrides})


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- a tiny app behind the middleware ------------------------------------------------------------


def _principal(request: Request[Any, Any, Any]) -> dict[str, Any] | None:
    principal: Principal | None = request.state.get("tailor_key")
    if principal is None:
        return None
    return {"id": principal.id, "kind": principal.kind, "origin": principal.origin}


@post("/v1/decide", status_code=200)
async def decide(request: Request[Any, Any, Any]) -> dict[str, Any]:
    body = await request.body()
    return {
        "principal": _principal(request),
        "body": body.decode(),
        "query": request.scope["query_string"].decode(),
    }


@post("/v1/events", status_code=202)
async def events(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"principal": _principal(request)}


@get("/v1/bundle/manifest.json")
async def manifest() -> Response[dict[str, str]]:
    # a CORS header set by the app must not survive the middleware
    return Response(
        {"version": "v1"}, headers={"etag": '"abc"', "access-control-allow-origin": "*"}
    )


@get("/v1/admin/stats")
async def admin_stats(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"principal": _principal(request)}


@get("/v1/visitors/{visitor_id:str}")
async def get_visitor(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {"visitorId": request.path_params["visitor_id"]}


@delete("/v1/visitors/{visitor_id:str}", status_code=204)
async def forget_visitor(request: Request[Any, Any, Any]) -> None:
    return None


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


HANDLERS = [decide, events, manifest, admin_stats, get_visitor, forget_visitor, healthz]


def build_app(config: SecurityConfig, clock: Callable[[], float] | None = None) -> Litestar:
    """The wiring create_app would use: the middleware in Litestar's middleware list."""
    factory = SecurityMiddleware.factory(config, clock=clock or time.monotonic)
    return Litestar(route_handlers=HANDLERS, middleware=[factory], openapi_config=None)


def with_peer(app: Any) -> Any:
    """Set the socket peer from a test-only ``x-test-peer`` header (default: a remote visitor),
    since the TestClient's peer is the string ``testclient``."""

    async def shim(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            peer = dict(scope["headers"]).get(b"x-test-peer", REMOTE.encode()).decode()
            scope["client"] = (peer, 50000)
        await app(scope, receive, send)

    return shim


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(clock: FakeClock) -> Iterator[Callable[..., TestClient[Any]]]:
    """Factory of started TestClients around the tiny app; ``make_client(**config_overrides)``."""
    clients: list[TestClient[Any]] = []

    def make(base_url: str = "http://testserver.local", **overrides: Any) -> TestClient[Any]:
        client: TestClient[Any] = TestClient(
            with_peer(build_app(make_config(**overrides), clock)), base_url=base_url
        )
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient[Any]]) -> TestClient[Any]:
    return make_client()


def bearer(key: str, **headers: str) -> dict[str, str]:
    """An Authorization header plus others (``x_test_peer=`` becomes ``x-test-peer``)."""
    return {
        "authorization": f"Bearer {key}",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://tailor.dev/problems/{slug}"
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["instance"] == response.request.url.path
    assert "access-control-allow-credentials" not in response.headers
    return body


# -- keys and routes ---------------------------------------------------------------------------


def test_missing_key_is_a_401_problem(client: TestClient[Any]) -> None:
    r = client.post("/v1/decide", json={}, headers={"origin": SHOP})
    body = problem(r, 401, "missing-key")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in body["detail"]
    assert "access-control-allow-origin" not in r.headers


def test_unknown_key_is_a_401_problem(client: TestClient[Any]) -> None:
    r = client.post("/v1/decide", json={}, headers=bearer("pk_guess", origin=SHOP))
    problem(r, 401, "unknown-key")
    assert r.headers["www-authenticate"].startswith("Bearer")
    problem(client.get("/v1/admin/stats", headers={"x-tailor-key": SK + "x"}), 401, "unknown-key")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/stats"),
        ("GET", "/v1/visitors/v-1"),
        ("DELETE", "/v1/visitors/v-1"),
    ],
)
def test_public_key_on_admin_routes_is_403(client: TestClient[Any], method: str, path: str) -> None:
    r = client.request(method, path, headers=bearer(PK, origin=SHOP))
    problem(r, 403, "secret-key-required")


def test_secret_key_reaches_every_route_without_cors(client: TestClient[Any]) -> None:
    r = client.get("/v1/admin/stats", headers=bearer(SK))
    assert r.status_code == 200
    assert r.json()["principal"] == {"id": "ops", "kind": "secret", "origin": None}
    assert client.delete("/v1/visitors/v-1", headers=bearer(SK)).status_code == 204
    assert client.get("/v1/visitors/v-1", headers=bearer(SK)).json() == {"visitorId": "v-1"}
    # a secret key ignores Origin and never gets CORS headers
    r = client.post("/v1/decide", content=b"{}", headers=bearer(SK, origin="https://evil.test"))
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert r.headers["vary"] == "Origin"


def test_key_headers_are_read_in_order(client: TestClient[Any]) -> None:
    r = client.post("/v1/decide", headers={"x-tailor-key": PK, "origin": SHOP})
    assert r.json()["principal"]["id"] == "shop"
    r = client.post("/v1/decide", headers={"authorization": f"bearer  {PK} ", "origin": SHOP})
    assert r.json()["principal"]["id"] == "shop"
    # Authorization wins over X-Tailor-Key, which wins over the query string
    r = client.post(
        f"/v1/decide?key={PK_WILD}", headers={**bearer(PK_ANY), "x-tailor-key": PK, "origin": SHOP}
    )
    assert r.json()["principal"]["id"] == "any"
    r = client.post(f"/v1/decide?key={PK_WILD}", headers={"x-tailor-key": PK, "origin": SHOP})
    assert r.json()["principal"]["id"] == "shop"
    # other Authorization schemes are not keys
    r = client.post("/v1/decide", headers={"authorization": f"Basic {PK}", "origin": SHOP})
    problem(r, 401, "missing-key")


def test_open_routes_need_no_key_and_are_untouched(client: TestClient[Any]) -> None:
    r = client.get("/healthz?key=whatever")
    assert r.status_code == 200 and "vary" not in r.headers
    assert client.get("/nothing-here").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/decide", "public"),
        ("POST", "/v1/decide/batch", "secret"),
        ("POST", "/v1/events", "public"),
        ("GET", "/v1/bundle", "secret"),
        ("HEAD", "/v1/bundle/manifest.json", "secret"),
        ("GET", "/v1/bundles", "secret"),
        ("DELETE", "/v1/bundle/x", "secret"),
        ("GET", "/v1/decide", "secret"),
        ("POST", "/v1/decide/other", "secret"),
        ("GET", "/v1/admin/stats", "secret"),
        ("GET", "/v1/visitors/v", "secret"),
        ("DELETE", "/v1/visitors/v", "secret"),
        ("POST", "/v1/something-new", "secret"),
        ("GET", "/v1", "secret"),
        ("GET", "/tag/../v1/admin/stats", "secret"),
        ("GET", "/v1x/admin", "open"),
        ("GET", "/healthz", "open"),
        ("GET", "/metrics", "open"),
        ("GET", "/", "open"),
        ("GET", "/tag/v1/tailor.js", "open"),
        ("GET", "/schema/openapi.json", "open"),
    ],
)
def test_route_classes(method: str, path: str, expected: str) -> None:
    mw = SecurityMiddleware(_ok_app, make_config())
    assert mw.route_class(method, path) == expected


# -- origins and CORS --------------------------------------------------------------------------


def test_public_key_with_allowed_origin_gets_exact_cors_headers(client: TestClient[Any]) -> None:
    r = client.post("/v1/decide", content=b"{}", headers=bearer(PK, origin=SHOP))
    assert r.status_code == 200
    assert r.json()["principal"] == {"id": "shop", "kind": "public", "origin": SHOP}
    assert r.headers["access-control-allow-origin"] == SHOP
    assert r.headers["access-control-expose-headers"] == "Server-Timing, Retry-After, ETag"
    assert r.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in r.headers


def test_public_key_with_other_origin_is_403(client: TestClient[Any]) -> None:
    for origin in ("https://evil.test", "http://shop.example.com", "null", ""):
        r = client.post("/v1/decide", content=b"{}", headers=bearer(PK, origin=origin))
        problem(r, 403, "origin-not-allowed")
        assert "access-control-allow-origin" not in r.headers


@pytest.fixture
def public_get_client() -> Iterator[TestClient[Any]]:
    """The tiny app with ``GET /v1/bundle/*`` configured as a public route (none is by
    default): how the middleware treats public GETs."""
    factory = SecurityMiddleware.factory(
        make_config(), public_routes=(*DEFAULT_PUBLIC_ROUTES, "GET /v1/bundle/*")
    )
    app = Litestar(route_handlers=HANDLERS, middleware=[factory], openapi_config=None)
    with TestClient(app, base_url="http://testserver.local") as client:
        yield client


def test_public_key_needs_origin_on_post_but_not_on_get(
    public_get_client: TestClient[Any],
) -> None:
    client = public_get_client
    problem(client.post("/v1/decide", content=b"{}", headers=bearer(PK)), 403, "origin-required")
    r = client.get("/v1/bundle/manifest.json", headers=bearer(PK))
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_app_cors_headers_are_replaced_by_the_middlewares(
    public_get_client: TestClient[Any],
) -> None:
    client = public_get_client
    r = client.get("/v1/bundle/manifest.json", headers=bearer(PK, origin=SHOP))
    assert r.headers.get_list("access-control-allow-origin") == [SHOP]
    assert r.headers["etag"] == '"abc"'
    r = client.get("/v1/bundle/manifest.json", headers=bearer(SK, origin=SHOP))
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example.com", True),
        ("https://a.b.example.com", True),
        ("HTTPS://A.Example.COM", True),
        ("https://a.example.com:443", True),
        ("https://example.com", False),
        ("https://example.com.evil.com", False),
        ("https://a.example.com.evil.com", False),
        ("https://evilexample.com", False),
        ("http://a.example.com", False),
        ("https://a.example.com:8443", False),
        ("https://a.example.com/", False),
        ("https://a.example.com, https://evil.com", False),
        ("null", False),
    ],
)
def test_wildcard_subdomains(client: TestClient[Any], origin: str, allowed: bool) -> None:
    r = client.post("/v1/events", content=b"{}", headers=bearer(PK_WILD, origin=origin))
    if allowed:
        assert r.status_code == 202
        assert r.headers["access-control-allow-origin"] == origin
    else:
        problem(r, 403, "origin-not-allowed")


def test_star_allows_any_web_origin_but_not_null(client: TestClient[Any]) -> None:
    r = client.post(
        "/v1/decide", content=b"{}", headers=bearer(PK_ANY, origin="http://x.test:8080")
    )
    assert r.headers["access-control-allow-origin"] == "http://x.test:8080"
    problem(
        client.post("/v1/decide", headers=bearer(PK_ANY, origin="null")), 403, "origin-not-allowed"
    )


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("*.example.com", "needs a scheme: write 'https://*.example.com'"),
        ("shop.example.com/", "write 'https://shop.example.com'"),
        ("https://shop.example.com/", "no path, write 'https://shop.example.com'"),
        ("https://shop.example.com/cart", "no path"),
        ("ftp://files.example.com", "only http and https"),
        ("https://*.com", "too broad"),
        ("https://a.*.example.com", "is not"),
        ("https://*", "is not"),
        ("https://shop.example.com:99999", "port out of range"),
        ("", "needs a scheme"),
    ],
)
def test_origin_patterns_are_validated(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match="origin pattern") as info:
        OriginRules.compile([pattern])
    assert message in str(info.value)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.keys\[0\]"):
        msgspec.convert(
            {"keys": [{"id": "k", "kind": "public", "sha256": "0" * 64, "origins": [pattern]}]},
            SecurityConfig,
        )


def test_origin_patterns_are_normalised() -> None:
    rules = OriginRules.compile(["HTTPS://Shop.Example.com:443", "http://localhost:3000"])
    assert rules.exact == {"https://shop.example.com", "http://localhost:3000"}
    assert rules.allows(canonical_origin("https://shop.example.com"))
    assert not rules.allows(canonical_origin("http://localhost:3001"))
    assert not rules.allows(None)


# -- preflight -------------------------------------------------------------------------------------


def preflight(
    client: httpx.Client, path: str, origin: str, method: str = "POST", **headers: str
) -> httpx.Response:
    return client.options(
        path,
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": "content-type, x-tailor-key",
            **{k.replace("_", "-"): v for k, v in headers.items()},
        },
    )


def test_preflight_allowed_for_an_origin_of_any_public_key(client: TestClient[Any]) -> None:
    for origin in (SHOP, "https://cdn.example.com"):
        r = preflight(client, "/v1/decide", origin)
        assert r.status_code == 204 and r.content == b""
        assert r.headers["access-control-allow-origin"] == origin
        assert r.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"
        assert (
            r.headers["access-control-allow-headers"] == "Content-Type, Authorization, X-Tailor-Key"
        )
        assert r.headers["access-control-max-age"] == "600"
        assert r.headers["vary"] == "Origin"
        assert "access-control-allow-credentials" not in r.headers


def test_preflight_denied(make_client: Callable[..., TestClient[Any]]) -> None:
    keys = [ApiKey(id="shop", kind="public", sha256=hash_key(PK), origins=[SHOP])]
    client = make_client(keys=keys)
    r = preflight(client, "/v1/decide", "https://evil.test")
    assert "no public key allows" in problem(r, 403, "origin-not-allowed")["detail"]
    assert "access-control-allow-origin" not in r.headers
    # admin routes are never callable from browsers, whatever the origin
    r = preflight(client, "/v1/visitors/v-1", SHOP, method="DELETE")
    assert "not callable from browsers" in problem(r, 403, "origin-not-allowed")["detail"]


# -- query-string keys and text/plain ----------------------------------------------------------


def test_key_in_query_string_with_text_plain_post(client: TestClient[Any]) -> None:
    r = client.post(
        f"/v1/decide?x=1&key={PK}&y=2",
        content=b'{"visitorId": "v"}',
        headers={"content-type": "text/plain;charset=UTF-8", "origin": SHOP},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["principal"]["id"] == "shop" and body["body"] == '{"visitorId": "v"}'
    assert body["query"] == "x=1&key=redacted&y=2"  # the handler never sees the key
    assert r.headers["access-control-allow-origin"] == SHOP


def test_secret_key_in_query_string_is_refused(client: TestClient[Any]) -> None:
    body = problem(client.get(f"/v1/admin/stats?key={SK}"), 403, "secret-key-in-query")
    assert "Authorization header" in body["detail"]


def test_percent_encoded_query_key(client: TestClient[Any]) -> None:
    encoded = "".join(f"%{b:02X}" for b in PK.encode())
    r = client.post(f"/v1/decide?key={encoded}", headers={"origin": SHOP})
    assert r.status_code == 200 and r.json()["query"] == "key=redacted"


# -- rate limits -----------------------------------------------------------------------------------


def test_per_key_limit_429_then_refill(
    make_client: Callable[..., TestClient[Any]], clock: FakeClock
) -> None:
    keys = [ApiKey(id="ops", kind="secret", sha256=hash_key(SK), rate_per_minute=6)]
    client = make_client(keys=keys, burst_seconds=20.0)  # 2 tokens, one more every 10 s
    for _ in range(2):
        assert client.get("/v1/admin/stats", headers=bearer(SK)).status_code == 200
    r = client.get("/v1/admin/stats", headers=bearer(SK))
    problem(r, 429, "rate-limited")
    assert r.headers["retry-after"] == "10"
    clock.advance(9.5)
    assert client.get("/v1/admin/stats", headers=bearer(SK)).headers["retry-after"] == "1"
    clock.advance(0.5)
    assert client.get("/v1/admin/stats", headers=bearer(SK)).status_code == 200
    assert client.get("/v1/admin/stats", headers=bearer(SK)).status_code == 429
    clock.advance(3600)  # a long pause refills to the burst, not beyond
    assert [client.get("/v1/admin/stats", headers=bearer(SK)).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]


def test_default_per_key_limit_applies_to_each_client_of_a_public_key(
    make_client: Callable[..., TestClient[Any]], clock: FakeClock
) -> None:
    client = make_client(per_key_per_minute=60, per_ip_per_minute=0, burst_seconds=1.0)
    assert client.post("/v1/events", headers=bearer(PK, origin=SHOP)).status_code == 202
    r = client.post("/v1/events", headers=bearer(PK, origin=SHOP))
    problem(r, 429, "rate-limited")
    # the browser can read the 429 and its Retry-After
    assert r.headers["access-control-allow-origin"] == SHOP and r.headers["retry-after"] == "1"
    # another client of the same key has its own bucket: one client cannot lock out a site
    r = client.post("/v1/events", headers=bearer(PK, origin=SHOP, x_test_peer="203.0.113.1"))
    assert r.status_code == 202
    clock.advance(1.0)
    assert client.post("/v1/events", headers=bearer(PK, origin=SHOP)).status_code == 202


def test_per_ip_limit(make_client: Callable[..., TestClient[Any]], clock: FakeClock) -> None:
    client = make_client(per_ip_per_minute=60, burst_seconds=3.0)  # 3 tokens, 1 a second

    def call(peer: str, key: str = PK) -> httpx.Response:
        return client.post("/v1/events", headers=bearer(key, origin=SHOP, x_test_peer=peer))

    assert [call("192.0.2.1").status_code for _ in range(4)] == [202, 202, 202, 429]
    r = call("192.0.2.1", PK_WILD)  # another key does not help: the address is out
    problem(r, 429, "rate-limited")
    assert r.headers["retry-after"] == "1"
    assert call("192.0.2.2").status_code == 202
    # secret-key callers are servers speaking for many visitors: no per-IP limit
    r = client.post("/v1/events", headers=bearer(SK, x_test_peer="192.0.2.1"))
    assert r.status_code == 202
    clock.advance(1.0)
    assert call("192.0.2.1").status_code == 202
    # IPv6 addresses are grouped by /64
    assert [call(f"2001:db8::{i}").status_code for i in range(1, 5)] == [202, 202, 202, 429]
    assert call("2001:db8:0:1::1").status_code == 202


def test_refused_requests_pay_per_ip(make_client: Callable[..., TestClient[Any]]) -> None:
    client = make_client(per_ip_per_minute=60, burst_seconds=2.0)
    peer = {"x-test-peer": "192.0.2.9"}
    assert client.post("/v1/decide", headers=bearer("pk_guess1", **peer)).status_code == 401
    assert client.post("/v1/decide", headers=peer).status_code == 401
    r = client.post("/v1/decide", headers=bearer("pk_guess2", **peer))
    problem(r, 429, "rate-limited")
    assert "access-control-allow-origin" not in r.headers


def test_no_ip_address_is_stored() -> None:
    middleware = SecurityMiddleware(_ok_app, make_config())
    headers = [(b"authorization", f"Bearer {PK}".encode()), (b"origin", SHOP.encode())]
    status, _, _ = call_raw(
        middleware, method="POST", path="/v1/events", headers=headers, client=("192.0.2.77", 1)
    )
    assert status == 200
    stored = list(middleware._limiter._buckets.keys())
    assert len(stored) == 2  # (key, hashed address) and (ip, hashed address)
    assert {k[0] for k in stored} == {"key", "ip"} and stored[0][:2] == ("key", "shop")
    assert "192.0.2.77" not in repr(stored) and repr(bytes([192, 0, 2, 77]))[2:-1] not in repr(
        stored
    )


def test_litestar_routes_share_one_limit(
    make_client: Callable[..., TestClient[Any]],
) -> None:
    client = make_client(per_key_per_minute=60, per_ip_per_minute=0, burst_seconds=2.0)
    assert client.post("/v1/decide", headers=bearer(PK, origin=SHOP)).status_code == 200
    assert client.post("/v1/events", headers=bearer(PK, origin=SHOP)).status_code == 202
    problem(client.post("/v1/decide", headers=bearer(PK, origin=SHOP)), 429, "rate-limited")


def test_rate_limiter_takes_all_or_nothing_and_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(burst_seconds=60.0, maxsize=10, clock=clock)
    assert limiter.capacity(6000) == 6000 and limiter.capacity(1) == 1
    assert limiter.acquire(("a", 1), ("b", 2)) == 0
    # "a" is empty: "b" must not pay for a refused request
    assert limiter.acquire(("a", 1), ("b", 2)) == 60
    assert limiter.acquire(("b", 2)) == 0
    assert limiter.acquire(("b", 2)) == 30
    assert limiter.acquire(("c", 0)) == 0 and len(limiter) == 2  # 0 = no limit, no bucket
    clock.advance(-5)  # a clock going backwards never adds tokens
    assert limiter.acquire(("b", 2)) == 30
    clock.advance(35)
    assert limiter.acquire(("b", 2)) == 0
    for i in range(20):
        limiter.acquire((i, 60))
    assert len(limiter) == 10  # least recently used buckets go first
    with pytest.raises(ValueError, match="burst_seconds"):
        RateLimiter(burst_seconds=0)


# -- the keyless loopback demo ------------------------------------------------------------------


LOCAL = "http://127.0.0.1:8000"


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"])
def test_demo_accepts_keyless_loopback(
    make_client: Callable[..., TestClient[Any]], peer: str
) -> None:
    only_shop = [ApiKey(id="shop", kind="public", sha256=hash_key(PK), origins=[SHOP])]
    client = make_client(base_url=LOCAL, demo_keyless_loopback=True, keys=only_shop)
    r = client.post("/v1/decide", content=b"{}", headers={"x-test-peer": peer})
    assert r.status_code == 200
    assert r.json()["principal"] == {"id": "demo", "kind": "public", "origin": None}
    r = client.post(
        "/v1/decide",
        content=b"{}",
        headers={"x-test-peer": peer, "origin": "http://localhost:3000"},
    )
    assert (
        r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    )
    r = preflight(client, "/v1/decide", "http://127.0.0.1:8000", x_test_peer=peer)
    assert r.status_code == 204
    assert preflight(client, "/v1/decide", "http://127.0.0.1:8000").status_code == 403  # remote


def test_demo_only_when_enabled_local_and_public(
    make_client: Callable[..., TestClient[Any]],
) -> None:
    local = {"x-test-peer": "127.0.0.1"}
    off = make_client(base_url=LOCAL)
    problem(off.post("/v1/decide", content=b"{}", headers=local), 401, "missing-key")
    on = make_client(base_url=LOCAL, demo_keyless_loopback=True)
    problem(on.post("/v1/decide", content=b"{}"), 401, "missing-key")  # remote peer
    problem(on.get("/v1/admin/stats", headers=local), 401, "missing-key")  # admin needs sk_
    r = on.post("/v1/decide", content=b"{}", headers={**local, "origin": "https://evil.test"})
    problem(r, 401, "missing-key")
    # DNS rebinding: a loopback peer but a foreign Host
    r = on.post("/v1/decide", content=b"{}", headers={**local, "host": "evil.test:8000"})
    problem(r, 401, "missing-key")
    only_shop = [ApiKey(id="shop", kind="public", sha256=hash_key(PK), origins=[SHOP])]
    strict = make_client(base_url=LOCAL, demo_keyless_loopback=True, keys=only_shop)
    assert (
        preflight(strict, "/v1/decide", "https://evil.test", x_test_peer="127.0.0.1").status_code
        == 403
    )
    # a key still wins over the demo rule
    r = on.post("/v1/decide", content=b"{}", headers=bearer(PK, origin=SHOP, **local))
    assert r.json()["principal"]["id"] == "shop"


def test_demo_behind_a_trusted_proxy(make_client: Callable[..., TestClient[Any]]) -> None:
    client = make_client(base_url=LOCAL, demo_keyless_loopback=True, trusted_proxy_hops=1)
    proxy = {"x-test-peer": "127.0.0.1"}
    r = client.post(
        "/v1/decide", content=b"{}", headers={**proxy, "x-forwarded-for": "203.0.113.9"}
    )
    problem(r, 401, "missing-key")
    r = client.post(
        "/v1/decide", content=b"{}", headers={**proxy, "x-forwarded-for": "203.0.113.9, 127.0.0.1"}
    )
    assert r.status_code == 200  # only the right-most entry is trusted with one hop
    r = client.post(
        "/v1/decide", content=b"{}", headers={**proxy, "x-forwarded-for": "127.0.0.1, 203.0.113.9"}
    )
    problem(r, 401, "missing-key")


# -- constant time, config, helpers -------------------------------------------------------------


def test_every_key_is_compared_in_constant_time(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", counting)  # security calls hmac.compare_digest
    n_keys = len(make_config().keys)
    for key in (PK, SK, PK_ANY, "pk_unknown"):  # the first key, the last one, none
        calls.clear()
        client.post("/v1/decide", content=b"{}", headers=bearer(key, origin=SHOP))
        assert len(calls) == n_keys
        assert all(a == hashlib.sha256(key.encode()).digest() for a, _ in calls)


def test_generate_and_hash_keys() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    raw, digest = generate_key("public")
    assert raw.startswith("pk_") and len(raw) == 3 + 43 and hash_key(raw) == digest
    raw, digest = generate_key("secret")
    assert raw.startswith("sk_") and hash_key(raw) == digest
    assert generate_key("secret")[0] != raw


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"keys": [{"id": "k", "kind": "public", "sha256": "0" * 64}]}, "lists no origins"),
        (
            {"keys": [{"id": "k", "kind": "secret", "sha256": "0" * 64, "origins": [SHOP]}]},
            "secret keys are for servers",
        ),
        (
            {
                "keys": [
                    {"id": "k", "kind": "secret", "sha256": "0" * 64},
                    {"id": "k", "kind": "secret", "sha256": "1" * 64},
                ]
            },
            "used twice",
        ),
        (
            {
                "keys": [
                    {"id": "a", "kind": "secret", "sha256": "0" * 64},
                    {"id": "b", "kind": "secret", "sha256": "0" * 64},
                ]
            },
            "same sha256",
        ),
        ({"keys": [{"id": "demo", "kind": "secret", "sha256": "0" * 64}]}, "reserved"),
        ({"keys": [{"id": "k", "kind": "secret", "sha256": "0" * 63}]}, "$.keys[0].sha256"),
        ({"keys": [{"id": "k", "kind": "secret", "sha256": "A" * 64}]}, "$.keys[0].sha256"),
        ({"keys": [{"id": "k", "kind": "admin", "sha256": "0" * 64}]}, "$.keys[0].kind"),
        ({"keys": [], "per_ip_per_minut": 5}, "per_ip_per_minut"),
        ({"keys": [], "per_ip_per_minute": -1}, "$.per_ip_per_minute"),
        ({}, "keys"),
    ],
)
def test_config_is_validated(config: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert(config, SecurityConfig)
    assert message in str(info.value)


def test_config_from_json_and_toml(tmp_path: Path) -> None:
    digest = hash_key(PK)
    (tmp_path / "s.json").write_text(
        json.dumps(
            {
                "keys": [{"id": "shop", "kind": "public", "sha256": digest, "origins": [SHOP]}],
                "per_ip_per_minute": 120,
            }
        )
    )
    (tmp_path / "s.toml").write_text(
        f'per_ip_per_minute = 120\n\n[[keys]]\nid = "shop"\nkind = "public"\n'
        f'sha256 = "{digest}"\norigins = ["{SHOP}"]\n'
    )
    from_json = SecurityConfig.from_file(tmp_path / "s.json")
    assert from_json == SecurityConfig.from_file(str(tmp_path / "s.toml"))
    assert from_json.per_ip_per_minute == 120 and from_json.keys[0].origins == [SHOP]
    (tmp_path / "bad.toml").write_text('[[keys]]\nid = "k"\nkind = "public"\nsha256 = "x"\n')
    with pytest.raises(SecurityConfigError, match=r"bad\.toml.*\$\.keys\[0\]\.sha256"):
        SecurityConfig.from_file(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SecurityConfigError, match=r"bad\.json"):
        SecurityConfig.from_file(tmp_path / "bad.json")
    with pytest.raises(SecurityConfigError, match=r"expected a \.json or \.toml"):
        SecurityConfig.from_file(tmp_path / "s.yaml")


def test_security_imports_neither_litestar_nor_model_export() -> None:
    code = (
        "import sys, server.security; "
        "print(sorted(m for m in ('litestar', 'model_export') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True)
    assert out.stdout.decode().strip() == "[]"


def test_problem_type_base_is_the_servers() -> None:
    from server.problems import PROBLEM_TYPE_BASE

    assert security.PROBLEM_TYPE_BASE == PROBLEM_TYPE_BASE


# -- raw ASGI: paths a router normalises, websockets, garbage --------------------------------------


async def _ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def call_raw(
    app: Any,
    *,
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
    client: tuple[str, int] | None = (REMOTE, 50000),
    root_path: str = "",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP request through an ASGI app without a server: (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": root_path,
        "query_string": query,
        "headers": headers or [],
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert start["type"] == "http.response.start"
    return start["status"], dict(start["headers"]), body


@pytest.mark.parametrize(
    "path", ["//v1/admin/stats", "/v1//admin/stats", "/v1/admin/stats/", "/v1/./admin/stats"]
)
def test_paths_are_classified_as_a_router_normalises_them(path: str) -> None:
    # wrapped outside the app, the middleware sees the raw path
    mw = SecurityMiddleware(_ok_app, make_config())
    status, _, body = call_raw(mw, path=path, headers=[(b"authorization", f"Bearer {PK}".encode())])
    assert status == 403 and b"secret-key-required" in body
    assert call_raw(mw, path=path)[0] == 401


@pytest.mark.parametrize(
    ("root_path", "path", "status"),
    [
        ("/api", "/api/v1/admin/stats", 401),  # uvicorn --root-path: the path includes it
        ("/api", "/api//v1/admin/stats/", 401),
        ("/v1", "/v1/decide", 401),  # a router that already removed the root path
        ("/api", "/api/healthz", 200),
    ],
)
def test_root_paths_never_open_a_protected_route(root_path: str, path: str, status: int) -> None:
    mw = SecurityMiddleware(_ok_app, make_config())
    assert call_raw(mw, path=path, root_path=root_path)[0] == status


def test_protected_websockets_are_closed() -> None:
    async def run() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/v1/stream", "headers": [], "query_string": b""}
        await SecurityMiddleware(_ok_app, make_config())(scope, receive, send)
        return sent

    assert asyncio.run(run()) == [{"type": "websocket.close", "code": 1008}]


_GARBAGE_MW = SecurityMiddleware(
    _ok_app, make_config(demo_keyless_loopback=True, trusted_proxy_hops=1), clock=FakeClock()
)
_header_names = st.sampled_from(
    [
        b"authorization",
        b"x-tailor-key",
        b"origin",
        b"host",
        b"x-forwarded-for",
        b"access-control-request-method",
        b"Origin",
        b"X-Tailor-Key",
        b"content-type",
    ]
)
_header_values = st.one_of(
    st.binary(max_size=80),
    st.sampled_from(
        [
            b"Bearer " + PK.encode(),
            b"Bearer " + SK.encode(),
            SHOP.encode(),
            b"http://localhost",
            b"127.0.0.1",
            b"::1",
            b"null",
            b"Bearer",
            b"POST",
        ]
    ),
)


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "get", "\u00e9"]),
    path=st.one_of(
        st.sampled_from(["/v1/decide", "/v1/admin/x", "/v1/bundle/", "/v1", "//v1/./x", "/"]),
        st.text(max_size=40).map(lambda t: "/v1/" + t),
    ),
    headers=st.lists(st.tuples(_header_names, _header_values), max_size=6),
    query=st.one_of(st.binary(max_size=60), st.just(b"key=" + PK.encode() + b"&key=&key")),
    client=st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["127.0.0.1", "::1", "testclient", "", "1.2.3.4:5", "[::1]"]),
            st.just(1),
        ),
    ),
)
def test_garbage_never_breaks_the_middleware(
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    query: bytes,
    client: tuple[str, int] | None,
) -> None:
    status, response_headers, body = call_raw(
        _GARBAGE_MW, method=method, path=path, headers=headers, query=query, client=client
    )
    assert status in (200, 204, 401, 403, 429)
    if status >= 400:
        assert response_headers[b"content-type"] == b"application/problem+json"
        problem_body = json.loads(body)
        assert problem_body["status"] == status and problem_body["type"].startswith("https://")


# -- a real uvicorn process -----------------------------------------------------------------------


def make_app() -> Litestar:
    """Factory for ``uvicorn --factory``: the tiny app with the config file named in the env."""
    return build_app(SecurityConfig.from_file(os.environ[CONFIG_ENV]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def uvicorn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, log file) of ``uvicorn tests.server.test_security:make_app`` on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("security")
    config = tmp / "security.json"
    config.write_bytes(
        msgspec.json.encode(
            make_config(
                demo_keyless_loopback=True,
                keys=[
                    ApiKey(id="shop", kind="public", sha256=hash_key(PK), origins=[SHOP]),
                    ApiKey(id="ops", kind="secret", sha256=hash_key(SK), rate_per_minute=1),
                ],
            )
        )
    )
    log, port = tmp / "uvicorn.log", _free_port()
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.server.test_security:make_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env={**os.environ, CONFIG_ENV: str(config)},
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)  # polling for readiness
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_real_server_demo_cors_and_query_keys(uvicorn_server: tuple[str, Path]) -> None:
    url, log = uvicorn_server
    with httpx.Client(base_url=url, timeout=5) as http:
        # a real loopback peer and Host: the keyless demo works
        r = http.post("/v1/decide", content=b"{}", headers={"origin": "http://localhost:5173"})
        assert r.status_code == 200 and r.json()["principal"]["id"] == "demo"
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        # what the tag sends: text/plain with the public key in the URL
        r = http.post(
            f"/v1/decide?key={PK}",
            content=b'{"visitorId": "v"}',
            headers={"content-type": "text/plain;charset=UTF-8", "origin": SHOP},
        )
        assert r.status_code == 200 and r.json()["principal"]["origin"] == SHOP
        assert r.headers["access-control-expose-headers"] == "Server-Timing, Retry-After, ETag"
        r = preflight(http, "/v1/decide", SHOP)
        assert r.status_code == 204 and r.headers["access-control-max-age"] == "600"
        problem(
            http.post("/v1/decide", headers={"origin": "https://evil.test"}), 401, "missing-key"
        )
        problem(http.get("/v1/admin/stats"), 401, "missing-key")
    deadline = time.monotonic() + 10
    while "key=redacted" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the access log line
    text = log.read_text()
    assert "key=redacted" in text and PK not in text  # the access log never sees the key


def test_real_server_rate_limit(uvicorn_server: tuple[str, Path]) -> None:
    url, _ = uvicorn_server
    with httpx.Client(base_url=url, timeout=5, headers=bearer(SK)) as http:
        assert http.get("/v1/admin/stats").status_code == 200
        r = http.get("/v1/admin/stats")
        problem(r, 429, "rate-limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
