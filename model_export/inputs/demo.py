"""The synthetic demo as the inputs of the training run: generated visits (or given ones), split
into training and held-out rows, with the offer each visit's planted persona prefers as its label.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.pipeline import Pipeline

from model_export.fit.offers import fit_offers, offer_metrics
from model_export.fit.rows import columns
from model_export.fit.segments import Progress, TrainConfig
from model_export.inputs.catalogue import Catalogue, load_catalogue
from model_export.inputs.synth import Visit, generate
from model_export.training import PARITY_ROWS, Learned, TrainingInputs
from sdk.features import feature_names

__all__ = ["demo_inputs"]


def _noop(_: str) -> None:
    pass


@dataclass(frozen=True, kw_only=True)
class _LabelledOffers:
    """The learner of the demo: the next-best-offer model fitted on the visits' offer labels."""

    labels: Sequence[str]
    train: npt.NDArray[np.intp]
    test: npt.NDArray[np.intp]
    catalogue: Catalogue
    config: TrainConfig

    def __call__(self, x: npt.NDArray[np.float64], segments: Pipeline, say: Progress) -> Learned:
        version = self.config.feature_set_version
        names = feature_names(version)
        cols = columns(names, version)
        say(f"fitting the next-best-offer model over {len(self.catalogue.offers)} offers")
        train_y = [self.labels[i] for i in self.train]
        test_y = [self.labels[i] for i in self.test]
        pipe = fit_offers(x[self.train][:, cols], train_y, self.config.seed)
        unknown = {str(c) for c in pipe.classes_} - {o.id for o in self.catalogue.offers}
        if unknown:
            raise ValueError(f"training labels name offers missing from the catalogue: {unknown}")
        return Learned(
            models={"offers": (pipe, names, "probabilities")},
            metrics=offer_metrics(pipe, x[self.test][:, cols], test_y, train_y),
        )


def demo_inputs(
    *,
    visits: Sequence[Visit] | None = None,
    n_visitors: int = 20_000,
    config: TrainConfig | None = None,
    catalogue: Catalogue | None = None,
    name: str = "demo",
    progress: Progress | None = None,
) -> TrainingInputs:
    """The training run's inputs for the synthetic demo.

    Args:
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
    order = np.random.default_rng(config.seed).permutation(len(visits))
    n_test = max(PARITY_ROWS, int(len(visits) * config.holdout))
    test, train = order[:n_test], order[n_test:]
    return TrainingInputs(
        name=name,
        catalogue=catalogue,
        config=config,
        requests=[v.request for v in visits],
        nows=[v.now for v in visits],
        fit_rows=train,
        check_rows=test,
        learn=_LabelledOffers(
            labels=[v.offer for v in visits],
            train=train,
            test=test,
            catalogue=catalogue,
            config=config,
        ),
        data={
            "source": "synthetic" if n_visitors else "given",
            "generator": "model_export.inputs.synth",
            "seed": config.seed,
            "visits": len(visits),
            "holdout": len(test),
        },
        planted=[v.persona for v in visits],
    )
