"""A customer's data as the inputs of the training run: the files a :class:`TrainingConfig`
names, read and profiled at the cutoff, with the models learned from the history before it.

Every row is the decide request a visit of the customer at the cutoff would send
(:func:`model_export.inputs.profiles.profile_requests`), so serving computes the same features.
Segments, personas and RFM edges are learned at the cutoff; the predictive scores and the offer
policy on earlier windows (:mod:`model_export.fit.history`). CRM traits never enter a model;
listed in the config, they describe the segments in the model card. Sensitive categories and
URLs (the catalogue's ``sensitive`` section) are dropped from the files as soon as they are read
(:func:`model_export.inputs.sensitive.scrub_inputs`).

Must not import server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.pipeline import Pipeline

from model_export.errors import TrainingDataError
from model_export.fit import rfm
from model_export.fit import scores as predict
from model_export.fit.btyd import BtydModels, btyd_models, choose_served
from model_export.fit.history import (
    PREDICT_FEATURES,
    holdout_mask,
    importance,
    offer_policy,
    predictive_scores,
    requests_and_rows,
    segment_traits,
)
from model_export.fit.privacy import merge_small, suppress_summary
from model_export.fit.segments import Progress, TrainConfig
from model_export.inputs import ingest, profiles
from model_export.inputs.catalogue import Catalogue, load_catalogue
from model_export.inputs.config import TrainingConfig
from model_export.inputs.sensitive import scrub_inputs
from model_export.training import PARITY_ROWS, Learned, Model, TrainingInputs
from sdk.features import FEATURE_SET_VERSION, feature_names
from sdk.manifest import BtydScore
from sdk.sensitive import Sensitivity

__all__ = ["customer_inputs"]

#: The decision score of each supervised model (the BTYD models serve those that are missing).
_SCORE_NAMES: dict[str, BtydScore] = {
    "churn": "churnProbability",
    "purchases": "expectedPurchases",
    "value": "expectedValue",
}


def _noop(_: str) -> None:
    pass


def _camel(summary: dict[str, Any]) -> dict[str, Any]:
    """An input summary with camelCase keys, as the manifest and the model card spell them."""

    def camel(key: str) -> str:
        head, *rest = key.split("_")
        return head + "".join(w.title() for w in rest)

    return {camel(k): v for k, v in summary.items()}


@dataclass(frozen=True, kw_only=True)
class _HistoryModels:
    """The learner of a customer's data: RFM, predictive scores and the offer policy."""

    config: TrainingConfig
    transactions: pl.DataFrame
    events: pl.DataFrame | None
    traits: pl.DataFrame | None
    at_cutoff: pl.DataFrame
    catalogue: Catalogue
    cutoff: datetime

    def __call__(self, x: npt.NDArray[np.float64], segments: Pipeline, say: Progress) -> Learned:
        config, tx, events = self.config, self.transactions, self.events
        horizon = config.predict.horizon_days
        t_cal = self.cutoff - timedelta(days=horizon)
        say("RFM quintiles")
        rfm_edges = rfm.rfm_def(self.at_cutoff)
        scored = rfm.rfm_scores(self.at_cutoff, rfm_edges)
        k = self.config.privacy.min_group_size
        rfm_counts = merge_small(
            dict(scored.group_by("rfm_code").len().sort("len", descending=True).iter_rows()), k
        )
        pipes, metrics, diagnostics, skipped = predictive_scores(
            tx, events, self.cutoff, horizon, config.seed, say
        )
        btyd = self._btyd(horizon, t_cal, say)
        metrics.update(btyd.metrics)
        # choose by evidence: a supervised model that loses to BG/NBD out of time is not served
        demoted = choose_served(pipes, metrics) if btyd.definition is not None else {}
        pipes = {k: v for k, v in pipes.items() if k not in demoted}
        notes = [f"supervised churn/value models skipped: {skipped}"] * bool(skipped)
        notes += list(demoted.values()) + btyd.notes
        definition = btyd.definition
        if definition is not None:
            missing = [_SCORE_NAMES[k] for k in predict.SCORE_OUTPUTS if k not in pipes]
            serves = [s for s in definition.serves if s in missing]
            definition = msgspec.structs.replace(definition, serves=serves)
        say("offer policy")
        cal_frame = profiles.build_profiles(tx, t_cal, events=events)
        _, x_cal = requests_and_rows(cal_frame, t_cal)
        offer_pipe, pol_metrics, pol_meta = offer_policy(
            events, cal_frame, x_cal, self.at_cutoff, x, self.catalogue, t_cal, self.cutoff,
            config.seed, say,
        )  # fmt: skip
        metrics.update(pol_metrics)
        all_names = feature_names(FEATURE_SET_VERSION)
        models: dict[str, Model] = {"offers": (offer_pipe, all_names, "probabilities")}
        for key, pipe in pipes.items():
            models[key] = (pipe, PREDICT_FEATURES, predict.SCORE_OUTPUTS[key][0])
        diagnostics["feature_importance"] = {"offers": importance(offer_pipe, all_names)}
        if "feature_importance_churn" in diagnostics:
            diagnostics["feature_importance"]["churn"] = diagnostics.pop("feature_importance_churn")
        diagnostics["rfm_distribution"] = rfm_counts
        if self.traits is not None and config.traits.use:
            diagnostics["segment_traits"] = segment_traits(
                self.at_cutoff, segments[-1].labels_, config.traits.use, min_group=k
            )
        data: dict[str, Any] = {"offerPolicy": pol_meta}
        if skipped:
            data["predictiveSkipped"] = skipped
        if notes:
            data["modelNotes"] = notes
        return Learned(
            models=models,
            metrics=metrics,
            diagnostics=diagnostics,
            data=data,
            rfm=rfm_edges,
            btyd=definition,
            notes=notes,
        )

    def _btyd(self, horizon: int, t_cal: datetime, say: Progress) -> BtydModels:
        """BG/NBD and Gamma-Gamma on the buyers at the cutoff, checked out of time from
        ``t_cal`` when the history reaches back that far (able to serve every score; the
        caller keeps those no served supervised model gives)."""
        say("buy-till-you-die models (BG/NBD, Gamma-Gamma)")
        buyers = self.at_cutoff.filter(pl.col("purchases") > 0)
        at_cutoff = profiles.profile_requests(buyers, self.cutoff)
        first = self.transactions["ts"].min()
        calibration, future = None, None
        if isinstance(first, datetime) and first < t_cal:
            frame = profiles.build_profiles(self.transactions, t_cal, include_visitors=False)
            frame = frame.filter(pl.col("purchases") > 0)
            labels = profiles.future_labels(self.transactions, t_cal, horizon)
            frame = frame.join(labels, on="customer_id", how="inner")
            if frame.height >= 20:
                calibration = profiles.profile_requests(frame, t_cal)
                future = {c: frame[c].to_numpy() for c in ("purchases_next", "value_next")}
        return btyd_models(at_cutoff, calibration, future, horizon, list(_SCORE_NAMES.values()))


