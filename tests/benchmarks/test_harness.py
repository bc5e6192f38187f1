"""Smoke tests of the load tools. Benchmarks are not tests: nothing here asserts a speed, only
that the harness runs and reports.

``python -m benchmarks.run --quick`` writes a well-formed report (it needs Debian's ``wrk``,
which ``make test`` installs), and a headless locust run with both user classes against a real
server exits 0 with no failures. Both run as subprocesses, which keeps locust's gevent
monkey-patching out of pytest's process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._load import serve
from tests.benchmarks._run import run_module
from tests.conftest import ROOT


def test_quick_run_writes_a_well_formed_report(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["--quick", "--workers", "1", "--duration", "1", "--bundle", str(bundle_dir)]
    run_module("benchmarks.run", *args, "--out", str(out), timeout=150)

    report = json.loads((out / "run.json").read_text())
    assert report["report_version"] == 2
    assert {"machine", "config", "healthz", "decide", "ratio", "latency", "server"} <= set(report)
    machine = report["machine"]
    assert machine["cpus"] > 0 and machine["cpu"] and machine["python"]
    assert machine["versions"]["uvicorn"] and machine["versions"]["litestar"]
    assert machine["git_commit"] is None or len(machine["git_commit"]) == 40
    for endpoint in ("healthz", "decide"):
        result = report[endpoint]
        assert result["max_per_s"] > 0
        assert result["at_connections"] in [s["connections"] for s in result["steps"]]
        for step in result["steps"]:
            assert step["requests"] > 0 and step["requests_per_s"] > 0
            assert 0 < step["p50_ms"] <= step["p99_ms"] <= step["max_ms"]
    assert 0 < report["ratio"] < 2
    assert report["ratio"] == round(
        report["decide"]["max_per_s"] / report["healthz"]["max_per_s"], 3
    )
    assert [row["fraction"] for row in report["latency"]] == [0.5, 0.7, 0.9]
    for row in report["latency"]:
        assert row["achieved_per_s"] > 0 and row["ok"] > 0 and row["errors"] == 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert 0 <= row["cache_hit_share"] <= 1
        cores = row["cpu_cores"]
        assert cores["server"] > 0 and cores["other"] >= 0
        assert cores["machine"] >= cores["server"] - 0.05  # the server is part of the machine
    server = report["server"]
    assert server["worker_pids_seen"] == 1
    assert server["memory_mib"]["end"]["total"] > 0 and server["event_log_records"] > 0
    assert server["log"]["tracebacks"] == 0
    markdown = (out / "run.md").read_text()
    assert "decide / healthz" in markdown and machine["cpu"] in markdown


def test_locust_runs_both_user_classes_without_failures(bundle_dir: Path, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        TAILOR_LOAD_TAG_WEIGHT="1",
        TAILOR_LOAD_BACKEND_WEIGHT="1",
        TAILOR_LOAD_TAG_THINK="0.1,0.3",
        TAILOR_LOAD_BACKEND_THINK="0.1,0.3",
    )
    prefix = tmp_path / "locust"
    with serve(bundle_dir, tmp_path / "server") as server:
        cmd = [sys.executable, "-m", "locust", "-f", "benchmarks/locustfile.py", "--headless"]
        cmd += ["--users", "2", "--spawn-rate", "2", "--run-time", "5s", "--host", server.url]
        cmd += ["--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert server.log_problems()["tracebacks"] == 0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    with open(f"{prefix}_stats.csv", newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    assert {"/v1/decide (tag)", "/v1/decide/batch (backend)"} <= set(rows)
    assert all(row["Failure Count"] == "0" for row in rows.values()), rows
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert Path(f"{prefix}.html").stat().st_size > 0


def test_decide_micro_benchmark_reports_every_stage(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "decide.json"
    args = ["--quick", "--bundle", str(bundle_dir), "--out", str(out)]
    assert "decide / onnx_fused" in run_module("benchmarks.decide", *args, timeout=300)

    report = json.loads(out.read_text())
    assert report["report_version"] == 3 and report["fused_graph"] is True
    results = report["results"]
    stages = ["enrichment", "features", "onnx_fused", "onnx_separate", "rules_policy"]
    for name in [*stages, "encoding", "decide"]:
        r = results[name]
        assert r["n"] == 200 and 0 < r["median_us"] <= r["p99_us"], name
    assert set(results["decide_many_per_row"]) == {"1", "8", "64"}
    for size, r in results["decide_many_per_row"].items():
        assert 0 < r["median_us"] <= r["p99_us"], size
    # a decision includes its features and its model run
    assert results["decide"]["median_us"] > results["onnx_fused"]["median_us"]
    in_context = results["in_context"]
    assert set(in_context) == {"features", "onnx_fused", "rules_policy", "rest"}
    for stage, r in in_context.items():
        assert r["n"] == 200 and 0 < r["median_us"] <= r["p99_us"], stage
    targets = report["targets"]
    ratio = results["decide"]["median_us"] / results["onnx_fused"]["median_us"]
    assert targets["decide_over_onnx_fused"] == round(ratio, 2)
    assert targets["decide_over_onnx_fused_met"] == (ratio <= 5.0)
    p99 = results["decide"]["p99_us"] / results["onnx_fused"]["median_us"]
    assert targets["decide_p99_over_onnx_fused"] == round(p99, 2)
    assert targets["decide_p99_over_onnx_fused_met"] == (p99 <= 15.0)
    assert targets["batch_256_per_row_us"] is None  # the quick run stops at batches of 64
    # the path hashing takes, timed against the reference, and the caches on fresh visitors
    assert report["hashing"] in ("compiled", "python")
    assert results["hash_unit"]["n"] == 200 and results["hash_unit_python"]["n"] == 200
    rates = report["cache_hit_rates"]
    assert rates["visitors"] == {"distinct": 200, "decides": 200}
    for cache in ("referrer", "device"):
        c = rates[cache]
        assert c["hits"] + c["misses"] == 200 and c["misses"] >= 1
        assert c["rate"] == round(c["hits"] / 200, 4)
    # the decision plan's memos, each counted on the same fresh visitors
    plan = {k: v for k, v in rates.items() if k.startswith("plan ")}
    assert {"plan lifecycle", "plan eligibility", "plan slot targeting"} <= set(plan)
    for c in plan.values():
        assert c["misses"] >= 1 and c["rate"] == round(c["hits"] / (c["hits"] + c["misses"]), 4)
    assert plan["plan eligibility"]["hits"] + plan["plan eligibility"]["misses"] == 200


def test_in_process_asgi_benchmark_reports_each_request_kind(
    bundle_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "asgi.json"
    args = ["--quick", "--bundle", str(bundle_dir), "--out", str(out)]
    assert "decide / healthz" in run_module("benchmarks.asgi", *args, timeout=300)
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"healthz", "decide", "decide_cache_hit", "decider"}
    for name, r in results.items():
        assert r["n"] == 50 and 0 < r["median_us"] <= r["p99_us"] <= r["max_us"], name
        assert len(r["gc_collections"]) == 3 and min(r["gc_collections"]) >= 0, name
    # a fresh decide does all the decider does and more; a trivial route does neither
    assert results["decide"]["median_us"] > results["decider"]["median_us"]
    assert results["decide"]["median_us"] > results["healthz"]["median_us"]
    assert report["decide_over_healthz"] == round(
        results["decide"]["median_us"] / results["healthz"]["median_us"], 2
    )
    # each stage of a fresh decide, from its Server-Timing header, and what lies outside them
    stages = report["decide_stages"]
    assert list(stages) == [
        "auth", "read", "decode", "state-read", "decide", "encode", "state-write", "log",
        "metrics", "outside", "total",
    ]  # fmt: skip
    assert stages["total"]["share"] == 1.0
    assert all(0 <= s["median_us"] <= s["p99_us"] for s in stages.values())
    inside = sum(s["median_us"] for k, s in stages.items() if k != "total")
    assert inside == pytest.approx(stages["total"]["median_us"], rel=0.5)


def test_in_process_asgi_benchmark_with_redis_times_the_round_trips(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """``--state redis`` starts its own redis-server and serves from it: the write stage of a
    fresh decide then includes a round trip, which costs more than the in-process store's."""
    out = tmp_path / "asgi.json"
    args = ["--quick", "--bundle", str(bundle_dir), "--out", str(out), "--state", "redis"]
    printed = run_module("benchmarks.asgi", *args, timeout=300)
    assert "state redis: decide / healthz" in printed
    report = json.loads(out.read_text())
    assert report["state"] == "redis"
    memory = tmp_path / "memory.json"
    run_module(
        "benchmarks.asgi", "--quick", "--bundle", str(bundle_dir), "--out", str(memory),
        timeout=300,
    )  # fmt: skip
    in_process = json.loads(memory.read_text())
    assert in_process["state"] == "memory"
    # a round trip to another process costs more than a dictionary write in this one
    redis_write = report["decide_stages"]["state-write"]["median_us"]
    assert redis_write > in_process["decide_stages"]["state-write"]["median_us"]


