"""Smoke test of the soak harness: ``python -m benchmarks.soak --quick`` runs against a real
server and writes a well-formed report. No speed or memory threshold is asserted: a 6-second
run says nothing about either, only that the harness measures and reports.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.benchmarks._run import run_module


def test_quick_soak_writes_a_well_formed_report(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["--quick", "--workers", "1", "--duration", "6", "--sample", "2", "--rate", "100"]
    run_module(
        "benchmarks.soak", *args, "--bundle", str(bundle_dir), "--out", str(out), timeout=150
    )

    report = json.loads((out / "soak.json").read_text())
    assert report["report_version"] == 1 and report["kind"] == "soak"
    assert {"config", "machine", "windows", "totals", "memory_kib", "verdict"} <= set(report)
    assert report["machine"]["cpus"] > 0 and report["machine"]["python"]
    config = report["config"]
    assert config["rate_from"] == "--rate" and config["rate_per_s"] == 100
    assert report["ladder"] is None
    assert config["state"] == "memory" and report["server"]["state_backend"] == "memory"

    windows = report["windows"]
    assert len(windows) == config["windows"] == 3  # 6 s in windows of 2 s
    assert [w["end_s"] for w in windows] == [2, 4, 6]
    for w in windows:
        assert w["sent"] > 0 and w["ok"] == w["sent"] and w["errors"] == 0
        assert 0 < w["p50_ms"] <= w["p99_ms"] <= w["max_ms"]
        pids = [key for key in w["rss_kib"] if key != "total"]
        assert pids and all(w["rss_kib"][pid] > 0 for pid in pids)
        assert w["rss_kib"]["total"] == sum(w["rss_kib"][pid] for pid in pids)
    totals = report["totals"]
    assert totals["requests"] == sum(w["sent"] for w in windows) == 600
    assert totals["errors"] == 0 and totals["ok"] == 600

    memory = report["memory_kib"]
    for moment in ("ready", "after_warmup", "start", "end"):
        assert memory[moment]["total"] > 0
    assert set(memory["processes"].values()) == {"worker"}  # one worker: a single process

    verdict = report["verdict"]
    assert verdict["rss_start_kib"] == memory["start"]["total"]
    assert verdict["rss_end_kib"] == windows[-1]["rss_kib"]["total"]
    assert isinstance(verdict["slope_kib_per_min"], float)
    assert math.isfinite(verdict["slope_kib_per_min"])
    assert verdict["threshold_kib_per_min"] > 0 and verdict["rule"]
    assert isinstance(verdict["growth"], bool) and isinstance(verdict["ok"], bool)
    assert verdict["errors"] == 0 and verdict["process_changes"] == []
    assert verdict["server_log"]["tracebacks"] == 0

    markdown = (out / "soak.md").read_text()
    assert "Verdict" in markdown and "KiB/min" in markdown


def test_quick_soak_against_redis_shares_state_between_workers(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """``--state redis`` starts a redis-server for the run and serves both workers from it."""
    out = tmp_path / "report"
    args = ["--quick", "--workers", "2", "--duration", "4", "--sample", "2", "--rate", "100"]
    run_module(
        "benchmarks.soak", *args, "--state", "redis", "--bundle", str(bundle_dir),
        "--out", str(out), timeout=150,
    )  # fmt: skip
    report = json.loads((out / "soak.json").read_text())
    assert report["config"]["state"] == "redis"
    assert report["server"]["state_backend"] == "redis"  # what the server's /readyz said
    assert report["totals"]["errors"] == 0 and report["totals"]["ok"] == 400
    assert "redis-server shared by the workers" in (out / "soak.md").read_text()
