"""Smoke test of the load kit against replicas: ``python -m benchmarks._load --replicas 2``
starts a ``redis-server`` and two servers sharing it, and a short headless locust run that
spreads every request over both (``TAILOR_LOAD_SPREAD=request``) has no failures. Both
replicas served decides and events (their own ``/metrics``, in the ``--report``), none of them
answered an error, and some event beacons went to another replica than their decide: the
shared state let the event guard accept them. Nothing here asserts a speed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_locust_spreads_requests_over_two_replicas_sharing_redis(
    bundle_dir: Path, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        TAILOR_LOAD_SPREAD="request",
        TAILOR_LOAD_TAG_WEIGHT="3",
        TAILOR_LOAD_BACKEND_WEIGHT="1",
        TAILOR_LOAD_TAG_THINK="0.05,0.2",
        TAILOR_LOAD_BACKEND_THINK="0.1,0.3",
        TAILOR_LOAD_CONSENT="granted=1",  # every page view sends its events
    )
    env.pop("TAILOR_LOAD_HOSTS", None)
    report, prefix = tmp_path / "replicas.json", tmp_path / "locust"
    cmd = [sys.executable, "-m", "benchmarks._load", "--bundle", str(bundle_dir)]
    cmd += ["--replicas", "2", "--workers", "1", "--report", str(report), "--"]
    cmd += [sys.executable, "-m", "locust", "-f", "benchmarks/locustfile.py", "--headless"]
    cmd += ["--users", "4", "--spawn-rate", "4", "--run-time", "5s"]
    cmd += ["--csv", str(prefix), "--only-summary"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, output

    with open(f"{prefix}_stats.csv", newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    assert {"/v1/decide (tag)", "/v1/events (tag)", "/v1/decide/batch (backend)"} <= set(rows)
    assert all(row["Failure Count"] == "0" for row in rows.values()), rows

    servers = json.loads(report.read_text())["servers"]
    assert json.loads(report.read_text())["redis"] is True
    assert len({s["url"] for s in servers}) == 2
    for server in servers:
        requests = server["requests"]
        assert requests.get("POST /v1/decide", 0) > 0, server
        assert requests.get("POST /v1/events", 0) > 0, server
        assert all(int(status) < 400 for status in server["statuses"]), server
        assert server["log"]["tracebacks"] == 0, server

    # the locustfile's summary: beacons posted to another replica than the one that decided
    crossed = re.search(r"(\d+) of (\d+) event beacons went to another replica", proc.stderr)
    assert crossed is not None, output
    assert 0 < int(crossed[1]) <= int(crossed[2]), crossed[0]
