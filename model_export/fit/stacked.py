"""Supervised adjustments of the buy-till-you-die scores, learned on stacked training origins.

A customer's future is forecast by the BTYD models (:mod:`model_export.fit.btyd`); a
supervised model learns, from the customer's features, how far that forecast tends to be off
(:func:`sdk.btyd.adjust_score`). Each adjustment is a GLM whose offset is the BTYD forecast on
its link scale: log expected purchases (Poisson), log expected value (Tweedie, power 1.5) and
the log-odds of buying within the window (logistic). With the offset's coefficient fixed at 1,
an adjustment learned on windows shorter than the horizon keeps the BTYD model's own scaling to
the horizon; a free coefficient, learned on short windows, shrinks towards the short-window
mean and on CDNOW forecast 42 % of the holdout's purchases (``docs/training.md``).

Training rows come from several origins (rolling cutoffs, every :data:`STEP_DAYS` days): at each,
the BTYD models are fitted on the history before it and the label window runs to the horizon or
to the end of the data, whichever is first, so the recency and tenure seen when scoring are
inside what training saw; each GLM's intercept makes its forecasts add up to what happened
over those out-of-time windows. Candidates are compared on an out-of-time fold
(:func:`eval_fold`): the adjustments are trained on windows that end before it and scored
against the BTYD models, the supervised GLMs when they exist and the naive baselines on the
same customers, with the calibration of both churn probabilities (intercept, slope, curve).

Must not import server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
from scipy.optimize import minimize
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from model_export.fit import scores as predict
from model_export.fit.btyd import define_btyd, summary_of
from model_export.fit.rows import columns, feature_matrix
from model_export.inputs import profiles
from sdk.btyd import adjust_score, score_customers
from sdk.features import FEATURE_SET_VERSION
from sdk.hashing import hash_unit
from sdk.manifest import AdjustDef, BtydDef, BtydScore

__all__ = [
    "ADJUST_MODELS",
    "CANDIDATES",
    "STEP_DAYS",
    "Window",
    "adjustment_metrics",
    "choose",
    "choose_l2",
    "eval_fold",
    "fit_adjustments",
    "origins",
    "recency_model",
    "sample_customers",
    "window_at",
    "with_adjustments",
]

Array = npt.NDArray[np.float64]
Progress = Callable[[str], None]

#: Days between two training origins, and the most origins stacked.
STEP_DAYS = 14
MAX_ORIGINS = 12
#: The shortest label window an origin may have (never longer than the horizon).
MIN_WINDOW_DAYS = 28
#: History an origin needs before it (the BTYD models need repeat purchases to fit).
MIN_HISTORY_DAYS = 28
#: The most customers the stacked windows use: larger histories are sampled by customer (a
#: stable hash of the id), so every origin sees the same customers and training time and
#: memory stop growing with the data; the served BTYD models still see every customer.
MAX_CUSTOMERS = 50_000
#: L2 strengths tried for the adjustment GLMs (mean loss per row, standardized features); the
#: out-of-time fold chooses one per score.
ADJUST_L2S = (0.1, 1.0, 3.0, 10.0)
#: The bundle model of each adjusted score.
ADJUST_MODELS: dict[BtydScore, str] = {
    "churnProbability": "churn_adjust",
    "expectedPurchases": "purchases_adjust",
    "expectedValue": "value_adjust",
}
_ALL: list[BtydScore] = ["churnProbability", "expectedPurchases", "expectedValue"]


@dataclass(frozen=True)
class Window:
    """The buyers at one origin: features, the BTYD forecast of the window fitted on the history
    before the origin, and what they did in the window."""

    at: datetime
    horizon_days: float
    ids: list[str]
    x: Array
    btyd: dict[str, Array]
    purchases_next: Array
    value_next: Array
    recency: Array
    purchase_rate: Array
    value_rate: Array


def sample_customers(
    tx: pl.DataFrame, events: pl.DataFrame | None, limit: int = MAX_CUSTOMERS
) -> tuple[pl.DataFrame, pl.DataFrame | None, float]:
    """``tx`` and ``events`` of at most about ``limit`` customers, chosen by a stable hash of
    their id (:func:`sdk.hashing.hash_unit`), and the share kept (1.0: all of them)."""
    ids = tx["customer_id"].unique()
    if ids.len() <= limit:
        return tx, events, 1.0
    share = limit / ids.len()
    kept = [i for i in ids.to_list() if (hash_unit("tailor-stacked-sample", i) or 0.0) < share]
    keep = pl.Series(kept, dtype=pl.String)
    tx = tx.filter(pl.col("customer_id").is_in(keep))
    if events is not None:
        mine = pl.col("customer_id").is_in(keep)
        if "visitor_id" in events.columns:
            mine = mine | pl.col("visitor_id").is_in(keep)
        events = events.filter(mine)
    return tx, events, share


def window_at(
    tx: pl.DataFrame,
    events: pl.DataFrame | None,
    at: datetime,
    horizon_days: float,
    features: Sequence[str],
    *,
    pareto: bool = False,
) -> Window | None:
    """The buyers before ``at`` with their BTYD forecast of ``[at, at + horizon_days)`` and
    the outcome; None when the BTYD models cannot be fitted on the history before ``at``.
    ``pareto``: the repeat-buying model is Pareto/NBD (as the served one), else BG/NBD."""
    prof = profiles.build_profiles(tx, at, events=events, include_visitors=False)
    prof = prof.filter(pl.col("purchases") > 0)
    labels = profiles.future_labels(tx, at, horizon_days)
    joined = prof.join(labels, on="customer_id", how="inner")
    if joined.height < 50:
        return None
    requests = profiles.profile_requests(joined, at)
    summary = summary_of(requests)
    try:
        definition, _ = define_btyd(summary, horizon_days, _ALL, pareto=pareto)
    except ValueError:
        return None
    if definition.gamma_gamma is None:
        return None
    scores = score_customers(definition, summary)
    known = summary.known & np.isfinite(scores["expectedValue"])
    x = feature_matrix(requests, [at] * len(requests), version=FEATURE_SET_VERSION)
    x = x[:, columns(features)]
    observed = np.maximum(joined["tenure_days"].fill_null(0).to_numpy().astype(float), 30.0)
    ids = joined["customer_id"].to_list()
    return Window(
        at=at,
        horizon_days=float(horizon_days),
        ids=[i for i, k in zip(ids, known, strict=True) if k],
        x=x[known],
        btyd={k: v[known] for k, v in scores.items()},
        purchases_next=joined["purchases_next"].to_numpy().astype(float)[known],
        value_next=joined["value_next"].to_numpy().astype(float)[known],
        recency=joined["recency_days"].to_numpy().astype(float)[known],
        purchase_rate=(joined["purchases"].to_numpy() / observed)[known],
        value_rate=(joined["revenue"].to_numpy() / observed)[known],
    )


def origins(first: datetime, end: datetime, horizon_days: int) -> list[tuple[datetime, int]]:
    """Training origins whose label windows end by ``end``: ``(origin, window days)``, the
    newest first, every :data:`STEP_DAYS` days, each window the horizon or up to ``end``."""
    shortest = min(horizon_days, MIN_WINDOW_DAYS)
    out: list[tuple[datetime, int]] = []
    at = end - timedelta(days=shortest)
    while len(out) < MAX_ORIGINS and at >= first + timedelta(days=MIN_HISTORY_DAYS):
        out.append((at, min(horizon_days, (end - at).days)))
        at -= timedelta(days=STEP_DAYS)
    return out


def eval_fold(first: datetime, cutoff: datetime, horizon_days: int) -> tuple[datetime, int]:
    """The out-of-time fold: its origin and window. The horizon itself when the history holds
    two of them; else half the history, so that training windows fit before the fold."""
    window = min(horizon_days, max((cutoff - first).days // 2, 1))
    return cutoff - timedelta(days=window), window


# --- fitting ----------------------------------------------------------------------------------


def _logit(p: Array) -> Array:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return np.asarray(np.log(q) - np.log1p(-q), dtype=np.float64)


def _offsets(w: Window) -> dict[BtydScore, Array]:
    """Each adjusted score's BTYD forecast on its link scale."""
    return {
        "churnProbability": _logit(1.0 - w.btyd["churnProbability"]),
        "expectedPurchases": np.log(np.maximum(w.btyd["expectedPurchases"], 1e-9)),
        "expectedValue": np.log(np.maximum(w.btyd["expectedValue"], 1e-9)),
    }


