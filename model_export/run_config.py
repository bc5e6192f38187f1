"""Train a bundle from a customer's own data, as described by a :class:`TrainingConfig`.

Time is split so every reported number is out-of-time (``H`` = ``predict.horizon_days``)::

    ... history ... | T_train ---- H ---- | T_cal ---- H ---- | cutoff
                     churn/value trained   churn/value scored
                     on features at        on features at T_cal;
                     T_train, labels in    the offer log in
                     [T_train, T_cal)      [T_cal, cutoff) trains and
                                           evaluates the offer policy

Segments, personas and RFM edges are learned from the profiles at the cutoff (everything known).
Every training row goes through :func:`sdk.features.build_features`, via the decide request a
visit at that time would send (:func:`model_export.inputs.profiles.profile_requests`), so serving
computes the very same features. CRM traits never enter a model (the decision path cannot see
them); when listed in the config they describe the segments in the model card.

Must not import server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.pipeline import Pipeline

from model_export.bundle.card import render_report
from model_export.bundle.export import convert_and_check, parity_rows, write_bundle
from model_export.fit import offer_policy as policy
from model_export.fit import rfm
from model_export.fit import scores as predict
from model_export.fit.models import (
    SEGMENT_FEATURES,
    TrainConfig,
    columns,
    feature_matrix,
    fit_segments,
)
from model_export.fit.personas import describe_segments
from model_export.inputs import ingest, profiles
from model_export.inputs.catalogue import Catalogue, load_catalogue
from model_export.inputs.config import TrainingConfig
from sdk.features import FEATURE_SET_VERSION, feature_names
from sdk.manifest import Manifest, TrainingInfo
from sdk.schema import SCHEMA_VERSION, DecideRequest

__all__ = ["PREDICT_FEATURES", "DataTrainReport", "TrainingDataError", "train_from_config"]

#: Features of the churn and value models: what a customer's history says, not the visit.
PREDICT_FEATURES: tuple[str, ...] = (
    "page_views_log",
    "sessions_log",
    "purchases_log",
    "revenue_log",
    "aov_log",
    "recency_days",
    "days_since_visit",
    "searches_log",
    "categories_distinct",
    "tenure_days",
    "interpurchase_days",
    "overdue_log",
    "cat_electronics",
    "cat_fashion",
    "cat_home",
    "cat_beauty",
    "cat_sports",
    "cat_books",
)
PARITY_ROWS = 64
AFFINITY_TEMPERATURE = 4.0


class TrainingDataError(ValueError):
    """Raised when the data cannot train a bundle (no valid transactions, say)."""


@dataclass
class DataTrainReport:
    """What a run produced."""

    manifest: Manifest
    path: Path
    inputs: dict[str, ingest.InputReport]
    customers: int


def _noop(_: str) -> None:
    pass


def _requests_and_rows(
    frame: pl.DataFrame, when: datetime
) -> tuple[list[DecideRequest], npt.NDArray[np.float64]]:
    requests = profiles.profile_requests(frame, when)
    x = feature_matrix(requests, [when] * len(requests), version=FEATURE_SET_VERSION)
    return requests, x


def _holdout_mask(ids: Sequence[str], share: float, seed: int) -> npt.NDArray[np.bool_]:
    """A stable customer-level split: a customer is held out by a hash of its id and seed."""
    cut = int(share * 2**32)
    return np.asarray(
        [
            int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:4], "big") < cut
            for i in ids
        ],
        dtype=bool,
    )


def _importance(pipe: Pipeline, names: Sequence[str]) -> dict[str, float]:
    """Mean absolute coefficient per feature, in standardised units."""
    coef = np.atleast_2d(np.asarray(pipe[-1].coef_, dtype=np.float64))
    weights = np.abs(coef).mean(axis=0)
    return {n: round(float(w), 4) for n, w in zip(names, weights, strict=True)}


def _predictive(
    tx: pl.DataFrame,
    events: pl.DataFrame | None,
    cutoff: datetime,
    horizon: int,
    seed: int,
    say: Any,
) -> tuple[dict[str, Pipeline], dict[str, float], dict[str, Any], str | None]:
    """Fit churn and expected purchases/value on [T_train, T_cal), score on [T_cal, cutoff)."""
    t_cal = cutoff - timedelta(days=horizon)
    t_train = t_cal - timedelta(days=horizon)
    first = tx["ts"].min()
    if not isinstance(first, datetime) or first >= t_train:
        return {}, {}, {}, f"needs history before {t_train.date()} (2 x {horizon} days)"
    cols = columns(PREDICT_FEATURES)

    def window(at: datetime) -> tuple[npt.NDArray[np.float64], pl.DataFrame]:
        prof = profiles.build_profiles(tx, at, events=events, include_visitors=False)
        prof = prof.filter(pl.col("purchases") > 0)
        labels = profiles.future_labels(tx, at, horizon)
        joined = prof.join(labels, on="customer_id", how="inner")
        _, x = _requests_and_rows(joined, at)
        return x[:, cols], joined

    say(f"predictive scores: training window at {t_train.date()}, holdout at {t_cal.date()}")
    x_tr, f_tr = window(t_train)
    x_te, f_te = window(t_cal)
    if len(f_tr) < 50 or len(f_te) < 50 or f_tr["churned"].n_unique() < 2:
        return {}, {}, {}, "fewer than 50 buyers, or one class only, in a window"
    churn = predict.fit_churn(x_tr, f_tr["churned"].to_numpy(), seed)
    metrics = predict.evaluate_churn(
        churn, x_te, f_te["churned"].to_numpy(), f_te["recency_days"].to_numpy()
    )
    diagnostics: dict[str, Any] = dict(
        predict.churn_diagnostics(churn, x_te, f_te["churned"].to_numpy())
    )
    value = predict.fit_value_models(
        x_tr, f_tr["purchases_next"].to_numpy(), f_tr["value_next"].to_numpy(), seed
    )
    observed = np.maximum(f_te["tenure_days"].fill_null(0).to_numpy().astype(np.float64), 30.0)
    metrics.update(
        predict.evaluate_value(
            value,
            x_te,
            f_te["purchases_next"].to_numpy(),
            f_te["value_next"].to_numpy(),
            f_te["purchases"].to_numpy() / observed,
            f_te["revenue"].to_numpy() / observed,
            float(horizon),
        )
    )
    # the same comparison among customers who bought within the last horizon, where recency
    # alone separates least (long-gone customers make churn easy to call)
    active = f_te["recency_days"].to_numpy() <= horizon
    if active.sum() >= 50 and len(set(f_te["churned"].to_numpy()[active])) == 2:
        y_act = f_te["churned"].to_numpy()[active]
        proba = churn.predict_proba(x_te[active])[:, 1]
        metrics["churn_auc_active"] = predict.roc_auc(proba, y_act)
        metrics["churn_auc_active_recency_baseline"] = predict.roc_auc(
            f_te["recency_days"].to_numpy()[active], y_act
        )
    metrics["predict_train_customers"] = float(len(f_tr))
    metrics["predict_holdout_customers"] = float(len(f_te))
    diagnostics["feature_importance_churn"] = _importance(churn, PREDICT_FEATURES)
    return {"churn": churn, **value}, metrics, diagnostics, None


def _offer_log(events: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Impressions in [start, end) with their reward: the value of a conversion of the same
    offer in the same session (1.0 when it carries no value), else 0."""
    shown = events.filter(
        (pl.col("type") == "impression")
        & pl.col("offer_id").is_not_null()
        & (pl.col("ts") >= start)
        & (pl.col("ts") < end)
    ).with_columns(key=pl.coalesce("customer_id", "visitor_id"))
    converted = (
        events.filter((pl.col("type") == "conversion") & pl.col("offer_id").is_not_null())
        .group_by("session_id", "offer_id")
        .agg(reward=pl.col("value").fill_null(1.0).sum())
    )
    return shown.join(converted, on=["session_id", "offer_id"], how="left").with_columns(
        reward=pl.col("reward").fill_null(0.0)
    )


