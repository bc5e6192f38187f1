"""Every endpoint of a real server process on 127.0.0.1, configured with keys (no demo)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from server.security import hash_key
from tests.conftest import LiveServer
from tests.conftest import keyed_server as start_keyed_server

PUBLIC = "pk_live_test_abcdefghijklmnopqrstuvwxyz"
SECRET = "sk_live_test_abcdefghijklmnopqrstuvwxyz"
ORIGIN = "https://shop.example.com"
MakeRequest = Callable[..., dict[str, object]]


@pytest.fixture(scope="module")
def keyed_server(
    bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("keyed")
    keys = {
        "per_key_per_minute": 6000,
        "per_ip_per_minute": 30,
        "burst_seconds": 20,
        "keys": [
            {"id": "site", "kind": "public", "sha256": hash_key(PUBLIC), "origins": [ORIGIN]},
            {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
        ],
    }
    with start_keyed_server(bundle_dir, root, keys) as server:
        yield server


def _problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()  # type: ignore[no-any-return]


def test_browser_flow_with_a_public_key(
    keyed_server: LiveServer, make_request: MakeRequest
) -> None:
    url = keyed_server.url
    browser = {"origin": ORIGIN, "content-type": "text/plain;charset=UTF-8"}
    body = json.dumps(make_request(visitorId="live-1", sessionId="ls-1"))
    r = httpx.post(f"{url}/v1/decide?key={PUBLIC}", content=body, headers=browser)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "decide;dur=" in r.headers["server-timing"]
    decision = r.json()
    # a public key's events name the decision issued to the visitor, carry event ids, and
    # change the stored profile with the visitor's token
    visitor, ids = decision["visitorId"], {"decisionId": decision["decisionId"]}
    events = {
        "events": [
            {"type": "impression", "visitorId": visitor, "eventId": "live-e1", **ids},
            {"type": "conversion", "visitorId": visitor, "eventId": "live-e2", **ids}
            | {"offerId": "coupon_15", "value": 30.0},
        ],
        "visitorToken": decision["visitorToken"],
    }
    e = httpx.post(f"{url}/v1/events?key={PUBLIC}", content=json.dumps(events), headers=browser)
    assert e.status_code == 202 and e.json() == {"accepted": 2}
    replay = httpx.post(
        f"{url}/v1/events?key={PUBLIC}", content=json.dumps(events), headers=browser
    )
    _problem(replay, 409)
    # the next visit sees the conversion (read-your-writes across visits)
    again = make_request(visitorId=visitor, sessionId="ls-2", behavior={})
    again["visitorToken"] = decision["visitorToken"]
    nxt = httpx.post(
        f"{url}/v1/decide?key={PUBLIC}", content=json.dumps(again), headers=browser
    ).json()
    assert nxt["visitorId"] == visitor
    assert nxt["lifecycle"]["stage"] == "new"
    _problem(
        httpx.post(
            f"{url}/v1/decide?key={PUBLIC}",
            content=body,
            headers={"origin": "https://evil.example.net", "content-type": "text/plain"},
        ),
        403,
    )
    _problem(httpx.post(f"{url}/v1/decide", content=body, headers=browser), 401)
    pre = httpx.options(
        f"{url}/v1/decide",
        headers={"origin": ORIGIN, "access-control-request-method": "POST"},
    )
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == ORIGIN


def test_backend_and_admin_flow_with_a_secret_key(
    keyed_server: LiveServer, make_request: MakeRequest
) -> None:
    url = keyed_server.url
    auth = {"authorization": f"Bearer {SECRET}"}
    batch = [make_request(visitorId=f"bk{i}", sessionId=None) for i in range(3)]
    r = httpx.post(f"{url}/v1/decide/batch", json=batch, headers=auth)
    assert r.status_code == 200 and len(r.json()) == 3
    httpx.post(f"{url}/v1/decide", json=make_request(visitorId="bk-store"), headers=auth)
    profile = httpx.get(f"{url}/v1/visitors/bk-store", headers=auth)
    assert profile.status_code == 200
    _problem(httpx.get(f"{url}/v1/visitors/bk-store?key={PUBLIC}", headers={"origin": ORIGIN}), 403)
    assert httpx.delete(f"{url}/v1/visitors/bk-store", headers=auth).status_code == 204
    _problem(httpx.get(f"{url}/v1/visitors/bk-store", headers=auth), 404)
    info = httpx.get(f"{url}/v1/bundle", headers=auth)
    assert info.status_code == 200
    assert (
        httpx.get(
            f"{url}/v1/bundle", headers={**auth, "if-none-match": info.headers["etag"]}
        ).status_code
        == 304
    )
    reload = httpx.post(f"{url}/v1/admin/reload", headers=auth)
    assert reload.status_code == 200 and reload.json()["changed"] is False
    metrics = httpx.get(f"{url}/metrics").text
    assert "tailor_decisions_total" in metrics and "tailor_http_request_duration_seconds" in metrics
    assert httpx.get(f"{url}/schema/openapi.json").json()["info"]["title"]


def test_limits_and_consent(keyed_server: LiveServer, make_request: MakeRequest) -> None:
    url = keyed_server.url
    auth = {"authorization": f"Bearer {SECRET}"}
    big = b'{"visitorId": "v", "pad": "' + b"x" * 70_000 + b'"}'
    _problem(httpx.post(f"{url}/v1/decide", content=big, headers=auth), 413)
    gpc = httpx.post(
        f"{url}/v1/decide", json=make_request(sessionId="gpc"), headers={**auth, "sec-gpc": "1"}
    ).json()
    assert gpc["personalized"] is False and gpc["persona"] is None
    # a public key's visitor hammering one IP: 30/min with a 20 s burst -> 429
    browser = {"origin": ORIGIN, "content-type": "text/plain"}
    statuses = [
        httpx.post(
            f"{url}/v1/decide?key={PUBLIC}",
            content=json.dumps(make_request(sessionId=None)),
            headers=browser,
        )
        for _ in range(20)
    ]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert int(limited[0].headers["retry-after"]) >= 1
    _problem(limited[0], 429)
