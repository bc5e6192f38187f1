"""The event stream end to end on 127.0.0.1: two server processes of two workers each and two
``python -m server.sink`` processes sharing one real redis-server.

One scenario, in phases, sends decides and events (with a retried batch) alternately to the
two replicas; kills one sink mid-run; erases a visitor; kills Redis and restarts it. At the
end the sinks' files, read with :func:`sdk.logs.read_log`, hold every decision and event the
servers accepted exactly once, in the log's record format, and nothing of the erased visitor
but the marker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk.logs import DecisionRecord, ErasureRecord, EventRecord, LogRecord, read_log, visitor_hash
from server.security import hash_key
from tests.conftest import ROOT, LiveServer, keyed_server
from tests.redis_server import RedisServer

SECRET = "sk_stream_test_abcdefghijklmnopqrstuvwxyz"
BACKEND = {"authorization": f"Bearer {SECRET}"}
KEYS: dict[str, Any] = {
    "per_key_per_minute": 0,
    "per_ip_per_minute": 0,
    "keys": [{"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)}],
}
CONSENT = {"personalization": True, "storage": True}


def wait_until(condition: Callable[[], object], seconds: float, what: str) -> None:
    """Poll until ``condition()`` is True or None (a string says what is still wrong)."""
    deadline = time.monotonic() + seconds
    while (state := condition()) not in (True, None):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {state}")
        time.sleep(0.1)  # polling for a state reached by other processes


class Traffic:
    """What was sent to the replicas and what they accepted (decision and event ids)."""

    def __init__(self, servers: list[LiveServer]) -> None:
        self.clients = [httpx.Client(base_url=s.url, headers=BACKEND, timeout=10) for s in servers]
        self.turn = 0
        self.decisions: dict[str, str] = {}  # decision id -> visitor
        self.events: dict[str, str] = {}  # event id -> visitor
        self.statuses: Counter[int] = Counter()

    def next(self) -> httpx.Client:
        self.turn += 1
        return self.clients[self.turn % len(self.clients)]

    def decide(self, visitor: str) -> dict[str, Any]:
        body = {
            "visitorId": visitor,
            "sessionId": f"s-{uuid.uuid4().hex[:8]}",  # a new visit: logged, not a cached one
            "consent": CONSENT,
            "slots": ["hero"],
        }
        answer = self.next().post("/v1/decide", json=body)
        self.statuses[answer.status_code] += 1
        assert answer.status_code == 200, answer.text
        decision: dict[str, Any] = answer.json()
        self.decisions[decision["decisionId"]] = visitor
        return decision

    def send_events(
        self, events: list[dict[str, Any]], *, client: httpx.Client | None = None
    ) -> None:
        answer = (client or self.next()).post(
            "/v1/events", json={"events": events, "consent": CONSENT}
        )
        self.statuses[answer.status_code] += 1
        assert answer.status_code == 202, answer.text
        for e in events:
            self.events[e["eventId"]] = e["visitorId"]

    def visit(self, visitor: str, *, retry: bool = False) -> None:
        """A decide and two events of it; ``retry``: the batch is sent again to the other
        replica (a client that did not see the first answer)."""
        decision = self.decide(visitor)
        events = [
            {
                "type": kind,
                "visitorId": visitor,
                "decisionId": decision["decisionId"],
                "slot": "hero",
                "eventId": f"{kind}-{uuid.uuid4().hex}",
            }
            for kind in ("impression", "click")
        ]
        first = self.next()
        self.send_events(events, client=first)
        if retry:
            self.send_events(events, client=self.clients[(self.turn + 1) % len(self.clients)])

    def close(self) -> None:
        for client in self.clients:
            client.close()


def start_sink(root: Path, redis_url: str, prefix: str, name: str) -> subprocess.Popen[bytes]:
    with (root / f"{name}.log").open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.sink",
                "--dir",
                str(root / "out"),
                "--redis-url",
                redis_url,
                "--prefix",
                prefix,
                "--name",
                name,
                "--batch",
                "20",
                "--claim-idle",
                "1",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def read_out(root: Path) -> list[LogRecord]:
    reader = read_log(root / "out", missing_ok=True)
    records = list(reader)
    assert reader.skipped == {}  # every line is a whole record of the log's format
    return records


def counted(records: list[LogRecord]) -> Counter[str]:
    out: Counter[str] = Counter()
    for r in records:
        if isinstance(r, DecisionRecord):
            out[f"d:{r.decision_id}"] += 1
        elif isinstance(r, EventRecord):
            out[f"e:{r.event_id}"] += 1
        elif isinstance(r, ErasureRecord):
            out[f"x:{r.visitor_hash}"] += 1
    return out


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def test_two_replicas_two_sinks_every_record_once_through_faults(
    bundle_dir: Path, tmp_path: Path, stack: ExitStack
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    stack.callback(lambda: redis.stop())
    prefix = f"live-{uuid.uuid4().hex[:6]}"
    servers = []
    for n in range(2):
        root = tmp_path / f"replica-{n}"
        root.mkdir()
        env = {
            "TAILOR_REDIS_URL": redis.url,
            "TAILOR_REDIS_PREFIX": prefix,
            "TAILOR_SPOOL_DIR": str(root / "spool"),  # each replica its own disk
            "TAILOR_RELOAD_INTERVAL": "0",
        }
        servers.append(
            stack.enter_context(
                keyed_server(bundle_dir, root, KEYS, env, extra_args=["--workers", "2"])
            )
        )
    sinks = {name: start_sink(tmp_path, redis.url, prefix, name) for name in ("sink-a", "sink-b")}
    for proc in sinks.values():
        stack.callback(lambda p=proc: (p.poll() is None and p.kill(), p.wait(10)))
    traffic = Traffic(servers)
    stack.callback(traffic.close)

    def expected(*, erased: str | None = None) -> Counter[str]:
        want = Counter(f"d:{d}" for d, v in traffic.decisions.items() if v != erased)
        want.update(f"e:{e}" for e, v in traffic.events.items() if v != erased)
        if erased is not None:
            want[f"x:{visitor_hash(erased)}"] = 1
        return want

    def settled(want: Callable[[], Counter[str]]) -> Callable[[], str | None]:
        """None once the files hold exactly ``want()``, else what differs."""

        def differs() -> str | None:
            got, wanted = counted(read_out(tmp_path)), want()
            if got == wanted:
                return None
            return f"missing {dict(wanted - got)}, extra {dict(got - wanted)}"

        return differs

    # 1. decides and events, some batches retried on the other replica; servers flush each second
    for i in range(30):
        traffic.visit(f"visitor-{i % 10}", retry=i % 3 == 0)
    wait_until(settled(expected), 60, "the sinks to write phase 1")

    # 2. one sink killed mid-run: the other claims what it had not acknowledged
    for i in range(30, 60):
        traffic.visit(f"visitor-{i % 10}", retry=i % 4 == 0)
        if i == 40:
            sinks["sink-a"].send_signal(signal.SIGKILL)
            sinks["sink-a"].wait(10)  # reaped, as a supervisor would: its pid is gone
    wait_until(settled(expected), 60, "sink-b to take over sink-a's entries")

    # 3. an erasure on one replica; later events of the visitor are dropped too
    answer = traffic.clients[0].delete("/v1/visitors/visitor-3")
    assert answer.status_code == 204
    traffic.visit("visitor-3")
    traffic.visit("visitor-4")
    wait_until(settled(lambda: expected(erased="visitor-3")), 60, "the erasure to be applied")
    sinks["sink-a"] = start_sink(tmp_path, redis.url, prefix, "sink-a2")

    # 4. Redis killed: records spooled on each replica, replayed after the restart
    redis.kill()
    during = len(traffic.events)
    for i in range(20):
        traffic.visit(f"visitor-{i % 10 + 10}")
    assert len(traffic.events) == during + 40
    spools = [tmp_path / f"replica-{n}" / "spool" / "events" for n in range(2)]
    wait_until(  # within a flush interval, every replica spools what it logged
        lambda: all(list(d.glob("spool-*.jsonl")) for d in spools) or "not spooled",
        30,
        "the replicas to spool",
    )
    restarted = RedisServer(redis.directory, port=redis.port).start()
    stack.callback(restarted.stop)
    wait_until(lambda: not any(list(d.glob("spool-*.jsonl")) for d in spools), 60, "spool replays")
    for server in servers:  # stopping a replica writes what it buffered
        server.process.send_signal(signal.SIGTERM)
    for server in servers:
        server.process.wait(30)
    wait_until(settled(lambda: expected(erased="visitor-3")), 90, "the spools to be replayed")

    records = read_out(tmp_path)
    assert not any(
        getattr(r, "visitor_id", None) == "visitor-3" for r in records
    )  # only the marker (a hash) is left of the erased visitor
    assert traffic.statuses.keys() <= {200, 202, 204}
    assert sum(traffic.statuses.values()) > 150
    for proc in sinks.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    names = [p.name for p in (tmp_path / "out").glob("*.jsonl")]
    assert len(names) >= 3 and all(n.startswith("events-") for n in names)
    assert json.loads((tmp_path / "out" / names[0]).read_bytes().splitlines()[0])["logVersion"] == 1