def _targets(w: Window) -> dict[BtydScore, Array]:
    return {
        "churnProbability": (w.purchases_next > 0).astype(float),
        "expectedPurchases": w.purchases_next,
        "expectedValue": w.value_next,
    }


def _offset_glm(score: BtydScore, z: Array, y: Array, offset: Array, l2: float) -> Array:
    """Coefficients ``[intercept, *slopes]`` of a GLM with a fixed offset, by L-BFGS:
    logistic for the churn score, Poisson for purchases, Tweedie (power 1.5) for value."""
    n = len(y)

    def loss(beta: Array) -> tuple[float, Array]:
        eta = np.clip(offset + beta[0] + z @ beta[1:], -50.0, 50.0)
        if score == "churnProbability":
            value = np.logaddexp(0.0, eta) - y * eta
            residual = 0.5 * (1.0 + np.tanh(eta / 2.0)) - y
        elif score == "expectedPurchases":
            mu = np.exp(eta)
            value, residual = mu - y * eta, mu - y
        else:
            mu_half = np.exp(-0.5 * eta)  # mu ** (1 - p), p = 1.5
            value = 2.0 * y * mu_half + 2.0 / mu_half
            residual = mu_half**-1 - y * mu_half
        total = float(value.sum()) / n + 0.5 * l2 * float(beta[1:] @ beta[1:])
        grad = np.concatenate([[residual.sum() / n], z.T @ residual / n + l2 * beta[1:]])
        return total, grad

    start = np.zeros(z.shape[1] + 1)
    result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return np.asarray(result.x, dtype=np.float64)


