"""Visitor identity against a real keyed server on 127.0.0.1 (issue 15, finding 2).

Before: a public-key decide with storage consent read and changed the stored profile of any
``visitorId`` it sent, and returned that customer's RFM code and scores. Now a public key
reaches a stored profile only with the visitor token the server issued for that id; anything
else is a new visitor with a fresh id. User ids from a browser count only when the site's
backend signed them; ``/v1/me`` and ``/v1/me/forget`` let a visitor read and erase their own
data with their token.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk.logs import DecisionRecord, read_log
from sdk.tokens import issue_visitor_token, user_token, verify_visitor_token
from server.security import hash_key
from tests.conftest import (
    FIXED_NOW,
    ROOT,
    TEST_TOKEN_SECRET,
    TEST_USER_TOKEN_SECRET,
    LiveServer,
    keyed_server,
)

PUBLIC = "pk_identity_test_abcdefghijklmnopqrstuvwxyz"
SECRET = "sk_identity_test_abcdefghijklmnopqrstuvwxyz"
ORIGIN = "https://shop.example.com"
BROWSER = {"origin": ORIGIN, "content-type": "text/plain;charset=UTF-8"}
AUTH = {"authorization": f"Bearer {SECRET}"}
VICTIM = "crm-customer-4711"
MINTED = re.compile(r"^v[0-9a-f]{32}$")
DAY = 86_400
#: RFM quintile edges added to the test bundle, so that its decisions carry an RFM code.
RFM = {
    "recencyEdges": [7, 30, 90, 180],
    "frequencyEdges": [1, 2, 3, 5],
    "monetaryEdges": [50, 100, 200, 500],
    "weights": {"r": 1, "f": 1, "m": 1},
}
KEYS: dict[str, Any] = {
    "per_key_per_minute": 0,
    "per_ip_per_minute": 0,
    "keys": [
        {"id": "site", "kind": "public", "sha256": hash_key(PUBLIC), "origins": [ORIGIN]},
        {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
    ],
}


def rfm_bundle(bundle_dir: Path, dest: Path, public_scores: list[str] | None = None) -> Path:
    """The test bundle with RFM edges (and ``publicScores``) in its manifest."""
    import shutil

    shutil.copytree(bundle_dir, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["rfm"] = RFM
    if public_scores is not None:
        manifest["publicScores"] = public_scores
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("identity")
    bundle = rfm_bundle(bundle_dir, root / "bundle")
    with keyed_server(bundle, root, KEYS, {"TAILOR_NEW_PROFILES_PER_MINUTE": "0"}) as live:
        yield live


@dataclass
class Api:
    http: httpx.Client

    def public(self, body: dict[str, Any], path: str = "/v1/decide") -> httpx.Response:
        return self.http.post(f"{path}?key={PUBLIC}", content=json.dumps(body), headers=BROWSER)

    def secret(self, body: dict[str, Any], path: str = "/v1/decide") -> httpx.Response:
        return self.http.post(path, json=body, headers=AUTH)

    def stored(self, visitor_id: str) -> dict[str, Any] | None:
        """The stored profile (secret key), without the ``daysSince...`` counters that only
        tell the time of reading."""
        r = self.http.get(f"/v1/visitors/{visitor_id}", headers=AUTH)
        assert r.status_code in (200, 404), r.text
        if r.status_code == 404:
            return None
        profile: dict[str, Any] = r.json()
        behavior = profile["behavior"]
        profile["behavior"] = {k: v for k, v in behavior.items() if not k.startswith("daysSince")}
        return profile


@pytest.fixture
def api(server: LiveServer) -> Iterator[Api]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield Api(http)


def visit(visitor_id: str, session: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "visitorId": visitor_id,
        "sessionId": session,
        "consent": {"personalization": True, "storage": True},
        "context": {
            "page": {"url": "https://shop.example.com/c/shoes", "path": "/c/shoes"},
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/125.0",
            "timezone": "Europe/London",
        },
        "slots": ["hero", "banner"],
        "timestamp": FIXED_NOW.isoformat(),
    }
    return body | extra


def decided(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["type"].endswith("/" + slug), body
    return body


@pytest.fixture(scope="module")
def victim(server: LiveServer) -> str:
    """A customer the backend knows: visits and a 900 purchase, through the secret key."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        api = Api(http)
        for session in ("crm-s1", "crm-s2"):
            decided(api.secret(visit(VICTIM, session)))
        sale = {"type": "conversion", "visitorId": VICTIM, "offerId": "coupon_15", "value": 900.0}
        r = http.post("/v1/events", json={"events": [sale]}, headers=AUTH)
        assert r.status_code == 202, r.text
        profile = api.stored(VICTIM)
    assert profile is not None
    assert profile["behavior"]["sessionCount"] == 2 and profile["behavior"]["purchases"] == 1
    return VICTIM


