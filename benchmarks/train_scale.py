"""Scale benchmark of the training data path: ingest, profiles, RFM, requests and features.

``python -m benchmarks.train_scale --rows 1000000 10000000`` writes, per size, a synthetic
transactions export to parquet with vectorised numpy/polars (about ten orders per customer,
skewed so some customers buy far more; timestamps as ISO 8601 text, the costly case of a CSV
turned parquet), then runs the stages in a fresh subprocess per size and records the wall time
of each stage, the process's peak RSS after each stage, and the peak RSS of the whole child
(from ``os.wait4``, i.e. the child's own ``ru_maxrss``, which ``getrusage(RUSAGE_CHILDREN)``
would report as a running maximum over all children). It prints a table and writes JSON to
``benchmarks/results/train_scale.json``.

Stages run in order; ``--stages`` picks a subset (each needs the ones before it). More stages,
e.g. model fitting, plug in without editing this file: a module passed with ``--plugin`` is
imported in the worker and calls :func:`register_stage`::

    from benchmarks.train_scale import State, register_stage

    def fit(state: State) -> dict[str, object]:
        ...  # state.artifacts holds "ingest", "profiles", "rfm", "requests", "features"
        return {"rows": n}

    register_stage("fit", fit)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from model_export.fit.history import PREDICT_FEATURES
from model_export.fit.rfm import rfm_def, rfm_scores
from model_export.fit.rows import columns
from model_export.fit.scores import fit_churn
from model_export.fit.segments import SEGMENT_FEATURES, TrainConfig, fit_segments
from model_export.inputs.config import Columns, DataConfig, TrainingConfig, TransactionColumns
from model_export.inputs.ingest import read_transactions
from model_export.inputs.profiles import build_profiles, profile_requests
from sdk.features import FEATURE_NAMES, build_features

END = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 730
CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "books")
CHANNELS = ("web", "app", "store")


@dataclass
class State:
    """What the stages share: the config, the cutoff, and each stage's output by name."""

    config: TrainingConfig
    cutoff: datetime
    now: datetime
    artifacts: dict[str, Any] = field(default_factory=dict)


Stage = Callable[[State], dict[str, Any]]
#: The stages, in the order they run.
STAGES: dict[str, Stage] = {}


def register_stage(name: str, fn: Stage) -> None:
    """Add a stage after the existing ones (or replace one of the same name)."""
    STAGES[name] = fn


def _ingest(state: State) -> dict[str, Any]:
    result = read_transactions(state.config, now=state.now)
    state.artifacts["ingest"] = result
    return {"rows": result.report.rows_accepted, "rejected": sum(result.report.rejected.values())}


def _profiles(state: State) -> dict[str, Any]:
    frame = build_profiles(state.artifacts["ingest"].frame, state.cutoff)
    state.artifacts["profiles"] = frame
    return {"rows": frame.height}


def _rfm(state: State) -> dict[str, Any]:
    profiles = state.artifacts["profiles"]
    edges = rfm_def(profiles)
    scores = rfm_scores(profiles, edges)
    state.artifacts["rfm"] = (edges, scores)
    return {"rows": scores.height, "codes": scores["rfm_code"].n_unique()}


def _requests(state: State) -> dict[str, Any]:
    requests = profile_requests(state.artifacts["profiles"], state.cutoff)
    state.artifacts["requests"] = requests
    return {"rows": len(requests)}


def _features(state: State) -> dict[str, Any]:
    requests = state.artifacts["requests"]
    matrix = np.empty((len(requests), len(FEATURE_NAMES)), dtype=np.float32)
    for i, request in enumerate(requests):
        matrix[i] = build_features(request, None, state.cutoff).values
    state.artifacts["features"] = matrix
    return {"rows": len(requests)}


def _segments(state: State) -> dict[str, Any]:
    """Fit the segment model as training does: k in 3..8 chosen on a 5,000-row sample by
    silhouette and stability over 3 seeds, then KMeans on every customer."""
    x = state.artifacts["features"].astype(np.float64)[:, columns(SEGMENT_FEATURES)]
    pipe, metrics = fit_segments(x, TrainConfig(seed=7, silhouette_sample=5000, seeds=3))
    state.artifacts["segments"] = pipe
    return {"rows": len(x), "k": int(metrics["segments_k"])}


def _churn(state: State) -> dict[str, Any]:
    """Fit the churn model on every buyer (labels: no purchase in the last 90 days, a proxy
    that keeps the benchmark about fitting cost, not accuracy)."""
    x = state.artifacts["features"].astype(np.float64)[:, columns(PREDICT_FEATURES)]
    recency = x[:, PREDICT_FEATURES.index("recency_days")]
    buyers = x[:, PREDICT_FEATURES.index("purchases_log")] > 0
    y = recency[buyers] > 90
    fit_churn(x[buyers], y, seed=7)
    return {"rows": int(buyers.sum())}


for _name, _fn in (
    ("ingest", _ingest),
    ("profiles", _profiles),
    ("rfm", _rfm),
    ("requests", _requests),
    ("features", _features),
    ("segments", _segments),
    ("churn", _churn),
):
    register_stage(_name, _fn)


# --- data ------------------------------------------------------------------------------------


