"""The sink against a real redis-server, driven step by step in this process: several sinks
of one group write every record exactly once (retried event batches, a sink that died before
or after its fsync), erasure markers purge every sink's files, and a failed write leaves the
entries pending until they are written."""

from __future__ import annotations

import errno
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sdk.logs import DecisionRecord, EventRecord, LogRecord, read_log, visitor_hash
from server.eventlog import EventLog
from server.sink import Sink
from server.stream import StreamOutput, stream_key, sync_client
from tests.server.test_eventlog import NOW, Clock, decision, event, request


@pytest.fixture
def prefix() -> str:
    return f"test-sink-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def producer(redis_server: Any, prefix: str, tmp_path: Path) -> Iterator[EventLog]:
    output = StreamOutput(
        redis_server.url, key=stream_key(prefix), maxlen=100_000, spool_dir=tmp_path / "spool"
    )
    log = EventLog(tmp_path / "spool", output=output, flush_interval=3600, clock=Clock())
    yield log
    log.close()


@pytest.fixture
def make_sink(redis_server: Any, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Sink]]:
    sinks: list[Sink] = []

    def make(name: str, **kwargs: Any) -> Sink:
        kwargs.setdefault("batch", 7)
        kwargs.setdefault("block_ms", 1)
        kwargs.setdefault("claim_idle", 0.0)  # another sink's unacknowledged entries at once
        sink = Sink(
            sync_client(redis_server.url, 5), tmp_path / "out", prefix=prefix, name=name, **kwargs
        )
        sink.ensure_group()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def drain(*sinks: Sink) -> None:
    """Step the sinks in turn until none of them gets anything."""
    while sum(sink.step() for sink in sinks):
        pass


def ids(records: list[LogRecord]) -> Counter[str]:
    """Each record's identity: decision id, event id, or erased visitor hash."""
    out: Counter[str] = Counter()
    for r in records:
        if isinstance(r, DecisionRecord):
            out[f"d:{r.decision_id}"] += 1
        elif isinstance(r, EventRecord):
            out[f"e:{r.event_id}"] += 1
        else:
            out[f"x:{r.visitor_hash}"] += 1
    return out


def test_two_sinks_write_each_record_once_even_from_a_retried_batch(
    producer: EventLog, make_sink: Callable[..., Sink], tmp_path: Path
) -> None:
    batch = [event(decision_id=f"d{i}", slot="hero", event_id=f"e{i}") for i in range(20)]
    for i in range(20):
        producer.append_decision(decision(f"d{i}", visitor=f"v{i}"), request(f"v{i}"))
    producer.append_events(batch, received_at=NOW)
    producer.flush()
    producer.append_events(batch[5:15], received_at=NOW)  # the sender retried part of it
    producer.flush()
    a, b = make_sink("a"), make_sink("b")
    drain(a, b)
    records = list(read_log(tmp_path / "out"))
    assert ids(records) == Counter(
        {f"d:d{i}": 1 for i in range(20)} | {f"e:e{i}": 1 for i in range(20)}
    )
    assert a.stats.written > 0 and b.stats.written > 0  # both took part
    assert a.stats.duplicates + b.stats.duplicates == 10
    assert len(list((tmp_path / "out").glob("events-*.jsonl"))) == 2  # one file each


def test_a_sink_that_died_after_its_fsync_is_not_written_twice(
    producer: EventLog, make_sink: Callable[..., Sink], tmp_path: Path
) -> None:
    producer.append_events([event(event_id=f"e{i}") for i in range(5)], received_at=NOW)
    producer.flush()
    dead = make_sink("dead")
    dead._finish = lambda *_: None  # type: ignore[method-assign]  # dies before marking and acking
    assert dead.step() == 5 and dead.stats.written == 5
    survivor = make_sink("survivor")
    drain(survivor)
    assert survivor.stats.claimed == 5 and survivor.stats.duplicates == 5
    assert ids(list(read_log(tmp_path / "out"))) == Counter({f"e:e{i}": 1 for i in range(5)})


def test_a_sink_that_died_before_writing_loses_nothing(
    producer: EventLog, make_sink: Callable[..., Sink], tmp_path: Path
) -> None:
    producer.append_events([event(event_id=f"e{i}") for i in range(5)], received_at=NOW)
    producer.flush()
    dead = make_sink("dead")
    dead._write = lambda items: []  # type: ignore[method-assign]  # claimed the ids, then died
    dead._finish = lambda *_: None  # type: ignore[method-assign]
    assert dead.step() == 5
    survivor = make_sink("survivor")
    drain(survivor)
    assert survivor.stats.claimed == 5 and survivor.stats.written == 5
    assert ids(list(read_log(tmp_path / "out"))) == Counter({f"e:e{i}": 1 for i in range(5)})


def test_an_erasure_drops_later_records_and_purges_every_sinks_files(
    producer: EventLog, make_sink: Callable[..., Sink], tmp_path: Path
) -> None:
    a, b = make_sink("a", batch=100), make_sink("b", batch=100)
    producer.append_decision(decision("d1", visitor="gone"), request("gone"))
    producer.append_decision(decision("d2", visitor="kept"), request("kept"))
    producer.flush()
    drain(a)  # a's open file holds both visitors
    producer.append_erasure("gone")
    producer.flush()
    drain(b)  # b reads the marker
    producer.append_events([event(visitor="gone", event_id="late")], received_at=NOW)
    producer.append_events([event(visitor="kept", event_id="fine")], received_at=NOW)
    producer.flush()
    drain(a)  # a sees the marker (purges its file), then drops the late record
    records = list(read_log(tmp_path / "out"))
    assert ids(records) == Counter({"d:d2": 1, "e:fine": 1, f"x:{visitor_hash('gone')}": 1})
    assert not any(b"gone" in p.read_bytes() for p in (tmp_path / "out").glob("*.jsonl"))
    assert a.stats.purged == 1 and a.stats.erased == 1


def test_a_failed_write_acknowledges_nothing_and_is_retried(
    producer: EventLog,
    make_sink: Callable[..., Sink],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: Any,
    prefix: str,
) -> None:
    producer.append_events([event(event_id=f"e{i}") for i in range(4)], received_at=NOW)
    producer.flush()
    sink = make_sink("a")

    def disk_full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "write", disk_full)
        assert sink.step() == 4
    client = sync_client(redis_server.url, 5)
    pending: Any = client.xpending(stream_key(prefix), "sink")
    assert pending["pending"] == 4 and sink.stats.write_failures == 1
    assert sink.stats.last_error == "ENOSPC: No space left on device"
    drain(sink)  # the disk has room again: its own pending entries first
    pending = client.xpending(stream_key(prefix), "sink")
    assert pending["pending"] == 0
    assert ids(list(read_log(tmp_path / "out"))) == Counter({f"e:e{i}": 1 for i in range(4)})
