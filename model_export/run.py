"""One training run end to end: visits -> feature rows -> models -> checks -> bundle.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model_export.bundle.card import render_report
from model_export.bundle.export import (
    onnx_bytes,
    onnx_outputs,
    parity_rows,
    sklearn_outputs,
    write_bundle,
)
from model_export.fit.models import (
    SEGMENT_FEATURES,
    Progress,
    TrainConfig,
    columns,
    feature_matrix,
    fit_offers,
    fit_segments,
    offer_metrics,
    segment_recovery,
)
from model_export.fit.personas import describe_segments
from model_export.inputs.catalogue import Catalogue, load_catalogue
from model_export.inputs.synth import Visit, generate
from sdk.features import feature_names
from sdk.manifest import Manifest, TrainingInfo
from sdk.schema import SCHEMA_VERSION

__all__ = ["PARITY_ROWS", "TrainReport", "train_bundle"]

#: How many held-out rows go into ``parity.jsonl``.
PARITY_ROWS = 64
#: Softmax temperature over squared distances for persona affinities (in scaled units).
AFFINITY_TEMPERATURE = 4.0


@dataclass
class TrainReport:
    """What a run produced: the manifest, and the held-out predictions for tests to inspect."""

    manifest: Manifest
    path: Path
    holdout_labels: list[int]
    holdout_planted: list[str]


def _noop(_: str) -> None:
    pass


def train_bundle(
    out_dir: str | Path,
    *,
    visits: Sequence[Visit] | None = None,
    n_visitors: int = 20_000,
    config: TrainConfig | None = None,
    catalogue: Catalogue | None = None,
    name: str = "demo",
    progress: Progress | None = None,
) -> TrainReport:
    """Train segments, personas and the offer model and write a verified bundle.

    Args:
        out_dir: bundle directory to write (replaced atomically if it exists).
        visits: training visits; synthetic ones from :func:`generate` when None.
        n_visitors: how many synthetic visits to generate when ``visits`` is None.
        config: training parameters.
        catalogue: offers, slots, lifecycle rules and persona templates.
        name: prefix of the model version.
        progress: called with a short message per step.
    """
    say = progress or _noop
    config = config or TrainConfig()
    catalogue = catalogue or load_catalogue()
    if visits is None:
        say(f"generating {n_visitors} synthetic visits (seed {config.seed})")
        visits = generate(n_visitors, seed=config.seed)
    say("building feature rows with sdk.features.build_features")
    version = config.feature_set_version
    x = feature_matrix([v.request for v in visits], [v.now for v in visits], version=version)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(visits))
    n_test = max(PARITY_ROWS, int(len(visits) * config.holdout))
    test, train = order[:n_test], order[n_test:]
    offer_features = feature_names(version)
    seg_cols, off_cols = columns(SEGMENT_FEATURES, version), columns(offer_features, version)

    say("fitting segments (impute, scale, KMeans)")
    seg_pipe, metrics = fit_segments(x[train][:, seg_cols], config, say)
    say(f"fitting the next-best-offer model over {len(catalogue.offers)} offers")
    y = [visits[i].offer for i in range(len(visits))]
    train_y = [y[i] for i in train]
    test_y = [y[i] for i in test]
    off_pipe = fit_offers(x[train][:, off_cols], train_y, config.seed)
    offer_classes = [str(c) for c in off_pipe.classes_]
    unknown = set(offer_classes) - {o.id for o in catalogue.offers}
    if unknown:
        raise ValueError(f"training labels name offers missing from the catalogue: {unknown}")

    labels = seg_pipe.predict(x[test][:, seg_cols])
    planted = [visits[i].persona for i in test]
    metrics["segments_ari_vs_planted"] = round(segment_recovery(labels, planted), 4)
    metrics.update(offer_metrics(off_pipe, x[test][:, off_cols], test_y, train_y))

    say("naming segments as personas")
    personas, segments = describe_segments(
        x[train][:, seg_cols], seg_pipe[-1].labels_, SEGMENT_FEATURES, catalogue.personas
    )

    say("exporting to ONNX and checking sklearn against onnxruntime on held-out rows")
    seg_onnx = onnx_bytes(seg_pipe, len(seg_cols), f"{name}_segments")
    off_onnx = onnx_bytes(off_pipe, len(off_cols), f"{name}_offers")
    x_test = x[test]
    # sklearn on the same float32-rounded inputs onnxruntime sees
    x32 = x_test.astype(np.float32).astype(np.float64)
    seg_expected = sklearn_outputs(seg_pipe, x32[:, seg_cols])
    off_expected = sklearn_outputs(off_pipe, x32[:, off_cols])
    seg_got = onnx_outputs(seg_onnx, x_test[:, seg_cols])["scores"]
    off_got = onnx_outputs(off_onnx, x_test[:, off_cols])["probabilities"]
    metrics["parity_segments_max_abs_diff"] = float(np.max(np.abs(seg_got - seg_expected)))
    metrics["parity_offers_max_abs_diff"] = float(np.max(np.abs(off_got - off_expected)))
    metrics["parity_rows_checked"] = float(len(test))

    idx = test[:PARITY_ROWS]
    parity = parity_rows(
        [visits[i].request for i in idx],
        [visits[i].now for i in idx],
        x[idx],
        {
            "segments": ("scores", seg_expected[:PARITY_ROWS]),
            "offers": ("probabilities", off_expected[:PARITY_ROWS]),
        },
    )
    say(f"writing bundle to {out_dir}")
    manifest = write_bundle(
        Path(out_dir),
        models={"segments": (seg_onnx, SEGMENT_FEATURES), "offers": (off_onnx, offer_features)},
        parity=parity,
        name=name,
        created_at=datetime.now(UTC),
        render_report=render_report,
        manifest_fields={
            "schema_version": SCHEMA_VERSION,
            "feature_set_version": version,
            "feature_names": list(feature_names(version)),
            "offer_classes": offer_classes,
            "personas": personas,
            "segments": segments,
            "affinity_temperature": AFFINITY_TEMPERATURE,
            "offers": catalogue.offers,
            "slots": catalogue.slots,
            "lifecycle": catalogue.lifecycle,
            "experiments": catalogue.experiments,
            "holdout": catalogue.holdout,
            "exploration": catalogue.exploration,
            "training": TrainingInfo(
                data={
                    "source": "synthetic" if n_visitors else "given",
                    "generator": "model_export.inputs.synth",
                    "seed": config.seed,
                    "visits": len(visits),
                    "holdout": len(test),
                },
                rows=len(train),
                metrics=metrics,
            ),
        },
    )
    return TrainReport(
        manifest=manifest,
        path=Path(out_dir),
        holdout_labels=[int(v) for v in labels],
        holdout_planted=planted,
    )
