from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sdk import (
    BundleFormatError,
    BundleIntegrityError,
    BundleModelError,
    BundleParityError,
    load_bundle,
)
from sdk.bundle import sha256_file


def _rehash(bundle: Path, name: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(bundle / name)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(bundle: Path, edit: object) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)  # type: ignore[operator]
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_trained_bundle_loads_and_verifies(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.version.startswith("test-")
    assert set(bundle.models) == {"segments", "offers"}
    assert len(bundle.digest) == 64


def test_tampered_model_is_refused(bundle_copy: Path) -> None:
    with (bundle_copy / "offers.onnx").open("ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(BundleIntegrityError, match=r"offers\.onnx.*modified after export"):
        load_bundle(bundle_copy)


def test_missing_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "parity.jsonl").unlink()
    with pytest.raises(BundleIntegrityError, match=r"parity\.jsonl.*missing"):
        load_bundle(bundle_copy)


def test_path_escape_is_refused(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m["files"].update({"../outside": "0" * 64}))
    with pytest.raises(BundleIntegrityError, match="outside the bundle"):
        load_bundle(bundle_copy)


def test_missing_manifest_and_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleFormatError, match=r"no manifest\.json"):
        load_bundle(tmp_path)
    with pytest.raises(BundleFormatError, match="does not exist"):
        load_bundle(tmp_path / "nope")


def test_manifest_unknown_field_is_an_error(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m.update({"modelVersoin": "typo"}))
    with pytest.raises(BundleFormatError, match="modelVersoin"):
        load_bundle(bundle_copy)


def test_manifest_not_json(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleFormatError, match=r"invalid manifest\.json"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("formatVersion", 99, "format version 99"),
        ("featureSetVersion", "0", "feature set version"),
        ("schemaVersion", "0", "schema version"),
    ],
)
def test_unsupported_versions_are_refused(
    bundle_copy: Path, field: str, value: object, message: str
) -> None:
    _edit_manifest(bundle_copy, lambda m: m.update({field: value}))
    with pytest.raises(BundleFormatError, match=message):
        load_bundle(bundle_copy)


def test_malformed_rule_is_refused(bundle_copy: Path) -> None:
    _edit_manifest(
        bundle_copy, lambda m: m["lifecycle"]["rules"][0].update({"when": {"x": {"$foo": 1}}})
    )
    with pytest.raises(BundleFormatError, match=r"\$foo.*lifecycle.rules\[0\]"):
        load_bundle(bundle_copy)


