"""Where a request's time goes inside the server process, without sockets or uvicorn.

``python -m benchmarks.asgi [--bundle DIR] [--n 3000] [--out FILE] [--quick]`` builds the
server's ASGI app as ``python -m server`` does (load-test keys, rate limits off, event log in a
temporary directory, demo off), runs its lifespan, and calls it directly, one request at a
time, timing each call with ``perf_counter_ns``:

* ``healthz``: ``GET /healthz`` (the trivial route ``benchmarks.run`` uses as its ceiling);
* ``decide``: ``POST /v1/decide`` with the load mix of :func:`benchmarks._load.decide_bodies`
  and fresh visitor and session ids (the full path: keys, consent, profile, decision, event
  log, metrics, visit cache);
* ``decide_cache_hit``: the same visit again (answered from the visit cache);
* ``decider``: ``Decider.decide`` alone on the same visits, in the same process.

It prints medians, p99 and maxima in microseconds, the garbage collections each measure set
off (young, middle, full: the app runs with the server's own collector settings, so this shows
whether serving requests makes the collector run at all), and the share of ``decide`` that is
the decision itself, and writes ``benchmarks/results/asgi.json``. This is the server's own CPU
per request; ``benchmarks.run`` measures the same under a load generator, through the network
stack. ``--state redis`` serves from a ``redis-server`` started for the run (loopback, no
persistence), as ``benchmarks.run --state redis`` does: the ``state-read`` and ``state-write``
stages then include the round trips (the time waited for Redis as well as the client's work).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from benchmarks._load import DEFAULT_BUNDLE, Body, decide_bodies, keys_config
from benchmarks.decide import _summary
from benchmarks.state import STATES, state_backend

Message = dict[str, Any]


def _scope(path: str, query: bytes, headers: list[tuple[bytes, bytes]], method: str) -> Message:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _call(app: Any, scope: Message, body: bytes) -> list[Message]:
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if delivered:  # the app asks again only to watch for a disconnect
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    out: list[Message] = []

    async def send(message: Message) -> None:
        out.append(message)

    await app(scope, receive, send)
    return out


def _stages(header: bytes) -> dict[str, float]:
    """The stages of a ``Server-Timing`` header in microseconds (``read;dur=0.02, ...``)."""
    out: dict[str, float] = {}
    for part in header.decode("latin-1").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if name and duration:
            out[name] = float(duration) * 1000
    return out


def _stage_summary(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage of the decides' Server-Timing (and ``outside``: the middleware, routing and
    response around the handler, ``total`` less the stages): median, p99 and the share of the
    median total, in microseconds."""
    names = list(dict.fromkeys(name for s in samples for name in s))
    for s in samples:
        s["outside"] = s.get("total", 0.0) - sum(v for k, v in s.items() if k != "total")
    names.insert(len(names) - 1 if "total" in names else len(names), "outside")
    total = statistics.median(s.get("total", 0.0) for s in samples) if samples else 0.0
    out: dict[str, dict[str, float]] = {}
    for name in names:
        got = sorted(s.get(name, 0.0) for s in samples)
        median = statistics.median(got)
        out[name] = {
            "median_us": round(median, 1),
            "p99_us": round(got[min(len(got) - 1, int(len(got) * 0.99))], 1),
            "share": round(median / total, 3) if total else 0.0,
        }
    return out


def _collections() -> list[int]:
    """Garbage collections run so far in this process, per generation (young, middle, full)."""
    return [generation["collections"] for generation in gc.get_stats()]


async def _time(fn: Callable[[int], Awaitable[None]], n: int, offset: int) -> dict[str, Any]:
    for i in range(min(300, n)):  # warm up
        await fn(offset + i)
    samples = []
    before = _collections()
    for i in range(n):
        start = time.perf_counter_ns()
        await fn(offset + 10_000 + i)
        samples.append((time.perf_counter_ns() - start) / 1000)
        if i % 50 == 49:  # let the loop run its housekeeping, as a server's does between
            await asyncio.sleep(0)  # requests (else cancelled timeouts pile up: 2 per request)
    after = _collections()
    summary: dict[str, Any] = dict(_summary(samples))
    summary["max_us"] = round(max(samples), 2)
    summary["gc_collections"] = [b - a for a, b in zip(before, after, strict=True)]
    return summary