def _other_visitors_token(api: Api) -> str:
    """A valid token, but for the attacker's own (minted) visitor id."""
    own = decided(api.public(visit("attacker", "atk-own")))
    return str(own["visitorToken"])


TOKENS = {
    "none": lambda api: None,
    "malformed": lambda api: "t1.not-a-token",
    "forged": lambda api: issue_visitor_token(b"f" * 32, VICTIM, time.time()),
    "other visitor": _other_visitors_token,
    "expired": lambda api: issue_visitor_token(
        TEST_TOKEN_SECRET.encode(), VICTIM, time.time() - 396 * DAY
    ),
    "issued in the future": lambda api: issue_visitor_token(
        TEST_TOKEN_SECRET.encode(), VICTIM, time.time() + DAY
    ),
}


@pytest.mark.parametrize("kind", list(TOKENS))
def test_a_public_key_cannot_read_or_change_another_visitors_profile(
    api: Api, victim: str, kind: str
) -> None:
    # the data exists: the backend (secret key) sees the victim's RFM code
    assert decided(api.secret(visit(victim, "crm-check")))["rfm"] is not None
    before = api.stored(victim)
    token = TOKENS[kind](api)
    name = kind.replace(" ", "-")
    body = visit(victim, f"atk-{name}", **({"visitorToken": token} if token else {}))
    attack = decided(api.public(body))
    assert attack["visitorId"] != victim and MINTED.match(attack["visitorId"])
    assert attack["rfm"] is None and attack["scores"] is None
    new_token = attack["visitorToken"]
    check = verify_visitor_token(
        [TEST_TOKEN_SECRET.encode()], new_token, attack["visitorId"], time.time(), 395 * DAY
    )
    assert check.value == "valid" and new_token != token
    # the persona of a blank visitor: the same request from someone never seen
    blank = decided(api.public(visit(f"blank-{name}", f"blank-{name}")))
    assert attack["persona"] == blank["persona"]
    assert attack["lifecycle"] == blank["lifecycle"]
    # and the victim's profile is untouched (same sessions, purchases, last seen)
    assert api.stored(victim) == before
    assert api.stored(attack["visitorId"]) is not None  # the attacker got a profile of their own


def test_the_issued_token_keeps_the_visitor(api: Api) -> None:
    first = decided(api.public(visit("tag-generated-id", "leg-s1")))
    vid, token = first["visitorId"], first["visitorToken"]
    assert MINTED.match(vid) and token
    assert api.stored(vid) is not None and api.stored("tag-generated-id") is None
    again = api.public(visit(vid, "leg-s1", visitorToken=token))  # same visit: cached
    assert again.headers["x-tailor-cache"] == "hit"
    assert decided(again)["decisionId"] == first["decisionId"]
    second = decided(api.public(visit(vid, "leg-s2", visitorToken=token)))
    assert second["visitorId"] == vid and second["visitorToken"] == token  # young: not renewed
    profile = api.stored(vid)
    assert profile is not None and profile["behavior"]["sessionCount"] == 2
    # a day-old token still proves the visitor and is renewed with a fresh issue time
    old = issue_visitor_token(TEST_TOKEN_SECRET.encode(), vid, time.time() - 2 * DAY)
    third = decided(api.public(visit(vid, "leg-s3", visitorToken=old)))
    assert third["visitorId"] == vid and third["visitorToken"] != old
    issued = int(third["visitorToken"].split(".")[2])
    assert abs(issued - time.time()) < 120


def test_the_decision_cache_never_crosses_key_kinds(api: Api) -> None:
    first = decided(api.public(visit("cache-id", "cache-s1")))
    vid, token = first["visitorId"], first["visitorToken"]
    backend = api.secret(visit(vid, "cache-s1"))
    assert backend.headers["x-tailor-cache"] == "miss"  # not the public decision
    assert decided(backend)["visitorToken"] is None and backend.json()["rfm"] is not None
    browser = api.public(visit(vid, "cache-s1", visitorToken=token))
    assert browser.headers["x-tailor-cache"] == "hit"
    assert decided(browser)["rfm"] is None and browser.json()["visitorToken"] == token


