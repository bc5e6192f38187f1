"""What the model card's sections share: lookups into the manifest, metric groups and
metrics computed for several k.

Must not import server or sklearn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from model_export.bundle._card_charts import _PALETTE
from sdk.features import FEATURE_SPECS
from sdk.manifest import Manifest

__all__ = ["METRIC_GROUPS"]

#: Metric key prefixes and the heading each group gets; other keys go under "Other".
METRIC_GROUPS: tuple[tuple[str, str], ...] = (
    ("segments", "Segments"),
    ("offers", "Next-best offer"),
    ("churn", "Churn"),
    ("value", "Customer value"),
    ("purchases", "Expected purchases"),
    ("btyd", "Buy-till-you-die models (out of time)"),
    ("policy", "Offline policy value"),
    ("parity", "ONNX parity"),
)


class _Card:
    """Shared lookups for the section renderers."""

    def __init__(self, manifest: Manifest) -> None:
        self.m = manifest
        self.persona_names = {p.id: p.name for p in manifest.personas}
        self.colors = {p.id: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(manifest.personas)}
        self.metrics = manifest.training.metrics
        self.diagnostics = manifest.training.diagnostics
        self.descriptions = {
            f.name: f.description for f in FEATURE_SPECS.get(manifest.feature_set_version, ())
        }

    def persona(self, pid: str) -> str:
        return self.persona_names.get(pid, pid)

    def segment_label(self, seg_id: int, persona: str) -> str:
        return f"{seg_id} · {self.persona(persona)}"


def _group_of(key: str) -> str:
    for prefix, _ in METRIC_GROUPS:
        if key.startswith(prefix + "_"):
            return prefix
    return "other"


_PER_K = re.compile(r"^(?P<name>[a-z][a-z0-9_]*?)_k(?P<k>\d+)$")


def _per_k(metrics: Mapping[str, float]) -> dict[str, dict[int, float]]:
    """Metrics computed for each candidate k (``silhouette_k3``...) as {name: {k: value}}."""
    found: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        match = _PER_K.match(key)
        if match and _group_of(key) == "other":
            found.setdefault(match["name"], {})[int(match["k"])] = value
    return {name: values for name, values in found.items() if len(values) > 1}
