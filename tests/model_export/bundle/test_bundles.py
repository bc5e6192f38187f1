"""Bundle lifecycle: verify, diff, promote behind an atomic symlink, roll back, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from model_export.bundle import lifecycle as bundles
from model_export.bundle.lifecycle import (
    NOT_PERSONALIZED,
    BundleRefused,
    CurrentBundleError,
    LiveLinkError,
    RegressionRefused,
    Requirement,
    RequirementError,
    check_requirements,
    diff,
    lower_is_better,
    parse_requirement,
    previous_link,
    promote,
    rollback,
    verify,
)
from model_export.cli import main as cli_main
from model_export.fit.segments import TrainConfig
from model_export.inputs.demo import demo_inputs
from model_export.training import train
from sdk.bundle import ParityRow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small bundles: a and b differ in seed only, c uses feature set 1 and k=5."""
    root = tmp_path_factory.mktemp("lifecycle")
    configs = {
        "a": TrainConfig(seed=5, k=6),
        "b": TrainConfig(seed=6, k=6),
        "c": TrainConfig(seed=5, k=5, feature_set_version="1"),
    }
    return {
        name: train(demo_inputs(n_visitors=1500, config=config, name=name), root / name).path
        for name, config in configs.items()
    }


@pytest.fixture
def store(trained: dict[str, Path], tmp_path: Path) -> Path:
    """A private bundle store holding copies of the trained bundles, to tamper with."""
    for name, path in trained.items():
        shutil.copytree(path, tmp_path / name)
    return tmp_path


def _tamper(bundle: Path) -> None:
    with (bundle / "offers.onnx").open("ab") as fh:
        fh.write(b"\0")