def test_a_rule_re2_cannot_compile_is_refused_at_load(bundle_copy: Path) -> None:
    when = {"page.path": {"$regex": r"^/(sale)/\1"}}  # a backreference: not RE2 syntax
    _edit_manifest(bundle_copy, lambda m: m["lifecycle"]["rules"][1].update({"when": when}))
    with pytest.raises(BundleFormatError, match=r"RE2 cannot compile.*lifecycle\.rules\[1\]"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("listed", [False, True], ids=["unlisted", "listed-and-hashed"])
def test_a_model_with_external_data_is_refused(bundle_copy: Path, listed: bool) -> None:
    model = onnx.load(bundle_copy / "segments.onnx")
    weights = numpy_helper.from_array(np.arange(64, dtype=np.float32), "crafted_weights")
    model.graph.initializer.append(weights)
    onnx.save_model(
        model,
        str(bundle_copy / "segments.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="segments.weights",
        size_threshold=0,
    )
    assert (bundle_copy / "segments.weights").stat().st_size > 0
    _rehash(bundle_copy, "segments.onnx")
    if listed:
        _rehash(bundle_copy, "segments.weights")
    with pytest.raises(BundleModelError, match=r"segments\.onnx: tensor .* uses external data"):
        load_bundle(bundle_copy)


def test_swapped_model_is_refused(bundle_copy: Path) -> None:
    shutil.copy(bundle_copy / "segments.onnx", bundle_copy / "offers.onnx")
    _rehash(bundle_copy, "offers.onnx")
    with pytest.raises(BundleModelError, match="offers"):
        load_bundle(bundle_copy)


def test_parity_drift_is_refused(bundle_copy: Path) -> None:
    lines = (bundle_copy / "parity.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["outputs"]["offers"]["probabilities"][0] += 0.05
    lines[0] = json.dumps(row)
    (bundle_copy / "parity.jsonl").write_text("\n".join(lines) + "\n")
    _rehash(bundle_copy, "parity.jsonl")
    with pytest.raises(BundleParityError, match=r"line 1: offers\.probabilities differs"):
        load_bundle(bundle_copy)


def test_feature_drift_is_refused(bundle_copy: Path) -> None:
    lines = (bundle_copy / "parity.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["features"][0] = 123.0
    lines[2] = json.dumps(row)
    (bundle_copy / "parity.jsonl").write_text("\n".join(lines) + "\n")
    _rehash(bundle_copy, "parity.jsonl")
    with pytest.raises(BundleParityError, match="line 3: features differ"):
        load_bundle(bundle_copy)


def test_garbage_parity_is_a_typed_refusal(bundle_copy: Path) -> None:
    (bundle_copy / "parity.jsonl").write_text('{"request": 1}\n')
    _rehash(bundle_copy, "parity.jsonl")
    with pytest.raises(BundleParityError, match="line 1"):
        load_bundle(bundle_copy)


# --- the fused graph ---------------------------------------------------------------------------


def test_fused_graph_computes_what_the_models_compute(bundle_dir: Path) -> None:
    import numpy as np

    bundle = load_bundle(bundle_dir)
    assert bundle.fused is not None and bundle.manifest.fused is not None
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(32, len(bundle.manifest.feature_names))).astype(np.float32)
    fused, separate = bundle.run(rows), bundle.run_separately(rows)
    assert fused.keys() == separate.keys() == {"segments", "offers"}
    for model, outputs in separate.items():
        assert fused[model].keys() == outputs.keys()
        for name, want in outputs.items():
            if want.dtype.kind == "f":
                np.testing.assert_allclose(fused[model][name], want, rtol=1e-5, atol=1e-5)
            else:  # labels
                np.testing.assert_array_equal(fused[model][name], want)
    scores, probabilities = bundle.runner([("segments", "scores"), ("offers", "probabilities")])(
        rows
    )
    np.testing.assert_allclose(scores, separate["segments"]["scores"], rtol=1e-5, atol=1e-5)
    assert probabilities.shape == separate["offers"]["probabilities"].shape


def test_bundle_without_a_fused_graph_still_loads_and_decides_the_same(
    bundle_dir: Path, bundle_copy: Path
) -> None:
    from model_export.inputs.synth import generate
    from sdk import Decider

    def drop(m: dict[str, object]) -> None:
        del m["fused"]
        del m["files"]["decision.onnx"]  # type: ignore[attr-defined]

    _edit_manifest(bundle_copy, drop)
    (bundle_copy / "decision.onnx").unlink()
    plain = load_bundle(bundle_copy)
    assert plain.fused is None
    requests = [v.request for v in generate(40, seed=17)]
    ids = iter(range(10**6))
    a = Decider(load_bundle(bundle_dir), new_id=lambda: str(next(ids))).decide_many(requests)
    ids = iter(range(10**6))
    b = Decider(plain, new_id=lambda: str(next(ids))).decide_many(requests)
    assert a == b


def test_tampered_fused_graph_is_refused(bundle_copy: Path) -> None:
    with (bundle_copy / "decision.onnx").open("ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(BundleIntegrityError, match=r"decision\.onnx.*modified after export"):
        load_bundle(bundle_copy)


def test_fused_graph_lacking_an_output_is_refused(bundle_copy: Path) -> None:
    def drop(m: dict[str, object]) -> None:
        fused = m["fused"]
        fused["outputs"] = [  # type: ignore[index]
            o
            for o in fused["outputs"]  # type: ignore[index]
            if o["name"] != "offers/probabilities"
        ]

    _edit_manifest(bundle_copy, drop)
    with pytest.raises(BundleFormatError, match=r"lacks output offers/probabilities"):
        load_bundle(bundle_copy)


def test_fused_graph_computing_something_else_is_refused(bundle_copy: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle_copy / "decision.onnx"))
    for i, init in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.size > 1:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(values + 0.5, init.name))
            break
    else:
        pytest.fail("no float initializer in the fused graph")
    onnx.save(model, str(bundle_copy / "decision.onnx"))
    _rehash(bundle_copy, "decision.onnx")
    with pytest.raises(BundleParityError, match=r"fused graph output \w+/\w+ differs"):
        load_bundle(bundle_copy)
