"""``tailor retrain`` end to end: a live symlink to a serving bundle, a real event log whose
clicks reward what the serving model would choose greedily, candidates that are better, equal
or worse on those rewards, and the decision to promote or keep."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from model_export.bundle.lifecycle import promote
from model_export.cli import main
from model_export.inputs.synth import generate
from model_export.inputs.synth_shop import generate_shop
from model_export.offline.evaluate import read_choices
from model_export.offline.retrain import EVAL_SEED, split_log
from sdk import Decider, load_bundle
from sdk.hashing import hash_unit
from tests.model_export.offline.test_evaluate import (
    SIM_NOW,
    SimulatedLog,
    explore_bundle,
    simulate_log,
)

SERVING_EPSILON = 0.5
VISITS = 1500


@pytest.fixture(scope="module")
def serving(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving bundle: the test models exploring half of the time."""
    return explore_bundle(bundle_dir, tmp_path_factory.mktemp("serving") / "b", SERVING_EPSILON)


@pytest.fixture(scope="module")
def greedy(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return explore_bundle(bundle_dir, tmp_path_factory.mktemp("greedy") / "b", 0.0)


@pytest.fixture(scope="module")
def sim(serving: Path, greedy: Path, tmp_path_factory: pytest.TempPathFactory) -> SimulatedLog:
    """Visitors click the variant the serving models rank first (30%), others rarely (5%)."""
    visits = generate(VISITS, seed=8)
    decider = Decider(load_bundle(greedy), clock=lambda: SIM_NOW)
    best = {
        (d.visitor_id, slot): d.slots[slot].variant_id
        for d in decider.decide_many([v.request for v in visits])
        for slot in d.slots
    }
    return simulate_log(
        serving,
        tmp_path_factory.mktemp("log"),
        n=VISITS,
        seed=8,
        truth=lambda visit, slot, variant: (
            0.3 if best[(visit.request.visitor_id, slot)] == variant else 0.05
        ),
    )


@pytest.fixture
def live(serving: Path, tmp_path: Path) -> Path:
    link = tmp_path / "live"
    promote(serving, link)
    return link


def _retrain(
    capsys: pytest.CaptureFixture[str], sim: SimulatedLog, live: Path, out: Path, *args: str
) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(
        [
            "retrain",
            "--log",
            str(sim.path),
            "--live",
            str(live),
            "--out-dir",
            str(out),
            "--json",
            *args,
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1  # one JSON summary line on stdout
    return code, json.loads(lines[0])


def _steps(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.endswith("retrain"))


def test_a_retrained_better_candidate_is_promoted(
    sim: SimulatedLog,
    live: Path,
    serving: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the demo training of the serving models' data, with the demo catalogue's policy (explore
    # 5%, holdout 5%): mostly greedy, so better than exploring half of the time
    caplog.set_level(logging.INFO, logger="tailor.model_export.offline.retrain")
    args = ["--visitors", "2000", "--seed", "11", "--segments", "6", "--policy", "candidate"]
    args += ["--name", "nightly"]
    code, result = _retrain(capsys, sim, live, tmp_path / "candidates", *args)
    assert code == 0
    assert result["status"] == "promoted", result["reason"]
    assert result["trained_from"].startswith("synthetic demo data")
    assert result["evaluated_on"] == "every logged visitor"
    assert result["difference"]["ci_low"] > 0
    assert result["candidate_value"]["value"] > result["serving_value"]["value"]
    assert live.resolve() == Path(result["candidate"]).resolve()
    assert Path(os.readlink(live.with_name("live.previous"))).resolve() == serving.resolve()
    m = load_bundle(live).manifest
    assert m.model_version.startswith("nightly-") and m.exploration is not None
    assert m.exploration.epsilon == 0.05  # its own policy was kept (--policy candidate)
    steps = _steps(caplog)
    for step in ("serving bundle:", "read ", "training the synthetic demo", "trained candidate"):
        assert step in steps
    for step in ("evaluating on every logged visitor", "decision: promote", "promoted "):
        assert step in steps


def test_a_worse_candidate_is_kept_out_unless_the_margin_allows_it(
    sim: SimulatedLog,
    live: Path,
    serving: Path,
    bundle_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tailor.model_export.offline.retrain")
    uniform = explore_bundle(bundle_dir, tmp_path / "uniform", 1.0)  # never exploits
    args = ("--candidate", str(uniform), "--policy", "candidate")
    code, result = _retrain(capsys, sim, live, tmp_path / "out", *args)
    assert code == 0  # correctly kept is a success
    assert result["status"] == "kept"
    assert result["difference"]["ci_high"] < 0
    assert "possibly worse" in result["reason"]
    assert live.resolve() == serving.resolve()
    assert "decision: keep the serving bundle" in _steps(caplog)
    # the point rule with a generous margin accepts the loss it allows
    loss = -result["difference"]["value"]
    wide = ("--rule", "point", "--margin", f"{loss * 1.5:.6f}")
    code, result = _retrain(capsys, sim, live, tmp_path / "out", *args, *wide)
    assert (code, result["status"]) == (0, "promoted")
    assert live.resolve() == uniform.resolve()


def test_the_serving_policy_is_carried_over_and_an_equal_candidate_is_not_worse(
    sim: SimulatedLog,
    live: Path,
    bundle_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the same models without any policy: they get the serving one, so decide identically
    code, result = _retrain(capsys, sim, live, tmp_path / "out", "--candidate", str(bundle_dir))
    assert (code, result["status"]) == (0, "promoted")
    assert result["policy_from"].startswith("serving bundle")
    assert result["difference"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "std_error": 0.0}
    promoted = load_bundle(live).manifest
    assert promoted.exploration is not None and promoted.exploration.epsilon == SERVING_EPSILON
    assert Path(result["candidate"]).parent == tmp_path / "out"  # a copy: the source untouched
    assert load_bundle(bundle_dir).manifest.exploration is None


def test_retraining_from_a_config_holds_out_visitors_for_the_evaluation(
    sim: SimulatedLog,
    live: Path,
    serving: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # another shop's transactions know nothing of what these visitors click: a worse model
    caplog.set_level(logging.INFO, logger="tailor.model_export.offline.retrain")
    shop = generate_shop(tmp_path / "shop", customers=300, seed=3)
    config = tmp_path / "shop" / "tailor.toml"
    text = config.read_text().replace('events = "events.csv"\n', "")  # events: the log
    config.write_text(text + "\n[segments]\nk = 4\nseeds = 1\n")  # a quick fit
    code, result = _retrain(
        capsys, sim, live, tmp_path / "out", "--config", str(config), "--name", "shop"
    )
    assert code == 0, result
    assert result["trained_from"].startswith(f"config {config} with the event log")
    assert result["evaluated_on"] == "the 30% of visitors held out of training"
    held_out = {
        d.visitor_id for d in sim.decisions if (hash_unit(EVAL_SEED, d.visitor_id) or 1) < 0.3
    }
    assert result["visitors"] == len(held_out)
    assert result["policy_from"].startswith("serving bundle")  # default --policy serving
    assert result["status"] == "kept", result["reason"]
    assert live.resolve() == serving.resolve()
    assert shop.config.data.transactions  # the shop's own data trained the candidate
    steps = _steps(caplog)
    assert "minus the 30% of visitors held out for evaluation" in steps
    assert not list((tmp_path / "out").glob(".tailor-retrain-*"))  # the training copy is gone


def test_split_log_leaves_out_exactly_the_evaluation_visitors(
    sim: SimulatedLog, tmp_path: Path
) -> None:
    kept = split_log(sim.path, tmp_path / "train", 0.3)
    train = read_choices(tmp_path / "train")
    full = read_choices(sim.path)
    train_visitors = {c.decision.visitor_id for c in train.choices}
    for c in full.choices:
        held = (hash_unit(EVAL_SEED, c.decision.visitor_id) or 0.0) < 0.3
        assert (c.decision.visitor_id in train_visitors) != held
    assert kept == train.lines
    assert 0.6 < len(train.choices) / len(full.choices) < 0.8


def test_an_unusable_log_is_an_error_and_live_is_untouched(
    sim: SimulatedLog,
    live: Path,
    serving: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = tmp_path / "old-log"
    old.mkdir()
    for file in sim.path.glob("*.jsonl"):
        (old / file.name).write_text(
            file.read_text().replace('"featureSet":"2"', '"featureSet":"1"')
        )
    code = main(
        [
            "retrain",
            "--log",
            str(old),
            "--live",
            str(live),
            "--out-dir",
            str(tmp_path / "out"),
            "--candidate",
            str(serving),
            "--json",
        ]
    )
    assert code == 1
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "error" and "feature set" in result["error"]
    assert live.resolve() == serving.resolve()
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["retrain", "--log", str(empty), "--live", str(live), "--out-dir", str(old)])
    assert code == 1
    assert not list(old.glob("retrain-*"))  # failed before training anything
