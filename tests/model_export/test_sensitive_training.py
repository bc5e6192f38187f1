"""Sensitive categories and paths at training: rules on them are refused, and no model learns
them (the demo and a customer's files)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from model_export.bundle.lifecycle import PolicyConfig, with_policy
from model_export.errors import ModelExportError
from model_export.fit.segments import TrainConfig
from model_export.inputs.catalogue import Catalogue, load_catalogue
from model_export.inputs.config import OffersConfig
from model_export.inputs.customer import customer_inputs
from model_export.inputs.demo import demo_inputs
from model_export.inputs.sensitive import SensitiveTargetingError
from model_export.inputs.synth_shop import generate_shop
from model_export.training import TrainingResult, train
from sdk import load_bundle
from sdk.bundle import ParityRow
from sdk.features import feature_names

#: "books" is one of the feature set's categories and the synthetic visitors view it often.
BOOKS = {"categories": ["books", "pharmacy"], "paths": ["/c/books", "/pharmacy"]}


def _demo_catalogue(**changes: Any) -> dict[str, Any]:
    raw = resources.files("model_export").joinpath("data/catalogue.json").read_bytes()
    data: dict[str, Any] = json.loads(raw)
    data.update(changes)
    return data


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(data))
    return path


def _catalogue(**changes: Any) -> Catalogue:
    return msgspec.convert(_demo_catalogue(**changes), Catalogue)


def test_the_demo_catalogue_marks_sensitive_categories_and_paths() -> None:
    catalogue = load_catalogue()
    assert {"pharmacy", "health", "pregnancy"} <= set(catalogue.sensitive.categories)
    assert "/pharmacy" in catalogue.sensitive.paths
    assert catalogue.serving.public_scores == []


def test_a_catalogue_rule_on_a_sensitive_category_is_refused_at_load(tmp_path: Path) -> None:
    data = _demo_catalogue()
    data["offers"][0]["eligibility"] = {"categoriesViewed": {"$in": ["home", "Pregnancy"]}}
    with pytest.raises(SensitiveTargetingError) as caught:
        load_catalogue(_write(tmp_path, data))
    message = str(caught.value)
    assert "offer 'clearance_sale' eligibility" in message and "'Pregnancy'" in message
    assert isinstance(caught.value, ModelExportError)


def test_training_refuses_a_rule_on_a_sensitive_path_before_any_work() -> None:
    data = _demo_catalogue()
    data["slots"][0]["variants"][1]["when"] = {"page.path": {"$regex": "^/health/"}}
    catalogue = msgspec.convert(data, Catalogue)  # built directly: load_catalogue not run
    inputs = demo_inputs(n_visitors=200, catalogue=catalogue, name="bad")
    steps: list[str] = []
    with pytest.raises(SensitiveTargetingError, match=r"slot 'hero' variant 'hero_clearance'.*"):
        train(inputs, Path("/nonexistent/never-written"), progress=steps.append)
    assert steps == []  # refused before the first step


def test_a_persona_signature_on_a_sensitive_category_share_is_refused() -> None:
    data = _demo_catalogue(sensitive=BOOKS)
    data["personas"][3]["signature"]["cat_books"] = 0.5
    with pytest.raises(SensitiveTargetingError, match=r"persona template 'researchers'.*cat_books"):
        train(
            demo_inputs(n_visitors=200, catalogue=msgspec.convert(data, Catalogue)),
            Path("/nonexistent/never-written"),
        )


def test_unknown_public_scores_are_refused(tmp_path: Path) -> None:
    data = _demo_catalogue(serving={"public_scores": ["rfm", "churn"]})
    with pytest.raises(msgspec.ValidationError, match=r"serving.public_scores\[1\]"):
        load_catalogue(_write(tmp_path, data))


@pytest.fixture(scope="module")
def books_bundle(tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    """A demo bundle whose catalogue marks "books" sensitive, with the RFM public."""
    catalogue = _catalogue(
        sensitive=BOOKS,
        serving={"public_scores": ["rfm", "expectedValue"]},
        experiments=[],
        holdout=None,
        exploration=None,
    )
    inputs = demo_inputs(
        n_visitors=2500, config=TrainConfig(seed=5), catalogue=catalogue, name="books"
    )
    assert sum("books" in r.behavior.categories_viewed for r in inputs.requests) > 500
    return train(inputs, tmp_path_factory.mktemp("bundles") / "books")


def test_the_manifest_carries_the_sensitive_set_and_public_scores(
    books_bundle: TrainingResult,
) -> None:
    manifest = load_bundle(books_bundle.path).manifest
    assert manifest.sensitive.categories == ["books", "pharmacy"]
    assert manifest.sensitive.paths == ["/c/books", "/pharmacy"]
    assert manifest.public_scores == ["rfm", "expectedValue"]
    assert manifest == books_bundle.manifest


def test_no_model_learns_a_sensitive_category(books_bundle: TrainingResult) -> None:
    bundle = load_bundle(books_bundle.path)
    rows = [
        msgspec.json.decode(line, type=ParityRow)
        for line in (books_bundle.path / "parity.jsonl").read_bytes().splitlines()
    ]
    assert not any("books" in r.request.behavior.categories_viewed for r in rows)
    names = feature_names(bundle.manifest.feature_set_version)
    base = np.asarray([r.features for r in rows], dtype=np.float32)
    assert np.all(base[:, names.index("cat_books")] == 0)

    def offers_with(column: str) -> Any:
        x = base.copy()
        x[:, names.index(column)] = 1.0
        return bundle.run(x)["offers"]["probabilities"]

    before = bundle.run(base)["offers"]["probabilities"]
    # the model never saw a book view: its column carries no weight at all...
    assert np.allclose(offers_with("cat_books"), before, atol=1e-6)
    # ...while a category it did learn from moves the offers
    assert not np.allclose(offers_with("cat_electronics"), before, atol=1e-3)


def test_with_policy_refuses_an_experiment_on_a_sensitive_path(
    bundle_dir: Path, tmp_path: Path
) -> None:
    policy = msgspec.convert(
        {
            "experiments": [
                {
                    "key": "pharmacy_banner",
                    "slots": ["banner"],
                    "condition": {"page.path": {"$regex": "^/Pharmacy"}},
                    "arms": [{"key": "a"}, {"key": "b"}],
                }
            ]
        },
        PolicyConfig,
    )
    with pytest.raises(SensitiveTargetingError, match=r"experiment 'pharmacy_banner' condition"):
        with_policy(bundle_dir, tmp_path / "out", policy, "x")
    assert not (tmp_path / "out").exists()


def test_a_customer_files_lose_sensitive_categories_and_pages_when_read(tmp_path: Path) -> None:
    shop = generate_shop(tmp_path / "shop", customers=300, seed=5)
    catalogue = _write(tmp_path, _demo_catalogue(sensitive=BOOKS))
    config = msgspec.structs.replace(shop.config, offers=OffersConfig(catalogue=str(catalogue)))
    plain = customer_inputs(shop.config, now=shop.now)
    assert "books" in plain.data["transactions"]["categories"]
    assert any("books" in r.behavior.categories_viewed for r in plain.requests)
    assert "sensitive" not in plain.data or plain.data["sensitive"]["droppedValues"] == {}

    inputs = customer_inputs(config, now=shop.now)
    assert "books" not in inputs.data["transactions"]["categories"]
    assert not any("books" in r.behavior.categories_viewed for r in inputs.requests)
    assert not any("/c/books" in (r.context.page.url or "") for r in inputs.requests)
    assert not any("/c/books" in (r.context.page.referrer or "") for r in inputs.requests)
    dropped = inputs.data["sensitive"]["droppedValues"]
    assert dropped["category"] >= 10 and dropped["url"] >= 10
    assert len(inputs.requests) == len(plain.requests)  # rows stay, their sensitive values go