def _edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change manifest.json in place. It is not in its own hash list, so catalogue and metric
    edits that keep the models valid still verify."""
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw, indent=2))


def _target(link: Path) -> Path:
    return link.resolve()


# --- verify ----------------------------------------------------------------------------------


def test_verify_ok(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = verify(store / "a")
    assert result.ok and result.error is None
    assert result.model_version is not None and result.model_version.startswith("a-")
    assert cli_main(["bundle", "verify", str(store / "a")]) == 0
    assert result.model_version in capsys.readouterr().out


def test_verify_refuses_a_tampered_bundle(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tamper(store / "a")
    result = verify(store / "a")
    assert not result.ok
    assert result.error_type == "BundleIntegrityError"
    assert result.error is not None and "offers.onnx" in result.error
    assert cli_main(["bundle", "verify", str(store / "a")]) == 1
    assert "refused" in capsys.readouterr().out
    assert cli_main(["bundle", "verify", str(store / "missing")]) == 1


def test_verify_json(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bundle", "verify", str(store / "b"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["feature_set_version"] == "2"


# --- diff ------------------------------------------------------------------------------------


def _parity_requests(bundle: Path) -> list[ParityRow]:
    decoder = msgspec.json.Decoder(ParityRow)
    return [decoder.decode(line) for line in (bundle / "parity.jsonl").read_bytes().splitlines()]


def test_diff_of_two_seeds(trained: dict[str, Path]) -> None:
    d = diff(trained["a"], trained["b"])
    parity_a, parity_b = _parity_requests(trained["a"]), _parity_requests(trained["b"])
    assert max(len(parity_a), len(parity_b)) <= d.rows <= len(parity_a) + len(parity_b)
    for mig in (d.segments, d.personas):
        assert mig.total == d.rows == sum(map(sum, mig.counts))
        assert len(mig.counts) == len(mig.rows) and all(
            len(row) == len(mig.columns) for row in mig.counts
        )
    # the same planted personas: most rows keep their persona, and the partitions agree
    assert d.personas.same >= 0.8 * d.rows
    assert d.segments.ari >= 0.8
    # segment columns are aligned so that the largest count of each row is on the diagonal
    diagonal = sum(d.segments.counts[i][i] for i in range(min(len(d.segments.rows), 6)))
    assert diagonal >= 0.8 * d.rows
    ma = msgspec.json.decode((trained["a"] / "manifest.json").read_bytes())
    mb = msgspec.json.decode((trained["b"] / "manifest.json").read_bytes())
    keys = set(ma["training"]["metrics"]) | set(mb["training"]["metrics"])
    assert {m.name for m in d.metrics} == keys
    top1 = next(m for m in d.metrics if m.name == "offers_top1_accuracy")
    assert top1.delta == pytest.approx(
        mb["training"]["metrics"]["offers_top1_accuracy"]
        - ma["training"]["metrics"]["offers_top1_accuracy"]
    )
    assert not d.feature_set_changed and not d.catalogue
    assert d.policy == []  # no policy_value_* metrics in these bundles


def test_diff_with_a_sample_file(trained: dict[str, Path], tmp_path: Path) -> None:
    requests = [row.request for row in _parity_requests(trained["a"])][:40]
    anonymous = msgspec.structs.replace(
        requests[0], visitor_id="anon", consent=type(requests[0].consent)()
    )
    sample = tmp_path / "sample.jsonl"
    lines = [msgspec.json.encode(r) for r in [*requests, anonymous]]
    sample.write_bytes(b"\n".join(lines) + b"\n\n")
    d = diff(trained["a"], trained["b"], sample)
    assert d.rows == 41 == d.segments.total == d.personas.total
    assert d.rows_source == str(sample)
    i = d.personas.row_ids.index(NOT_PERSONALIZED)
    j = d.personas.column_ids.index(NOT_PERSONALIZED)
    assert d.personas.counts[i][j] == 1  # no consent: no persona, on both sides


def test_diff_across_feature_set_versions(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d = diff(trained["a"], trained["c"])
    assert d.feature_set_changed
    assert (d.current.feature_set_version, d.candidate.feature_set_version) == ("2", "1")
    assert "tenure_days" in d.features_removed and not d.features_added
    assert d.segments.total == d.rows == d.personas.total > 0
    assert len(d.segments.columns) == 5
    assert cli_main(["bundle", "diff", str(trained["a"]), str(trained["c"])]) == 0
    out = capsys.readouterr().out
    assert "feature set 2 → 1" in out
    assert "segment migration" in out and "persona migration" in out


def test_diff_reports_catalogue_changes(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["offers"][0]["name"] = "Renamed offer"
        raw["offers"][1]["eligibility"] = {"lifecycle": {"$in": ["loyal"]}}
        raw["offers"].append({"id": "brand_new", "name": "New", "eligibility": {}})
        raw["slots"][0]["variants"].pop()
        raw["lifecycle"]["rules"][0], raw["lifecycle"]["rules"][1] = (
            raw["lifecycle"]["rules"][1],
            raw["lifecycle"]["rules"][0],
        )
        raw["lifecycle"]["rules"].pop()
        raw["training"]["metrics"]["policy_value_ips"] = 0.5

    _edit_manifest(store / "b", edit)
    before = json.loads((store / "a" / "manifest.json").read_text())
    d = diff(store / "a", store / "b")
    changes = {(c.kind, c.id): c for c in d.catalogue}
    first, second = before["offers"][0]["id"], before["offers"][1]["id"]
    assert changes[("offer", first)].change == "changed"
    assert changes[("offer", first)].fields[0].after == "Renamed offer"
    assert changes[("offer", second)].fields[0].field == "eligibility"
    assert changes[("offer", "brand_new")].change == "added"
    slot = changes[("slot", before["slots"][0]["id"])]
    removed = before["slots"][0]["variants"][-1]["id"]
    assert slot.fields[0].field == f"variants[{removed}]" and slot.fields[0].after is None
    rules = before["lifecycle"]["rules"]
    assert changes[("lifecycle", rules[0]["stage"])].change == "moved"
    assert changes[("lifecycle", rules[-1]["stage"])].change == "removed"
    added = next(m for m in d.metrics if m.name == "policy_value_ips")
    assert added.change == "added" and d.policy == []  # only one side has policy values
    assert cli_main(["bundle", "diff", str(store / "a"), str(store / "b")]) == 0
    out = capsys.readouterr().out
    assert "catalogue changes" in out and "Renamed offer" in out


def test_diff_compares_policy_values_when_both_have_them(store: Path) -> None:
    _edit_manifest(store / "a", lambda raw: raw["training"]["metrics"].update(policy_value_ips=0.4))
    _edit_manifest(store / "b", lambda raw: raw["training"]["metrics"].update(policy_value_ips=0.5))
    d = diff(store / "a", store / "b")
    assert [(m.name, m.change) for m in d.policy] == [("policy_value_ips", "better")]
    assert d.policy[0].delta == pytest.approx(0.1)


def test_diff_refuses_a_tampered_bundle_and_a_bad_sample(store: Path) -> None:
    sample = store / "bad.jsonl"
    sample.write_text('{"visitorId": 3}\n')
    assert (
        cli_main(["bundle", "diff", str(store / "a"), str(store / "b"), "--sample", str(sample)])
        == 2
    )
    _tamper(store / "b")
    with pytest.raises(BundleRefused, match=r"offers\.onnx"):
        diff(store / "a", store / "b")
    assert cli_main(["bundle", "diff", str(store / "a"), str(store / "b")]) == 1


def test_diff_json(trained: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bundle", "diff", str(trained["a"]), str(trained["b"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["segments"]["total"] == out["rows"]


# --- requirements ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("offers_top1_accuracy", (">=", 0.0)),
        ("offers_log_loss", ("<=", 0.0)),
        ("churn_brier", ("<=", 0.0)),
        ("parity_offers_max_abs_diff", ("<=", 0.0)),
        ("segments_ari_vs_planted>=-0.01", (">=", -0.01)),
        (" offers_log_loss <= 0.02 ", ("<=", 0.02)),
    ],
)
def test_parse_requirement(spec: str, expected: tuple[str, float]) -> None:
    req = parse_requirement(spec)
    assert (req.op, req.bound) == expected


@pytest.mark.parametrize("spec", ["", "a>>1", "a>=x", "a>=nan", "a == 1", "a>=1 b"])
def test_malformed_requirements(spec: str) -> None:
    with pytest.raises(RequirementError):
        parse_requirement(spec)


def test_check_requirements() -> None:
    reqs = [parse_requirement(s) for s in ("acc", "acc>=-0.1", "log_loss", "new", "gone")]
    checks = check_requirements(
        reqs, {"acc": 0.8, "log_loss": 1.0, "gone": 1.0}, {"acc": 0.75, "log_loss": 0.9, "new": 1}
    )
    assert [c.ok for c in checks] == [False, True, True, True, False]
    assert checks[0].delta == pytest.approx(-0.05)
    assert lower_is_better("offers_log_loss") and not lower_is_better("offers_top1_accuracy")
    equal = check_requirements(
        [Requirement(spec="a", metric="a", op=">=", bound=0.0)], {"a": 1}, {"a": 1}
    )
    assert equal[0].ok


# --- promote and rollback --------------------------------------------------------------------


def test_promote_creates_and_replaces_the_link_atomically(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = store / "live"
    first = promote(store / "a", live)
    assert live.is_symlink() and _target(live) == (store / "a").resolve()
    assert first.previous is None and first.changed
    assert not previous_link(live).exists()
    assert os.readlink(live) == "a"  # relative: the store can move

    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        assert Path(src).is_symlink() and Path(src).parent == Path(dst).parent
        replaced.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(bundles.os, "replace", spy)
    second = promote(store / "b", live)
    assert [dst for _, dst in replaced] == ["live.previous", "live"]
    assert all(src.startswith(".") and ".tmp-" in src for src, _ in replaced)
    assert _target(live) == (store / "b").resolve()
    assert _target(previous_link(live)) == (store / "a").resolve()
    assert second.previous == "a" and second.target == "b"
    assert not [p for p in store.iterdir() if ".tmp-" in p.name]


def test_promote_resolves_a_candidate_given_through_a_link(store: Path) -> None:
    staging = store / "staging"
    staging.symlink_to(store / "a")
    promote(staging, store / "live")
    staging.unlink()
    staging.symlink_to(store / "b")  # repointing staging must not change what is live
    assert _target(store / "live") == (store / "a").resolve()


def test_promote_same_bundle_twice_changes_nothing(store: Path) -> None:
    promote(store / "a", store / "live")
    promote(store / "b", store / "live")
    again = promote(store / "b", store / "live")
    assert not again.changed
    assert _target(previous_link(store / "live")) == (store / "a").resolve()


def test_rollback_restores_and_rolls_forward(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = store / "live"
    with pytest.raises(LiveLinkError):
        rollback(live)
    promote(store / "a", live)
    with pytest.raises(LiveLinkError, match="no previous"):
        rollback(live)
    promote(store / "b", live)
    result = rollback(live)
    assert _target(live) == (store / "a").resolve()
    assert _target(previous_link(live)) == (store / "b").resolve()
    assert result.model_version.startswith("a-")
    assert cli_main(["bundle", "rollback", str(live)]) == 0
    assert _target(live) == (store / "b").resolve()
    assert "rolled back" in capsys.readouterr().out


def test_rollback_refuses_a_broken_previous_bundle(store: Path) -> None:
    live = store / "live"
    promote(store / "a", live)
    promote(store / "b", live)
    _tamper(store / "a")
    with pytest.raises(BundleRefused):
        rollback(live)
    assert _target(live) == (store / "b").resolve()
    assert cli_main(["bundle", "rollback", str(live)]) == 1


def test_promote_refuses_a_tampered_candidate(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = store / "live"
    promote(store / "a", live)
    _tamper(store / "b")
    with pytest.raises(BundleRefused, match="sha256"):
        promote(store / "b", live)
    assert _target(live) == (store / "a").resolve()
    assert not previous_link(live).exists()
    assert cli_main(["bundle", "promote", str(store / "b"), str(live)]) == 1
    assert "refused" in capsys.readouterr().out
    assert _target(live) == (store / "a").resolve()


def test_promote_refuses_a_regression(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = store / "live"
    promote(store / "a", live)
    a_metrics = json.loads((store / "a" / "manifest.json").read_text())["training"]["metrics"]

    def worse(raw: dict[str, Any]) -> None:
        metrics = raw["training"]["metrics"]
        metrics["offers_top1_accuracy"] = a_metrics["offers_top1_accuracy"] - 0.05
        metrics["offers_log_loss"] = a_metrics["offers_log_loss"] + 0.01
        metrics["segments_ari_vs_planted"] = a_metrics["segments_ari_vs_planted"] - 0.005

    _edit_manifest(store / "b", worse)
    for spec in ("offers_top1_accuracy", "offers_log_loss", "segments_ari_vs_planted"):
        with pytest.raises(RegressionRefused) as info:
            promote(store / "b", live, require=[spec])
        assert [c.ok for c in info.value.checks] == [False]
        assert _target(live) == (store / "a").resolve()
    args = ["bundle", "promote", str(store / "b"), str(live), "--require", "offers_top1_accuracy"]
    assert cli_main(args) == 1
    assert "REGRESSED" in capsys.readouterr().out
    assert _target(live) == (store / "a").resolve()
    # tolerances in the requirement let the same candidate through
    allowed = [
        "segments_ari_vs_planted>=-0.01",
        "offers_top1_accuracy>=-0.1",
        "offers_log_loss<=0.02",
    ]
    result = promote(store / "b", live, require=allowed)
    assert all(c.ok for c in result.checks) and len(result.checks) == 3
    assert _target(live) == (store / "b").resolve()


def test_promote_requirements_against_an_explicit_current(store: Path) -> None:
    _edit_manifest(
        store / "b", lambda raw: raw["training"]["metrics"].update(offers_top1_accuracy=0.0)
    )
    with pytest.raises(RegressionRefused):
        promote(store / "b", store / "live", require=["offers_top1_accuracy"], current=store / "a")
    assert not (store / "live").is_symlink()
    with pytest.raises(CurrentBundleError):
        promote(store / "a", store / "live", require=["x"], current=store / "nowhere")


def test_first_promotion_has_nothing_to_regress_from(store: Path) -> None:
    result = promote(store / "a", store / "live", require=["offers_top1_accuracy"])
    assert result.changed and result.checks == []
    assert result.note is not None and "first promotion" in result.note


def test_promote_usage_errors(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = store / "live"
    args = ["bundle", "promote", str(store / "a"), str(live), "--require", "a>>1"]
    assert cli_main(args) == 2
    assert not live.exists()
    with pytest.raises(SystemExit) as info:
        cli_main(["bundle", "promote", str(store / "a")])
    assert info.value.code == 2
    capsys.readouterr()


def test_promote_refuses_to_replace_a_real_directory(store: Path) -> None:
    (store / "live").mkdir()
    with pytest.raises(LiveLinkError, match="not a symlink"):
        promote(store / "a", store / "live")
    assert (store / "live").is_dir() and not (store / "live").is_symlink()


def test_cli_promote(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = store / "live"
    assert cli_main(["bundle", "promote", str(store / "a"), str(live)]) == 0
    assert cli_main(["bundle", "promote", str(store / "b"), str(live), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert result["target"] == "b" and result["previous"] == "a"
    assert _target(live) == (store / "b").resolve()
