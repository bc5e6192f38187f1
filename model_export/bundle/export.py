"""Export fitted pipelines to ONNX (float32 input, pinned opset, plain probability tensors),
check them against sklearn, and write a bundle atomically after loading it back through
:func:`sdk.bundle.load_bundle`.

Must not import server.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import compose, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.pipeline import Pipeline

from model_export.bundle.signing import load_private_key, public_key_pem, sign_manifest
from sdk.bundle import SIGNATURE_FILE, ParityRow, load_bundle, sha256_file
from sdk.manifest import (
    BUNDLE_FORMAT_VERSION,
    FusedSpec,
    Manifest,
    ModelIO,
    ModelSpec,
    manifest_encoder,
)
from sdk.schema import DecideRequest

__all__ = [
    "TARGET_OPSET",
    "convert_and_check",
    "fuse_models",
    "onnx_bytes",
    "onnx_outputs",
    "sklearn_outputs",
    "write_bundle",
]

#: Pinned opsets, so the same code exports the same graph across skl2onnx releases.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "features"


def onnx_bytes(pipe: Pipeline, n_features: int, name: str) -> bytes:
    """Convert a fitted pipeline to a serialized ONNX model with one float32 input."""
    model = convert_sklearn(
        pipe,
        name=name,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
        options={id(pipe[-1]): {"zipmap": False}} if hasattr(pipe[-1], "predict_proba") else None,
    )
    data: bytes = model.SerializeToString()
    return data


def sklearn_outputs(pipe: Pipeline, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """What training expects the ONNX model's score output to be: class probabilities for a
    classifier, distances to every centroid for a clusterer, predictions (one column) for a
    regressor."""
    last = pipe[-1]
    if hasattr(last, "predict_proba"):
        return np.asarray(pipe.predict_proba(x), dtype=np.float64)
    if hasattr(last, "cluster_centers_"):
        return np.asarray(pipe.transform(x), dtype=np.float64)
    return np.asarray(pipe.predict(x), dtype=np.float64).reshape(len(x), 1)


def onnx_outputs(model: bytes, x: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Run a serialized model with onnxruntime on float32 rows."""
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {INPUT_NAME: x.astype(np.float32)}), strict=True))


def _io(sess: ort.InferenceSession) -> tuple[list[ModelIO], list[ModelIO]]:
    types = {
        "tensor(float)": "float32",
        "tensor(int64)": "int64",
        "tensor(double)": "float64",
        "tensor(string)": "string",
    }

    def conv(items: Any) -> list[ModelIO]:
        return [
            ModelIO(
                name=i.name,
                dtype=types[i.type],  # type: ignore[arg-type]
                shape=[d if isinstance(d, int) else None for d in i.shape],
            )
            for i in items
        ]

    return conv(sess.get_inputs()), conv(sess.get_outputs())


def model_spec(model: bytes, file: str, features: Sequence[str]) -> ModelSpec:
    """The manifest entry of one ONNX model, read from the model itself."""
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inputs, outputs = _io(sess)
    return ModelSpec(file=file, features=list(features), inputs=inputs, outputs=outputs)


#: File name of the fused graph in a bundle.
FUSED_FILE = "decision.onnx"


def fuse_models(
    models: dict[str, tuple[bytes, Sequence[str]]], feature_names: Sequence[str]
) -> bytes:
    """One ONNX graph computing every model of ``models`` from the full feature row.

    Each model's names are prefixed with ``"{key}/"``; a ``Gather`` node picks its columns
    from the shared float32 input (``features``, ``len(feature_names)`` wide), and its outputs
    become ``"{key}/{output}"``. Serving then pays onnxruntime's per-call overhead once per
    batch instead of once per model; the parity replay checks the fused graph against
    training's outputs like any model.
    """
    index = {name: i for i, name in enumerate(feature_names)}
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    outputs: list[onnx.ValueInfoProto] = []
    value_info: list[onnx.ValueInfoProto] = []
    opsets: dict[str, int] = {}
    ir_version = 0
    for key, (data, features) in models.items():
        part = compose.add_prefix(onnx.load_from_string(data), prefix=f"{key}/")
        graph = part.graph
        if len(graph.input) != 1:
            raise ValueError(f"model {key!r} has {len(graph.input)} inputs; fusing needs one")
        columns = numpy_helper.from_array(
            np.asarray([index[f] for f in features], dtype=np.int64), name=f"{key}/columns"
        )
        initializers.append(columns)
        nodes.append(
            helper.make_node(
                "Gather",
                [INPUT_NAME, columns.name],
                [graph.input[0].name],
                axis=1,
                name=f"{key}/select_columns",
            )
        )
        nodes.extend(graph.node)
        initializers.extend(graph.initializer)
        outputs.extend(graph.output)
        value_info.extend(graph.value_info)
        for opset in part.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
        ir_version = max(ir_version, part.ir_version)
    opsets[""] = max(opsets.get("", 0), TARGET_OPSET[""])
    graph = helper.make_graph(
        nodes,
        "tailor_decision",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, [None, len(index)])],
        outputs,
        initializer=initializers,
        value_info=value_info,
    )
    fused = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in sorted(opsets.items())],
        producer_name="tailor",
    )
    fused.ir_version = ir_version
    onnx.checker.check_model(fused, full_check=True)
    serialized: bytes = fused.SerializeToString()
    return serialized