def test_state_comparison_counts_redis_round_trips(bundle_dir: Path, tmp_path: Path) -> None:
    """``--state memory,redis`` measures both backends in one run; a decide makes at most one
    Redis call before its answer (its read), and the report says so."""
    out = tmp_path / "report"
    args = ["--quick", "--workers", "1", "--duration", "1", "--bundle", str(bundle_dir)]
    run_module("benchmarks.run", *args, "--state", "memory,redis", "--out", str(out), timeout=300)

    report = json.loads((out / "run.json").read_text())
    rows = {row["state"]: row for row in report["states"]}
    assert set(rows) == {"memory", "redis"} and rows["memory"]["redis"] is None
    assert rows["memory"]["share_of_first"] == 1.0 and rows["redis"]["decide_max_per_s"] > 0
    usage = rows["redis"]["redis"]
    assert usage["decides"] > 0
    assert 0 < usage["reads_per_decide"] <= 1.0  # one read call at most, none when pinned/fresh
    assert usage["round_trips_per_decide"] == pytest.approx(
        usage["reads_per_decide"] + usage["writes_per_decide"], abs=0.002
    )
    assert usage["commands_per_decide"].get("evalsha", 0) > 0
    assert "Redis round trips per decide" in (out / "run.md").read_text()


def test_score_benchmark_reports_throughput_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "score"
    printed = run_module("benchmarks.score", "--quick", "--out", str(out), timeout=300)
    assert "µs/customer" in printed
    result = json.loads((out / "score.json").read_text())["result"]
    assert result["customers"] == 5000 and result["orders"] >= 5000
    runs = result["runs"]
    assert [r["workers"] for r in runs] == sorted({1, os.cpu_count() or 1})
    assert all(r["customers_per_s"] > 0 and r["score_s"] > 0 for r in runs)
    assert result["identical_tables"] is True
    assert result["peak_rss_mib_after"] >= result["peak_rss_mib_before"] > 0
    assert result["sources"]["p_alive"] == "btyd"
    assert set(result["sources"].values()) <= {"btyd", "adjusted"}