def test_without_storage_consent_no_token_is_checked_or_issued(api: Api, victim: str) -> None:
    before = api.stored(victim)
    personal = {"personalization": True, "storage": False}
    r = decided(api.public(visit(victim, "nostore-s1", consent=personal)))
    assert r["visitorId"] == victim and r["visitorToken"] is None
    assert r["rfm"] is None and r["scores"] is None
    assert api.stored(victim) == before


def test_secret_keys_are_trusted_with_ids_and_get_scores(api: Api, victim: str) -> None:
    r = decided(api.secret(visit(victim, "trusted-s1", userId="crm-user-1")))
    assert r["visitorId"] == victim and r["visitorToken"] is None
    assert r["rfm"] is not None and r["rfm"]["m"] == 5  # the 900 purchase
    batch = api.http.post("/v1/decide/batch", json=[visit(victim, "b1")], headers=AUTH)
    assert batch.status_code == 200 and batch.json()[0]["visitorId"] == victim
    # a public key may not batch, nor read or erase visitors by id
    problem(api.public([visit(victim, "b2")], "/v1/decide/batch"), 403, "secret-key-required")  # type: ignore[arg-type]
    for method in ("GET", "DELETE"):
        r2 = api.http.request(method, f"/v1/visitors/{victim}?key={PUBLIC}", headers=BROWSER)
        problem(r2, 403, "secret-key-required")
    assert api.stored(victim) is not None


# --- the visitor's own data ----------------------------------------------------------------


def test_a_visitor_reads_and_erases_their_own_data(api: Api) -> None:
    first = decided(api.public(visit("me-id", "me-s1")))
    vid, token = first["visitorId"], first["visitorToken"]
    mine = api.public({"visitorToken": token}, "/v1/me")
    assert mine.status_code == 200 and mine.headers["cache-control"] == "no-store"
    assert mine.headers["access-control-allow-origin"] == ORIGIN
    data = mine.json()
    assert data["visitorId"] == vid and data["stored"] is True
    assert data["profile"]["behavior"]["sessionCount"] == 1
    assert data["profile"]["visitorId"] == vid
    forget = api.public({"visitorToken": token}, "/v1/me/forget")
    assert forget.status_code == 200 and forget.json() == {"erased": True}
    assert api.stored(vid) is None  # the same erasure as DELETE /v1/visitors/{id}
    assert api.public({"visitorToken": token}, "/v1/me/forget").json() == {"erased": False}
    after = api.public({"visitorToken": token}, "/v1/me").json()
    assert after == {"visitorId": vid, "profile": None, "stored": False}
    # the cached decision of the visit went with it: the next decide is made afresh
    assert api.public(visit(vid, "me-s1", visitorToken=token)).headers["x-tailor-cache"] == "miss"


@pytest.mark.parametrize("path", ["/v1/me", "/v1/me/forget"])
def test_data_requests_without_a_valid_token_are_401(api: Api, victim: str, path: str) -> None:
    before = api.stored(victim)
    secret = TEST_TOKEN_SECRET.encode()
    bad = {
        "missing": ({}, "no visitorToken"),
        "null": ({"visitorToken": None}, "no visitorToken"),
        "malformed": ({"visitorToken": "t1.x.y"}, "malformed"),
        "forged": (
            {"visitorToken": issue_visitor_token(b"f" * 32, victim, time.time())},
            "signature",
        ),
        "tampered": (
            {"visitorToken": _retarget(issue_visitor_token(secret, "me-atk", time.time()), victim)},
            "signature",
        ),
        "expired": (
            {"visitorToken": issue_visitor_token(secret, victim, time.time() - 396 * DAY)},
            "expired",
        ),
    }
    for name, (body, why) in bad.items():
        r = api.public(body, path)
        detail = problem(r, 401, "invalid-visitor-token")["detail"]
        assert why in detail, (name, detail)
        token = body.get("visitorToken")
        assert not token or token not in r.text, "the token is never echoed"
    problem(
        api.http.post(f"{path}?key={PUBLIC}", content=b"{", headers=BROWSER), 400, "malformed-json"
    )
    problem(api.public({"visitorToken": 5}, path), 422, "invalid-request")
    # secret-only routes stay out of reach, and nothing happened to the victim
    assert api.stored(victim) == before