def fit_adjustments(
    windows: Sequence[Window], l2: Mapping[BtydScore, float]
) -> dict[BtydScore, Pipeline]:
    """One pipeline per score of ``l2`` (median imputation, standard scaling, a linear model)
    whose prediction is the adjustment ``eta`` of :func:`sdk.btyd.adjust_score`: a GLM with
    the window's BTYD forecast as its offset and that L2 strength, fitted on all windows
    stacked."""
    x = np.vstack([w.x for w in windows])
    impute = SimpleImputer(strategy="median", keep_empty_features=True).fit(x)
    scale = StandardScaler().fit(impute.transform(x))
    z = np.asarray(scale.transform(impute.transform(x)), dtype=np.float64)
    out: dict[BtydScore, Pipeline] = {}
    for score, strength in l2.items():
        y = np.concatenate([_targets(w)[score] for w in windows])
        offset = np.concatenate([_offsets(w)[score] for w in windows])
        beta = _offset_glm(score, z, y, offset, strength)
        linear = LinearRegression()
        linear.coef_ = beta[1:].copy()
        linear.intercept_ = float(beta[0])
        linear.n_features_in_ = z.shape[1]
        out[score] = Pipeline([("impute", impute), ("scale", scale), ("model", linear)])
    return out


def choose_l2(windows: Sequence[Window], fold: Window) -> dict[BtydScore, float]:
    """Per score, the L2 strength of :data:`ADJUST_L2S` whose adjustment, trained on
    ``windows``, does best on the out-of-time ``fold`` (activity AUC for the churn
    probability, RMSE for purchases and value; before recalibration, which moves neither
    much)."""
    best: dict[BtydScore, tuple[float, float]] = {}
    for strength in ADJUST_L2S:
        pipes = fit_adjustments(windows, dict.fromkeys(_ALL, strength))
        for score, pipe in pipes.items():
            eta = np.asarray(pipe.predict(fold.x), dtype=np.float64)
            got = _score_metrics("x", score, adjust_score(score, fold.btyd[score], eta), fold)
            loss = -got["x_activity_auc"] if score == "churnProbability" else min(got.values())
            if score != "churnProbability":
                loss = got[f"x_{_NAMES[score]}_rmse"]
            if score not in best or loss < best[score][0]:
                best[score] = (loss, strength)
    return {score: strength for score, (_, strength) in best.items()}


