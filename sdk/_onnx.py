"""Thin wrapper around an onnxruntime session, configured for one-row, low-latency calls.

Sequential execution with one intra-op thread per process. Imported only by the local engine;
numpy and onnxruntime are imported lazily so that ``import sdk`` stays light.

Must not import litestar or sklearn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdk.errors import BundleModelError, MissingExtraError
from sdk.manifest import ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["OnnxModel", "external_tensor", "require_local"]

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(string)": "string",
}


def require_local() -> tuple[Any, Any]:
    """Import numpy and onnxruntime, or raise an ImportError naming the ``local`` extra."""
    try:
        import numpy
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError(exc.name or "onnxruntime", "local") from exc
    return numpy, onnxruntime


# Which fields of which ONNX protobuf message hold messages that may hold tensors
# (onnx.proto3 field numbers); a TensorProto with data_location = EXTERNAL (field 14 = 1) or
# external_data entries (field 13) reads its bytes from another file.
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _FUNCTION, _SPARSE, _TENSOR = range(7)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 25: _FUNCTION},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _FUNCTION: {7: _NODE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
}
_MAX_DEPTH = 64


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> Any:
    """``(field number, value)`` of a protobuf message: ints for varints, bytes for
    length-delimited fields, fixed-size fields skipped."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            yield number, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def external_tensor(data: bytes, kind: int = _MODEL, depth: int = 0) -> str | None:
    """The name of the first tensor of the serialized ONNX ``data`` that keeps its bytes in an
    external file, or None when the model is self-contained."""
    if depth > _MAX_DEPTH:
        raise ValueError("ONNX graph nested too deeply")
    if kind == _TENSOR:
        name = ""
        external = False
        for number, value in _fields(data):
            if number == 8 and isinstance(value, bytes):
                name = value.decode("utf-8", "replace")
            elif number == 13 or (number == 14 and value == 1):
                external = True
        return (name or "(unnamed)") if external else None
    children = _CHILDREN[kind]
    for number, value in _fields(data):
        child = children.get(number)
        if child is not None and isinstance(value, bytes):
            found = external_tensor(value, child, depth + 1)
            if found is not None:
                return found
    return None


class OnnxModel:
    """One ONNX model of a bundle, checked against its manifest entry when loaded."""

    def __init__(self, path: Path, spec: ModelSpec, name: str) -> None:
        _, ort = require_local()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            data = path.read_bytes()
            external = external_tensor(data)
        except (OSError, ValueError) as exc:
            raise BundleModelError(f"cannot read ONNX model {path.name}: {exc}") from exc
        if external is not None:
            raise BundleModelError(
                f"ONNX model {path.name}: tensor {external!r} uses external data, which bundles "
                "do not allow (only files listed and hashed in manifest.json are loaded)"
            )
        try:  # from the bytes just checked, so no other file is read
            self.session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BundleModelError(f"cannot load ONNX model {path.name}: {exc}") from exc
        self.name = name
        self.spec = spec
        self._check()
        self.input_name = spec.inputs[0].name
        self.output_names = [o.name for o in spec.outputs]

    def _check(self) -> None:
        actual_in = [(i.name, _ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs()]
        want_in = [(i.name, i.dtype) for i in self.spec.inputs]
        if actual_in != want_in:
            raise BundleModelError(
                f"model {self.name!r}: inputs {actual_in} differ from manifest {want_in}"
            )
        inp = self.session.get_inputs()[0]
        width = inp.shape[1] if len(inp.shape) == 2 else None
        if width != len(self.spec.features):
            raise BundleModelError(
                f"model {self.name!r}: input width {width} but manifest lists "
                f"{len(self.spec.features)} features"
            )
        actual_out = {(o.name, _ORT_TYPES.get(o.type, o.type)) for o in self.session.get_outputs()}
        for out in self.spec.outputs:
            if (out.name, out.dtype) not in actual_out:
                raise BundleModelError(
                    f"model {self.name!r}: output {out.name!r} ({out.dtype}) not in {actual_out}"
                )

    def run(self, matrix: npt.NDArray[np.float32]) -> dict[str, Any]:
        """Run the model on a float32 matrix whose columns are ``spec.features``."""
        outputs = self.session.run(self.output_names, {self.input_name: matrix})
        return dict(zip(self.output_names, outputs, strict=True))
