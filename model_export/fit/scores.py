"""Predictive scores per customer: churn probability, expected purchases and expected value in
the next ``horizon`` days, each an sklearn ``Pipeline`` (median imputation, standard scaling, a
linear model whose ONNX graph outputs the served score directly), with held-out metrics against
naive baselines on a time-based holdout.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, PoissonRegressor, TweedieRegressor
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from model_export.bundle.export import onnx_bytes, onnx_outputs
from sdk.features import FEATURE_NAMES, RECENCY_CAP_DAYS

__all__ = [
    "CHURN",
    "PURCHASES",
    "SCORE_OUTPUTS",
    "VALUE",
    "SyntheticCustomers",
    "calibration_bins",
    "churn_diagnostics",
    "evaluate_churn",
    "evaluate_value",
    "export_predictive",
    "fit_churn",
    "fit_value_models",
    "make_synthetic_customers",
    "roc_auc",
    "roc_points",
    "spearman",
    "time_split_note",
]

Array = npt.NDArray[np.float64]

#: Model keys (bundle model names and metric prefixes).
CHURN, PURCHASES, VALUE = "churn", "purchases", "value"
#: Where each served score is in its ONNX model's outputs: (output name, column).
SCORE_OUTPUTS: dict[str, tuple[str, int]] = {
    CHURN: ("probabilities", 1),
    PURCHASES: ("variable", 0),
    VALUE: ("variable", 0),
}
#: Tweedie power of the value model: between 1 (Poisson) and 2 (gamma), a point mass at zero
#: plus a continuous positive part.
VALUE_TWEEDIE_POWER = 1.5
#: L2 penalty of the GLMs, in the units of their mean deviance over standardized features.
GLM_ALPHA = 1e-3  # kept for callers that fix it; fit_value_models chooses from GLM_ALPHAS
#: L2 strengths tried for the count/value GLMs; the log link extrapolates exponentially, so a
#: weak penalty lets rare feature combinations predict absurd amounts.
GLM_ALPHAS = (0.1, 1.0, 10.0)
#: Calibration bins and the most points of a downsampled ROC curve, for the model card.
CALIBRATION_BINS = 10
ROC_POINTS = 50


def _pipeline(model: object) -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", model),
        ]
    )


def time_split_note(cutoff: datetime, horizon_days: float) -> str:
    """The holdout, in words, for ``training.data`` and the model card.

    Args:
        cutoff: the calibration cutoff: features see only history before it.
        horizon_days: labels count purchases in ``[cutoff, cutoff + horizon_days)``.
    """
    if cutoff.tzinfo is None:
        raise ValueError("cutoff must be timezone-aware")
    return (
        f"time-based holdout: features at {cutoff.isoformat()} from the history before it; "
        f"labels from the next {horizon_days:g} days (churn = no purchase in them)"
    )


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (1 = positive); NaN when only one class."""
    y = np.asarray(labels).astype(int)
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def _ranks(values: npt.ArrayLike) -> Array:
    """Ranks from 1, ties sharing their average rank."""
    _, inverse, counts = np.unique(
        np.asarray(values, dtype=np.float64), return_inverse=True, return_counts=True
    )
    average = np.cumsum(counts) - (counts - 1) / 2.0
    return np.asarray(average[inverse], dtype=np.float64)


