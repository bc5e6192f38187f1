from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from model_export.cli import main as cli_main
from model_export.fit.segments import TrainConfig
from model_export.inputs.demo import demo_inputs
from model_export.training import TrainingResult, train
from sdk.bundle import load_bundle
from tests.conftest import PLANTED_PERSONAS

# Adjusted Rand index between learned segments and the planted personas on held-out visitors.
ARI_THRESHOLD = 0.9


def test_planted_personas_are_recovered(trained: TrainingResult) -> None:
    metrics = trained.manifest.training.metrics
    assert metrics["segments_ari_vs_planted"] >= ARI_THRESHOLD
    assert metrics["segments_k"] == 6  # chosen by silhouette, not fixed


def test_each_planted_persona_maps_to_its_named_persona(trained: TrainingResult) -> None:
    names = PLANTED_PERSONAS
    seg_persona = {s.id: s.persona for s in trained.manifest.segments}
    by_planted: dict[str, Counter[str]] = {}
    for label, planted in zip(trained.holdout_labels, trained.holdout_planted, strict=True):
        by_planted.setdefault(planted, Counter())[seg_persona[label]] += 1
    for planted, counts in by_planted.items():
        assert counts.most_common(1)[0][0] == names[planted]


def test_onnx_matches_sklearn_on_held_out_rows(trained: TrainingResult) -> None:
    m = trained.manifest.training.metrics
    assert m["parity_rows_checked"] >= 1000
    assert m["parity_segments_max_abs_diff"] < 1e-3
    assert m["parity_offers_max_abs_diff"] < 1e-4


def test_offer_model_beats_the_popular_offer_baseline(trained: TrainingResult) -> None:
    m = trained.manifest.training.metrics
    assert m["offers_top1_accuracy"] > m["offers_baseline_top1_accuracy"] + 0.2
    assert m["offers_top3_accuracy"] > m["offers_top1_accuracy"]


def test_manifest_records_provenance(trained: TrainingResult) -> None:
    raw = json.loads((trained.path / "manifest.json").read_text())
    assert raw["createdAt"].endswith(("Z", "+00:00"))
    assert set(raw["files"]) == {
        "segments.onnx",
        "offers.onnx",
        "decision.onnx",
        "parity.jsonl",
        "report.html",
    }
    assert raw["fused"]["file"] == "decision.onnx"
    assert {"scikit-learn", "skl2onnx", "onnxruntime"} <= set(raw["producer"])
    assert raw["training"]["data"]["seed"] == 11
    parity = (trained.path / "parity.jsonl").read_text().splitlines()
    assert len(parity) == 64


def test_same_seed_same_models(tmp_path: Path) -> None:
    a = train(demo_inputs(n_visitors=1500, config=TrainConfig(seed=3, k=5)), tmp_path / "a")
    b = train(demo_inputs(n_visitors=1500, config=TrainConfig(seed=3, k=5)), tmp_path / "b")
    assert a.manifest.model_version == b.manifest.model_version
    assert (a.path / "offers.onnx").read_bytes() == (b.path / "offers.onnx").read_bytes()


def test_cli_trains_a_loadable_bundle_and_skips_if_present(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert cli_main(["train", "--out", str(out), "--visitors", "1500", "--segments", "5"]) == 0
    version = load_bundle(out).version
    before = (out / "manifest.json").read_bytes()
    assert cli_main(["train", "--out", str(out), "--if-missing"]) == 0
    assert (out / "manifest.json").read_bytes() == before
    assert cli_main(["inspect", str(out)]) == 0
    assert version.startswith("demo-")


def test_retraining_replaces_the_bundle_atomically(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    train(demo_inputs(n_visitors=1500, config=TrainConfig(seed=1, k=5)), out)
    second = train(demo_inputs(n_visitors=1500, config=TrainConfig(seed=2, k=5)), out)
    assert load_bundle(out).version == second.manifest.model_version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_bundles_of_an_older_feature_set_still_load(tmp_path: Path) -> None:
    v1 = TrainConfig(seed=3, k=5, feature_set_version="1")
    report = train(demo_inputs(n_visitors=1500, config=v1), tmp_path / "v1")
    bundle = load_bundle(report.path)
    assert bundle.manifest.feature_set_version == "1"
    assert len(bundle.manifest.feature_names) == 37
    from sdk import Decider, DecideRequest

    decision = Decider(bundle).decide(DecideRequest(visitor_id="v"))
    assert decision.model_version == bundle.version
