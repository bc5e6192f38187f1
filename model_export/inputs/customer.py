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

from dataclasses import dataclass, field
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
from model_export.fit.btyd import BtydModels, btyd_models
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
from model_export.fit.stacked import (
    ADJUST_MODELS,
    Window,
    adjustment_metrics,
    choose,
    choose_l2,
    eval_fold,
    fit_adjustments,
    origins,
    recency_model,
    sample_customers,
    window_at,
    with_adjustments,
)
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


#: The supervised model of each decision score (metric names).
_MODEL_OF: dict[BtydScore, str] = {v: k for k, v in _SCORE_NAMES.items()}


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
        notes = [f"supervised churn/value models skipped: {skipped}"] * bool(skipped)
        btyd = self._btyd(horizon, say)
        notes += btyd.notes
        definition = btyd.definition
        adjust: dict[BtydScore, Pipeline] = {}
        recency: Pipeline | None = None
        if definition is not None:
            adjust, found = self._adjustments(horizon, definition.pareto_nbd is not None, say)
            metrics.update(found.metrics)
            diagnostics.update(found.diagnostics)
            notes += found.notes
            # choose by evidence: every score goes to the candidate best out of time
            served, lost = choose(metrics, list(pipes), list(adjust))
            notes += lost
            pipes = {k: v for k, v in pipes.items() if served.get(_SCORE_NAMES[k]) == "glm"}
            if served.get("churnProbability") == "recency" and found.fold is not None:
                recency = recency_model(found.fold, PREDICT_FEATURES)
            adjust = {k: v for k, v in adjust.items() if served.get(k) == "adjusted"}
            definition = with_adjustments(definition, list(adjust))
            serves = [s for s in definition.serves if served.get(s) == "btyd"]
            definition = msgspec.structs.replace(definition, serves=serves)
            notes += [f"{s}: not served (no model beats its baseline out of time)"
                      for s, c in served.items() if c is None]  # fmt: skip
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
        for score, pipe in adjust.items():
            models[ADJUST_MODELS[score]] = (pipe, PREDICT_FEATURES, "variable")
        if recency is not None:  # the baseline ranked churn best out of time
            models["churn"] = (recency, ("recency_days",), predict.SCORE_OUTPUTS["churn"][0])
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

    def _btyd(self, horizon: int, say: Progress) -> BtydModels:
        """BG/NBD and Gamma-Gamma on the buyers at the cutoff (able to serve every score; the
        caller keeps those no other candidate gives better)."""
        say("buy-till-you-die models (BG/NBD, Gamma-Gamma)")
        buyers = self.at_cutoff.filter(pl.col("purchases") > 0)
        at_cutoff = profiles.profile_requests(buyers, self.cutoff)
        return btyd_models(at_cutoff, horizon, list(_SCORE_NAMES.values()))

    def _adjustments(
        self, horizon: int, pareto: bool, say: Progress
    ) -> tuple[dict[BtydScore, Pipeline], _Found]:
        """The supervised adjustments of the BTYD scores: checked on the out-of-time fold
        (trained on windows that end before it), then refitted on every window that ends by
        the cutoff, with the repeat-buying model the cutoff chose (``pareto``). Empty, with the
        reason in the notes, when the history is too short."""
        tx, events, share = sample_customers(self.transactions, self.events)
        first = tx["ts"].min()
        assert isinstance(first, datetime)
        fold_at, fold_days = eval_fold(first, self.cutoff, horizon)
        say(f"out-of-time check of every candidate from {fold_at.date()} ({fold_days} days)")
        windows: dict[tuple[datetime, int], Window | None] = {}

        def stack(end: datetime) -> list[Window]:
            for at, days in origins(first, end, horizon):
                if (at, days) not in windows:
                    windows[at, days] = window_at(
                        tx, events, at, days, PREDICT_FEATURES, pareto=pareto
                    )
            picked = [windows[o] for o in origins(first, end, horizon)]
            return [w for w in picked if w is not None]

        fold = window_at(tx, events, fold_at, fold_days, PREDICT_FEATURES, pareto=pareto)
        if fold is None:
            return {}, _Found(notes=["candidates not checked out of time: no BG/NBD fit "
                                         f"on the history before {fold_at.date()}"])  # fmt: skip
        before = stack(fold_at)
        if len(before) < 2:
            found, curves = adjustment_metrics({}, fold)  # the BTYD models and baselines
            reason = "fewer than 2 training origins before the out-of-time fold"
            notes = [f"supervised adjustments skipped: {reason}"]
            return {}, _Found(found, curves, notes=notes, fold=fold)
        l2 = choose_l2(before, fold)
        checked, diagnostics = adjustment_metrics(fit_adjustments(before, l2), fold)
        everything = stack(self.cutoff)
        say(f"supervised adjustments of the BTYD scores on {len(everything)} stacked origins")
        checked["adjust_train_origins"] = float(len(everything))
        checked["adjust_customer_share"] = share
        checked["adjust_train_rows"] = float(sum(len(w.ids) for w in everything))
        checked.update({f"adjust_l2_{_MODEL_OF[s]}": v for s, v in l2.items()})
        return fit_adjustments(everything, l2), _Found(checked, diagnostics, fold=fold)


@dataclass(frozen=True)
class _Found:
    """Out-of-time metrics, model-card diagnostics and notes of the adjustments."""

    metrics: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fold: Window | None = None


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
