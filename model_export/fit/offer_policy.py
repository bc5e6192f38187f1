"""The next-best-offer policy learned from logged offer outcomes (contextual bandit data) by
outcome-weighted learning, its off-policy evaluation on a held-out part of the log, and the
affinity model used when there is no log.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "MAX_IMPORTANCE_WEIGHT",
    "SyntheticLog",
    "estimate_propensities",
    "evaluate_policy",
    "fit_affinity_model",
    "fit_policy",
    "greedy_actions",
    "make_synthetic_log",
    "off_policy_estimates",
]

Array = npt.NDArray[np.float64]

#: Clip of the importance weight ``1 / p`` when learning: propensities below 1/20 count as 1/20.
MAX_IMPORTANCE_WEIGHT = 20.0
#: Bootstrap resamples behind every confidence interval.
BOOTSTRAP_RESAMPLES = 1000
#: Floor of estimated propensities, so an estimate of ~0 cannot divide by zero.
MIN_ESTIMATED_PROPENSITY = 1e-3
#: Rows x resamples drawn at once by the bootstrap (bounds its memory to about 32 MB).
_BOOTSTRAP_BLOCK = 4_000_000


def _pipeline(seed: int) -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=1.0, max_iter=5000, random_state=seed)),
        ]
    )


def _action_index(actions: Sequence[str], offers: Sequence[str]) -> npt.NDArray[np.int64]:
    index = {o: i for i, o in enumerate(offers)}
    if len(index) != len(offers):
        raise ValueError("offers must be unique")
    unknown = sorted({str(a) for a in actions} - index.keys())
    if unknown:
        raise ValueError(f"logged actions missing from offers: {unknown[:5]}")
    return np.fromiter((index[a] for a in actions), dtype=np.int64, count=len(actions))


def _reward_kind(rewards: Array) -> str:
    if np.isnan(rewards).any():
        raise ValueError("rewards must not be NaN (use 0 for no conversion)")
    if (rewards < 0).any():
        raise ValueError("rewards must be non-negative; shift them so that 0 is the worst")
    return "binary" if np.isin(rewards, (0.0, 1.0)).all() else "value"


def _check_propensities(p: Array) -> None:
    if np.isnan(p).any() or (p <= 0).any() or (p > 1).any():
        raise ValueError("propensities must be in (0, 1]")


def estimate_propensities(
    x: Array, actions: Sequence[str], offers: Sequence[str], seed: int
) -> Array:
    """Estimated probability that the logging policy chose each row's logged offer.

    A multinomial logistic regression of the logged offer on ``x`` (impute, scale, fit), read at
    each row's own offer and floored at :data:`MIN_ESTIMATED_PROPENSITY`.
    """
    a = _action_index(actions, offers)
    if np.unique(a).size < 2:
        return np.ones(len(a))  # one offer only: the logging policy was deterministic
    pipe = _pipeline(seed).fit(x, a)
    proba = pipe.predict_proba(x)
    column = {int(c): j for j, c in enumerate(pipe.classes_)}
    cols = np.fromiter((column[int(v)] for v in a), dtype=np.int64, count=len(a))
    picked = proba[np.arange(len(a)), cols]
    return np.maximum(np.asarray(picked, dtype=np.float64), MIN_ESTIMATED_PROPENSITY)


def fit_policy(
    x: Array,
    actions: Sequence[str],
    rewards: npt.ArrayLike,
    propensities: npt.ArrayLike | None,
    offers: Sequence[str],
    seed: int,
    max_weight: float = MAX_IMPORTANCE_WEIGHT,
) -> tuple[Pipeline, dict[str, Any]]:
    """Learn the next-best-offer classifier from a log by outcome-weighted learning.

    Args:
        x: feature rows at decision time (NaN = unknown).
        actions: offer shown in each row (ids in ``offers``).
        rewards: reward of each row: 0/1 conversion or non-negative value.
        propensities: logging probability of each row's offer, or None to estimate them.
        offers: the offer catalogue ids.
        seed: random state.
        max_weight: clip of the importance weight ``1 / p``.

    Returns:
        The pipeline (impute, scale, multinomial logistic regression; ``classes_`` are the
        offers that earned a reward, in sorted order) and JSON-ready metadata: method, reward
        kind, propensity source, clip, share of rewarded rows clipped, rows used, effective
        sample size of the weights, and offers never rewarded (the model cannot rank them).

    Raises:
        ValueError: bad inputs, or fewer than two offers with a positive reward.
    """
    a = _action_index(actions, offers)
    r = np.asarray(rewards, dtype=np.float64)
    kind = _reward_kind(r)
    if propensities is None:
        p = estimate_propensities(x, actions, offers, seed)
        source = "estimated: multinomial logistic regression of the logged offer on x"
    else:
        p = np.asarray(propensities, dtype=np.float64)
        _check_propensities(p)
        source = "logged"
    if max_weight < 1:
        raise ValueError("max_weight must be >= 1")
    rewarded = r > 0
    if np.unique(a[rewarded]).size < 2:
        raise ValueError("need positive rewards for at least two offers to learn a ranking")
    importance = 1.0 / p[rewarded]
    clipped = importance > max_weight
    weight = r[rewarded] * np.minimum(importance, max_weight)
    weight = weight / weight.mean()
    labels = np.asarray([offers[i] for i in a[rewarded]])
    pipe = _pipeline(seed).fit(x[rewarded], labels, clf__sample_weight=weight)
    classes = [str(c) for c in pipe.classes_]
    meta: dict[str, Any] = {
        "method": "outcome_weighted_learning",
        "reward_kind": kind,
        "propensity_source": source,
        "max_importance_weight": float(max_weight),
        "clipped_share": float(clipped.mean()),
        "rows": len(a),
        "rows_rewarded": int(rewarded.sum()),
        "weights_ess": float(weight.sum() ** 2 / np.square(weight).sum()),
        "classes": classes,
        "unrewarded_offers": [o for o in offers if o not in set(classes)],
    }
    return pipe, meta


def fit_affinity_model(
    x: Array, preferred_offer_labels: Sequence[str], seed: int
) -> tuple[Pipeline, dict[str, Any]]:
    """The fallback when no offer outcomes were logged: an affinity model.

    A multinomial logistic regression of the offer that matches each customer's dominant
    purchase category (the caller derives the labels from order histories) on ``x``. It ranks
    offers by how likely the customer is to be someone who buys in their category, not by what
    showing them caused; replace it with :func:`fit_policy` once the decider's log has rewards.
    """
    labels = np.asarray([str(v) for v in preferred_offer_labels])
    if np.unique(labels).size < 2:
        raise ValueError("need at least two distinct preferred offers")
    pipe = _pipeline(seed).fit(x, labels)
    return pipe, {"method": "affinity", "why": "no logged offer outcomes"}


def greedy_actions(
    pipe: Pipeline, x: Array, offers: Sequence[str], eligible: npt.ArrayLike | None = None
) -> npt.NDArray[np.int64]:
    """Index in ``offers`` of the learned policy's choice per row: the highest probability among
    the eligible offers. Offers the model has no class for rank below every class it has; ties
    go to the first offer in catalogue order.

    Raises:
        ValueError: a row has no eligible offer, or ``eligible`` has the wrong shape.
    """
    proba = pipe.predict_proba(x)
    scores = np.full((len(x), len(offers)), -1.0)
    index = {o: i for i, o in enumerate(offers)}
    for j, c in enumerate(pipe.classes_):
        if str(c) in index:
            scores[:, index[str(c)]] = proba[:, j]
    if eligible is not None:
        mask = np.asarray(eligible, dtype=bool)
        if mask.shape != scores.shape:
            raise ValueError(f"eligible has shape {mask.shape}, expected {scores.shape}")
        if not mask.any(axis=1).all():
            raise ValueError("every row needs at least one eligible offer")
        scores = np.where(mask, scores, -np.inf)
    return np.asarray(np.argmax(scores, axis=1), dtype=np.int64)


def _percentile_ci(samples: Array) -> tuple[float, float]:
    low, high = np.nanpercentile(samples, [2.5, 97.5])
    return float(low), float(high)


def off_policy_estimates(
    target: Array,
    action_index: npt.ArrayLike,
    rewards: npt.ArrayLike,
    propensities: npt.ArrayLike,
    seed: int,
    n_boot: int = BOOTSTRAP_RESAMPLES,
    *,
    direct: npt.ArrayLike | None = None,
    groups: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """IPS, self-normalized IPS (and doubly robust) value of a target policy, and the logging
    policy's value.

    Args:
        target: ``[n_rows, n_offers]`` probability of each offer under the target policy
            (one-hot for a deterministic policy).
        action_index: column of ``target`` that was logged, per row.
        rewards: reward per row.
        propensities: logging probability of the logged offer, per row.
        seed: seed of the bootstrap.
        n_boot: bootstrap resamples (95% percentile intervals; all estimators share the
            same resamples).
        direct: optional ``[n_rows, n_offers]`` reward model ``q(x, a)`` (fitted on other rows
            than the one it predicts, e.g. by cross-fitting); adds the doubly robust estimate.
        groups: optional group id per row (a visitor, say): the bootstrap then resamples whole
            groups, so that correlated rows stay together. Without it every row is its own
            group.

    Returns:
        ``policy_value_ips`` (``mean(w r)`` with ``w = target[a] / p``: unbiased when the
        propensities are right and every offer the target picks had ``p > 0``),
        ``policy_value_snips`` (``sum(w r) / sum(w)``: a little biased, much lower variance),
        ``logging_policy_value`` (``mean(r)``), with ``direct`` also ``policy_value_dr``
        (``mean(sum_a target[a] q(x, a) + w (r - q(x, a_i)))``: unbiased when either the
        propensities or ``q`` are right, and lower variance than IPS when ``q`` is good), each
        with ``_ci_low``/``_ci_high``; ``policy_ess`` (Kish effective sample size
        ``sum(w)^2 / sum(w^2)``) and ``policy_match_rate`` (mean probability the target gives
        the logged offer).
    """
    a = np.asarray(action_index, dtype=np.int64)
    r = np.asarray(rewards, dtype=np.float64)
    p = np.asarray(propensities, dtype=np.float64)
    _check_propensities(p)
    n = len(a)
    if n == 0:
        raise ValueError("no rows to evaluate")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    pi = np.asarray(target, dtype=np.float64)
    rows = np.arange(n)
    match = pi[rows, a]
    w = match / p
    wr = w * r
    out = {
        "policy_value_ips": float(wr.mean()),
        "policy_value_snips": float(wr.sum() / w.sum()) if w.sum() > 0 else float("nan"),
        "logging_policy_value": float(r.mean()),
        "policy_match_rate": float(match.mean()),
        "policy_ess": float(w.sum() ** 2 / np.square(w).sum()) if w.any() else 0.0,
    }
    columns = [wr, w, r]
    if direct is not None:
        q = np.asarray(direct, dtype=np.float64)
        if q.shape != pi.shape:
            raise ValueError(f"direct has shape {q.shape}, expected {pi.shape}")
        dr = (pi * q).sum(axis=1) + w * (r - q[rows, a])
        out["policy_value_dr"] = float(dr.mean())
        columns.append(dr)
    if groups is None:
        count: Array | None = None  # one row per group: every resample has n rows
        per_group = columns
    else:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        inverse = inverse.reshape(-1)
        count = np.bincount(inverse).astype(np.float64)
        per_group = [np.asarray(np.bincount(inverse, weights=c), dtype=np.float64) for c in columns]
    g = len(per_group[0])
    rng = np.random.default_rng(seed)
    sums = np.empty((n_boot, len(columns)))
    sizes = np.full(n_boot, float(n))
    block = max(1, _BOOTSTRAP_BLOCK // g)
    for start in range(0, n_boot, block):
        k = min(block, n_boot - start)
        idx = rng.integers(0, g, size=(k, g), dtype=np.int32 if g < 2**31 else np.int64)
        for j, column in enumerate(per_group):
            sums[start : start + k, j] = column[idx].sum(axis=1)
        if count is not None:
            sizes[start : start + k] = count[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        snips = np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], np.nan)
    samples = {
        "policy_value_ips": sums[:, 0] / sizes,
        "policy_value_snips": snips,
        "logging_policy_value": sums[:, 2] / sizes,
    }
    if direct is not None:
        samples["policy_value_dr"] = sums[:, 3] / sizes
    for key, values in samples.items():
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = _percentile_ci(values)
    return out


def evaluate_policy(
    pipe: Pipeline,
    x: Array,
    actions: Sequence[str],
    rewards: npt.ArrayLike,
    propensities: npt.ArrayLike | None,
    offers: Sequence[str],
    eligible: npt.ArrayLike | None = None,
    seed: int = 0,
    n_boot: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, float]:
    """Off-policy value of the learned deterministic policy on a held-out log.

    The policy shows, per row, the eligible offer with the highest probability
    (:func:`greedy_actions`). Use rows logged after the training rows (or at least other
    visitors): the estimate is honest only on rows the policy did not learn from.

    Args:
        pipe: from :func:`fit_policy` (or :func:`fit_affinity_model`).
        x: held-out feature rows.
        actions: offers the logging policy showed.
        rewards: rewards that followed.
        propensities: logging probabilities of those offers, or None to estimate them on these
            rows (:func:`estimate_propensities`; ``policy_propensities_estimated`` is then 1).
        offers: the offer catalogue ids.
        eligible: optional ``[n_rows, n_offers]`` booleans: the offers the rules allowed.
        seed: seed of the bootstrap and of the propensity model.
        n_boot: bootstrap resamples.

    Returns:
        The keys of :func:`off_policy_estimates` and ``policy_propensities_estimated``.
    """
    a = _action_index(actions, offers)
    r = np.asarray(rewards, dtype=np.float64)
    _reward_kind(r)
    estimated = propensities is None
    p = (
        estimate_propensities(x, actions, offers, seed)
        if propensities is None
        else np.asarray(propensities, dtype=np.float64)
    )
    chosen = greedy_actions(pipe, x, offers, eligible)
    target = np.zeros((len(a), len(offers)))
    target[np.arange(len(a)), chosen] = 1.0
    out = off_policy_estimates(target, a, r, p, seed, n_boot)
    out["policy_propensities_estimated"] = float(estimated)
    return out


# --- planted data for tests and demos ----------------------------------------------------------


@dataclass(frozen=True)
class SyntheticLog:
    """A logged bandit dataset with its ground truth.

    ``expected_reward[i, k]`` is the true expected reward of offer ``k`` in row ``i``, and
    ``logging_probs[i, k]`` the logging policy's probability of it; ``propensities`` is the
    latter at the logged offer.
    """

    x: Array
    actions: list[str]
    rewards: Array
    propensities: Array
    offers: list[str]
    expected_reward: Array
    logging_probs: Array


def make_synthetic_log(
    n: int,
    seed: int,
    *,
    n_features: int = 6,
    n_offers: int = 4,
    logging: str = "uniform",
    reward: str = "binary",
    missing: float = 0.05,
) -> SyntheticLog:
    """A seeded log where the best offer depends on the context.

    Offer ``k`` converts with probability ``sigmoid(-2 + 1.5 * x @ w_k)`` for fixed random unit
    directions ``w_k``, so each offer wins in its own region of ``x``. The logging policy is
    ``"uniform"`` or ``"skewed"`` (a softmax that favours offer 0 and leans on ``x`` through a
    direction unrelated to the rewards). ``reward="value"`` multiplies each conversion by a
    gamma-distributed order value whose mean differs by offer. A share ``missing`` of the
    feature values is NaN.
    """
    if logging not in ("uniform", "skewed") or reward not in ("binary", "value"):
        raise ValueError("logging is 'uniform' or 'skewed'; reward is 'binary' or 'value'")
    rng = np.random.default_rng(seed)
    offers = [f"offer_{k}" for k in range(n_offers)]
    directions = np.random.default_rng(1234).normal(size=(n_offers, n_features))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x = rng.normal(size=(n, n_features))
    convert = 1.0 / (1.0 + np.exp(-(-2.0 + 1.5 * x @ directions.T)))
    mean_value = 20.0 + 10.0 * np.arange(n_offers)
    expected = convert * mean_value if reward == "value" else convert
    if logging == "uniform":
        probs = np.full((n, n_offers), 1.0 / n_offers)
    else:
        logits = np.zeros((n, n_offers))
        logits[:, 0] = 1.0 + 0.8 * x[:, -1]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    a = (rng.random((n, 1)) > np.cumsum(probs, axis=1)).sum(axis=1)
    a = np.minimum(a, n_offers - 1)
    rows = np.arange(n)
    converted = rng.random(n) < convert[rows, a]
    if reward == "value":
        r = np.where(converted, rng.gamma(4.0, mean_value[a] / 4.0), 0.0)
    else:
        r = converted.astype(np.float64)
    observed = x.copy()
    observed[rng.random(x.shape) < missing] = np.nan
    return SyntheticLog(
        x=observed,
        actions=[offers[k] for k in a],
        rewards=r,
        propensities=probs[rows, a],
        offers=offers,
        expected_reward=expected,
        logging_probs=probs,
    )
