"""Micro-benchmark of the in-process decision path.

``python -m benchmarks.decide --bundle var/bundles/demo`` times, on generated visits: the
feature function alone, the ONNX models alone, one ``Decider.decide`` call, and
``decide_many`` over batches of 64. It prints a table of medians and p99 (microseconds per
row) measured in one run, with ratios to the full decide, and writes the same as JSON to
``benchmarks/results/decide.json``. Numbers from a shared 2-core machine are noisy: compare
ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model_export.synth import generate
from sdk import Decider, build_features, load_bundle


def _timings(fn: Callable[[int], object], n: int, per: int = 1) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - start) / 1000 / per)
    return out


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered), 2),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1], 2),
        "n": len(ordered),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decide")
    parser.add_argument("--bundle", default="var/bundles/demo")
    parser.add_argument("--n", type=int, default=5000, help="calls per measurement")
    parser.add_argument("--out", default="benchmarks/results/decide.json")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)
    decider = Decider(bundle)
    visits = generate(512, seed=4242)
    requests = [v.request for v in visits]
    now = datetime.now(UTC)
    rows = np.asarray([build_features(r, None, now).values for r in requests], dtype=np.float32)
    k = len(requests)
    for i in range(200):  # warm caches and onnxruntime
        decider.decide(requests[i % k])

    results = {
        "features": _summary(
            _timings(lambda i: build_features(requests[i % k], None, now), args.n)
        ),
        "onnx_models": _summary(_timings(lambda i: bundle.run(rows[i % k : i % k + 1]), args.n)),
        "decide": _summary(_timings(lambda i: decider.decide(requests[i % k]), args.n)),
        "decide_many_64_per_row": _summary(
            _timings(
                lambda i: decider.decide_many(requests[(i * 64) % 448 : (i * 64) % 448 + 64]),
                max(50, args.n // 64),
                per=64,
            )
        ),
    }
    base = results["decide"]["median_us"]
    print(f"bundle {bundle.version}  python {platform.python_version()}  {platform.machine()}")
    print(f"{'measure':<26}{'median µs':>12}{'p99 µs':>12}{'÷ decide':>10}")
    for name, r in results.items():
        print(
            f"{name:<26}{r['median_us']:>12.1f}{r['p99_us']:>12.1f}{r['median_us'] / base:>10.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "bundle": bundle.version,
                "measured_at": datetime.now(UTC).isoformat(),
                "machine": platform.machine(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
