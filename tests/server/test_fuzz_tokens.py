"""Hypothesis over the token paths (issue 15): whatever a public-key caller puts where a visitor
token goes (random text, a real token with one character changed, an expired one, another
visitor's), decide, events, ``/v1/me`` and ``/v1/me/forget`` answer soundly, never a 5xx,
never the victim's data; and events replayed, forged or sent twice are refused.

The app is the real one (``create_app``) behind its security middleware, with the test keys;
the victim's profile is created by a legitimate flow first and checked unchanged after each
example.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from sdk.tokens import issue_visitor_token
from server.app import create_app
from server.settings import Settings
from tests.conftest import (
    FIXED_NOW,
    TEST_ORIGIN,
    TEST_PUBLIC_KEY,
    TEST_SECRET_KEY,
    TEST_TOKEN_SECRET,
    security_for_tests,
)
from tests.server.test_fuzz import assert_answer_is_sound

SITE = {"origin": TEST_ORIGIN, "content-type": "text/plain;charset=UTF-8"}
SECRET_AUTH = {"authorization": f"Bearer {TEST_SECRET_KEY}"}
FULL = {"personalization": True, "storage": True}


@pytest.fixture(scope="module")
def client(bundle_dir: Path) -> Iterator[TestClient[Litestar]]:
    security = msgspec.structs.replace(
        security_for_tests(), per_key_per_minute=0, per_ip_per_minute=0
    )
    app = create_app(
        Settings(
            bundle_path=str(bundle_dir),
            security=security,
            reload_interval=0,
            token_secrets=[TEST_TOKEN_SECRET],
            new_profiles_per_minute=0,
            event_log_dir=None,
        )
    )
    with TestClient(app) as c:
        yield c


def _public(client: TestClient[Litestar], path: str, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"{path}?key={TEST_PUBLIC_KEY}", content=raw, headers=SITE)


def _decide_body(visitor: str, token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "visitorId": visitor,
        "sessionId": "s-fuzz",
        "consent": FULL,
        "behavior": {"categoriesViewed": ["shoes"]},
        "slots": ["hero"],
        "timestamp": FIXED_NOW.isoformat(),
    }
    if token is not None:
        body["visitorToken"] = token
    return body


@pytest.fixture(scope="module")
def victim(client: TestClient[Litestar]) -> dict[str, Any]:
    """A visitor with a stored profile (two visits), their id and token."""
    first = _public(client, "/v1/decide", _decide_body("anything", None)).json()
    visitor, token = first["visitorId"], first["visitorToken"]
    second = _public(client, "/v1/decide", _decide_body(visitor, token) | {"sessionId": "s-2"})
    assert second.json()["visitorId"] == visitor
    profile = client.get(f"/v1/visitors/{visitor}", headers=SECRET_AUTH).json()
    assert profile["behavior"]["sessionCount"] == 2
    return {"id": visitor, "token": token, "profile": profile}


def _mutations(token: str) -> st.SearchStrategy[str]:
    """``token`` with one character replaced, one removed, or a part swapped."""
    index = st.integers(min_value=0, max_value=len(token) - 1)
    alphabet = st.sampled_from("AZaz09-_.=%+/ ")
    return st.one_of(
        st.tuples(index, alphabet).map(lambda p: token[: p[0]] + p[1] + token[p[0] + 1 :]),
        index.map(lambda i: token[:i] + token[i + 1 :]),
        st.text(min_size=1, max_size=300),
        st.just(token + "."),
        st.just(token.upper()),
    )


def _victim_unchanged(client: TestClient[Litestar], victim: dict[str, Any]) -> None:
    now = client.get(f"/v1/visitors/{victim['id']}", headers=SECRET_AUTH).json()
    assert now["behavior"]["sessionCount"] == victim["profile"]["behavior"]["sessionCount"]
    assert now["behavior"]["purchases"] == victim["profile"]["behavior"]["purchases"]


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_a_bad_token_never_reaches_the_victim(
    client: TestClient[Litestar], victim: dict[str, Any], data: st.DataObject
) -> None:
    token = data.draw(
        _mutations(victim["token"])
        | st.just(issue_visitor_token(TEST_TOKEN_SECRET.encode(), victim["id"], 1_000_000))
        | st.just(issue_visitor_token(TEST_TOKEN_SECRET.encode(), "someone-else", time.time()))
        | st.just(issue_visitor_token(b"another-server-secret-0123456789abcdef", victim["id"], 0))
    )
    if token == victim["token"]:
        return
    decided = _public(client, "/v1/decide", _decide_body(victim["id"], token))
    assert_answer_is_sound(decided.status_code, decided.headers["content-type"], decided.content)
    if decided.status_code == 200:
        body = decided.json()
        assert body["visitorId"] != victim["id"]  # a new visitor, never the victim
        assert body["rfm"] is None and body["scores"] is None
    else:
        assert decided.status_code in (400, 422)  # e.g. a token over 256 characters
    for path in ("/v1/me", "/v1/me/forget"):
        answer = _public(client, path, {"visitorToken": token})
        assert_answer_is_sound(answer.status_code, answer.headers["content-type"], answer.content)
        if answer.status_code == 200:  # a valid token of its own visitor: their data only
            assert answer.json().get("visitorId") != victim["id"]
        else:
            assert answer.status_code in (400, 401, 422), answer.text
    events = {
        "visitorToken": token,
        "consent": FULL,
        "events": [
            {
                "type": "conversion",
                "visitorId": victim["id"],
                "decisionId": data.draw(st.text(max_size=64)),
                "eventId": data.draw(st.from_regex(r"\A[a-z0-9]{1,16}\Z")),
                "value": 50.0,
            }
        ],
    }
    answer = _public(client, "/v1/events", events)
    assert_answer_is_sound(answer.status_code, answer.headers["content-type"], answer.content)
    assert answer.status_code in (400, 403, 409, 422), answer.text
    _victim_unchanged(client, victim)


def test_replayed_and_repeated_events_are_refused(
    client: TestClient[Litestar], victim: dict[str, Any]
) -> None:
    decision = _public(
        client, "/v1/decide", _decide_body(victim["id"], victim["token"]) | {"sessionId": "s-3"}
    ).json()
    assert decision["visitorId"] == victim["id"]
    conversion = {
        "type": "conversion",
        "visitorId": victim["id"],
        "decisionId": decision["decisionId"],
        "eventId": "conv-1",
        "value": 20.0,
    }
    batch = {"visitorToken": victim["token"], "consent": FULL, "events": [conversion]}
    assert _public(client, "/v1/events", batch).status_code == 202
    replay = _public(client, "/v1/events", batch)
    assert replay.status_code == 409 and replay.json()["type"].endswith("replayed-event")
    again = {**batch, "events": [{**conversion, "eventId": "conv-2"}]}
    assert _public(client, "/v1/events", again).status_code == 409  # one conversion a decision
    profile = client.get(f"/v1/visitors/{victim['id']}", headers=SECRET_AUTH).json()
    assert profile["behavior"]["purchases"] == victim["profile"]["behavior"]["purchases"] + 1
    victim["profile"] = profile
