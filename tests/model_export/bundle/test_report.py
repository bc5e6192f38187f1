"""The model card: rendered from the manifest alone, escaped, self-contained and deterministic."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from model_export.bundle.card import (
    REPORT_FILE,
    format_condition,
    format_number,
    render_report,
    write_report,
)
from model_export.cli import main as cli_main
from model_export.fit.segments import TrainConfig
from model_export.inputs.demo import demo_inputs
from model_export.training import TrainingResult, train
from sdk.manifest import Manifest, OfferDef, PersonaDef, RfmDef, manifest_decoder


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    out = tmp_path_factory.mktemp("report") / "bundle"
    return train(demo_inputs(n_visitors=1500, config=TrainConfig(seed=5, k=5), name="card"), out)


@pytest.fixture(scope="module")
def manifest(small: TrainingResult) -> Manifest:
    """The manifest as manifest.json holds it (mappings sorted by the deterministic encoder)."""
    return manifest_decoder.decode((small.path / "manifest.json").read_bytes())


@pytest.fixture(scope="module")
def page(manifest: Manifest) -> str:
    return render_report(manifest)


def _with_training(m: Manifest, **changes: Any) -> Manifest:
    return msgspec.structs.replace(m, training=msgspec.structs.replace(m.training, **changes))


def _diagnostics(m: Manifest) -> dict[str, Any]:
    return {
        "feature_importance": {
            "churn": {f: (-1) ** i * (i + 1) / 10 for i, f in enumerate(m.feature_names)},
        },
        "churn_roc": [[0.0, 0.0], [0.1, 0.5], [0.3, 0.8], [1.0, 1.0]],
        "churn_calibration": [[0.1, 0.08, 500], [0.5, 0.55, 200], [0.9, 0.85, 50]],
        "rfm_distribution": {"555": 40, "111": 25, "345": 10},
    }


def _section(page: str, section_id: str) -> str:
    start = page.index(f'<section id="{section_id}">')
    return page[start : page.index("</section>", start)]


def _section_ids(page: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)"', page))


def test_renders_a_trained_bundle(manifest: Manifest, page: str) -> None:
    assert page.startswith("<!doctype html>")
    assert page.rstrip().endswith("</html>")
    assert html.escape(manifest.model_version) in page
    for seg in manifest.segments:
        persona = next(p for p in manifest.personas if p.id == seg.persona)
        assert html.escape(persona.name) in page
    for key, value in manifest.training.metrics.items():
        assert key in page
        assert format_number(value) in page, key
    for name, version in manifest.producer.items():
        assert html.escape(name) in page and html.escape(version) in page
    for rule in manifest.lifecycle.rules:
        assert html.escape(format_condition(rule.when)) in page
    for offer in manifest.offers:
        assert html.escape(offer.name) in page
    assert page.count("<svg") >= 2  # segment sizes, lift heatmap (k is fixed: no k chart)
    assert _section_ids(page) >= {"data", "segments", "personas", "lifecycle", "catalogue"}
    assert {"metrics", "parity"} <= _section_ids(page)


def test_is_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "<link" not in page
    assert "@import" not in page and "url(http" not in page
    assert "Content-Security-Policy" in page
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "element ids must be unique across inline SVGs"


def test_every_manifest_string_is_escaped(manifest: Manifest) -> None:
    evil = "<script>alert(1)</script>"
    personas = [
        PersonaDef(id=p.id, name=f"{evil} {p.name} $5 deals 🙂", description=f'"{evil}"')
        for p in manifest.personas
    ]
    offers = [
        OfferDef(id=o.id, name=f"<b>{o.name}</b>", category=evil, eligibility={"x": evil})
        for o in manifest.offers
    ]
    data = {"inputs": [{"source": evil, "rowsRead": 3, "examples": {evil: [evil]}}]}
    evil_manifest = msgspec.structs.replace(
        _with_training(manifest, data=data, diagnostics={evil: evil}),
        personas=personas,
        offers=offers,
    )
    page = render_report(evil_manifest)  # filterwarnings=error: no font or mathtext warnings
    assert "<script" not in page
    assert f"<b>{manifest.offers[0].name}</b>" not in page
    assert html.escape(evil) in page
    assert html.escape(personas[0].name) in page


def test_numbers_come_from_the_manifest(manifest: Manifest, page: str) -> None:
    metrics = dict(manifest.training.metrics, offers_top1_accuracy=0.123456)
    changed = render_report(_with_training(manifest, metrics=metrics))
    assert changed != page
    assert "0.1235" in changed
    assert format_number(manifest.training.metrics["offers_top1_accuracy"]) in page
    seg = manifest.segments[0]
    bigger = msgspec.structs.replace(seg, size=987_654)
    resized = msgspec.structs.replace(manifest, segments=[bigger, *manifest.segments[1:]])
    assert "987,654" in render_report(resized)


def test_same_manifest_same_page_and_files_are_ignored(
    small: TrainingResult, manifest: Manifest, page: str
) -> None:
    assert render_report(manifest) == page
    assert render_report(small.manifest) == page  # in memory, as training built it
    assert render_report(msgspec.structs.replace(manifest, files={})) == page


def test_optional_sections_are_omitted_when_absent(manifest: Manifest) -> None:
    bare = msgspec.structs.replace(_with_training(manifest, diagnostics={}), rfm=None)
    ids = _section_ids(render_report(bare))
    assert not ids & {"importance", "churn", "rfm", "diagnostics"}


def test_diagnostics_sections_appear_when_present(manifest: Manifest) -> None:
    rfm = RfmDef(
        recency_edges=[14, 40, 90, 200],
        frequency_edges=[1, 2, 3, 6],
        monetary_edges=[40, 90, 180, 400],
        weights={"r": 2, "f": 1, "m": 1},
    )
    metrics = dict(manifest.training.metrics, churn_auc=0.8125, churn_auc_recency_baseline=0.7)
    rich = msgspec.structs.replace(
        _with_training(manifest, diagnostics=_diagnostics(manifest), metrics=metrics), rfm=rfm
    )
    page = render_report(rich)
    assert {"importance", "churn", "rfm"} <= _section_ids(page)
    assert page.count("<svg") >= 5  # sizes, lift, importance, churn, rfm
    assert "AUC 0.8125" in page
    assert "recency 0.7" in page  # the baseline sits next to its metric
    assert "customers by recency and frequency score" in page
    for edge in ("14", "40", "90", "200"):
        assert f">{edge}<" in page
    # the top 15 features by |weight| are charted, the smallest are not
    weights = _diagnostics(manifest)["feature_importance"]["churn"]
    ranked = sorted(weights, key=lambda f: -abs(weights[f]))
    importance = _section(page, "importance")
    assert f">{ranked[0]}</text>" in importance
    assert f">{ranked[14]}</text>" in importance
    assert f">{ranked[15]}</text>" not in importance


def test_malformed_diagnostics_are_reported_not_raised(manifest: Manifest) -> None:
    broken = {
        "churn_roc": "not a curve",
        "churn_calibration": [[0.1, 0.2]],
        "feature_importance": {"churn": ["a", "b"]},
        "rfm_distribution": ["555"],
    }
    page = render_report(_with_training(manifest, diagnostics=broken))
    assert "churn_roc is malformed" in page
    assert "churn_calibration is malformed" in page
    assert "weights are not a {feature: number} map" in page
    assert "rfm_distribution is malformed" in page


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"source": "synthetic", "seed": 7},
        {"source": "transactions", "rowsRead": 10, "rowsAccepted": 7, "rejected": {"bad": 3}},
        {"transactions": {"rowsRead": 5}, "events": {"files": ["a.jsonl"]}, "cutoff": "x"},
        {"inputs": [{"source": "t"}, {"rejected": {"neg": 1}, "examples": {"neg": [1, 2]}}]},
        {"inputs": [], "odd": {"deep": {"er": [1, {"x": None}]}}},
    ],
)
def test_data_summary_is_rendered_generically(manifest: Manifest, data: dict[str, Any]) -> None:
    page = render_report(_with_training(manifest, data=data))
    assert '<section id="data">' in page


def test_rejects_are_summarised(manifest: Manifest) -> None:
    data = {
        "inputs": [
            {
                "source": "transactions",
                "files": ["a.csv", "b.csv"],
                "rowsRead": 1000,
                "rowsAccepted": 990,
                "rejected": {"negative_amount": 3, "absurd_amount": 7},
                "examples": {"negative_amount": ["row 12: -5.00"]},
            },
            {"source": "events", "rowsRead": 50, "rowsAccepted": 50},
        ]
    }
    page = render_report(_with_training(manifest, data=data))
    assert "1,050" in page and "1,040" in page  # rows read and accepted over both inputs
    assert "negative_amount" in page and "absurd_amount" in page
    assert "0.7%" in page  # 7 of 1,000 rows read
    assert "row 12: -5.00" in page
    assert page.index("absurd_amount") < page.index("negative_amount")  # largest first


@pytest.mark.parametrize(
    ("condition", "text"),
    [
        ({}, "always"),
        ({"purchases": {"$gte": 2}}, "purchases ≥ 2"),
        (
            {"daysSinceLastPurchase": {"$gte": 180}, "purchases": {"$gte": 1}},
            "daysSinceLastPurchase ≥ 180 and purchases ≥ 1",
        ),
        (
            {"$or": [{"purchases": {"$gte": 5}}, {"a": {"$lte": 30}, "b": {"$gte": 3}}]},
            "purchases ≥ 5 or (a ≤ 30 and b ≥ 3)",
        ),
        ({"lifecycle": {"$in": ["new", "loyal"]}}, 'lifecycle in ["new", "loyal"]'),
        ({"device.type": "mobile"}, 'device.type = "mobile"'),
        ({"x": {"$exists": False}, "y": {"$ne": None}}, "x is not set and y ≠ null"),
        ({"$not": {"page.path": {"$regex": "^/sale"}}}, "not (page.path matches /^/sale/)"),
        ({"a": 1, "$or": [{"b": 1}, {"c": 2}]}, "a = 1 and (b = 1 or c = 2)"),
    ],
)
def test_format_condition(condition: dict[str, Any], text: str) -> None:
    assert format_condition(condition) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (4000.0, "4,000"),
        (0.5775, "0.5775"),
        (46886.28472, "46,886.3"),
        (1.0724e-05, "1.07e-05"),
        (float("nan"), "n/a"),
        (-0.25, "-0.25"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


def test_write_report(tmp_path: Path, manifest: Manifest) -> None:
    path = write_report(tmp_path, manifest)
    assert path == tmp_path / REPORT_FILE
    assert path.read_text(encoding="utf-8") == render_report(manifest)
    assert [p.name for p in tmp_path.iterdir()] == [REPORT_FILE]  # no temporary file left


def test_cli_inspect_writes_the_card(small: TrainingResult, tmp_path: Path) -> None:
    out = tmp_path / "cards" / "card.html"
    assert cli_main(["inspect", str(small.path), "--report", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_report(small.manifest)