def generate(path: Path, rows: int, customers: int, seed: int = 7) -> None:
    """Write ``rows`` transactions of ``customers`` customers to ``path`` (parquet)."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, customers)
    customer = rng.choice(customers, size=rows, p=weights / weights.sum())
    start = int((END - timedelta(days=DAYS)).timestamp())
    seconds = rng.integers(start, int(END.timestamp()), size=rows)
    frame = pl.DataFrame(
        {
            "c": customer,
            "t": seconds,
            "amount": np.round(rng.lognormal(3.5, 0.8, rows), 2),
            "quantity": 1 + rng.poisson(0.5, rows),
            "k": rng.integers(0, len(CATEGORIES), rows),
            "h": rng.integers(0, len(CHANNELS), rows),
        }
    )
    frame = frame.select(
        customer_id=pl.lit("C") + pl.col("c").cast(pl.String).str.zfill(8),
        order_id=pl.format("O{}", pl.int_range(pl.len())),
        timestamp=pl.from_epoch("t", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        amount=pl.col("amount"),
        quantity=pl.col("quantity"),
        category=pl.col("k").replace_strict(list(range(len(CATEGORIES))), list(CATEGORIES)),
        channel=pl.col("h").replace_strict(list(range(len(CHANNELS))), list(CHANNELS)),
    )
    frame.write_parquet(path)


def _config(path: Path) -> TrainingConfig:
    columns = TransactionColumns(quantity="quantity", category="category", channel="channel")
    return TrainingConfig(
        data=DataConfig(transactions=str(path)), columns=Columns(transactions=columns)
    )


# --- worker and driver -------------------------------------------------------------------------


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(path: Path, stages: list[str], out: Path) -> None:
    state = State(config=_config(path), cutoff=END, now=END)
    results = []
    for name in stages:
        start = time.perf_counter()
        extra = STAGES[name](state)
        seconds = time.perf_counter() - start
        results.append(
            {"stage": name, "seconds": round(seconds, 3), "rss_mib": round(_rss_mib(), 1), **extra}
        )
    out.write_text(json.dumps(results))


def _run_child(args: list[str]) -> tuple[int, float, float]:
    """Run ``python -m benchmarks.train_scale ARGS``; (exit status, wall s, child peak RSS MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.train_scale", *args])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_scale")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--orders-per-customer", type=float, default=10.0)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in order")
    parser.add_argument("--plugin", action="append", default=[], help="module adding stages")
    parser.add_argument("--workdir", default=None, help="where the data goes (default: a tmp dir)")
    parser.add_argument("--out", default="benchmarks/results/train_scale.json")
    parser.add_argument("--worker", choices=["generate", "run"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for module in args.plugin:
        importlib.import_module(module)
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {list(STAGES)}")

    if args.worker == "generate":
        rows = args.rows[0]
        generate(Path(args.path), rows, max(1, round(rows / args.orders_per_customer)))
        return 0
    if args.worker == "run":
        _worker(Path(args.path), stages, Path(args.result))
        return 0

    runs = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"transactions-{rows}.parquet"
            common = ["--rows", str(rows), "--orders-per-customer", str(args.orders_per_customer)]
            status, gen_s, _ = _run_child(["--worker", "generate", "--path", str(path), *common])
            if status:
                return status
            result = Path(tmp) / f"result-{rows}.json"
            plugins = [x for m in args.plugin for x in ("--plugin", m)]
            status, wall, peak = _run_child(
                ["--worker", "run", "--path", str(path), "--result", str(result),
                 "--stages", ",".join(stages), *plugins, *common]
            )  # fmt: skip
            if status:
                return status
            runs.append(
                {
                    "rows": rows,
                    "customers": max(1, round(rows / args.orders_per_customer)),
                    "parquet_mib": round(path.stat().st_size / 2**20, 1),
                    "generate_s": round(gen_s, 2),
                    "child_wall_s": round(wall, 2),
                    "peak_rss_mib": round(peak, 1),
                    "stages": json.loads(result.read_text()),
                }
            )
            path.unlink()
    report = {
        "benchmark": "train_scale",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "polars": pl.__version__,
            "numpy": np.__version__,
        },
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    _print(runs)
    print(f"\nwrote {out}")
    return 0


def _print(runs: list[dict[str, Any]]) -> None:
    """One line per stage: input size, stage, seconds, output rows and their rate, RSS."""
    header = (
        f"{'input rows':>11} {'stage':<10} {'seconds':>8} {'out rows':>11} {'out rows/s':>11} "
        f"{'RSS MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        for s in run["stages"]:
            rows = s.get("rows", 0)
            rate = f"{rows / s['seconds']:>11,.0f}" if s["seconds"] else f"{'-':>11}"
            print(
                f"{run['rows']:>11,} {s['stage']:<10} {s['seconds']:>8.2f} {rows:>11,} {rate} "
                f"{s['rss_mib']:>8.0f}"
            )
        total = sum(s["seconds"] for s in run["stages"])
        print(
            f"{run['rows']:>11,} {'total':<10} {total:>8.2f} {'':>11} {'':>11} "
            f"{run['peak_rss_mib']:>8.0f}  peak of the child; generate {run['generate_s']:.1f} s, "
            f"parquet {run['parquet_mib']} MiB"
        )


if __name__ == "__main__":
    raise SystemExit(main())