def spearman(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


# --- churn ------------------------------------------------------------------------------------


def fit_churn(x_train: Array, y_train: npt.ArrayLike, seed: int) -> Pipeline:
    """Fit the churn pipeline: impute, scale, logistic regression (unweighted classes).

    Args:
        x_train: feature rows at the calibration cutoff (NaN = unknown).
        y_train: 1 if the customer made no purchase in the horizon, else 0.
        seed: random state.
    """
    y = np.asarray(y_train).astype(np.int64)
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("churn labels must be 0/1")
    model = LogisticRegression(C=1.0, max_iter=5000, random_state=seed)
    return _pipeline(model).fit(x_train, y)


def _churn_proba(pipe: Pipeline, x: Array) -> Array:
    classes = list(pipe.classes_)
    return np.asarray(pipe.predict_proba(x)[:, classes.index(1)], dtype=np.float64)


def evaluate_churn(
    pipe: Pipeline, x_test: Array, y_test: npt.ArrayLike, recency_test: npt.ArrayLike
) -> dict[str, float]:
    """Held-out churn metrics against the naive baseline of ranking by recency alone.

    Args:
        pipe: from :func:`fit_churn`.
        x_test: feature rows of held-out customers at their cutoff.
        y_test: their churn labels (1 = no purchase in the horizon).
        recency_test: their days since the last purchase (NaN is set to the median).

    Returns:
        ``churn_auc``, ``churn_auc_recency_baseline``, ``churn_brier`` and ``churn_base_rate``.
    """
    y = np.asarray(y_test).astype(int)
    p = _churn_proba(pipe, x_test)
    recency = np.asarray(recency_test, dtype=np.float64)
    recency = np.where(np.isnan(recency), np.nanmedian(recency), recency)
    return {
        "churn_auc": roc_auc(p, y),
        "churn_auc_recency_baseline": roc_auc(recency, y),
        "churn_brier": float(brier_score_loss(y, p)),
        "churn_base_rate": float(y.mean()),
    }


def calibration_bins(
    proba: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = CALIBRATION_BINS
) -> list[tuple[float, float, int]]:
    """(mean predicted, observed rate, count) per bin of equal count, by predicted probability.

    Equal-count bins stay populated however skewed the predictions are, so none is empty and
    each point of the reliability diagram rests on about ``len(proba) / n_bins`` rows.
    """
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    return [
        (float(p[chunk].mean()), float(y[chunk].mean()), int(chunk.size))
        for chunk in np.array_split(order, min(n_bins, p.size))
        if chunk.size
    ]


def roc_points(
    scores: npt.ArrayLike, labels: npt.ArrayLike, max_points: int = ROC_POINTS
) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) of the ROC curve, at most ``max_points``,
    evenly spaced along the curve and always including both ends."""
    fpr, tpr, _ = roc_curve(np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64))
    keep = np.unique(np.linspace(0, fpr.size - 1, min(max_points, fpr.size)).round().astype(int))
    return [(float(fpr[i]), float(tpr[i])) for i in keep]


def churn_diagnostics(
    pipe: Pipeline, x_test: Array, y_test: npt.ArrayLike
) -> dict[str, list[list[float]]]:
    """What the model card plots: ``churn_calibration`` rows ``[mean predicted, observed,
    count]`` (10 equal-count bins) and ``churn_roc`` rows ``[fpr, tpr]`` (at most 50), as lists
    so they encode to JSON in ``training.diagnostics``."""
    p = _churn_proba(pipe, x_test)
    y = np.asarray(y_test).astype(int)
    return {
        "churn_calibration": [list(b) for b in calibration_bins(p, y)],
        "churn_roc": [list(r) for r in roc_points(p, y)],
    }


# --- expected purchases and value -------------------------------------------------------------


def fit_value_models(
    x: Array, purchases_next: npt.ArrayLike, value_next: npt.ArrayLike, seed: int
) -> dict[str, Pipeline]:
    """Fit the expected-purchases (Poisson) and expected-value (Tweedie) pipelines.

    Args:
        x: feature rows at the calibration cutoff.
        purchases_next: purchases of each customer in the horizon (counts, >= 0).
        value_next: value they spent in the horizon (>= 0).
        seed: seeds the cross-validation folds that choose the L2 strength.

    Returns:
        ``{"purchases": pipeline, "value": pipeline}``.
    """
    counts = np.asarray(purchases_next, dtype=np.float64)
    value = np.asarray(value_next, dtype=np.float64)
    if (counts < 0).any() or (value < 0).any():
        raise ValueError("purchase counts and values must be non-negative")

    def purchases_model(alpha: float) -> Pipeline:
        return _pipeline(PoissonRegressor(alpha=alpha, solver="newton-cholesky", max_iter=500))

    def value_model(alpha: float) -> Pipeline:
        return _pipeline(
            TweedieRegressor(
                power=VALUE_TWEEDIE_POWER,
                link="log",
                alpha=alpha,
                solver="newton-cholesky",
                max_iter=500,
            )
        )

    return {
        PURCHASES: _best_alpha(purchases_model, x, counts, seed).fit(x, counts),
        VALUE: _best_alpha(value_model, x, value, seed).fit(x, value),
    }


def _best_alpha(make: Callable[[float], Pipeline], x: Array, y: Array, seed: int) -> Pipeline:
    """The pipeline whose L2 strength (from :data:`GLM_ALPHAS`) has the lowest 3-fold
    cross-validated squared error: the error that the conditional mean minimises."""
    folds = KFold(n_splits=3, shuffle=True, random_state=seed)
    best, best_err = GLM_ALPHAS[0], np.inf
    for alpha in GLM_ALPHAS:
        err = 0.0
        for train, test in folds.split(x):
            pred = make(alpha).fit(x[train], y[train]).predict(x[test])
            err += float(np.mean((pred - y[test]) ** 2))
        if err < best_err:
            best, best_err = alpha, err
    return make(best)


def evaluate_value(
    pipes: Mapping[str, Pipeline],
    x_test: Array,
    purchases_next: npt.ArrayLike,
    value_next: npt.ArrayLike,
    purchase_rate: npt.ArrayLike,
    value_rate: npt.ArrayLike,
    horizon_days: float,
) -> dict[str, float]:
    """Held-out error of the expected purchases and value against the naive baseline: the
    customer's historical per-day rate times the horizon.

    Args:
        pipes: from :func:`fit_value_models`.
        x_test: feature rows of held-out customers at their cutoff.
        purchases_next: their purchases in the horizon.
        value_next: their value spent in the horizon.
        purchase_rate: historical purchases per day before the cutoff (e.g. purchases / tenure).
        value_rate: historical value per day before the cutoff.
        horizon_days: length of the label window, in days.

    Returns:
        For ``purchases`` and ``value``: ``*_rmse``, ``*_rmse_baseline``, ``*_mae``,
        ``*_mae_baseline``, ``*_spearman``,
        ``*_spearman_baseline`` and ``*_total_ratio`` (sum predicted / sum observed).
    """
    truth = {
        PURCHASES: np.asarray(purchases_next, dtype=np.float64),
        VALUE: np.asarray(value_next, dtype=np.float64),
    }
    rates = {
        PURCHASES: np.asarray(purchase_rate, dtype=np.float64),
        VALUE: np.asarray(value_rate, dtype=np.float64),
    }
    out: dict[str, float] = {}
    for key in (PURCHASES, VALUE):
        y = truth[key]
        pred = np.asarray(pipes[key].predict(x_test), dtype=np.float64)
        base = np.nan_to_num(rates[key], nan=0.0) * horizon_days
        out[f"{key}_mae"] = float(np.mean(np.abs(pred - y)))
        out[f"{key}_mae_baseline"] = float(np.mean(np.abs(base - y)))
        # RMSE is minimised by the conditional mean, which is what these models predict (MAE
        # rewards the median instead), so it is the error the comparison is judged on
        out[f"{key}_rmse"] = float(np.sqrt(np.mean((pred - y) ** 2)))
        out[f"{key}_rmse_baseline"] = float(np.sqrt(np.mean((base - y) ** 2)))
        out[f"{key}_spearman"] = spearman(pred, y)
        out[f"{key}_spearman_baseline"] = spearman(base, y)
        out[f"{key}_total_ratio"] = float(pred.sum() / y.sum()) if y.sum() > 0 else float("nan")
    return out


# --- export -----------------------------------------------------------------------------------


def _sklearn_score(key: str, pipe: Pipeline, x: Array) -> Array:
    if key == CHURN:
        return _churn_proba(pipe, x)
    return np.asarray(pipe.predict(x), dtype=np.float64)


def export_predictive(
    pipes: Mapping[str, Pipeline], n_features: int, x_check: Array, name: str = "tailor"
) -> tuple[dict[str, bytes], dict[str, float]]:
    """Export each pipeline to ONNX and check it against sklearn on ``x_check``.

    Args:
        pipes: keyed by :data:`CHURN`, :data:`PURCHASES`, :data:`VALUE`.
        n_features: width of the rows the pipelines were fitted on.
        x_check: held-out rows to compare sklearn and onnxruntime on.
        name: prefix of the ONNX graph names.

    Returns:
        ONNX bytes per key, and ``parity_{key}_max_abs_diff`` per key (sklearn on the
        float32-rounded rows onnxruntime sees, against the score output in
        :data:`SCORE_OUTPUTS`).

    Raises:
        ValueError: a key is unknown, or a model lacks the output :data:`SCORE_OUTPUTS` names.
    """
    x32 = x_check.astype(np.float32).astype(np.float64)
    models: dict[str, bytes] = {}
    parity: dict[str, float] = {}
    for key, pipe in pipes.items():
        if key not in SCORE_OUTPUTS:
            raise ValueError(f"unknown predictive model {key!r}; expected one of {SCORE_OUTPUTS}")
        output, column = SCORE_OUTPUTS[key]
        data = onnx_bytes(pipe, n_features, f"{name}_{key}")
        got = onnx_outputs(data, x_check)
        if output not in got:
            raise ValueError(f"ONNX model {key!r} has outputs {sorted(got)}, not {output!r}")
        onnx_score = np.asarray(got[output], dtype=np.float64).reshape(len(x_check), -1)[:, column]
        diff = np.abs(onnx_score - _sklearn_score(key, pipe, x32))
        models[key] = data
        parity[f"parity_{key}_max_abs_diff"] = float(diff.max()) if diff.size else 0.0
    return models, parity


# --- planted data for tests and demos ----------------------------------------------------------


@dataclass(frozen=True)
class SyntheticCustomers:
    """Customers at a calibration cutoff, with what they do in the horizon after it.

    ``x`` has the :data:`sdk.features.FEATURE_NAMES` layout; the planted truth is that future
    purchase rates drift with an engagement level that recency alone does not show.
    """

    x: Array
    churned: npt.NDArray[np.int64]
    purchases_next: Array
    value_next: Array
    recency: Array
    purchase_rate: Array
    value_rate: Array
    horizon_days: float


def make_synthetic_customers(
    n: int, seed: int, horizon_days: float = 90.0, history_days: float = 365.0
) -> SyntheticCustomers:
    """Seeded customers whose next-period behaviour depends on more than recency.

    Each customer has a past purchase rate, an order value and a latent engagement level.
    History is a Poisson process at the past rate over the customer's tenure; the future rate
    is the past rate scaled by ``exp(engagement - 0.5)``, so engaged customers speed up and
    disengaged ones fade. Engagement shows only in sessions, page views, cart and days since
    the last visit: a model that reads them beats ranking by recency.
    """
    rng = np.random.default_rng(seed)
    col = {f: i for i, f in enumerate(FEATURE_NAMES)}
    engagement = rng.normal(0.0, 1.0, n)
    rate_past = rng.gamma(1.5, 1 / 60, n)  # purchases a day: about one every 40 days
    rate_next = rate_past * np.exp(engagement - 0.5)
    aov = rng.lognormal(3.5, 0.5, n)
    tenure = rng.uniform(30.0, history_days, n)
    k = rng.poisson(rate_past * tenure)
    recency = np.full(n, RECENCY_CAP_DAYS)
    first = np.zeros(n)
    revenue = np.zeros(n)
    for i in np.flatnonzero(k):
        ages = rng.uniform(0.0, tenure[i], k[i])  # days before the cutoff
        recency[i], first[i] = ages.min(), ages.max()
        revenue[i] = rng.gamma(4.0, aov[i] / 4.0, k[i]).sum()
    purchases_next = rng.poisson(rate_next * horizon_days).astype(np.float64)
    value_next = np.where(
        purchases_next > 0, rng.gamma(4.0 * np.maximum(purchases_next, 1), aov / 4.0), 0.0
    )
    sessions = rng.poisson(3.0 * np.exp(0.7 * engagement)) + 1
    since_visit = np.minimum(rng.exponential(20.0 * np.exp(-0.8 * engagement)), RECENCY_CAP_DAYS)
    since_visit[rng.random(n) < 0.1] = np.nan  # unknown for some: imputed in the pipeline
    bought = k > 0

    x = np.zeros((n, len(FEATURE_NAMES)))
    x[:, col["page_views_log"]] = np.log1p(rng.poisson(4.0 * np.exp(0.5 * engagement)))
    x[:, col["sessions_log"]] = np.log1p(sessions)
    x[:, col["purchases_log"]] = np.log1p(k)
    x[:, col["revenue_log"]] = np.log1p(revenue)
    x[:, col["aov_log"]] = np.where(bought, np.log1p(revenue / np.maximum(k, 1)), 0.0)
    x[:, col["recency_days"]] = recency
    x[:, col["days_since_visit"]] = since_visit
    x[:, col["cart_items_log"]] = np.log1p(rng.poisson(0.5 * np.exp(0.5 * engagement)))
    x[:, col["first_visit"]] = ((sessions <= 1) & ~bought).astype(np.float64)
    x[:, col["device_mobile"]] = rng.random(n) < 0.5
    x[:, col["tenure_days"]] = np.where(bought, tenure, 0.0)
    span = np.where(k >= 2, (first - recency) / np.maximum(k - 1, 1), RECENCY_CAP_DAYS)
    x[:, col["interpurchase_days"]] = np.minimum(span, RECENCY_CAP_DAYS)
    hour = rng.integers(0, 24, n)
    x[:, col["hour_sin"]] = np.sin(2 * np.pi * hour / 24)
    x[:, col["hour_cos"]] = np.cos(2 * np.pi * hour / 24)
    return SyntheticCustomers(
        x=x,
        churned=(purchases_next == 0).astype(np.int64),
        purchases_next=purchases_next,
        value_next=value_next,
        recency=recency,
        purchase_rate=k / tenure,
        value_rate=revenue / tenure,
        horizon_days=horizon_days,
    )