def _calibration_line(link: Array, y: Array) -> tuple[float, float]:
    """Calibration-in-the-large and calibration slope of a probability of buying on an
    out-of-time fold: ``(a, b)`` of the logistic fit ``logit P = a + b * link``; ``(0, 1)`` is
    perfectly calibrated."""
    beta = _offset_glm("churnProbability", link[:, None], y, link, 0.0)
    return float(beta[0]), float(beta[1] + 1.0)  # fitted with the link as offset: slope - 1


def adjustment_metrics(
    pipes: Mapping[BtydScore, Pipeline], fold: Window
) -> tuple[dict[str, float], dict[str, Any]]:
    """Every candidate on the out-of-time ``fold``: the adjusted scores, the BTYD scores and
    the naive baselines (recency for activity, the past rate times the window for purchases
    and value).

    Returns:
        metrics (``adjusted_*``, ``btyd_*``, ``naive_*``, ``recency_activity_auc``, and the
        calibration intercept and slope of both churn probabilities) and their calibration
        curves for the model card.
    """
    truth = _targets(fold)
    metrics: dict[str, float] = {}
    diagnostics: dict[str, Any] = {}
    churned = fold.purchases_next == 0
    for score in _ALL:
        values = {"btyd": fold.btyd[score]}
        if score in pipes:
            eta = np.asarray(pipes[score].predict(fold.x), dtype=np.float64)
            values["adjusted"] = adjust_score(score, fold.btyd[score], eta)
        for name, got in values.items():
            metrics.update(_score_metrics(name, score, got, fold))
            if score == "churnProbability":
                a, b = _calibration_line(_logit(1.0 - got), truth[score])
                metrics[f"{name}_churn_calibration_intercept"] = a
                metrics[f"{name}_churn_calibration_slope"] = b
                bins = predict.calibration_bins(got, churned)
                diagnostics[f"{name}_churn_calibration"] = [list(x) for x in bins]
    metrics["recency_activity_auc"] = predict.roc_auc(-fold.recency, truth["churnProbability"])
    for name, rate, y in (
        ("purchases", fold.purchase_rate, fold.purchases_next),
        ("value", fold.value_rate, fold.value_next),
    ):
        base = rate * fold.horizon_days
        metrics[f"naive_{name}_rmse"] = float(np.sqrt(np.mean((base - y) ** 2)))
        metrics[f"naive_{name}_total_ratio"] = float(base.sum() / max(y.sum(), 1e-9))
    metrics["adjust_fold_customers"] = float(len(fold.ids))
    metrics["adjust_fold_window_days"] = fold.horizon_days
    return metrics, diagnostics


_NAMES: dict[BtydScore, str] = {
    "churnProbability": "activity",
    "expectedPurchases": "purchases",
    "expectedValue": "value",
}


def _score_metrics(prefix: str, score: BtydScore, values: Array, w: Window) -> dict[str, float]:
    """AUC, Brier score and mean predicted/observed churn for the churn probability; RMSE and
    the total ratio for purchases and value."""
    if score == "churnProbability":
        churned = (w.purchases_next == 0).astype(float)
        return {
            f"{prefix}_activity_auc": predict.roc_auc(1.0 - values, 1.0 - churned),
            f"{prefix}_churn_brier": float(np.mean((values - churned) ** 2)),
            f"{prefix}_churn_rate_predicted": float(values.mean()),
            f"{prefix}_churn_rate_observed": float(churned.mean()),
        }
    y = w.purchases_next if score == "expectedPurchases" else w.value_next
    name = _NAMES[score]
    return {
        f"{prefix}_{name}_rmse": float(np.sqrt(np.mean((values - y) ** 2))),
        f"{prefix}_{name}_total_ratio": float(values.sum() / max(y.sum(), 1e-9)),
    }


def with_adjustments(definition: BtydDef, adjusted: Sequence[BtydScore]) -> BtydDef:
    """``definition`` serving the ``adjusted`` scores through their supervised adjustments
    (the bundle models :data:`ADJUST_MODELS`)."""
    return msgspec.structs.replace(
        definition, adjusted={s: AdjustDef(model=ADJUST_MODELS[s]) for s in adjusted}
    )