def _retarget(token: str, visitor_id: str) -> str:
    """``token`` with another visitor id written in it (its MAC left as it was)."""
    import base64

    version, _, issued, mac = token.split(".")
    vid = base64.urlsafe_b64encode(visitor_id.encode()).rstrip(b"=").decode()
    return ".".join((version, vid, issued, mac))


# --- user ids and the log ------------------------------------------------------------------


def test_user_ids_count_only_when_the_backend_signed_them(bundle_dir: Path, tmp_path: Path) -> None:
    tokens_sent: list[str] = []
    with keyed_server(bundle_dir, tmp_path, KEYS) as live:
        log_dir = live.log.parent / f"events-{live.url.rsplit(':', 1)[1]}"
        with httpx.Client(base_url=live.url, timeout=10) as http:
            api = Api(http)
            cases = {
                "u-unsigned": None,
                "u-forged": user_token("x" * 32, "u-forged"),
                "u-other": user_token(TEST_USER_TOKEN_SECRET, "u-valid"),
                "u-valid": user_token(TEST_USER_TOKEN_SECRET, "u-valid"),
            }
            ids: dict[str, str] = {}
            for i, (user, token) in enumerate(cases.items()):
                extra: dict[str, Any] = {"userId": user}
                if token:
                    extra["userToken"] = token
                    tokens_sent.append(token)
                r = decided(api.public(visit(f"visitor-{i}", f"session-{i}", **extra)))
                ids[r["decisionId"]] = user
                tokens_sent.append(r["visitorToken"])
                again = visit(r["visitorId"], f"again-{i}", visitorToken=r["visitorToken"])
                ids[decided(api.public(again | extra))["decisionId"]] = user
            backend = decided(api.secret(visit("backend-visitor", "bk-s", userId="u-backend")))
            ids[backend["decisionId"]] = "u-backend"
    # the server has stopped: everything it buffered is on disk
    records = [r for r in read_log(log_dir) if isinstance(r, DecisionRecord)]
    logged = {ids[r.decision_id]: r.user_id for r in records if r.decision_id in ids}
    assert len(logged) == len(set(ids.values()))
    assert logged == {
        "u-unsigned": None,
        "u-forged": None,
        "u-other": None,
        "u-valid": "u-valid",
        "u-backend": "u-backend",
    }
    raw = b"".join(p.read_bytes() for p in log_dir.glob("*.jsonl"))
    for token in tokens_sent:
        assert token.encode() not in raw, "no token is ever logged"
    assert b"u-unsigned" not in raw and b"u-forged" not in raw and b"u-other" not in raw
    assert b"visitorToken" not in raw and b"userToken" not in raw


# --- start-up ------------------------------------------------------------------------------


def _start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "keys.json").write_text(json.dumps(KEYS))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    return subprocess.run(
        [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "9"],
        cwd=ROOT,
        env=clean | {"TAILOR_KEYS_FILE": str(tmp_path / "keys.json")} | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_server_with_keys_and_no_token_secret_refuses_to_start(tmp_path: Path) -> None:
    done = _start(tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "refusing to start" in out and "TAILOR_TOKEN_SECRETS" in out
    assert "secrets.token_urlsafe(32)" in out
    short = _start(tmp_path, TAILOR_TOKEN_SECRETS="too-short-a-secret")
    assert short.returncode == 2 and "at least 32" in short.stdout + short.stderr
    assert "too-short-a-secret" not in short.stdout + short.stderr


def test_the_demo_issues_tokens_too(live_server: LiveServer) -> None:
    """The keyless loopback demo is a public principal: the same rules, with the secret the
    parent process made for its workers."""
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        first = decided(http.post("/v1/decide", json=visit("demo-fixed-id", "demo-s1")))
        vid, token = first["visitorId"], first["visitorToken"]
        assert vid != "demo-fixed-id" and MINTED.match(vid) and token
        second = decided(http.post("/v1/decide", json=visit(vid, "demo-s2", visitorToken=token)))
        assert second["visitorId"] == vid
        mine = http.post("/v1/me", json={"visitorToken": token})
        assert mine.status_code == 200 and mine.json()["profile"]["behavior"]["sessionCount"] == 2