def producer_versions() -> dict[str, str]:
    """Versions of the libraries that produced the bundle."""
    names = ["tailor", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "msgspec"]
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def parity_rows(
    requests: Sequence[DecideRequest],
    nows: Sequence[datetime],
    features: npt.NDArray[np.float64],
    expected: dict[str, tuple[str, npt.NDArray[np.float64]]],
) -> bytes:
    """``parity.jsonl``: the (synthetic) requests with the features and sklearn outputs
    training computed (:func:`model_export.fit.synthetic.synthetic_requests` makes them)."""
    lines = []
    for i, (req, now) in enumerate(zip(requests, nows, strict=True)):
        row = ParityRow(
            request=req,
            now=now,
            features=[None if np.isnan(v) else float(v) for v in features[i]],
            outputs={
                model: {out: [float(v) for v in values[i]]}
                for model, (out, values) in expected.items()
            },
        )
        lines.append(msgspec.json.encode(row))
    return b"\n".join(lines) + b"\n"


def write_bundle(
    out_dir: Path,
    *,
    models: dict[str, tuple[bytes, Sequence[str]]],
    parity: bytes,
    manifest_fields: dict[str, Any],
    name: str,
    created_at: datetime,
    render_report: Callable[[Manifest], str] | None = None,
    signing_key: str | Path | None = None,
) -> Manifest:
    """Write ``models``, ``parity.jsonl``, ``report.html`` and the manifest atomically into
    ``out_dir``, and ``signature.json`` over the manifest when ``signing_key`` (an Ed25519
    private key PEM file) is given.

    The model version is ``{name}-{first 12 hex of the sha256 over the model and parity
    files}``. The report is rendered from the manifest as it is before file hashes are added,
    then hashed with the other files.
    """
    out_dir = Path(out_dir)
    # the fused graph is the writer's own product, made from ``models``
    manifest_fields = {k: v for k, v in manifest_fields.items() if k != "fused"}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        specs = {}
        for key, (data, features) in models.items():
            file = f"{key}.onnx"
            (tmp / file).write_bytes(data)
            specs[key] = model_spec(data, file, features)
        fused_bytes = fuse_models(models, manifest_fields["feature_names"])
        (tmp / FUSED_FILE).write_bytes(fused_bytes)
        fused_spec = model_spec(fused_bytes, FUSED_FILE, manifest_fields["feature_names"])
        fused = FusedSpec(file=FUSED_FILE, inputs=fused_spec.inputs, outputs=fused_spec.outputs)
        (tmp / "parity.jsonl").write_bytes(parity)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        content_hash = hashlib.sha256("".join(files.values()).encode()).hexdigest()[:12]
        manifest = Manifest(
            format_version=BUNDLE_FORMAT_VERSION,
            model_version=f"{name}-{content_hash}",
            created_at=created_at,
            models=specs,
            fused=fused,
            producer=producer_versions(),
            files={},
            **manifest_fields,
        )
        if render_report is not None:
            (tmp / "report.html").write_text(render_report(manifest), encoding="utf-8")
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        manifest = msgspec.structs.replace(manifest, files=files)
        raw = msgspec.json.format(manifest_encoder.encode(manifest), indent=2) + b"\n"
        (tmp / "manifest.json").write_bytes(raw)
        public_keys = None
        if signing_key is not None:  # the one file outside the manifest's hashes
            key = load_private_key(signing_key)
            (tmp / SIGNATURE_FILE).write_bytes(sign_manifest(raw, key))
            public_keys = [public_key_pem(key)]
        for p in tmp.iterdir():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())
        # the reader's own checks (hashes, ONNX I/O, parity replay) before it goes live
        load_bundle(tmp, public_keys=public_keys)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def expected_outputs(
    pipes: Mapping[str, tuple[Pipeline, Sequence[int], str]], x: npt.NDArray[np.float64]
) -> dict[str, npt.NDArray[np.float64]]:
    """sklearn's outputs of each pipeline on ``x`` rounded to float32 (what onnxruntime sees)."""
    x32 = x.astype(np.float32).astype(np.float64)
    return {model: sklearn_outputs(pipe, x32[:, cols]) for model, (pipe, cols, _) in pipes.items()}


def convert_and_check(
    pipes: Mapping[str, tuple[Pipeline, Sequence[int], str]],
    x_check: npt.NDArray[np.float64],
    name: str,
) -> tuple[dict[str, bytes], dict[str, npt.NDArray[np.float64]], dict[str, float]]:
    """Export each pipeline to ONNX and compare it with sklearn on held-out rows.

    Args:
        pipes: model name -> (fitted pipeline, its column indexes in a full row, ONNX output
            that carries its scores).
        x_check: held-out full feature rows.
        name: bundle name, used in the ONNX graph names.

    Returns:
        ONNX bytes per model, sklearn's expected outputs on ``x_check`` (computed on the same
        float32-rounded inputs onnxruntime sees), and ``parity_<model>_max_abs_diff`` metrics.
    """
    blobs: dict[str, bytes] = {}
    expected = expected_outputs(pipes, x_check)
    metrics: dict[str, float] = {}
    for model, (pipe, cols, output) in pipes.items():
        blob = onnx_bytes(pipe, len(cols), f"{name}_{model}")
        want = expected[model]
        got = np.asarray(onnx_outputs(blob, x_check[:, cols])[output], dtype=np.float64)
        got = got.reshape(want.shape)
        blobs[model] = blob
        metrics[f"parity_{model}_max_abs_diff"] = float(np.max(np.abs(got - want)))
    metrics["parity_rows_checked"] = float(len(x_check))
    return blobs, expected, metrics
