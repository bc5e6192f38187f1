"""Smoke test of ``python -m benchmarks.tag``: a short run in headless Chromium against a real
server writes a well-formed, sane report. Benchmarks are not tests: no speed is asserted.

It runs as a subprocess, the way it is used; the tag's timeout is raised to 5 s so that a slow
shared machine does not turn a decision into a timeout (the default page keeps the tag's 600 ms).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks._run import run_module

pytestmark = pytest.mark.browser

LOADS = 3


def test_quick_run_writes_a_sane_report(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tag.json"
    args = ["--quick", "--loads", str(LOADS), "--tag-timeout", "5000"]
    stdout = run_module(
        "benchmarks.tag", *args, "--bundle", str(bundle_dir), "--out", str(out), timeout=240
    )
    assert "| decide_sent |" in stdout

    report = json.loads(out.read_text())
    assert report["report_version"] == 1 and report["complete"] is True
    machine = report["machine"]
    assert machine["cpus"] > 0 and machine["python"] and machine["chromium"].startswith("Chrome/")
    assert report["config"]["loads"] == LOADS
    assert report["blocked_requests"] == []
    assert report["server"]["log"]["tracebacks"] == 0

    tag = report["tag"]
    assert 0 < tag["gzip_bytes"] < tag["body_bytes"]
    # the server gzips the tag for a browser: fewer bytes on the wire than the script's size
    assert tag["encoding"] == "gzip" and 0 < tag["wire_bytes"] < tag["body_bytes"]

    for name in ("first_visit", "repeat_view"):
        series = report["series"][name]
        samples = report["samples"][name]
        assert series["loads"] == len(samples) == LOADS
        assert series["filled"] == LOADS, "a slot was left with its default content"
        assert series["timed_out"] == 0
        assert series["decide_status"] == {"200": LOADS}
        assert set(series["measures"]) == set(report["measures"])
        for measure, stats in series["measures"].items():
            assert stats["n"] == LOADS, measure
            assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p95_ms"], measure
            assert stats["p95_ms"] <= stats["max_ms"], measure
        for sample in samples:
            m = sample["measures"]
            assert m["decide_sent"] < m["slots_filled"] <= m["next_frame"]
            assert set(sample["variants"]) == set(report["config"]["slots"])
        sizes = series["sizes_median"]
        assert sizes["decide_request_bytes"] > 0 and sizes["decide_response_bytes"] > 0

    first, repeat = report["samples"]["first_visit"], report["samples"]["repeat_view"]
    assert not any(s["tag_from_cache"] for s in first)
    assert all(s["tag_wire_bytes"] > 0 for s in first)
    # The tags reported their timings and the server's histograms counted them (warm-up too).
    timing = report["server"]["tag_metrics"]["time_to_decision"]
    assert timing["count"] >= 2 * LOADS and timing["mean_ms"] > 0
    assert all(s["tag_from_cache"] for s in repeat)  # the HTTP cache of the same context