async def measure(bundle: str, n: int, tmp: Path) -> dict[str, Any]:
    """Every measure of the module docstring."""
    (tmp / "keys.json").write_text(json.dumps(keys_config()))
    os.environ.update(
        TAILOR_BUNDLE=bundle,
        TAILOR_KEYS_FILE=str(tmp / "keys.json"),
        TAILOR_TOKEN_SECRETS=secrets.token_urlsafe(32),  # keys need a visitor token secret
        TAILOR_EVENT_LOG_DIR=str(tmp / "events"),
        TAILOR_DEMO="0",
        TAILOR_RELOAD_INTERVAL="0",
        TAILOR_NEW_PROFILES_PER_MINUTE="0",  # one caller stands for many visitors
    )
    from sdk import Decider, load_bundle
    from sdk.schema import request_decoder
    from server.app import create_app
    from server.settings import Settings

    app: Any = create_app(Settings.from_env())  # called with plain dicts, as a server does
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started}")
    pool: list[Body] = decide_bodies(400)

    def request(
        i: int, visitor: bytes | None = None, token: bytes | None = None
    ) -> tuple[Message, bytes]:
        b = pool[i % len(pool)]
        body = b.head + (visitor or f"asgi-v{i}".encode()) + b.mid + f"asgi-s{i}".encode() + b.tail
        if token is not None:  # the visitor token a public key's decision issued
            body = body[:-1] + b',"visitorToken":"' + token + b'"}'
        path, _, query = b.path.partition("?")
        headers = [(k.lower().encode(), v.encode()) for k, v in b.headers.items()]
        headers.append((b"content-length", str(len(body)).encode()))
        return _scope(path, query.encode(), headers, "POST"), body

    #: each fresh decide's stages, from its Server-Timing header (milliseconds)
    stages: list[dict[str, float]] = []

    async def decide(i: int) -> None:
        scope, body = request(i)
        out = await _call(app, scope, body)
        if out[0]["status"] != 200:
            raise RuntimeError(f"decide answered {out[0]['status']}: {out[1]['body'][:300]!r}")
        stages.append(_stages(dict(out[0]["headers"]).get(b"server-timing", b"")))

    async def healthz(i: int) -> None:
        out = await _call(app, _scope("/healthz", b"", [], "GET"), b"")
        if out[0]["status"] != 200:
            raise RuntimeError(f"/healthz answered {out[0]['status']}")

    #: the visitor id each warm-up visit was decided under, and its token (public keys with
    #: storage consent get a new id and a token, which the tag then sends back)
    warm: dict[int, tuple[bytes, bytes | None]] = {}

    async def warm_up(i: int) -> None:
        scope, body = request(i)
        out = await _call(app, scope, body)
        if out[0]["status"] != 200:
            raise RuntimeError(f"decide answered {out[0]['status']}: {out[1]['body'][:300]!r}")
        decision = json.loads(out[1]["body"])
        token = decision.get("visitorToken")
        warm[i] = (decision["visitorId"].encode(), token.encode() if token else None)

    async def decide_again(i: int) -> None:
        scope, body = request(i % 200, *warm[i % 200])  # visits decided during the warm-up
        out = await _call(app, scope, body)
        headers = dict(out[0]["headers"])
        if out[0]["status"] != 200 or headers.get(b"x-tailor-cache") != b"hit":
            raise RuntimeError("a repeated visit was not a visit-cache hit")

    try:
        results = {
            "healthz": await _time(healthz, n, 0),
            "decide": await _time(decide, n, 1_000_000),
        }
        del stages[: len(stages) - n]  # the warm-up's
        for i in range(200):
            await warm_up(i)
        results["decide_cache_hit"] = await _time(decide_again, n, 0)
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await lifespan
    decider = Decider(load_bundle(bundle, verify_parity=False))
    visits = [request_decoder.decode(request(i)[1]) for i in range(400)]

    async def decide_alone(i: int) -> None:
        decider.decide(visits[i % len(visits)])

    results["decider"] = await _time(decide_alone, n, 0)
    return {
        "report_version": 2,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle": decider.bundle.version,
        "calls_per_measure": n,
        "results": results,
        "decide_stages": _stage_summary(stages),
        "decide_over_healthz": round(
            results["decide"]["median_us"] / results["healthz"]["median_us"], 2
        ),
        "decider_share_of_decide": round(
            results["decider"]["median_us"] / results["decide"]["median_us"], 2
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asgi")
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    parser.add_argument("--n", type=int, default=3000, help="calls per measure")
    parser.add_argument("--out", default="benchmarks/results/asgi.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 calls per measure")
    parser.add_argument(
        "--state", choices=STATES, default="memory", help="where visitor state lives"
    )
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="tailor-asgi-") as tmp,
        state_backend(args.state, Path(tmp), 1) as (env, _),
    ):
        os.environ.update(env)
        report = asyncio.run(measure(args.bundle, 50 if args.quick else args.n, Path(tmp)))
    report["state"] = args.state
    print(f"{'in-process, per request':<26}{'median µs':>12}{'p99 µs':>12}{'max µs':>12}  gc runs")
    for name, r in report["results"].items():
        runs = "/".join(str(c) for c in r["gc_collections"])
        print(f"{name:<26}{r['median_us']:>12.1f}{r['p99_us']:>12.1f}{r['max_us']:>12.1f}  {runs}")
    print(f"{'fresh decide, Server-Timing':<26}{'median µs':>12}{'p99 µs':>12}{'share':>12}")
    for name, r in report["decide_stages"].items():
        print(f"{name:<26}{r['median_us']:>12.1f}{r['p99_us']:>12.1f}{r['share']:>12.1%}")
    print(
        f"state {args.state}: decide / healthz = {report['decide_over_healthz']:.2f}; "
        "the decision itself is "
        f"{report['decider_share_of_decide']:.0%} of a decide request"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
