"""What ``tailor score`` costs: customers scored per second and peak memory, on a real order
history made as large as asked.

``python -m benchmarks.score [--customers N] [--bundle DIR] [--out DIR]`` trains a bundle on the
CDNOW sample (``tests/fixtures/cdnow``, 2,357 customers; its buy-till-you-die models serve every
score at a 273-day horizon) unless ``--bundle`` names one, then repeats the sample's customers
under new ids until there are N (default 100,000), writes them as a CSV export, and times
what ``tailor score`` does with it, step by step: reading the file (the training's ingest),
building the profiles at the cutoff, and :func:`model_export.scoring.score_frame` (after a
warm-up on 2,000) in one process and then in one per CPU, with the peak resident memory of the
process before and after the scoring, and whether both runs wrote the same table.
``--quick`` (smoke tests) scores 5,000.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.run import machine, publish, report_head
from model_export.inputs import ingest, profiles
from model_export.inputs.config import load_config
from model_export.scoring import score_frame
from sdk import load_bundle
from tests import cdnow

REPORT_VERSION = 2
CUTOFF = datetime(1997, 10, 1, tzinfo=UTC)
CONFIG = """name = "cdnow"
seed = 7
cutoff = 1997-10-01T00:00:00Z

[data]
transactions = "orders.csv"
timezone = "UTC"

[predict]
horizon_days = 273
"""


def _orders(customers: int) -> pl.DataFrame:
    """The sample's orders, its customers repeated under new ids until there are
    ``customers``."""
    base = pl.DataFrame(
        {
            "customer_id": [c for c, _, _ in cdnow.orders()],
            "ts": [datetime(d.year, d.month, d.day, tzinfo=UTC) for _, d, _ in cdnow.orders()],
            "amount": [v for _, _, v in cdnow.orders()],
        }
    )
    ids = base["customer_id"].unique().sort()
    copies = -(-customers // len(ids))
    frames = [base.with_columns(pl.col("customer_id") + f"-{k}") for k in range(copies)]
    keep = pl.concat([ids + f"-{k}" for k in range(copies)]).head(customers)
    out = pl.concat(frames).filter(pl.col("customer_id").is_in(keep.implode()))
    out = out.with_row_index("n").with_columns(order_id="o" + pl.col("n").cast(pl.String))
    return out.select("customer_id", "order_id", "ts", "amount")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write(root: Path, customers: int) -> Path:
    """``orders.csv`` of ``customers`` customers and its ``tailor.toml`` in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    _orders(customers).rename({"ts": "timestamp"}).write_csv(root / "orders.csv")
    (root / "tailor.toml").write_text(CONFIG)
    return root / "tailor.toml"


def _train(root: Path) -> Path:
    from model_export.inputs.customer import customer_inputs
    from model_export.training import train

    config = _write(root, len({c for c, _, _ in cdnow.orders()}))
    out = root / "bundle"
    train(customer_inputs(load_config(config)), out)
    return out


def measure(customers: int, bundle_dir: Path | None, tmp: Path) -> dict[str, Any]:
    """The run's report: one scoring in one process, then one in one process per CPU (the
    default from 50,000 customers), both on the same frame."""
    bundle_dir = bundle_dir or _train(tmp / "sample")
    bundle = load_bundle(bundle_dir)
    config = load_config(_write(tmp / "big", customers))
    started = time.perf_counter()
    tx = ingest.read_all(config)["transactions"].frame
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    frame = profiles.build_profiles(tx, CUTOFF, include_visitors=False)
    frame = frame.filter(pl.col("purchases") > 0)
    profile_s = time.perf_counter() - started
    score_frame(bundle, frame.head(2000), CUTOFF, workers=1)  # warm-up
    before = _peak_mib()
    runs = []
    tables = []
    for workers in sorted({1, os.cpu_count() or 1}):
        started = time.perf_counter()
        run = score_frame(bundle, frame, CUTOFF, workers=workers)
        took = time.perf_counter() - started
        tables.append(run.table)
        runs.append(
            {
                "workers": workers,
                "score_s": round(took, 2),
                "customers_per_s": round(run.table.height / took),
                "us_per_customer": round(took / run.table.height * 1e6, 1),
                "one_million_s_extrapolated": round(took / run.table.height * 1e6, 1),
            }
        )
    if len(runs) > 1:
        runs[-1]["speedup"] = round(runs[0]["score_s"] / runs[-1]["score_s"], 2)
    return {
        "customers": frame.height,
        "orders": tx.height,
        "bundle": bundle.manifest.model_version,
        "sources": run.sources,
        "read_s": round(read_s, 2),
        "profiles_s": round(profile_s, 2),
        "runs": runs,
        "identical_tables": all(t.equals(tables[0]) for t in tables),
        "peak_rss_mib_before": round(before, 1),
        "peak_rss_mib_after": round(_peak_mib(), 1),
    }


def markdown(report: dict[str, Any]) -> str:
    r = report["result"]
    lines = [
        f"# tailor score - {report['measured_at']}",
        "",
        f"- Machine: {report['machine']['cpu']}, {report['machine']['cpus']} CPUs",
        f"- Bundle: {r['bundle']}; scores from {r['sources']}",
        f"- {r['customers']:,} customers, {r['orders']:,} orders: read {r['read_s']} s, "
        f"profiles {r['profiles_s']} s",
        f"- Peak RSS MiB of the scoring process: {r['peak_rss_mib_before']} before scoring, "
        f"{r['peak_rss_mib_after']} after",
        f"- Every run wrote the same table: {r['identical_tables']}",
        "",
        "| workers | score s | customers/s | µs/customer | 1M (extrapolated) s | speedup |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for run in r["runs"]:
        lines.append(
            f"| {run['workers']} | {run['score_s']} | {run['customers_per_s']:,} | "
            f"{run['us_per_customer']} | {run['one_million_s_extrapolated']} | "
            f"{run.get('speedup', '')} |"
        )
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.score", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--out", default=None, help="report directory (benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5,000 customers")
    args = parser.parse_args(argv)
    if args.customers < 1:
        parser.error("--customers must be positive")
    customers = 5000 if args.quick else args.customers
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="tailor-score-") as tmp:
        result = measure(customers, args.bundle, Path(tmp))
    report = {**report_head(REPORT_VERSION, started, machine()), "result": result}
    publish(report, markdown(report), name="score", out=args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
