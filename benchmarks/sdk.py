"""Benchmark of the Python SDK: in-process decisions, batches, and the HTTP client's overhead.

``python -m benchmarks.sdk --bundle var/bundles/demo`` measures, in one run:

* local mode: ``Decider.decide`` alone (the floor), ``Client(mode="local").decide`` with the
  visit cache off, and with it on for a repeated visit (a cache hit);
* ``decide_many`` in local mode at batch sizes 1, 16, 64 and 256 (the client cuts batches into
  chunks of 100), as rows per second and microseconds per row, beside ``Decider.decide_many``;
* remote mode against a real server it starts on 127.0.0.1 (``python -m server``, one worker,
  a secret key, rate limits off): ``Client.decide`` with the cache off against a raw
  ``httpx.Client.post`` of the same pre-encoded body, and a raw post plus msgspec decoding,
  each call a new visit so the server's visit cache never answers. The difference of medians is
  the client's overhead (encoding, breaker, coalescing, decoding into Structs).

Calls being compared are interleaved, so a noisy neighbour slows both alike. It prints a table
and writes JSON to ``benchmarks/results/sdk.json``. ``--quick`` (smoke tests) runs a few
hundred calls and writes nothing unless ``--out`` is given. Without ``--bundle`` and without
``var/bundles/demo``, a small bundle is trained first (about half a minute). Numbers from a
shared 2-core machine are noisy: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec

from model_export.inputs.synth import generate
from sdk import Client, Decider, DecideRequest, Decision, load_bundle
from server.security import hash_key

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk_bench_0123456789abcdefghijklmnopqrstuv"
BATCH_SIZES = (1, 16, 64, 256)
T = TypeVar("T")


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered), 2),
        "p99_us": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
        "n": len(ordered),
    }


def _timed(fn: Callable[[T], object], arg: T) -> float:
    """Microseconds of ``fn(arg)``."""
    start = time.perf_counter_ns()
    fn(arg)
    return (time.perf_counter_ns() - start) / 1000


def _visits(n: int, seed: int, prefix: str) -> list[DecideRequest]:
    """Generated visits under unique ids (``prefix``): no two calls share a visit."""
    return [
        msgspec.structs.replace(
            v.request,
            visitor_id=f"{prefix}-{i}",
            session_id=f"{prefix}-s{i}",
        )
        for i, v in enumerate(generate(n, seed=seed))
    ]


# -- local mode -------------------------------------------------------------------------------


def bench_local(bundle_path: Path, n: int) -> dict[str, dict[str, float]]:
    bundle = load_bundle(bundle_path)
    decider = Decider(bundle)
    requests = [v.request for v in generate(512, seed=4242)]
    k = len(requests)
    hot = requests[0]
    with (
        Client(mode="local", bundle=bundle, cache=False) as uncached,
        Client(mode="local", bundle=bundle) as cached,
    ):
        for i in range(300):  # warm caches and onnxruntime
            decider.decide(requests[i % k])
            uncached.decide(requests[i % k])
            cached.decide(hot)
        floor: list[float] = []
        off: list[float] = []
        hit: list[float] = []
        for i in range(n):
            r = requests[i % k]
            floor.append(_timed(decider.decide, r))
            off.append(_timed(uncached.decide, r))
            hit.append(_timed(cached.decide, hot))
        assert cached.cache is not None and cached.cache.hits >= n
    return {
        "decider_decide": _summary(floor),
        "client_decide_cache_off": _summary(off),
        "client_decide_cache_hit": _summary(hit),
    }


def bench_batches(bundle_path: Path, rows: int) -> dict[str, dict[str, float]]:
    bundle = load_bundle(bundle_path)
    decider = Decider(bundle)
    requests = [v.request for v in generate(max(BATCH_SIZES), seed=4343)]
    out: dict[str, dict[str, float]] = {}
    with Client(mode="local", bundle=bundle) as client:
        for size in BATCH_SIZES:
            batch = requests[:size]
            calls = max(20, rows // size)
            for _ in range(max(3, calls // 10)):
                client.decide_many(batch)
                decider.decide_many(batch)
            via_client: list[float] = []
            via_decider: list[float] = []
            for _ in range(calls):
                via_client.append(_timed(client.decide_many, batch))
                via_decider.append(_timed(decider.decide_many, batch))
            c, d = statistics.median(via_client), statistics.median(via_decider)
            out[str(size)] = {
                "client_rows_per_s": round(size / (c / 1e6)),
                "client_per_row_us": round(c / size, 2),
                "decider_per_row_us": round(d / size, 2),
                "calls": calls,
            }
    return out


# -- remote mode ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(bundle_path: Path) -> Iterator[str]:
    """``python -m server`` on 127.0.0.1 with one secret key (``KEY``) and no rate limits."""
    with tempfile.TemporaryDirectory(prefix="tailor-bench-") as tmp:
        keys = {
            "per_key_per_minute": 0,
            "per_ip_per_minute": 0,
            "keys": [
                {
                    "id": "bench",
                    "kind": "secret",
                    "sha256": hash_key(KEY),
                }
            ],
        }
        (Path(tmp) / "keys.json").write_text(json.dumps(keys))
        port = _free_port()
        env = dict(
            os.environ,
            TAILOR_BUNDLE=str(bundle_path),
            TAILOR_DEMO="0",
            TAILOR_KEYS_FILE=str(Path(tmp) / "keys.json"),
            TAILOR_TOKEN_SECRETS=secrets.token_urlsafe(32),  # keys need a visitor token secret
            TAILOR_EVENT_LOG_DIR=str(Path(tmp) / "events"),
            TAILOR_RELOAD_INTERVAL="0",
        )
        log = Path(tmp) / "server.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited:\n{log.read_text()}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready in 30 s:\n{log.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def bench_remote(bundle_path: Path, n: int) -> dict[str, object]:
    warm = 200
    total = warm + n
    client_reqs = _visits(total, seed=5001, prefix="bench-client")
    raw_bodies = [msgspec.json.encode(r) for r in _visits(total, seed=5001, prefix="bench-raw")]
    dec_bodies = [msgspec.json.encode(r) for r in _visits(total, seed=5001, prefix="bench-dec")]
    decoder = msgspec.json.Decoder(Decision)
    content_type = {"content-type": "application/json"}
    headers = {
        "user-agent": "tailor-python",
        "accept": "application/json",
        "authorization": f"Bearer {KEY}",
    }
    via_client: list[float] = []
    via_raw: list[float] = []
    via_raw_decode: list[float] = []
    fallbacks = 0
    with (
        serve(bundle_path) as url,
        Client(url, api_key=KEY, timeout=5, cache=False) as client,
        httpx.Client(base_url=url, timeout=5, headers=headers) as raw,
    ):
        for i in range(total):
            request, body, body2 = client_reqs[i], raw_bodies[i], dec_bodies[i]
            start = time.perf_counter_ns()
            decision = client.decide(request)
            t_client = (time.perf_counter_ns() - start) / 1000
            fallbacks += decision.model_version == "fallback"

            start = time.perf_counter_ns()
            response = raw.post("/v1/decide", content=body, headers=content_type)
            t_raw = (time.perf_counter_ns() - start) / 1000
            if response.status_code != 200:
                raise RuntimeError(f"raw post answered {response.status_code}")

            start = time.perf_counter_ns()
            decoder.decode(raw.post("/v1/decide", content=body2, headers=content_type).content)
            t_decode = (time.perf_counter_ns() - start) / 1000
            if i >= warm:
                via_client.append(t_client)
                via_raw.append(t_raw)
                via_raw_decode.append(t_decode)
    if fallbacks:
        raise RuntimeError(f"{fallbacks} client calls got fallback decisions")
    c, r = _summary(via_client), _summary(via_raw)
    return {
        "client_decide_cache_off": c,
        "httpx_post": r,
        "httpx_post_and_decode": _summary(via_raw_decode),
        "overhead_median_us": round(c["median_us"] - r["median_us"], 2),
        "overhead_ratio": round(c["median_us"] / r["median_us"], 3),
    }


# -- main -------------------------------------------------------------------------------------


def _bundle(path: str | None, workdir: Path) -> Path:
    if path is not None:
        return Path(path)
    demo = ROOT / "var" / "bundles" / "demo"
    if (demo / "manifest.json").is_file():
        return demo
    from model_export.inputs.demo import demo_inputs
    from model_export.training import train

    print("no var/bundles/demo: training a small bundle (3,000 synthetic visits)")
    return train(demo_inputs(n_visitors=3000, name="bench"), workdir / "bench").path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sdk")
    parser.add_argument("--bundle", default=None, help="bundle directory (var/bundles/demo)")
    parser.add_argument("--n", type=int, default=3000, help="calls per measurement")
    parser.add_argument("--remote-n", type=int, default=2000, help="calls per remote measure")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", default=None, help="JSON results (benchmarks/results/sdk.json)")
    args = parser.parse_args(argv)
    n, remote_n, rows = args.n, args.remote_n, 20_000
    if args.quick:
        n, remote_n, rows = 200, 100, 512
    out = args.out or (None if args.quick else "benchmarks/results/sdk.json")

    with tempfile.TemporaryDirectory(prefix="tailor-bench-bundle-") as workdir:
        bundle_path = _bundle(args.bundle, Path(workdir))
        version = load_bundle(bundle_path).version
        local = bench_local(bundle_path, n)
        batches = bench_batches(bundle_path, rows)
        remote = bench_remote(bundle_path, remote_n)

    floor = local["decider_decide"]["median_us"]
    print(
        f"bundle {version}  python {platform.python_version()}  {platform.machine()}  "
        f"{os.cpu_count()} cpus"
    )
    print(f"{'in-process, one visit':<34}{'p50 µs':>10}{'p99 µs':>10}{'÷ decider':>11}")
    for name, r in local.items():
        print(
            f"{name:<34}{r['median_us']:>10.1f}{r['p99_us']:>10.1f}{r['median_us'] / floor:>11.2f}"
        )
    print()
    print(f"{'local decide_many, batch of':<34}{'rows/s':>10}{'µs/row':>10}{'decider µs':>11}")
    for size, b in batches.items():
        print(
            f"{size:<34}{b['client_rows_per_s']:>10,.0f}{b['client_per_row_us']:>10.1f}"
            f"{b['decider_per_row_us']:>11.1f}"
        )
    print()
    print(f"{'remote, one visit (127.0.0.1)':<34}{'p50 µs':>10}{'p99 µs':>10}")
    for name in ("client_decide_cache_off", "httpx_post", "httpx_post_and_decode"):
        summary: dict[str, float] = remote[name]  # type: ignore[assignment]
        print(f"{name:<34}{summary['median_us']:>10.1f}{summary['p99_us']:>10.1f}")
    print(
        f"client overhead over a raw post: {remote['overhead_median_us']} µs at the median "
        f"(x {remote['overhead_ratio']})"
    )
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "bundle": version,
                    "measured_at": datetime.now(UTC).isoformat(),
                    "machine": platform.machine(),
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "quick": args.quick,
                    "results": {"local": local, "decide_many": batches, "remote": remote},
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
