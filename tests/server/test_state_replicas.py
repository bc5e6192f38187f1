"""Two replicas of two workers each, sharing one real ``redis-server``, behave as one server
(issue 16): requests alternate between the replicas on new connections (so every worker gets
its turn), and each replica sees what the other did.

Before: each worker kept its own profiles, so one visitor's sessions and purchases were split
between workers, erased profiles came back from the other worker and a visit's decision
changed with the worker that answered.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.security import hash_key
from tests.conftest import FIXED_NOW, LiveServer, keyed_server

PUBLIC = "pk_replicas_test_abcdefghijklmnopqrstuvwxyz"
SECRET = "sk_replicas_test_abcdefghijklmnopqrstuvwxyz"
ORIGIN = "https://shop.example.com"
BROWSER = {"origin": ORIGIN, "content-type": "text/plain;charset=UTF-8"}
AUTH = {"authorization": f"Bearer {SECRET}"}
KEYS: dict[str, Any] = {
    "per_key_per_minute": 0,
    "per_ip_per_minute": 0,
    "keys": [
        {"id": "site", "kind": "public", "sha256": hash_key(PUBLIC), "origins": [ORIGIN]},
        {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
    ],
}


def replica_env(redis_url: str, prefix: str, root: Path) -> dict[str, str]:
    return {
        "TAILOR_REDIS_URL": redis_url,
        "TAILOR_REDIS_PREFIX": prefix,
        "TAILOR_SPOOL_DIR": str(root / "spool"),  # each replica is its own machine
        "TAILOR_NEW_PROFILES_PER_MINUTE": "0",
        "TAILOR_RELOAD_INTERVAL": "0",
    }


@pytest.fixture(scope="module")
def replicas(
    bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory, redis_server: Any
) -> Iterator[list[LiveServer]]:
    prefix = f"replicas-{uuid.uuid4().hex[:6]}"
    with ExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            root = tmp_path_factory.mktemp(f"replica-{name}")
            env = replica_env(redis_server.url, prefix, root)
            servers.append(
                stack.enter_context(
                    keyed_server(bundle_dir, root, KEYS, env, extra_args=["--workers", "2"])
                )
            )
        yield servers


class Alternating:
    """Requests to replica A, then B, then A...: each on a new connection."""

    def __init__(self, servers: list[LiveServer]) -> None:
        self.servers = servers
        self.turn = 0

    def url(self) -> str:
        url = self.servers[self.turn % 2].url
        self.turn += 1
        return url

    def post(self, path: str, body: Any, headers: dict[str, str] = AUTH) -> httpx.Response:
        return httpx.post(self.url() + path, content=json.dumps(body), headers=headers, timeout=10)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url() + path, headers=AUTH, timeout=10)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(self.url() + path, headers=AUTH, timeout=10)


@pytest.fixture
def api(replicas: list[LiveServer]) -> Alternating:
    return Alternating(replicas)


def visit(visitor: str, session: str, **extra: Any) -> dict[str, Any]:
    return {
        "visitorId": visitor,
        "sessionId": session,
        "consent": {"personalization": True, "storage": True},
        "context": {"page": {"url": "https://shop.example.com/", "path": "/"}},
        "slots": ["hero", "banner"],
        "timestamp": FIXED_NOW.isoformat(),
        **extra,
    }


def decided(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert not any(r["code"] == "state.unavailable" for r in body["reasons"])
    return body


def sale(visitor: str, value: float) -> dict[str, Any]:
    return {"type": "conversion", "visitorId": visitor, "value": value, "eventId": uuid.uuid4().hex}


def test_each_replica_runs_two_workers_sharing_redis(replicas: list[LiveServer]) -> None:
    for server in replicas:
        pids: set[str] = set()
        for _ in range(200):  # new connections until both workers have answered
            r = httpx.get(f"{server.url}/readyz", timeout=5)
            assert r.status_code == 200
            state = r.json()["state"]
            assert state["backend"] == "redis" and state["available"] is True
            pids.add(r.headers["x-tailor-worker"])
            if len(pids) == 2:
                break
        assert len(pids) == 2


def test_read_your_writes_across_replicas(api: Alternating) -> None:
    """The issue's finding: 10 sessions and 3 conversions of one visitor, wherever they land,
    are one past for every worker of every replica."""
    vid = f"ryw-{uuid.uuid4().hex[:8]}"
    for i in range(10):
        decided(api.post("/v1/decide", visit(vid, f"s{i}")))
        if i % 3 == 0 and i:
            r = api.post("/v1/events", {"events": [sale(vid, 10.0)]})
            assert r.status_code == 202 and r.json()["accepted"] == 1
    for _ in range(8):
        r = api.get(f"/v1/visitors/{vid}")
        assert r.status_code == 200
        behavior = r.json()["behavior"]
        assert (behavior["sessionCount"], behavior["purchases"]) == (10, 3)
        assert behavior["revenue"] == 30.0


def test_a_public_visitor_is_recognised_on_the_other_replica(api: Alternating) -> None:
    first = decided(api.post(f"/v1/decide?key={PUBLIC}", visit("anyone", "p1"), BROWSER))
    vid, token = first["visitorId"], first["visitorToken"]
    assert token  # a minted visitor with storage consent
    second = api.post(
        f"/v1/decide?key={PUBLIC}", visit(vid, "p2", visitorToken=token), BROWSER
    )  # on the other replica
    assert decided(second)["visitorId"] == vid
    for _ in range(4):
        stored = api.get(f"/v1/visitors/{vid}").json()
        assert stored["behavior"]["sessionCount"] == 2


def test_not_interested_on_one_replica_suppresses_on_the_other(api: Alternating) -> None:
    vid = f"ni-{uuid.uuid4().hex[:8]}"
    first = decided(api.post("/v1/decide", visit(vid, "s1")))  # A
    offer = first["offers"][0]["id"]
    no = {"type": "not_interested", "visitorId": vid, "offerId": offer}
    assert api.post("/v1/events", {"events": [no]}).status_code == 202  # B
    for session in ("s1", "s2", "s1", "s2"):  # the pinned visit too is decided again
        offers = [o["id"] for o in decided(api.post("/v1/decide", visit(vid, session)))["offers"]]
        assert offer not in offers
    assert api.get(f"/v1/visitors/{vid}").json()["suppressedOffers"] == [offer]


def test_conversions_on_both_replicas_count_once_each(api: Alternating) -> None:
    vid = f"conv-{uuid.uuid4().hex[:8]}"
    decided(api.post("/v1/decide", visit(vid, "s1")))
    values = [5.0, 7.5, 12.0, 20.0, 1.25, 3.0]
    for value in values:
        assert api.post("/v1/events", {"events": [sale(vid, value)]}).status_code == 202
    for _ in range(4):
        behavior = api.get(f"/v1/visitors/{vid}").json()["behavior"]
        assert behavior["purchases"] == len(values)
        assert behavior["revenue"] == pytest.approx(sum(values))


def test_a_visit_keeps_its_decision_whichever_replica_answers(api: Alternating) -> None:
    vid = f"pin-{uuid.uuid4().hex[:8]}"
    first = decided(api.post("/v1/decide", visit(vid, "s1")))
    for _ in range(8):
        again = decided(api.post("/v1/decide", visit(vid, "s1")))
        assert again["decisionId"] == first["decisionId"]
        assert again["slots"] == first["slots"]
    other = decided(api.post("/v1/decide", visit(vid, "s2")))
    assert other["decisionId"] != first["decisionId"]  # a new visit is decided afresh
    # the visit was recorded once, not once per replica or worker that re-served it
    assert api.get(f"/v1/visitors/{vid}").json()["behavior"]["sessionCount"] == 2


def test_an_erasure_on_one_replica_leaves_nothing_on_any_worker(api: Alternating) -> None:
    vid = f"erase-{uuid.uuid4().hex[:8]}"
    pinned = {}
    for i in range(4):  # every worker of both replicas has seen and cached the visitor
        pinned[i % 2] = decided(api.post("/v1/decide", visit(vid, f"s{i % 2}")))
    assert api.get(f"/v1/visitors/{vid}").status_code == 200
    assert api.delete(f"/v1/visitors/{vid}").status_code == 204
    statuses = [api.get(f"/v1/visitors/{vid}").status_code for _ in range(20)]
    assert statuses == [404] * 20
    # the next decide of a visit decided before is decided afresh, for a new visitor
    again = decided(api.post("/v1/decide", visit(vid, "s0")))
    assert again["decisionId"] != pinned[0]["decisionId"]
    assert api.get(f"/v1/visitors/{vid}").json()["behavior"]["sessionCount"] == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "TAILOR_STATE=per-worker"),
        ({"TAILOR_STATE": "redis"}, "TAILOR_STATE=redis needs TAILOR_REDIS_URL"),
        ({"TAILOR_REDIS_URL": "http://localhost:6379"}, "must start with redis://"),
    ],
)
def test_several_workers_without_shared_state_refuse_to_start(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, TEST_TOKEN_SECRET

    (tmp_path / "keys.json").write_text(json.dumps(KEYS))
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TAILOR_")}
    environ.update(
        TAILOR_KEYS_FILE=str(tmp_path / "keys.json"),
        TAILOR_TOKEN_SECRETS=TEST_TOKEN_SECRET,
        **env,
    )
    done = subprocess.run(
        [sys.executable, "-m", "server", "--workers", "2", "--port", "1"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to start" in done.stderr and message in done.stderr
