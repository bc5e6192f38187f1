"""Shared state for the load tools: a Redis to run the server against, what the server asked of
it, and what a visitor costs in it.

``benchmarks.run --state memory,redis`` uses :func:`state_backend` to run the same measurement
against the in-memory store and against a ``redis-server`` started here (loopback, no
persistence), and :func:`redis_usage` to count the Redis round trips per decide: every worker
reports the calls it made to Redis in ``/readyz`` (``state.calls``; one call is one round
trip: a command, a pipeline or a script), and ``INFO commandstats`` says which commands.

``python -m benchmarks.state [--visitors N]`` measures Redis memory per visitor: it writes N
realistic profiles (generated visits with their sessions, categories, purchases and
suppressions, encoded as the server stores them) and pins a real decision for a tenth of them
(the visits of the last half hour), reading ``INFO memory`` before and after; it prints the
bytes per profile and per pinned visit and the extrapolation to one million visitors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

from benchmarks._load import DEFAULT_BUNDLE, Server, visits
from sdk.schema import Consent, Event
from server.stores import Pinned, ProfileRecord, updated_by_events, updated_by_visit
from tests.redis_server import RedisServer

STATES = ("memory", "redis")


@contextmanager
def state_backend(name: str, root: Path, workers: int) -> Iterator[tuple[dict[str, str], Any]]:
    """The server environment of state backend ``name`` and its Redis (None for memory)."""
    if name == "memory":
        yield ({"TAILOR_STATE": "per-worker" if workers > 1 else "memory"}, None)
        return
    redis = RedisServer(root / "redis").start()
    try:
        yield ({"TAILOR_REDIS_URL": redis.url, "TAILOR_REDIS_PREFIX": "bench"}, redis)
    finally:
        redis.stop()


def server_calls(server: Server) -> tuple[int, int]:
    """Calls to Redis made by every worker so far, and of those the decides' reads (the calls
    before an answer); ``/readyz`` over new connections until each worker has answered."""
    seen: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + 30
    while len(seen) < server.workers and time.monotonic() < deadline:
        state = httpx.get(f"{server.url}/readyz", timeout=5)
        report = state.json()["state"]
        seen[state.headers["x-tailor-worker"]] = (
            int(report.get("calls", 0)),
            int(report.get("readCalls", 0)),
        )
    return sum(c for c, _ in seen.values()), sum(r for _, r in seen.values())


def commandstats(redis: RedisServer) -> dict[str, int]:
    """Calls per command since Redis started (``INFO commandstats``)."""
    text = redis.command("INFO", "commandstats").decode(errors="replace")
    calls = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line.partition(":")
            values = dict(f.split("=") for f in fields.split(","))
            calls[name.removeprefix("cmdstat_")] = int(values["calls"])
    return calls


def redis_usage(
    before: tuple[tuple[int, int], dict[str, int]],
    after: tuple[tuple[int, int], dict[str, int]],
    decides: int,
) -> dict[str, Any]:
    """Round trips (all of them, and those before an answer: the reads) and commands per
    decide between two ((calls, read calls), commandstats) snapshots. Commands run inside a
    script are counted by Redis too (``evalsha`` and each command it ran)."""
    calls = after[0][0] - before[0][0]
    reads = after[0][1] - before[0][1]
    commands = {k: v - before[1].get(k, 0) for k, v in after[1].items()}
    commands = {k: v for k, v in sorted(commands.items()) if v > 0 and k != "info"}
    return {
        "decides": decides,
        "round_trips": calls,
        "round_trips_per_decide": round(calls / decides, 3) if decides else None,
        "reads_per_decide": round(reads / decides, 3) if decides else None,
        "writes_per_decide": round((calls - reads) / decides, 3) if decides else None,
        "commands_per_decide": {k: round(v / decides, 3) for k, v in commands.items()},
    }


# -- memory per visitor ------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()


def _records(n: int, seed: int) -> list[ProfileRecord]:
    """``n`` profiles as the server would hold them after a few visits and events each."""
    rng = random.Random(seed)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    consent = Consent(personalization=True, storage=True)
    requests = visits(min(n, 5000), seed)
    out = []
    for i in range(n):
        record = None
        when = now
        for s in range(rng.choice((1, 1, 2, 3, 5))):
            request = msgspec.structs.replace(
                requests[(i + s) % len(requests)],
                consent=consent,
                visitor_id=f"v{i}",
                session_id=f"s{i}-{s}",
            )
            when += timedelta(days=rng.random() * 5)
            record = updated_by_visit(record, request, when)
        events = []
        if rng.random() < 0.15:
            events.append(Event(type="conversion", visitor_id=f"v{i}", value=rng.random() * 90))
        if rng.random() < 0.05:
            events.append(Event(type="not_interested", visitor_id=f"v{i}", offer_id="offer-3"))
        if events:
            record = updated_by_events(record, events, when)
        assert record is not None
        out.append(record)
    return out


def _used_memory(redis: RedisServer) -> int:
    text = redis.command("INFO", "memory").decode()
    for line in text.splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise RuntimeError("no used_memory in INFO memory")


async def _fill(url: str, records: list[ProfileRecord], pins: int, payload: bytes) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    ttl = 30 * 86_400_000
    try:
        for start in range(0, len(records), 1000):
            pipe = client.pipeline(transaction=False)
            for i, record in enumerate(records[start : start + 1000], start):
                pipe.set(f"tailor:{{v:v{i}}}:p", _encoder.encode(record), px=ttl)
            await pipe.execute()
        pipe = client.pipeline(transaction=False)
        for i in range(pins):
            pin = Pinned(visit=f"v{i} s{i}-0 11p m1", slots="hero banner", payload=payload)
            pipe.set(f"tailor:{{v:v{i}}}:d", _encoder.encode(pin), px=1_800_000)
        await pipe.execute()
    finally:
        await client.aclose()


def _decision_payload(bundle: Path) -> bytes:
    """A real encoded decision of the bundle (what a pin holds)."""
    from sdk import Decider, load_bundle

    decider = Decider(load_bundle(bundle))
    request = msgspec.structs.replace(
        visits(1, 3)[0], consent=Consent(personalization=True, storage=True)
    )
    return msgspec.json.encode(decider.decide(request))


def memory_per_visitor(visitors: int, bundle: Path, seed: int = 5) -> dict[str, Any]:
    records = _records(visitors, seed)
    payload = _decision_payload(bundle)
    pins = visitors // 10
    with tempfile.TemporaryDirectory(prefix="tailor-redis-mem-") as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            empty = _used_memory(redis)
            asyncio.run(_fill(redis.url, records, 0, payload))
            profiles = _used_memory(redis)
            asyncio.run(_fill(redis.url, [], pins, payload))
            pinned = _used_memory(redis)
        finally:
            redis.stop()
    per_profile = (profiles - empty) / visitors
    per_pin = (pinned - profiles) / pins
    return {
        "visitors": visitors,
        "record_bytes_mean": round(sum(len(_encoder.encode(r)) for r in records) / visitors),
        "redis_bytes_per_profile": round(per_profile),
        "decision_bytes": len(payload),
        "redis_bytes_per_pinned_visit": round(per_pin),
        "per_million_visitors_mib": round(per_profile * 1e6 / 1024**2),
        "per_100k_active_visits_mib": round(per_pin * 1e5 / 1024**2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.state", description=__doc__)
    parser.add_argument("--visitors", type=int, default=100_000)
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    args = parser.parse_args(argv)
    result = memory_per_visitor(args.visitors, Path(args.bundle))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
