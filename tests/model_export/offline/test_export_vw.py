"""``tailor export-vw``: Vowpal Wabbit decision-service JSON lines from a real event log.

The log is decided by the test policy bundle (holdout, experiments, exploration), so it holds
both randomized slot decisions and deterministic ones (holdout, fixed arms, targeting rules).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from model_export.cli import main
from model_export.offline.choices import read_choices
from model_export.offline.vw import export_vw, vw_line
from sdk.features import feature_names
from tests.model_export.offline.test_evaluate import SimulatedLog, click_truth, simulate_log


@pytest.fixture(scope="module")
def sim(policy_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimulatedLog:
    return simulate_log(
        policy_bundle_dir,
        tmp_path_factory.mktemp("log"),
        n=400,
        seed=5,
        truth=click_truth(policy_bundle_dir, 5, low=0.1, high=0.6),
    )


@pytest.fixture(scope="module")
def logged(sim: SimulatedLog) -> dict[tuple[str, str], dict[str, Any]]:
    """Each logged slot decision, read from the log's own lines with plain json."""
    out = {}
    for file in sim.path.glob("*.jsonl"):
        for line in file.read_text().splitlines():
            record = json.loads(line)
            if record["kind"] == "decision":
                for slot, chosen in record["slots"].items():
                    out[(record["decisionId"], slot)] = {**chosen, "decision": record}
    return out


@pytest.fixture(scope="module")
def clicks(sim: SimulatedLog) -> set[tuple[str, str]]:
    out = set()
    for file in sim.path.glob("*.jsonl"):
        for line in file.read_text().splitlines():
            record = json.loads(line)
            if record["kind"] == "event" and record["type"] == "click":
                out.add((record["decisionId"], record["slot"]))
    return out


def _export(sim: SimulatedLog, out: Path, *extra: str) -> list[dict[str, Any]]:
    assert main(["export-vw", "--log", str(sim.path), "--out", str(out), *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_every_line_is_a_decision_service_record(
    sim: SimulatedLog,
    logged: dict[tuple[str, str], dict[str, Any]],
    clicks: set[tuple[str, str]],
    tmp_path: Path,
) -> None:
    lines = _export(sim, tmp_path / "vw.jsonl")
    assert len(lines) == len(logged) == sum(len(d.slots) for d in sim.decisions)
    assert len({line["EventId"] for line in lines}) == len(lines)
    shapes: Counter[str] = Counter()
    for line in lines:
        decision_id, slot = line["EventId"].rsplit("/", 1)
        chosen = logged[(decision_id, slot)]
        multi = line["c"]["_multi"]
        n = len(multi)
        # the label: the chosen variant, its logged propensity, the negated reward
        assert 1 <= line["_label_Action"] <= n
        assert line["_labelIndex"] == line["_label_Action"] - 1
        assert multi[line["_labelIndex"]] == {"variant": chosen["variantId"]}
        assert line["_label_probability"] == chosen["propensity"]
        assert line["_label_cost"] == (-1.0 if (decision_id, slot) in clicks else 0.0)
        # the actions: every position of _multi once, the chosen one first, p in "a" order
        assert sorted(line["a"]) == list(range(1, n + 1))
        assert line["a"][0] == line["_label_Action"]
        assert len(line["p"]) == n
        assert line["p"][0] == chosen["propensity"]
        assert sum(line["p"]) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= p <= 1.0 for p in line["p"])
        candidates = chosen.get("candidates") or {chosen["variantId"]: 1.0}
        assert [m["variant"] for m in multi] == list(candidates)
        for position, p in zip(line["a"], line["p"], strict=True):
            assert candidates[multi[position - 1]["variant"]] == p
        # the rest of the envelope
        assert line["Version"] == "1"
        assert datetime.fromisoformat(line["Timestamp"].replace("Z", "+00:00")).tzinfo
        visit = line["c"]["visit"]
        assert visit["slot"] == slot
        assert visit["lifecycle"] == chosen["decision"]["lifecycle"]
        features = line["c"]["features"]
        assert set(features) <= set(feature_names(chosen["decision"]["featureSet"]))
        shapes["randomized" if n > 1 else "deterministic"] += 1
    # both kinds occur: explored choices and holdout / fixed-arm / rule choices
    assert shapes["randomized"] > 0 and shapes["deterministic"] > 0


def test_nan_features_are_left_out_and_costs_follow_the_reward(
    sim: SimulatedLog, tmp_path: Path
) -> None:
    data = read_choices(sim.path, reward="conversion")
    line = vw_line(data.choices[0])
    assert all(v == v for v in line["c"]["features"].values())  # no NaN
    assert all(choice.reward == 0.0 for choice in data.choices)  # no conversions logged
    lines = _export(sim, tmp_path / "conv.jsonl", "--reward", "conversion")
    assert {line["_label_cost"] for line in lines} == {0.0}
    # newcomers have no last visit: that feature is NaN in the row and absent from the line
    newcomers = [line for line in lines if "days_since_visit" not in line["c"]["features"]]
    assert newcomers


def test_one_slot_and_the_report(
    sim: SimulatedLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _export(sim, tmp_path / "hero.jsonl", "--slot", "hero")
    assert len(lines) == len(sim.decisions)
    assert {line["c"]["visit"]["slot"] for line in lines} == {"hero"}
    capsys.readouterr()
    out = tmp_path / "all.jsonl"
    assert main(["export-vw", "--log", str(sim.path), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lines"] == len(out.read_text().splitlines())
    assert 0 < report["randomized"] < report["lines"]
    assert report["rewarded"] > 0
    direct = export_vw(read_choices(sim.path), tmp_path / "direct.jsonl")
    assert direct.lines == report["lines"]
    assert (tmp_path / "direct.jsonl").read_bytes() == out.read_bytes()
    assert not list(tmp_path.glob(".*tmp*"))
    assert main(["export-vw", "--log", str(tmp_path / "missing"), "--out", str(out)]) == 1
