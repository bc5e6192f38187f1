"""The event log's stream output against a real redis-server: one entry per record holding the
JSON line the file log would hold and a record id; a local spool while Redis is away, replayed
in order and exactly once when it answers again."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sdk.logs import DecisionRecord, read_log
from server.eventlog import EventLog
from server.logfiles import Losses, Retention
from server.stream import RECORD_FIELD, RECORD_ID_FIELD, StreamOutput, record_id, sync_client
from tests.redis_server import RedisServer
from tests.server.test_eventlog import NOW, Clock, decision, event, request

ROOT = Path(__file__).resolve().parents[2]


def entries(client: redis.Redis, key: str) -> list[tuple[str, bytes]]:
    reply: Any = client.xrange(key)
    return [(f[RECORD_ID_FIELD].decode(), f[RECORD_FIELD]) for _, f in reply]


@pytest.fixture
def key() -> str:
    return f"test-stream-{uuid.uuid4().hex[:8]}:log"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def stream_log(url: str, key: str, spool: Path, **kwargs: Any) -> tuple[EventLog, StreamOutput]:
    output = StreamOutput(url, key=key, maxlen=100_000, spool_dir=spool, **kwargs)
    return EventLog(spool, output=output, flush_interval=3600, clock=Clock()), output


def test_each_record_is_one_entry_with_the_line_the_file_log_writes(
    redis_server: Any, key: str, tmp_path: Path
) -> None:
    files = EventLog(tmp_path / "files", flush_interval=3600, clock=Clock())
    streamed, _ = stream_log(redis_server.url, key, tmp_path / "spool")
    for log in (files, streamed):
        log.append_decision(decision("d1"), request())
        log.append_events([event(decision_id="d1", slot="hero", event_id="e-1")], received_at=NOW)
        log.append_erasure("v1")
        log.close()
    got = entries(sync_client(redis_server.url, 2), key)
    assert [line for _, line in got] == [
        line for path in files.files() for line in path.read_bytes().splitlines(keepends=True)
    ]
    assert [rid[:2] for rid, _ in got] == ["d:", "e:", "g:"]
    assert got[0][0] == "d:d1"


def test_record_ids_are_stable_for_a_retried_event_and_unique_otherwise() -> None:
    def line(**fields: str) -> bytes:
        record = {"kind": "event", "logVersion": 1, "type": "click", "visitorId": "v", **fields}
        return json.dumps(record).encode() + b"\n"

    first = line(eventId="e1", decisionId="d1", receivedAt="2026-06-15T12:30:00Z")
    retried = line(eventId="e1", decisionId="d1", receivedAt="2026-06-15T12:30:09Z")
    assert record_id(first) == record_id(retried)
    assert record_id(first) != record_id(line(eventId="e2", decisionId="d1"))
    no_id = line(decisionId="d1")
    assert record_id(no_id) != record_id(no_id)  # generated: kept with the record in the spool
    assert record_id(b"not json\n").startswith("g:")


def test_redis_down_spools_then_replays_in_order_exactly_once(
    own_redis: RedisServer, key: str, tmp_path: Path
) -> None:
    log, output = stream_log(own_redis.url, key, tmp_path / "spool")
    sent = [event(event_id=f"e{i}", session_id=f"s{i}") for i in range(30)]
    log.append_events(sent[:10], received_at=NOW)
    log.flush()
    own_redis.kill()
    log.append_events(sent[10:20], received_at=NOW)
    log.flush()
    health = log.health()
    assert health["streamAvailable"] is False and health["spooledBytes"] > 0
    log.append_events(sent[20:], received_at=NOW)  # behind the spool, even if Redis answers
    log.flush()
    assert output.spooled == 20 and log.dropped == 0
    restarted = RedisServer(own_redis.directory, port=own_redis.port).start()
    try:
        output.breaker.reset()  # the breaker would let a trial through after a second
        log.flush()  # replays the spool
        assert log.health()["spooledBytes"] == 0
        got = entries(sync_client(restarted.url, 2), key)
        # Redis kept nothing (no persistence): exactly the 20 spooled, in order, once
        sessions = [line.split(b'"sessionId":"')[1].split(b'"')[0].decode() for _, line in got]
        assert sessions == [f"s{i}" for i in range(10, 30)]
        assert len({rid for rid, _ in got}) == 20
        log.append_events([event(event_id="after", session_id="s30")], received_at=NOW)
        log.flush()
        assert len(entries(sync_client(restarted.url, 2), key)) == 21  # straight to the stream
    finally:
        log.close()
        restarted.stop()
    assert list((tmp_path / "spool").glob("spool-*")) == []


def test_a_dead_workers_spool_is_replayed_by_another(
    redis_server: Any, key: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    # a worker that found Redis down (a closed port), spooled three records and exited
    code = f"""
from pathlib import Path
from datetime import UTC, datetime
from server.eventlog import EventLog
from server.stream import StreamOutput
from sdk.schema import Event
out = StreamOutput("redis://127.0.0.1:9/0", key="{key}", maxlen=1000, spool_dir=Path("{spool}"))
log = EventLog(Path("{spool}"), output=out, flush_interval=3600)
log.append_events([Event(type="click", visitor_id="dead", event_id=f"e{{i}}") for i in range(3)],
                  received_at=datetime.now(UTC))
log.close()
assert out.spooled == 3, out.spooled
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    assert len(list(spool.glob("spool-*.jsonl"))) == 1
    log, output = stream_log(redis_server.url, key, spool)
    log.flush()  # nothing of its own waiting: the interval's tick replays the dead worker's
    log.close()
    assert output.replayed == 3
    assert [
        line.count(b'"visitorId":"dead"')
        for _, line in entries(sync_client(redis_server.url, 2), key)
    ] == [1, 1, 1]
    assert list(spool.glob("spool-*.jsonl")) == []


def test_a_spool_past_its_cap_counts_exactly_what_it_lost(
    own_redis: RedisServer, key: str, tmp_path: Path
) -> None:
    lost: list[int] = []
    log, output = stream_log(
        own_redis.url,
        key,
        tmp_path / "spool",
        retention=Retention(max_bytes=6000),
        max_bytes=1500,
        losses=Losses(lambda n, _: lost.append(n)),
    )
    own_redis.kill()
    for i in range(40):
        log.append_events([event(event_id=f"e{i}")], received_at=NOW)
        log.flush()
    assert log.dropped == sum(lost) > 0
    assert log.health()["spooledBytes"] <= 6000
    restarted = RedisServer(own_redis.directory, port=own_redis.port).start()
    try:
        output.breaker.reset()
        log.flush()
        got = entries(sync_client(restarted.url, 2), key)
    finally:
        log.close()
        restarted.stop()
    assert len(got) + log.dropped == 40
    assert log.health()["lastError"] == "the spool went past its size or age cap"


def test_the_stream_log_reads_like_the_file_log(
    redis_server: Any, key: str, tmp_path: Path
) -> None:
    """What a sink writes from the entries is readable by read_log (same record format)."""
    log, _ = stream_log(redis_server.url, key, tmp_path / "spool")
    log.append_decision(decision("d9"), request())
    log.close()
    out = tmp_path / "out" / "events-20260615-123000-1.jsonl"
    out.parent.mkdir()
    out.write_bytes(b"".join(line for _, line in entries(sync_client(redis_server.url, 2), key)))
    (record,) = list(read_log(out.parent))
    assert isinstance(record, DecisionRecord) and record.decision_id == "d9"