#: Per score: the supervised GLM's bundle model, the metric candidates are compared on (higher
#: is better for AUC, lower for RMSE), and the baseline.
CANDIDATES: dict[BtydScore, tuple[str, str, bool, str]] = {
    "churnProbability": ("churn", "activity_auc", True, "recency"),
    "expectedPurchases": ("purchases", "purchases_rmse", False, "naive"),
    "expectedValue": ("value", "value_rmse", False, "naive"),
}
#: The metric of the supervised GLMs (:mod:`model_export.fit.scores`) on the same fold.
_GLM_METRIC = {"activity_auc": "churn_auc", "purchases_rmse": "purchases_rmse",
               "value_rmse": "value_rmse"}  # fmt: skip
#: Purchases and value: a forecast whose RMSE is within this share of the best one and whose
#: total is within :data:`TOTAL_TOLERANCE` of what happened is preferred to a better-RMSE one
#: whose total is not (budgets are set on totals; a small loss in RMSE buys the right level).
RMSE_SLACK = 0.05
TOTAL_TOLERANCE = 0.10


def choose(
    metrics: Mapping[str, float], glm: Sequence[str], adjusted: Sequence[BtydScore]
) -> tuple[dict[BtydScore, str | None], list[str]]:
    """The candidate that serves each score, with a line per candidate not served and why.

    Candidates: ``glm`` (the supervised GLMs listed, trained and checked on the same fold),
    ``adjusted`` (the scores listed), ``btyd`` and the baseline (``recency`` for the churn
    probability: served when it ranks best; ``naive`` for purchases and value: never served,
    so None when it does best). The churn probability goes to the best activity AUC.
    Purchases and value go to the lowest RMSE, unless a forecast within :data:`RMSE_SLACK` of
    it has its total within :data:`TOTAL_TOLERANCE` of what happened and the best has not. A
    candidate without its metric is not chosen; with no metric at all, the GLM if trained,
    else the BTYD model.
    """
    served: dict[BtydScore, str | None] = {}
    notes: list[str] = []
    for score, (model, metric, higher, baseline) in CANDIDATES.items():
        found: dict[str, float] = {}
        if model in glm:
            found["glm"] = metrics.get(_GLM_METRIC[metric], float("nan"))
        if score in adjusted:
            found["adjusted"] = metrics.get(f"adjusted_{metric}", float("nan"))
        found["btyd"] = metrics.get(f"btyd_{metric}", float("nan"))
        found[baseline] = metrics.get(f"{baseline}_{metric}", float("nan"))
        usable = {k: v for k, v in found.items() if np.isfinite(v)}
        if set(usable) <= {baseline}:
            served[score] = "glm" if "glm" in found else "btyd"
            continue
        pool = usable
        if not higher:
            total = metric.replace("_rmse", "_total_ratio")
            close = min(usable.values()) * (1 + RMSE_SLACK)
            level = {
                k: v
                for k, v in usable.items()
                if v <= close
                and abs(metrics.get(_named(k, total), float("nan")) - 1) <= TOTAL_TOLERANCE
            }
            pool = level or usable
        best = (max if higher else min)(pool, key=lambda k: pool[k])
        served[score] = None if best == "naive" else best
        for name, value in usable.items():
            if name == best:
                continue
            why = f"{best} {pool[best]:.4g}"
            if name not in pool and value < pool[best]:
                why += f" is within {RMSE_SLACK:.0%} and its total within {TOTAL_TOLERANCE:.0%}"
            notes.append(f"{score}: {name} model not served ({metric} {value:.4g}; {why})")
    return served, notes


def _named(candidate: str, metric: str) -> str:
    """A candidate's metric: the GLMs' have no prefix (``purchases_total_ratio``)."""
    return metric if candidate == "glm" else f"{candidate}_{metric}"


def recency_model(fold: Window, features: Sequence[str]) -> Pipeline:
    """The recency baseline as a servable churn model: a logistic regression of no purchase
    in the fold's window on the days since the last purchase alone (``features`` are the
    fold's columns)."""
    from sklearn.linear_model import LogisticRegression

    column = list(features).index("recency_days")
    x = fold.x[:, [column]]
    churned = (fold.purchases_next == 0).astype(np.int64)
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    ).fit(x, churned)
