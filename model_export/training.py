"""The one training run: inputs -> sensitive scrub -> feature rows -> segments and personas ->
the inputs' other models -> ONNX through :func:`model_export.bundle.export.convert_and_check` ->
manifest -> verified, atomic publish. The synthetic demo (:mod:`model_export.inputs.demo`), a
customer's data (:mod:`model_export.inputs.customer`) and retraining all train through
:func:`train`.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.pipeline import Pipeline

from model_export.bundle.card import render_report
from model_export.bundle.export import (
    convert_and_check,
    expected_outputs,
    parity_rows,
    write_bundle,
)
from model_export.fit.personas import describe_segments
from model_export.fit.rows import columns, feature_matrix
from model_export.fit.segments import (
    SEGMENT_FEATURES,
    Progress,
    TrainConfig,
    fit_segments,
    segment_recovery,
)
from model_export.fit.synthetic import synthetic_requests
from model_export.inputs.catalogue import Catalogue, check_sensitive
from sdk.features import feature_names
from sdk.manifest import BtydDef, Manifest, RfmDef, TrainingInfo
from sdk.schema import SCHEMA_VERSION, DecideRequest
from sdk.sensitive import Sensitivity

if TYPE_CHECKING:
    from model_export.inputs.ingest import InputReport

__all__ = [
    "AFFINITY_TEMPERATURE",
    "PARITY_ROWS",
    "Learned",
    "Learner",
    "Model",
    "TrainingInputs",
    "TrainingResult",
    "train",
]

#: How many synthetic requests go into ``parity.jsonl``.
PARITY_ROWS = 64
#: Softmax temperature over squared distances for persona affinities (in scaled units).
AFFINITY_TEMPERATURE = 4.0

#: A fitted pipeline, the features it reads and the ONNX output that carries its scores.
Model = tuple[Pipeline, Sequence[str], str]


@dataclass(frozen=True, kw_only=True)
class Learned:
    """The models an input learns besides the segments, and what the manifest says of them.

    ``models`` holds ``"offers"`` first (its classes are the bundle's offer classes), then any
    predictive score; ``data`` is added to the manifest's description of the training data.
    """

    models: dict[str, Model]
    metrics: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    rfm: RfmDef | None = None
    btyd: BtydDef | None = None
    #: what the run says about models skipped, demoted or not checked (printed by the CLI)
    notes: list[str] = field(default_factory=list)


class Learner(Protocol):
    """Fits an input's models from the full feature rows and the fitted segment model."""

    def __call__(
        self, x: npt.NDArray[np.float64], segments: Pipeline, say: Progress
    ) -> Learned: ...


@dataclass(frozen=True, kw_only=True)
class TrainingInputs:
    """What one run trains from, as an adapter prepared it.

    Each row is a decide request and the time it is made at; ``fit_rows`` index the rows the
    segments and personas are learned from, ``check_rows`` the held-out rows on which ONNX is
    checked against sklearn. ``parity.jsonl`` holds :data:`PARITY_ROWS` synthetic requests drawn
    from the ``fit_rows``' marginals, never a row itself.
    ``planted`` is the persona each row was generated from, when known (synthetic data).
    """

    name: str
    catalogue: Catalogue
    config: TrainConfig
    requests: Sequence[DecideRequest]
    nows: Sequence[datetime]
    fit_rows: npt.NDArray[np.intp]
    check_rows: npt.NDArray[np.intp]
    learn: Learner
    data: dict[str, Any]
    planted: Sequence[str] | None = None
    persona_overrides: Mapping[str, tuple[str, str | None]] | None = None
    read: Mapping[str, InputReport] = field(default_factory=dict)


@dataclass
class TrainingResult:
    """What a run produced: the manifest, and the held-out rows' segments for tests to inspect.

    ``inputs`` are the read reports of a customer's files (empty for synthetic data).
    """

    manifest: Manifest
    path: Path
    holdout_labels: list[int]
    holdout_planted: list[str]
    inputs: Mapping[str, InputReport]
    notes: list[str] = field(default_factory=list)


def _noop(_: str) -> None:
    pass


def train(
    inputs: TrainingInputs,
    out_dir: str | Path,
    *,
    progress: Progress | None = None,
    signing_key: str | Path | None = None,
) -> TrainingResult:
    """Train every model of ``inputs`` and publish a verified bundle at ``out_dir``.

    Args:
        inputs: the run's inputs (see :mod:`model_export.inputs.demo` and
            :mod:`model_export.inputs.customer`).
        out_dir: bundle directory to write (replaced atomically if it exists).
        progress: called with a short message per step.
        signing_key: an Ed25519 private key PEM file: the bundle is published signed
            (``signature.json`` is written before the atomic rename).

    Raises:
        model_export.inputs.sensitive.SensitiveTargetingError: a rule of the catalogue
            targets one of its sensitive categories or paths (checked before any work).
    """
    say = progress or _noop
    config, catalogue = inputs.config, check_sensitive(inputs.catalogue)
    version = config.feature_set_version
    sensitivity = Sensitivity.from_def(catalogue.sensitive)
    requests = inputs.requests
    if sensitivity:  # what the decider will do to every request, so no model learns them
        say("dropping sensitive categories and pages from the training requests")
        requests = [sensitivity.scrub_request(r) for r in requests]
    say("building feature rows with sdk.features.build_features")
    x = feature_matrix(requests, inputs.nows, version=version)
    seg_cols = columns(SEGMENT_FEATURES, version)
    fit_x = x[inputs.fit_rows][:, seg_cols]

    say(f"fitting segments (impute, scale, KMeans) over {len(fit_x)} rows")
    seg_pipe, metrics = fit_segments(fit_x, config, say)
    check = inputs.check_rows
    labels = seg_pipe.predict(x[check][:, seg_cols])
    planted = [inputs.planted[i] for i in check] if inputs.planted is not None else []
    if planted:
        metrics["segments_ari_vs_planted"] = round(segment_recovery(labels, planted), 4)
    say("naming segments as personas")
    personas, segments = describe_segments(
        fit_x,
        seg_pipe[-1].labels_,
        SEGMENT_FEATURES,
        catalogue.personas,
        inputs.persona_overrides,
    )
    learned = inputs.learn(x, seg_pipe, say)
    metrics.update(learned.metrics)

    say("exporting to ONNX and checking sklearn against onnxruntime on held-out rows")
    models: dict[str, Model] = {"segments": (seg_pipe, SEGMENT_FEATURES, "scores")}
    models.update(learned.models)
    pipes = {
        key: (pipe, columns(names, version), out) for key, (pipe, names, out) in models.items()
    }
    blobs, _, parity_metrics = convert_and_check(pipes, x[check], inputs.name)
    metrics.update(parity_metrics)
    say(f"drawing {PARITY_ROWS} synthetic parity requests from the training rows")
    fit = inputs.fit_rows
    syn_requests, syn_nows = synthetic_requests(
        [requests[i] for i in fit],
        [inputs.nows[i] for i in fit],
        PARITY_ROWS,
        seed=config.seed,
        min_group=config.min_group_size,
    )
    syn_x = feature_matrix(syn_requests, syn_nows, version=version)
    expected = expected_outputs(pipes, syn_x)
    parity = parity_rows(
        syn_requests, syn_nows, syn_x, {key: (models[key][2], expected[key]) for key in models}
    )
    say(f"writing bundle to {out_dir}")
    manifest = write_bundle(
        Path(out_dir),
        models={key: (blobs[key], list(models[key][1])) for key in models},
        parity=parity,
        name=inputs.name,
        created_at=datetime.now(UTC),
        render_report=render_report,
        signing_key=signing_key,
        manifest_fields={
            "schema_version": SCHEMA_VERSION,
            "feature_set_version": version,
            "feature_names": list(feature_names(version)),
            "offer_classes": [str(c) for c in learned.models["offers"][0].classes_],
            "personas": personas,
            "segments": segments,
            "affinity_temperature": AFFINITY_TEMPERATURE,
            "offers": catalogue.offers,
            "slots": catalogue.slots,
            "lifecycle": catalogue.lifecycle,
            "experiments": catalogue.experiments,
            "holdout": catalogue.holdout,
            "exploration": catalogue.exploration,
            "sensitive": catalogue.sensitive,
            "public_scores": catalogue.serving.public_scores,
            "rfm": learned.rfm,
            "btyd": learned.btyd,
            "training": TrainingInfo(
                data={**inputs.data, **learned.data},
                rows=len(inputs.fit_rows),
                metrics={k: float(v) for k, v in metrics.items()},
                diagnostics=learned.diagnostics,
            ),
        },
    )
    return TrainingResult(
        manifest=manifest,
        path=Path(out_dir),
        holdout_labels=[int(v) for v in labels],
        holdout_planted=planted,
        inputs=inputs.read,
        notes=learned.notes,
    )
