"""``tailor report`` (model_export/cli/report.py): the library's reports, as JSON or tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from model_export.cli import main as cli_main
from sdk.analysis.reports import design_of, experiment_reports
from sdk.logs import LogRecord, read_log
from sdk.manifest import manifest_decoder
from tests.sdk.analysis.records import decision, event, write_log


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """A log of 200 visitors in ``hero_test`` (three arms) and the holdout, two files."""
    directory = tmp_path / "events"
    directory.mkdir()
    records: list[LogRecord] = []
    arms = ["control", "generic", "guide"]
    for i in range(200):
        experiment = (
            {"holdout": "holdout"}
            if i % 10 == 0
            else {"holdout": "personalized", "hero_test": arms[i % 3]}
        )
        arm = experiment.get("hero_test")
        hero = {"hero": f"hero_test:{arm}" if arm else None}
        records.append(decision(f"v{i}", f"d{i}", experiment, segment=i % 2, slots=hero))
        at = "2026-05-04T10:00:01Z"
        records.append(event("impression", f"v{i}", decision_id=f"d{i}", slot="hero", at=at))
        if i % 4 == 1:
            at = "2026-05-04T10:05:00Z"
            records.append(event("conversion", f"v{i}", value=20.0 + i % 5, at=at))
    write_log(directory / "events-20260504-100000-1.jsonl", records[:300])
    write_log(directory / "events-20260504-100000-2.jsonl", records[300:], tail="{torn")
    return directory


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    assert cli_main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_json_output_is_the_library_report(
    log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got = _json(capsys, ["report", "--log", str(log_dir), "--json"])
    want = json.loads(msgspec.json.encode(experiment_reports(read_log(log_dir))))
    assert got == want
    assert [r["experiment"] for r in got] == ["holdout", "hero_test"]
    got = _json(capsys, ["report", "--log", str(log_dir), "--json", "--confidence", "0.9"])
    assert got == json.loads(
        msgspec.json.encode(experiment_reports(read_log(log_dir), confidence=0.9))
    )


def test_bundle_weights_and_one_experiment(
    log_dir: Path, policy_bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = manifest_decoder.decode((policy_bundle_dir / "manifest.json").read_bytes())
    weights, controls = design_of(manifest)
    assert weights["hero_test"] == {"control": 1.0, "generic": 1.0, "guide": 1.0}
    assert weights["banner_prospects"] == {"a": 1.0, "b": 3.0}
    assert weights["holdout"] == pytest.approx({"holdout": 0.1, "personalized": 0.9})
    assert controls == {
        "hero_test": "control",
        "banner_prospects": "a",
        "banner_others": "a",
        "holdout": "holdout",
    }
    argv = ["report", "--log", str(log_dir), "--bundle", str(policy_bundle_dir), "--json"]
    got = _json(capsys, [*argv, "--experiment", "hero_test"])
    library = experiment_reports(read_log(log_dir), weights=weights, controls=controls)
    want = [r for r in json.loads(msgspec.json.encode(library)) if r["experiment"] == "hero_test"]
    assert got == want
    # the bundle's experiments without traffic are reported too
    everything = _json(capsys, argv)
    assert [r["experiment"] for r in everything] == [
        "holdout",
        "banner_others",
        "banner_prospects",
        "hero_test",
    ]


def test_tables_and_errors(log_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["report", "--log", str(log_dir)]) == 0
    out = capsys.readouterr().out
    assert "hero_test: 180 visitors, control control" in out
    assert "holdout: 200 visitors, control holdout" in out
    assert "1 malformed" in out and "warning:" in out
    assert cli_main(["report", "--log", str(log_dir), "--experiment", "nope"]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().out
    assert cli_main(["report", "--log", str(log_dir / "missing")]) == 2
    assert cli_main(["report", "--log", str(log_dir), "--bundle", str(log_dir)]) == 1
    with pytest.raises(SystemExit):
        cli_main(["report", "--log", str(log_dir), "--confidence", "1.5"])
