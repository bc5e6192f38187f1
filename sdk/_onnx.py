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

__all__ = ["OnnxModel", "require_local"]

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
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
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