def customer_inputs(
    config: TrainingConfig, *, now: datetime | None = None, progress: Progress | None = None
) -> TrainingInputs:
    """Read the configured data and prepare the training run's inputs.

    Args:
        config: the training configuration.
        now: the current time (for rejecting future timestamps); the clock by default.
        progress: called with a short message per step.

    Raises:
        TrainingDataError: no valid transactions, or too few customers to segment.
        model_export.inputs.ingest.IngestError: the config names a column the files lack.
    """
    say = progress or _noop
    catalogue = load_catalogue(config.offers.catalogue)
    say("reading inputs")
    results, dropped = scrub_inputs(
        ingest.read_all(config, now=now), Sensitivity.from_def(catalogue.sensitive)
    )
    tx = results["transactions"].frame
    events = results["events"].frame if "events" in results else None
    if tx.is_empty():
        raise TrainingDataError("no valid transactions were read; see the reject report")
    newest = tx["ts"].max()
    assert isinstance(newest, datetime)
    cutoff = config.cutoff or (newest + timedelta(seconds=1))
    horizon = config.predict.horizon_days
    t_cal = cutoff - timedelta(days=horizon)
    traits = results["traits"].frame if "traits" in results else None

    say(f"building profiles at the cutoff {cutoff.isoformat()}")
    at_cutoff = profiles.build_profiles(tx, cutoff, events=events, traits=traits)
    if at_cutoff.height < 20:
        raise TrainingDataError(f"only {at_cutoff.height} customers: too few to segment")
    requests = profiles.profile_requests(at_cutoff, cutoff)
    seg = config.segments
    check = holdout_mask(at_cutoff["customer_id"].to_list(), 0.2, config.seed + 1)
    summaries = suppress_summary(ingest.summarize(results), config.privacy.min_group_size)
    data: dict[str, Any] = {
        kind: _camel(summary) for kind, summary in summaries.items() if kind != "total"
    }
    data.update(
        {
            "cutoff": cutoff.isoformat(),
            "horizonDays": horizon,
            "windows": {
                "predictTrainFeaturesAt": (t_cal - timedelta(days=horizon)).isoformat(),
                "predictHoldoutFeaturesAt": t_cal.isoformat(),
                "offerLog": [t_cal.isoformat(), cutoff.isoformat()],
            },
            "customers": at_cutoff.height,
        }
    )
    if catalogue.sensitive.categories or catalogue.sensitive.paths:
        k = config.privacy.min_group_size  # counts under k are left out, like any small group
        data["sensitive"] = {"droppedValues": {c: n for c, n in dropped.items() if n >= k}}
    return TrainingInputs(
        name=config.name,
        catalogue=catalogue,
        config=TrainConfig(
            seed=config.seed,
            k=seg.k,
            k_min=seg.k_min,
            k_max=seg.k_max,
            seeds=seg.seeds,
            min_share=seg.min_share,
            min_stability=seg.min_stability,
            silhouette_sample=seg.sample,
            min_group_size=config.privacy.min_group_size,
        ),
        requests=requests,
        nows=[cutoff] * len(requests),
        fit_rows=np.arange(len(requests)),
        check_rows=np.flatnonzero(check)
        if check.sum() >= PARITY_ROWS
        else np.arange(len(requests)),
        learn=_HistoryModels(
            config=config,
            transactions=tx,
            events=events,
            traits=traits,
            at_cutoff=at_cutoff,
            catalogue=catalogue,
            cutoff=cutoff,
        ),
        data=data,
        persona_overrides={
            k: (v.name, v.description) for k, v in config.personas.overrides.items()
        },
        read={k: r.report for k, r in results.items()},
    )