def _offer_policy(
    events: pl.DataFrame | None,
    at_cal: pl.DataFrame,
    x_cal: npt.NDArray[np.float64],
    now_frame: pl.DataFrame,
    x_now: npt.NDArray[np.float64],
    catalogue: Catalogue,
    t_cal: datetime,
    cutoff: datetime,
    seed: int,
    say: Any,
) -> tuple[Pipeline, dict[str, float], dict[str, Any]]:
    """Learn the offer policy from the logged outcomes in [T_cal, cutoff), with features of
    each customer at T_cal; evaluate it on held-out customers. Without a log: the affinity
    model (the offer of each customer's favourite category), said so in the metadata."""
    offers = [o.id for o in catalogue.offers]
    log = _offer_log(events, t_cal, cutoff) if events is not None else pl.DataFrame()
    if log.height:
        index = {k: i for i, k in enumerate(at_cal["customer_id"].to_list())}
        rows = [index.get(k, -1) for k in log["key"].to_list()]
        keep = np.asarray([r >= 0 for r in rows])
        log = log.filter(pl.Series(keep))
        rows = [r for r in rows if r >= 0]
    if log.height >= 200:
        say(f"offer policy from {log.height} logged impressions (outcome-weighted learning)")
        x = x_cal[rows]
        actions: list[str] = log["offer_id"].to_list()
        rewards = log["reward"].to_numpy().astype(np.float64)
        props = log["propensity"].to_numpy() if log["propensity"].null_count() == 0 else None
        held = _holdout_mask(log["key"].to_list(), 0.3, seed)
        pipe, meta = policy.fit_policy(
            x[~held],
            [a for a, h in zip(actions, held, strict=True) if not h],
            rewards[~held],
            None if props is None else props[~held],
            offers,
            seed,
        )
        metrics = policy.evaluate_policy(
            pipe,
            x[held],
            [a for a, h in zip(actions, held, strict=True) if h],
            rewards[held],
            None if props is None else props[held],
            offers,
            seed=seed,
        )
        metrics["policy_log_impressions"] = float(log.height)
        return pipe, metrics, {"method": meta.get("method"), **_jsonable(meta)}
    say("no logged offer outcomes: the affinity model (favourite category -> offer)")
    by_category = {o.category: o.id for o in catalogue.offers if o.category}
    fallback = offers[0]
    labels = [by_category.get(c or "", fallback) for c in now_frame["top_category"].to_list()]
    if len(set(labels)) < 2:
        labels = [offers[i % 2] for i in range(len(labels))]
    pipe, meta = policy.fit_affinity_model(x_now, labels, seed)
    return pipe, {}, _jsonable(meta)


