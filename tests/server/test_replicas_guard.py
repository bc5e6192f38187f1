"""The event guard, confirmed conversions and bundle reloads across replicas: two real server
processes of two workers each (``--workers 2``) sharing one redis-server, requests alternating
between them (issue 16). A decide on one replica and its events on the other are accepted; a
batch replayed, or retried on both at once, counts once; an order confirmed on both counts
once; a reload asked of one replica reaches every worker of both.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
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

PUBLIC = "pk_replicas_test_abcdefghijklmnopqrstuv"
SECRET = "sk_replicas_test_abcdefghijklmnopqrstuv"
ORIGIN = "https://shop.example.com"
BROWSER = {
    "authorization": f"Bearer {PUBLIC}",
    "origin": ORIGIN,
    "content-type": "text/plain;charset=UTF-8",
}
BACKEND = {"authorization": f"Bearer {SECRET}"}
KEYS: dict[str, Any] = {
    "per_key_per_minute": 0,
    "per_ip_per_minute": 0,
    "keys": [
        {"id": "site", "kind": "public", "sha256": hash_key(PUBLIC), "origins": [ORIGIN]},
        {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
    ],
}
CONSENT = {"personalization": True, "storage": True}


@dataclass
class Replicas:
    a: LiveServer
    b: LiveServer
    live: Path  # the bundle path both serve: a symlink the reload test repoints


@pytest.fixture(scope="module")
def replicas(
    bundle_dir: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas-guard")
    live = root / "LIVE"
    live.symlink_to(bundle_dir, target_is_directory=True)
    env = {
        "TAILOR_REDIS_URL": redis_server.url,
        "TAILOR_REDIS_PREFIX": f"rguard-{uuid.uuid4().hex[:8]}",
        "TAILOR_REDIS_TIMEOUT": "1.0",  # a loaded test machine is not a Redis outage
        "TAILOR_RELOAD_INTERVAL": "0",  # no polling: only the broadcast reloads
        "TAILOR_SPOOL_DIR": str(root / "spool"),
    }
    with ExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            (root / name).mkdir()
            servers.append(
                stack.enter_context(
                    keyed_server(
                        live,
                        root / name,
                        KEYS,
                        {**env, "TAILOR_SPOOL_DIR": str(root / name / "spool")},
                        extra_args=["--workers", "2"],
                    )
                )
            )
        yield Replicas(a=servers[0], b=servers[1], live=live)


def post(server: LiveServer, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    """A request on a new connection, so that either worker of the replica may take it."""
    return httpx.post(server.url + path, content=json.dumps(body), headers=headers, timeout=10)


def decide(server: LiveServer, visitor: str) -> dict[str, Any]:
    body = {"visitorId": visitor, "sessionId": "s1", "consent": CONSENT, "slots": ["hero"]}
    answer = post(server, "/v1/decide", body, BROWSER)
    assert answer.status_code == 200, answer.text
    decision: dict[str, Any] = answer.json()
    return decision


def batch(decision: dict[str, Any], *events: tuple[str, str]) -> dict[str, Any]:
    """A tag's batch for ``decision``: (type, event id) pairs, with the visitor's token."""
    return {
        "events": [
            {
                "type": kind,
                "visitorId": decision["visitorId"],
                "decisionId": decision["decisionId"],
                "eventId": event_id,
                **({"value": 25.0} if kind == "conversion" else {}),
            }
            for kind, event_id in events
        ],
        "consent": CONSENT,
        "visitorToken": decision["visitorToken"],
    }


def test_a_decision_on_one_replica_takes_its_events_on_the_other(replicas: Replicas) -> None:
    for first, second in ((replicas.a, replicas.b), (replicas.b, replicas.a)):
        for _ in range(4):  # whichever worker decides and whichever takes the events
            decision = decide(first, f"walker-{uuid.uuid4().hex[:8]}")
            events = batch(decision, ("impression", uuid.uuid4().hex))
            answer = post(second, "/v1/events", events, BROWSER)
            assert answer.status_code == 202, answer.text
            assert answer.json() == {"accepted": 1}
    # a decision nobody issued is refused on either
    forged = batch({**decision, "decisionId": str(uuid.uuid4())}, ("click", "x1"))
    for server in (replicas.a, replicas.b):
        assert post(server, "/v1/events", forged, BROWSER).status_code == 403


def test_a_batch_replayed_on_the_other_replica_is_refused(replicas: Replicas) -> None:
    decision = decide(replicas.a, "replayer")
    events = batch(decision, ("click", "c-1"), ("impression", "i-1"))
    assert post(replicas.a, "/v1/events", events, BROWSER).status_code == 202
    for server in (replicas.b, replicas.a, replicas.b):
        answer = post(server, "/v1/events", events, BROWSER)
        assert answer.status_code == 409, answer.text
        assert answer.json()["type"].endswith("replayed-event")


def at_once(
    server_calls: list[tuple[LiveServer, str, Any, dict[str, str]]],
) -> list[httpx.Response]:
    """Send each (server, path, body, headers) from its own thread, released together."""
    start = threading.Barrier(len(server_calls))
    answers: list[httpx.Response] = []

    def send(server: LiveServer, path: str, body: Any, headers: dict[str, str]) -> None:
        start.wait()
        answers.append(post(server, path, body, headers))

    threads = [threading.Thread(target=send, args=call) for call in server_calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == len(server_calls)
    return answers


def _purchases(server: LiveServer, visitor: str) -> float:
    answer = httpx.get(f"{server.url}/v1/visitors/{visitor}", headers=BACKEND, timeout=10)
    assert answer.status_code == 200, answer.text
    return float(answer.json()["behavior"].get("purchases") or 0)


def test_a_batch_retried_on_both_replicas_at_once_counts_once(replicas: Replicas) -> None:
    for attempt in range(5):
        decision = decide(replicas.a, f"retrier-{attempt}")
        visitor = decision["visitorId"]  # minted by the server, with its token
        events = batch(decision, ("conversion", f"conv-{attempt}"))
        both = (replicas.a, replicas.b, replicas.a, replicas.b)
        answers = at_once([(s, "/v1/events", events, BROWSER) for s in both])
        assert sorted(a.status_code for a in answers) == [202, 409, 409, 409]
        # the one conversion reached the shared profile once, read on either replica
        assert _purchases(replicas.a, visitor) == 1
        assert _purchases(replicas.b, visitor) == 1


def test_an_order_confirmed_on_both_replicas_counts_once(replicas: Replicas) -> None:
    decision = decide(replicas.a, "buyer")
    visitor = decision["visitorId"]
    order = {
        "conversions": [
            {"orderId": f"order-{uuid.uuid4().hex}", "visitorId": visitor, "value": 80.0}
        ]
    }
    both = (replicas.a, replicas.b, replicas.a, replicas.b)
    responses = at_once([(s, "/v1/conversions", order, BACKEND) for s in both])
    assert [r.status_code for r in responses] == [202] * 4
    answers = [r.json() for r in responses]
    assert sorted(a["accepted"] for a in answers) == [0, 0, 0, 1]
    assert sum(a["duplicates"] for a in answers) == 3
    assert _purchases(replicas.b, visitor) == 1
    # and later, sequentially, on the other replica
    again = post(replicas.b, "/v1/conversions", order, BACKEND).json()
    assert again == {"accepted": 0, "duplicates": 1}


def _versions(server: LiveServer, want: str, deadline: float) -> dict[str, str]:
    """Each worker's ``/readyz`` model version, polled on new connections until two workers
    report ``want`` or the deadline passes."""
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        answer = httpx.get(f"{server.url}/readyz", timeout=5)
        assert answer.status_code == 200, answer.text
        seen[answer.headers["x-tailor-worker"]] = answer.json()["modelVersion"]
        if len(seen) == 2 and set(seen.values()) == {want}:
            break
        time.sleep(0.05)  # polling for the result, with a deadline
    return seen


def test_a_reload_on_one_replica_reaches_every_worker_of_both(
    replicas: Replicas, bundle_dir: Path, policy_bundle_dir: Path
) -> None:
    old = json.loads((bundle_dir / "manifest.json").read_text())["modelVersion"]
    new = json.loads((policy_bundle_dir / "manifest.json").read_text())["modelVersion"]
    assert old != new
    deadline = time.monotonic() + 20
    assert set(_versions(replicas.b, old, deadline).values()) == {old}
    # repoint the bundle path atomically, then ask replica A only
    fresh = replicas.live.with_name("LIVE.new")
    fresh.symlink_to(policy_bundle_dir, target_is_directory=True)
    os.replace(fresh, replicas.live)
    answer = httpx.post(f"{replicas.a.url}/v1/admin/reload", headers=BACKEND, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["modelVersion"] == new
    assert answer.json()["notified"] == 4  # every worker of both replicas listens
    deadline = time.monotonic() + 30
    for server in (replicas.b, replicas.a):
        seen = _versions(server, new, deadline)
        assert len(seen) == 2 and set(seen.values()) == {new}, seen
    # a replica that refuses a bundle keeps serving and says so: break the new one for B's
    # workers by pointing at a directory without a valid bundle
    broken = replicas.live.with_name("broken")
    shutil.copytree(policy_bundle_dir, broken)
    (broken / "manifest.json").write_text("{}")
    fresh.symlink_to(broken, target_is_directory=True)
    os.replace(fresh, replicas.live)
    answer = httpx.post(f"{replicas.b.url}/v1/admin/reload", headers=BACKEND, timeout=30)
    assert answer.status_code == 409
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = httpx.get(f"{replicas.a.url}/readyz", timeout=5).json()
        if "lastReloadRefused" in ready:
            break
        time.sleep(0.05)  # polling for the result, with a deadline
    assert ready["modelVersion"] == new and "lastReloadRefused" in ready
