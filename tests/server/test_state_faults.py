"""A replica of two workers whose Redis fails: killed, restarted, or blocked (issue 16).

Decisions never fail: while Redis is down or slow, a visitor with storage consent gets a
contextual decision carrying the reason ``state.unavailable`` (within the configured timeout,
not Redis's delay), ``/readyz`` stays 200 and reports the state degraded, and profile updates
from events are spooled to local disk, then replayed once Redis answers again, counted
exactly once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, keyed_server
from tests.redis_server import RedisServer
from tests.server.test_state_replicas import AUTH, KEYS, replica_env, sale, visit

#: A script that keeps Redis busy (every other client waits) for this many seconds.
BUSY_SECONDS = 3
BUSY_LUA = f"""
local start = tonumber(redis.call('TIME')[1])
while tonumber(redis.call('TIME')[1]) - start < {BUSY_SECONDS} do end
return 1
"""


@dataclass
class Outage:
    redis: RedisServer
    server: LiveServer
    directory: Path


@pytest.fixture(scope="module")
def outage(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    directory = tmp_path_factory.mktemp("redis-faults")
    redis = RedisServer(directory / "redis").start()
    root = tmp_path_factory.mktemp("faults")
    env = replica_env(redis.url, "faults", root)
    held = None
    try:
        with keyed_server(bundle_dir, root, KEYS, env, extra_args=["--workers", "2"]) as server:
            held = Outage(redis, server, directory)
            yield held
    finally:
        (held.redis if held is not None else redis).stop()  # a test may have restarted it
        redis.stop()


def post(server: LiveServer, path: str, body: Any) -> httpx.Response:
    """On a new connection, so that both workers answer in turn."""
    return httpx.post(server.url + path, content=json.dumps(body), headers=AUTH, timeout=10)


def unavailable(decision: dict[str, Any]) -> bool:
    return any(r["code"] == "state.unavailable" for r in decision["reasons"])


def wait_available(server: LiveServer) -> None:
    """Poll ``/readyz`` until 8 answers in a row (both workers) report the state available:
    breakers opened by a fault close once a trial call to Redis succeeds."""
    deadline = time.monotonic() + 30
    streak = 0
    while streak < 8:
        assert time.monotonic() < deadline, readyz_states(server, 2)
        streak = streak + 1 if readyz_states(server, 1)[0]["available"] else 0
        if not streak:
            time.sleep(0.1)  # polling: a breaker stays open two seconds


def readyz_states(server: LiveServer, n: int = 12) -> list[dict[str, Any]]:
    """``/readyz``'s state from ``n`` new connections (both workers)."""
    states = []
    for _ in range(n):
        r = httpx.get(f"{server.url}/readyz", timeout=5)
        assert r.status_code == 200
        states.append(r.json()["state"])
    return states


def test_a_blocked_redis_costs_a_decide_only_the_timeout(outage: Outage) -> None:
    server = outage.server
    wait_available(server)
    vid = f"slow-{uuid.uuid4().hex[:8]}"
    assert not unavailable(post(server, "/v1/decide", visit(vid, "s0")).json())
    busy = threading.Thread(target=outage.redis.command, args=("EVAL", BUSY_LUA, "0"))
    busy.start()
    try:
        while outage.redis.ping():  # until Redis is inside the script
            pass
        answers = [post(server, "/v1/decide", visit(vid, f"s{i + 1}")) for i in range(4)]
        # every decide was answered while Redis was still busy: none waited for it
        assert busy.is_alive()
    finally:
        busy.join()
    assert [r.status_code for r in answers] == [200] * 4
    assert all(unavailable(r.json()) for r in answers)
    assert all(r.json()["personalized"] is not None for r in answers)


def test_a_killed_redis_degrades_decisions_and_loses_no_event(outage: Outage) -> None:
    server, redis = outage.server, outage.redis
    wait_available(server)
    vid = f"down-{uuid.uuid4().hex[:8]}"
    assert not unavailable(post(server, "/v1/decide", visit(vid, "s0")).json())
    for value in (10.0, 20.0):
        assert post(server, "/v1/events", {"events": [sale(vid, value)]}).status_code == 202
    redis.command("SAVE")  # so that the restarted Redis has the profile (no other persistence)

    results: list[tuple[int, bool]] = []
    stop = threading.Event()

    def decide_until_stopped() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            r = post(server, "/v1/decide", visit(f"load-{i % 50}", f"s{i}"))
            results.append((r.status_code, r.status_code == 200 and unavailable(r.json())))

    load = threading.Thread(target=decide_until_stopped)
    load.start()
    try:
        while len(results) < 20:
            time.sleep(0.01)  # polling the load thread's progress
        redis.kill()
        before_kill = len(results)
        sent = [5.0, 7.0, 11.0, 13.0, 17.0]
        for value in sent:  # while Redis is down: spooled
            r = post(server, "/v1/events", {"events": [sale(vid, value)]})
            assert r.status_code == 202 and r.json()["accepted"] == 1
        read = httpx.get(f"{server.url}/v1/visitors/{vid}", headers=AUTH, timeout=10)
        assert read.status_code == 503 and read.json()["type"].endswith("state-unavailable")
        while sum(flag for _, flag in results[before_kill:]) < 20:
            time.sleep(0.01)  # polling the load thread's progress
        states = readyz_states(server)
        assert any(s["available"] is False and s["lastError"] for s in states)
    finally:
        stop.set()
        load.join()
    assert {status for status, _ in results} == {200}  # never a 5xx
    assert all(not flag for _, flag in results[:before_kill])

    restarted = RedisServer(redis.directory, port=redis.port).start()
    outage.redis = restarted
    deadline = time.monotonic() + 30
    purchases = None
    while time.monotonic() < deadline:  # polling: the workers replay their spool within ~1 s
        r = httpx.get(f"{server.url}/v1/visitors/{vid}", headers=AUTH, timeout=10)
        if r.status_code == 200 and r.json()["behavior"]["purchases"] == 2 + len(sent):
            purchases = r.json()["behavior"]
            break
        time.sleep(0.1)
    assert purchases is not None, "spooled events were not replayed"
    assert purchases["revenue"] == pytest.approx(30.0 + sum(sent))
    wait_available(server)
    for state in readyz_states(server):  # replayed, nothing left
        assert state["spool"]["pendingBytes"] == 0 and state["spool"]["dropped"] == 0
    for _ in range(6):
        r = httpx.get(f"{server.url}/v1/visitors/{vid}", headers=AUTH, timeout=10)
        assert r.json()["behavior"]["purchases"] == 2 + len(sent)
    fresh = post(server, "/v1/decide", visit(vid, "after"))
    assert fresh.status_code == 200 and not unavailable(fresh.json())