def _camel(summary: dict[str, Any]) -> dict[str, Any]:
    """An input summary with camelCase keys, as the manifest and the model card spell them."""

    def camel(key: str) -> str:
        head, *rest = key.split("_")
        return head + "".join(w.title() for w in rest)

    return {camel(k): v for k, v in summary.items()}


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, np.ndarray):
            out[k] = v.tolist()
        elif isinstance(v, (np.floating, np.integer)):
            out[k] = v.item()
        else:
            out[k] = v
    return out


def train_from_config(
    config: TrainingConfig,
    out_dir: str | Path,
    *,
    progress: Any = None,
    now: datetime | None = None,
) -> DataTrainReport:
    """Read the configured data, train every model and write a verified bundle.

    Args:
        config: the training configuration.
        out_dir: bundle directory (replaced atomically when it exists).
        progress: called with a short message per step.
        now: the current time (for rejecting future timestamps); the clock by default.

    Raises:
        TrainingDataError: no valid transactions, or too few customers to segment.
        model_export.inputs.ingest.IngestError: the config names a column the files lack.
    """
    say = progress or _noop
    say("reading inputs")
    results = ingest.read_all(config, now=now)
    tx = results["transactions"].frame
    events = results["events"].frame if "events" in results else None
    if tx.is_empty():
        raise TrainingDataError("no valid transactions were read; see the reject report")
    newest = tx["ts"].max()
    assert isinstance(newest, datetime)
    cutoff = config.cutoff or (newest + timedelta(seconds=1))
    horizon = config.predict.horizon_days
    t_cal = cutoff - timedelta(days=horizon)
    catalogue = load_catalogue(config.offers.catalogue)
    traits = results["traits"].frame if "traits" in results else None

    say(f"building profiles at the cutoff {cutoff.isoformat()}")
    now_frame = profiles.build_profiles(tx, cutoff, events=events, traits=traits)
    if now_frame.height < 20:
        raise TrainingDataError(f"only {now_frame.height} customers: too few to segment")
    now_requests, x_now = _requests_and_rows(now_frame, cutoff)
    seg_cols = columns(SEGMENT_FEATURES)
    seg_cfg = config.segments
    train_cfg = TrainConfig(
        seed=config.seed,
        k=seg_cfg.k,
        k_min=seg_cfg.k_min,
        k_max=seg_cfg.k_max,
        seeds=seg_cfg.seeds,
        min_share=seg_cfg.min_share,
        min_stability=seg_cfg.min_stability,
        silhouette_sample=seg_cfg.sample,
    )
    say(f"segments over {now_frame.height} customers")
    seg_pipe, metrics = fit_segments(x_now[:, seg_cols], train_cfg, say)
    labels = seg_pipe[-1].labels_
    overrides = {k: (v.name, v.description) for k, v in config.personas.overrides.items()}
    personas, segments = describe_segments(
        x_now[:, seg_cols], labels, SEGMENT_FEATURES, catalogue.personas, overrides
    )

    say("RFM quintiles")
    rfm_edges = rfm.rfm_def(now_frame)
    scored = rfm.rfm_scores(now_frame, rfm_edges)
    rfm_counts = dict(scored.group_by("rfm_code").len().sort("len", descending=True).iter_rows())

    pipes, p_metrics, diagnostics, skipped = _predictive(
        tx, events, cutoff, horizon, config.seed, say
    )
    metrics.update(p_metrics)

    say("offer policy")
    cal_frame = profiles.build_profiles(tx, t_cal, events=events)
    _, x_cal = _requests_and_rows(cal_frame, t_cal)
    offer_pipe, pol_metrics, pol_meta = _offer_policy(
        events, cal_frame, x_cal, now_frame, x_now, catalogue, t_cal, cutoff, config.seed, say
    )
    metrics.update(pol_metrics)

    say("exporting to ONNX and checking against sklearn")
    all_names = feature_names(FEATURE_SET_VERSION)
    pred_cols = columns(PREDICT_FEATURES)
    models: dict[str, tuple[Pipeline, Sequence[int], str]] = {
        "segments": (seg_pipe, seg_cols, "scores"),
        "offers": (offer_pipe, list(range(len(all_names))), "probabilities"),
    }
    feature_lists: dict[str, Sequence[str]] = {
        "segments": SEGMENT_FEATURES,
        "offers": all_names,
    }
    for key, pipe in pipes.items():
        models[key] = (pipe, pred_cols, predict.SCORE_OUTPUTS[key][0])
        feature_lists[key] = PREDICT_FEATURES
    check = _holdout_mask(now_frame["customer_id"].to_list(), 0.2, config.seed + 1)
    x_check = x_now[check] if check.sum() >= PARITY_ROWS else x_now
    blobs, expected, parity_metrics = convert_and_check(models, x_check, config.name)
    metrics.update(parity_metrics)
    idx = (
        np.flatnonzero(check)[:PARITY_ROWS]
        if check.sum() >= PARITY_ROWS
        else np.arange(min(PARITY_ROWS, len(x_now)))
    )
    parity = parity_rows(
        [now_requests[i] for i in idx],
        [cutoff] * len(idx),
        x_now[idx],
        {key: (models[key][2], expected[key][: len(idx)]) for key in models},
    )
    diagnostics["feature_importance"] = {"offers": _importance(offer_pipe, all_names)}
    if "feature_importance_churn" in diagnostics:
        diagnostics["feature_importance"]["churn"] = diagnostics.pop("feature_importance_churn")
    diagnostics["rfm_distribution"] = rfm_counts
    if traits is not None and config.traits.use:
        diagnostics["segment_traits"] = _segment_traits(now_frame, labels, config.traits.use)

    data: dict[str, Any] = {
        kind: _camel(summary)
        for kind, summary in ingest.summarize(results).items()
        if kind != "total"
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
            "customers": now_frame.height,
            "offerPolicy": pol_meta,
        }
    )
    if skipped:
        data["predictiveSkipped"] = skipped
    say(f"writing bundle to {out_dir}")
    manifest = write_bundle(
        Path(out_dir),
        models={k: (blobs[k], list(feature_lists[k])) for k in models},
        parity=parity,
        name=config.name,
        created_at=datetime.now(UTC),
        render_report=render_report,
        manifest_fields={
            "schema_version": SCHEMA_VERSION,
            "feature_set_version": FEATURE_SET_VERSION,
            "feature_names": list(all_names),
            "offer_classes": [str(c) for c in offer_pipe.classes_],
            "personas": personas,
            "segments": segments,
            "affinity_temperature": AFFINITY_TEMPERATURE,
            "offers": catalogue.offers,
            "slots": catalogue.slots,
            "lifecycle": catalogue.lifecycle,
            "experiments": catalogue.experiments,
            "holdout": catalogue.holdout,
            "exploration": catalogue.exploration,
            "rfm": rfm_edges,
            "training": TrainingInfo(
                data=data,
                rows=now_frame.height,
                metrics={k: float(v) for k, v in metrics.items()},
                diagnostics=diagnostics,
            ),
        },
    )
    return DataTrainReport(
        manifest=manifest,
        path=Path(out_dir),
        inputs={k: r.report for k, r in results.items()},
        customers=now_frame.height,
    )


def _segment_traits(
    frame: pl.DataFrame, labels: npt.NDArray[np.int_], use: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Share of each trait value within each segment (top 10 values per trait)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    with_seg = frame.with_columns(segment=pl.Series(labels))
    for trait in use:
        column = f"trait_{trait}"
        if column not in frame.columns:
            continue
        shares = (
            with_seg.group_by("segment", column)
            .len()
            .with_columns(share=pl.col("len") / pl.col("len").sum().over("segment"))
            .sort("segment", "share", descending=[False, True])
        )
        for seg, value, _, share in shares.iter_rows():
            bucket = out.setdefault(str(seg), {}).setdefault(trait, {})
            if len(bucket) < 10:
                bucket[str(value)] = round(float(share), 4)
    return out
