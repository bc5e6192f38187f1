"""Rate limits, the new-profile cap and faults across replicas: two real server processes of
two workers each (``--workers 2``) sharing their own redis-server, requests alternating
between them (issue 16). One global limit whatever worker answers; Redis paused: public
event batches spooled (202) and checked when it answers again, a forged one dropped; Redis
killed: the limits fall back to each worker's own buckets, and nothing answers a 5xx.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.security import hash_key
from tests.conftest import LiveServer, keyed_server
from tests.redis_server import RedisServer

SITE = "pk_limits_site_abcdefghijklmnopqrstuvwx"
LIMITED = "pk_limits_one_abcdefghijklmnopqrstuvwxy"
FALLBACK = "pk_limits_two_abcdefghijklmnopqrstuvwxy"
SECRET = "sk_limits_test_abcdefghijklmnopqrstuvwx"
ORIGIN = "https://shop.example.com"
BACKEND = {"authorization": f"Bearer {SECRET}"}
#: a limited key's bucket: 1 a minute with 600 s of burst = 10 tokens, refilled 1 a minute
BURST_SECONDS = 600
CAPACITY = 10
KEYS: dict[str, Any] = {
    "per_ip_per_minute": 0,
    "burst_seconds": BURST_SECONDS,
    "keys": [
        {"id": "site", "kind": "public", "sha256": hash_key(SITE), "origins": [ORIGIN]},
        {
            "id": "limited",
            "kind": "public",
            "sha256": hash_key(LIMITED),
            "origins": [ORIGIN],
            "rate_per_minute": 1,
        },
        {
            "id": "fallback",
            "kind": "public",
            "sha256": hash_key(FALLBACK),
            "origins": [ORIGIN],
            "rate_per_minute": 1,
        },
        {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
    ],
}
NEW_PROFILES_PER_MINUTE = 6  # the cap's bucket holds a minute's worth: 6
CONSENT = {"personalization": True, "storage": True}


def browser(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "origin": ORIGIN, "content-type": "text/plain"}


@dataclass
class Replicas:
    a: LiveServer
    b: LiveServer
    redis: RedisServer


@pytest.fixture(scope="module")
def replicas(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas-limits")
    redis = RedisServer(root / "redis").start()
    env = {
        "TAILOR_REDIS_URL": redis.url,
        "TAILOR_REDIS_PREFIX": f"rlimits-{uuid.uuid4().hex[:8]}",
        "TAILOR_REDIS_TIMEOUT": "0.5",
        "TAILOR_NEW_PROFILES_PER_MINUTE": str(NEW_PROFILES_PER_MINUTE),
    }
    replicas = Replicas(a=None, b=None, redis=redis)  # type: ignore[arg-type]
    try:
        with ExitStack() as stack:
            for name in ("a", "b"):
                (root / name).mkdir()
                server = stack.enter_context(
                    keyed_server(
                        bundle_dir,
                        root / name,
                        KEYS,
                        {**env, "TAILOR_SPOOL_DIR": str(root / name / "spool")},
                        extra_args=["--workers", "2"],
                    )
                )
                setattr(replicas, name, server)
            yield replicas
    finally:
        replicas.redis.stop()


def post(server: LiveServer, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    """A request on a new connection, so that either worker of the replica may take it."""
    return httpx.post(server.url + path, content=json.dumps(body), headers=headers, timeout=10)


def decide(server: LiveServer, key: str, visitor: str) -> httpx.Response:
    body = {"visitorId": visitor, "sessionId": "s1", "consent": CONSENT, "slots": ["hero"]}
    return post(server, "/v1/decide", body, browser(key))


def test_one_rate_limit_across_replicas_and_workers(replicas: Replicas) -> None:
    answers = [
        decide(server, LIMITED, f"rl-{i}")
        for i in range(3 * CAPACITY)
        for server in ((replicas.a, replicas.b)[i % 2],)
    ]
    statuses = [a.status_code for a in answers]
    # the bucket starts full and refills one token a minute: exactly CAPACITY pass
    assert statuses.count(200) == CAPACITY, statuses
    assert statuses.count(429) == 2 * CAPACITY
    refused = [a for a in answers if a.status_code == 429]
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    assert all(a.json()["type"].endswith("rate-limited") for a in refused)
    # another key's bucket is its own
    assert decide(replicas.b, SITE, "rl-other").status_code == 200


def test_one_new_profile_cap_across_replicas(replicas: Replicas) -> None:
    minted = []
    for i in range(2 * NEW_PROFILES_PER_MINUTE):
        answer = decide((replicas.a, replicas.b)[i % 2], SITE, f"np-{i}")
        assert answer.status_code == 200, answer.text
        minted.append(answer.json()["visitorId"])
    stored = [
        httpx.get(f"{replicas.b.url}/v1/visitors/{v}", headers=BACKEND, timeout=10).status_code
        for v in minted
    ]
    # the first client bucket of "site" was charged once by the other test's decide
    assert stored.count(200) == NEW_PROFILES_PER_MINUTE - 1, stored
    assert set(stored) == {200, 404}


def _purchases(server: LiveServer, visitor: str) -> float:
    answer = httpx.get(f"{server.url}/v1/visitors/{visitor}", headers=BACKEND, timeout=10)
    assert answer.status_code == 200, answer.text
    return float(answer.json()["behavior"].get("purchases") or 0)


def test_batches_wait_for_the_guard_while_redis_is_paused(replicas: Replicas) -> None:
    decision = decide(replicas.a, SITE, "patient").json()
    visitor = decision["visitorId"]
    # the cap of the previous test is spent: this visitor has no profile of its own, so the
    # conversion is checked on a visitor the secret key created
    post(
        replicas.b,
        "/v1/decide",
        {"visitorId": visitor, "sessionId": "s0", "consent": CONSENT, "slots": ["hero"]},
        BACKEND,
    )
    assert _purchases(replicas.a, visitor) == 0

    def events(event_id: str, decision_id: str) -> dict[str, Any]:
        return {
            "events": [
                {
                    "type": "conversion",
                    "visitorId": visitor,
                    "decisionId": decision_id,
                    "eventId": event_id,
                    "value": 10.0,
                }
            ],
            "consent": CONSENT,
            "visitorToken": decision["visitorToken"],
        }

    replicas.redis.command("CLIENT", "PAUSE", "3000", "ALL")
    real = post(replicas.b, "/v1/events", events("e-real", decision["decisionId"]), browser(SITE))
    forged = post(replicas.a, "/v1/events", events("e-forged", str(uuid.uuid4())), browser(SITE))
    for answer in (real, forged):
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": 1, "spooled": 1}
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        answer = httpx.get(f"{replicas.a.url}/v1/visitors/{visitor}", headers=BACKEND, timeout=10)
        if answer.status_code == 200 and answer.json()["behavior"].get("purchases"):
            break
        time.sleep(0.2)  # polling for the replay (503 while paused), with a deadline
    assert _purchases(replicas.a, visitor) == 1  # the real one; the forged one was dropped
    again = post(replicas.a, "/v1/events", events("e-real", decision["decisionId"]), browser(SITE))
    assert again.status_code == 409  # the replayed batch was recorded by the guard


def test_redis_killed_limits_fall_back_per_worker_and_nothing_fails(replicas: Replicas) -> None:
    replicas.redis.kill()
    try:
        answers = [decide((replicas.a, replicas.b)[i % 2], FALLBACK, f"fb-{i}") for i in range(60)]
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 429}, statuses
        # each worker process grants its own bucket now: at least one per replica is used
        assert 2 * CAPACITY <= statuses.count(200) <= 4 * CAPACITY, statuses
        events = {
            "events": [{"type": "click", "visitorId": "nobody", "decisionId": "d", "eventId": "e"}]
        }
        for server in (replicas.a, replicas.b):
            answer = post(server, "/v1/events", events, browser(SITE))
            assert answer.status_code == 202, answer.text  # spooled, checked later
            ready = httpx.get(f"{server.url}/readyz", timeout=5)
            assert ready.status_code < 500
    finally:
        replicas.redis = RedisServer(replicas.redis.directory, port=replicas.redis.port).start()
