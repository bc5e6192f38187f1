"""Models learned from a customer's history over time windows: the predictive scores (trained
on one window, scored out of time on the next), the offer policy from the logged impressions
before the cutoff (the affinity model without a log), and the diagnostics of the model card.

Must not import server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.pipeline import Pipeline

from model_export.fit import offer_policy as policy
from model_export.fit import scores as predict
from model_export.fit.privacy import OTHER, merge_small
from model_export.fit.rows import columns, feature_matrix
from model_export.fit.segments import Progress
from model_export.inputs import profiles
from model_export.inputs.catalogue import Catalogue
from sdk.features import FEATURE_SET_VERSION
from sdk.schema import DecideRequest

__all__ = [
    "PREDICT_FEATURES",
    "holdout_mask",
    "importance",
    "offer_policy",
    "predictive_scores",
    "requests_and_rows",
    "segment_traits",
]

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


def requests_and_rows(
    frame: pl.DataFrame, when: datetime
) -> tuple[list[DecideRequest], npt.NDArray[np.float64]]:
    """The decide requests of a profiles frame at ``when`` and their full feature rows."""
    requests = profiles.profile_requests(frame, when)
    x = feature_matrix(requests, [when] * len(requests), version=FEATURE_SET_VERSION)
    return requests, x


def holdout_mask(ids: Sequence[str], share: float, seed: int) -> npt.NDArray[np.bool_]:
    """A stable customer-level split: a customer is held out by a hash of its id and seed."""
    cut = int(share * 2**32)
    return np.asarray(
        [
            int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:4], "big") < cut
            for i in ids
        ],
        dtype=bool,
    )


def importance(pipe: Pipeline, names: Sequence[str]) -> dict[str, float]:
    """Mean absolute coefficient per feature, in standardised units."""
    coef = np.atleast_2d(np.asarray(pipe[-1].coef_, dtype=np.float64))
    weights = np.abs(coef).mean(axis=0)
    return {n: round(float(w), 4) for n, w in zip(names, weights, strict=True)}


def predictive_scores(
    tx: pl.DataFrame,
    events: pl.DataFrame | None,
    cutoff: datetime,
    horizon: int,
    seed: int,
    say: Progress,
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
        _, x = requests_and_rows(joined, at)
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
    diagnostics["feature_importance_churn"] = importance(churn, PREDICT_FEATURES)
    return {"churn": churn, **value}, metrics, diagnostics, None


def offer_log(events: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
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


def offer_policy(
    events: pl.DataFrame | None,
    at_cal: pl.DataFrame,
    x_cal: npt.NDArray[np.float64],
    now_frame: pl.DataFrame,
    x_now: npt.NDArray[np.float64],
    catalogue: Catalogue,
    t_cal: datetime,
    cutoff: datetime,
    seed: int,
    say: Progress,
) -> tuple[Pipeline, dict[str, float], dict[str, Any]]:
    """Learn the offer policy from the logged outcomes in [T_cal, cutoff), with features of
    each customer at T_cal; evaluate it on held-out customers. Without a log: the affinity
    model (the offer of each customer's favourite category), said so in the metadata."""
    offers = [o.id for o in catalogue.offers]
    log = offer_log(events, t_cal, cutoff) if events is not None else pl.DataFrame()
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
        held = holdout_mask(log["key"].to_list(), 0.3, seed)
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


def segment_traits(
    frame: pl.DataFrame, labels: npt.NDArray[np.int_], use: Sequence[str], *, min_group: int = 10
) -> dict[str, dict[str, dict[str, float]]]:
    """Share of each trait value within each segment (top 10 values per trait).

    k-suppressed: a segment of fewer than ``min_group`` customers gets no entry, and values
    held by fewer than ``min_group`` of a segment's customers are merged into ``"other"``
    (left out when ``"other"`` is itself that small).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    with_seg = frame.with_columns(segment=pl.Series(labels))
    sizes = dict(with_seg.group_by("segment").len().iter_rows())
    for trait in use:
        column = f"trait_{trait}"
        if column not in frame.columns:
            continue
        counts: dict[int, dict[str, int]] = {}
        for seg, value, n in with_seg.group_by("segment", column).len().iter_rows():
            counts.setdefault(int(seg), {})[str(value)] = int(n)
        for seg, values in sorted(counts.items()):
            if sizes[seg] < min_group:
                continue
            kept = merge_small(values, min_group)
            top = sorted(kept.items(), key=lambda kv: (kv[0] == OTHER, -kv[1], kv[0]))[:10]
            bucket = out.setdefault(str(seg), {}).setdefault(trait, {})
            for value, n in top:
                bucket[value] = round(n / sizes[seg], 4)
    return out
