"""Offline policy evaluation (``tailor evaluate``): the click or conversion rate a bundle would
have had on logged traffic, estimated from logged choices (:mod:`model_export.offline.choices`)
replayed with the bundle (:mod:`model_export.offline.replay`) by IPS, SNIPS and doubly robust
estimators, with intervals clustered by visitor.

Must not import server.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from model_export.fit.offer_policy import off_policy_estimates
from model_export.offline.choices import (
    REWARDS,
    EvaluationError,
    LoggedChoice,
    LoggedData,
    LogReadError,
    Reward,
    read_choices,
)
from model_export.offline.replay import replay_distributions, replay_inputs
from sdk.analysis.stats import normal_ppf
from sdk.bundle import Bundle, load_bundle
from sdk.features import feature_names
from sdk.hashing import hash_unit

__all__ = [
    "ESTIMATORS",
    "REWARDS",
    "SHRINKAGE",
    "Comparison",
    "Estimate",
    "Evaluation",
    "EvaluationError",
    "LogReadError",
    "LoggedChoice",
    "LoggedData",
    "NoUsableRows",
    "Reward",
    "compare",
    "evaluate",
    "read_choices",
    "replay_inputs",
]

Array = npt.NDArray[np.float64]

#: Estimators of an :class:`Evaluation`, in report order.
ESTIMATORS = ("ips", "snips", "dr", "logging")
#: Pseudo-observations pulling a segment's mean reward of a variant towards the variant's mean
#: (and that towards the overall mean) in the direct-method reward model.
SHRINKAGE = 20.0
_FOLD_SEED = "tailor-evaluate-fold"


class NoUsableRows(EvaluationError):
    """No logged choice can be evaluated; :attr:`skipped` counts the reasons."""

    def __init__(self, message: str, skipped: dict[str, int]) -> None:
        super().__init__(message)
        self.skipped = skipped


# --- results -----------------------------------------------------------------------------------


class Estimate(msgspec.Struct, frozen=True, kw_only=True):
    """A policy value with its confidence interval (``std_error`` None for a bootstrap)."""

    value: float
    ci_low: float
    ci_high: float
    std_error: float | None = None


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """What one bundle would have earned on the logged traffic."""

    bundle: str
    model_version: str
    feature_set_version: str
    reward: str
    rows: int
    decisions: int
    visitors: int
    skipped: dict[str, int]
    confidence: float
    interval: str
    #: ``ips``, ``snips``, ``dr`` and ``logging`` (see :data:`ESTIMATORS`)
    estimates: dict[str, Estimate]
    #: Kish effective sample size of the weights ``w = pi(a|x) / p``
    ess: float
    #: mean ``pi(a|x)`` of the logged actions
    match_rate: float
    max_weight: float
    #: mean probability the bundle puts on variants the logging policy could not show: IPS and
    #: SNIPS see no reward there, DR fills it in with its reward model
    unsupported: float


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """A candidate against a baseline on the same rows: both evaluations and the paired
    differences (candidate minus baseline) of ``ips``, ``snips`` and ``dr``."""

    candidate: Evaluation
    baseline: Evaluation
    difference: dict[str, Estimate]


# --- estimation --------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """The usable choices as arrays, shared by every bundle evaluated on them."""

    choices: list[LoggedChoice]
    skipped: dict[str, int]
    r: Array
    p: Array
    groups: npt.NDArray[np.int64]  # visitor index per row
    n_groups: int
    columns: dict[tuple[str, str], int]  # (slot, variant) -> column
    action: npt.NDArray[np.int64]
    logging: Array  # [n, k] logging distribution
    q: Array  # [n, k] cross-fitted reward model
    targets: list[Array]  # [n, k] per bundle


def _usable(
    choices: Sequence[LoggedChoice], feature_sets: set[str]
) -> tuple[list[LoggedChoice], Counter[str]]:
    skipped: Counter[str] = Counter()
    kept = []
    # bundles of different feature sets cannot be evaluated on the same rows
    wanted = next(iter(feature_sets)) if len(feature_sets) == 1 else None
    for c in choices:
        d = c.decision
        if d.features is None or d.feature_set is None:
            skipped["no_features"] += 1
        elif d.feature_set != wanted:
            skipped["feature_set"] += 1
        elif len(d.features) != len(feature_names(d.feature_set)):
            skipped["bad_features"] += 1
        else:
            kept.append(c)
    return kept, skipped


def _fold(visitor: str) -> int:
    return 0 if (hash_unit(_FOLD_SEED, visitor) or 0.0) < 0.5 else 1


def _reward_model(
    choices: Sequence[LoggedChoice],
    r: Array,
    columns: dict[tuple[str, str], int],
    folds: npt.NDArray[np.int64],
) -> Array:
    """Cross-fitted ``q(x, a)`` for every row and column: the mean reward of the variant in the
    decision's segment, shrunk towards the variant's mean (itself shrunk towards the overall
    mean) by :data:`SHRINKAGE` pseudo-observations, fitted on the other fold of visitors; a fold
    without training rows predicts 0."""
    n, k = len(choices), len(columns)
    slot_of = [""] * k
    for (slot, _), j in columns.items():
        slot_of[j] = slot
    action = np.fromiter(
        (columns[(c.slot, c.variant_id)] for c in choices), dtype=np.int64, count=n
    )
    segments = [str(c.decision.segment) if c.decision.segment is not None else "-" for c in choices]
    seg_index = {s: i for i, s in enumerate(sorted(set(segments)))}
    seg = np.fromiter((seg_index[s] for s in segments), dtype=np.int64, count=n)
    q = np.zeros((n, k))
    for f in (0, 1):
        train, test = folds != f, folds == f
        if not train.any() or not test.any():
            continue
        overall = float(r[train].mean())
        n_v = np.bincount(action[train], minlength=k).astype(np.float64)
        s_v = np.bincount(action[train], weights=r[train], minlength=k)
        m_v = (s_v + SHRINKAGE * overall) / (n_v + SHRINKAGE)
        cell = seg[train] * k + action[train]
        size = len(seg_index) * k
        n_sv = np.bincount(cell, minlength=size).astype(np.float64).reshape(-1, k)
        s_sv = np.bincount(cell, weights=r[train], minlength=size).reshape(-1, k)
        m_sv = (s_sv + SHRINKAGE * m_v) / (n_sv + SHRINKAGE)
        q[test] = m_sv[seg[test]]
    slot_index = {s: i for i, s in enumerate(sorted(set(slot_of)))}
    column_slot = np.fromiter((slot_index[s] for s in slot_of), dtype=np.int64, count=k)
    row_slot = np.fromiter((slot_index[c.slot] for c in choices), dtype=np.int64, count=n)
    return np.where(row_slot[:, None] == column_slot[None, :], q, 0.0)


def _prepare(bundles: Sequence[Bundle], data: LoggedData) -> _Prepared:
    feature_sets = {b.manifest.feature_set_version for b in bundles}
    choices, skipped = _usable(data.choices, feature_sets)
    skipped.update(data.skipped)
    if not choices:
        raise _no_rows(data, skipped, feature_sets)
    replays = [replay_distributions(b, choices) for b in bundles]
    keep = [all(rep[i] is not None for rep in replays) for i in range(len(choices))]
    skipped["slot_unknown"] += keep.count(False)
    if not any(keep):
        raise _no_rows(data, skipped, feature_sets)
    choices = [c for c, ok in zip(choices, keep, strict=True) if ok]
    dists = [[d for d, ok in zip(rep, keep, strict=True) if ok] for rep in replays]
    columns: dict[tuple[str, str], int] = {}
    for i, c in enumerate(choices):
        for variant in (c.variant_id, *c.logging, *(v for d in dists for v in d[i] or {})):
            columns.setdefault((c.slot, variant), len(columns))
    n, k = len(choices), len(columns)

    def matrix(rows: Iterable[dict[str, float]]) -> Array:
        m = np.zeros((n, k))
        for i, (c, dist) in enumerate(zip(choices, rows, strict=True)):
            for variant, prob in dist.items():
                m[i, columns[(c.slot, variant)]] = prob
        return m

    visitors: dict[str, int] = {}
    groups = np.fromiter(
        (visitors.setdefault(c.decision.visitor_id, len(visitors)) for c in choices),
        dtype=np.int64,
        count=n,
    )
    r = np.fromiter((c.reward for c in choices), dtype=np.float64, count=n)
    folds = np.fromiter((_fold(c.decision.visitor_id) for c in choices), dtype=np.int64, count=n)
    return _Prepared(
        choices=choices,
        skipped={k: v for k, v in sorted(skipped.items()) if v},
        r=r,
        p=np.fromiter((c.propensity for c in choices), dtype=np.float64, count=n),
        groups=groups,
        n_groups=len(visitors),
        columns=columns,
        action=np.fromiter(
            (columns[(c.slot, c.variant_id)] for c in choices), dtype=np.int64, count=n
        ),
        logging=matrix(c.logging for c in choices),
        q=_reward_model(choices, r, columns, folds),
        targets=[matrix(d for d in dist if d is not None) for dist in dists],
    )


def _no_rows(data: LoggedData, skipped: Counter[str], feature_sets: set[str]) -> NoUsableRows:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()) if v) or "none logged"
    return NoUsableRows(
        f"no logged choice in {data.source} can be evaluated by a bundle of feature set "
        f"{'/'.join(sorted(feature_sets))} ({len(data.choices)} slot decisions read; "
        f"skipped: {reasons})",
        {k: v for k, v in skipped.items() if v},
    )


@dataclass(frozen=True)
class _Terms:
    """Per-row influence terms of each estimator for one bundle, and its point values."""

    values: dict[str, float]
    influence: dict[str, Array]


def _terms(prep: _Prepared, target: Array) -> _Terms:
    """IPS ``mean(w r)``, SNIPS ``sum(w r) / sum(w)``, DR ``mean(sum_a pi q + w (r - q))`` and
    the logging policy's ``mean(r)``, with ``w = pi(a|x) / p``, and their influence terms."""
    rows = np.arange(len(prep.r))
    match = target[rows, prep.action]
    w = match / prep.p
    r = prep.r
    ips_t = w * r
    dr_t = (target * prep.q).sum(axis=1) + w * (r - prep.q[rows, prep.action])
    values = {"ips": float(ips_t.mean()), "dr": float(dr_t.mean()), "logging": float(r.mean())}
    influence = {
        "ips": ips_t - values["ips"],
        "dr": dr_t - values["dr"],
        "logging": r - values["logging"],
    }
    if w.sum() > 0:
        values["snips"] = float(ips_t.sum() / w.sum())
        influence["snips"] = w * (r - values["snips"]) / w.mean()
    else:
        values["snips"] = math.nan
        influence["snips"] = np.full(len(r), math.nan)
    return _Terms(values=values, influence=influence)


def _normal(value: float, influence: Array, prep: _Prepared, z: float) -> Estimate:
    """Normal interval with a cluster-robust (by visitor) standard error."""
    n, g = len(influence), prep.n_groups
    if g < 2 or not math.isfinite(value):
        return Estimate(value=value, ci_low=math.nan, ci_high=math.nan, std_error=math.nan)
    sums = np.bincount(prep.groups, weights=influence, minlength=g)
    se = math.sqrt(float(np.square(sums).sum()) * g / (g - 1)) / n
    return Estimate(value=value, ci_low=value - z * se, ci_high=value + z * se, std_error=se)


def _evaluation(
    bundle: Bundle,
    prep: _Prepared,
    terms: _Terms,
    target: Array,
    data: LoggedData,
    confidence: float,
    bootstrap: int,
    seed: int,
) -> Evaluation:
    z = normal_ppf(0.5 + confidence / 2)
    rows = np.arange(len(prep.r))
    w = target[rows, prep.action] / prep.p
    if bootstrap > 0:
        if confidence != 0.95:
            raise ValueError("bootstrap intervals are 95% intervals; use confidence=0.95")
        boot = off_policy_estimates(
            target,
            prep.action,
            prep.r,
            prep.p,
            seed,
            n_boot=bootstrap,
            direct=prep.q,
            groups=prep.groups,
        )
        keys = {
            "ips": "policy_value_ips",
            "snips": "policy_value_snips",
            "dr": "policy_value_dr",
            "logging": "logging_policy_value",
        }
        estimates = {
            name: Estimate(
                value=terms.values[name],
                ci_low=boot[f"{key}_ci_low"],
                ci_high=boot[f"{key}_ci_high"],
            )
            for name, key in keys.items()
        }
        interval = f"bootstrap: {bootstrap} resamples of visitors, percentile"
    else:
        estimates = {
            name: _normal(terms.values[name], terms.influence[name], prep, z) for name in ESTIMATORS
        }
        interval = "normal, standard error clustered by visitor"
    unsupported = (target * (prep.logging <= 0)).sum(axis=1)
    m = bundle.manifest
    return Evaluation(
        bundle=str(bundle.path),
        model_version=m.model_version,
        feature_set_version=m.feature_set_version,
        reward=data.reward,
        rows=len(prep.r),
        decisions=len({c.decision.decision_id for c in prep.choices}),
        visitors=prep.n_groups,
        skipped=prep.skipped,
        confidence=confidence,
        interval=interval,
        estimates={name: estimates[name] for name in ESTIMATORS},
        ess=float(w.sum() ** 2 / np.square(w).sum()) if w.any() else 0.0,
        match_rate=float(target[rows, prep.action].mean()),
        max_weight=float(w.max()),
        unsupported=float(unsupported.mean()),
    )


def _bundle(value: str | Path | Bundle) -> Bundle:
    return value if isinstance(value, Bundle) else load_bundle(value)


def _check(confidence: float, bootstrap: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if bootstrap < 0:
        raise ValueError("bootstrap must be >= 0")


def evaluate(
    bundle: str | Path | Bundle,
    data: LoggedData,
    *,
    confidence: float = 0.95,
    bootstrap: int = 0,
    seed: int = 0,
) -> Evaluation:
    """Estimate the value ``bundle`` would have had on the logged choices.

    Args:
        bundle: the candidate bundle (a path is loaded and verified).
        data: from :func:`read_choices`.
        confidence: of the intervals.
        bootstrap: 0 for normal intervals (cluster-robust), else the number of bootstrap
            resamples of visitors (95% percentile intervals).
        seed: of the bootstrap.

    Raises:
        NoUsableRows: no logged choice can be evaluated (no feature rows, another feature set).
        sdk.BundleError: the bundle is refused.
    """
    _check(confidence, bootstrap)
    b = _bundle(bundle)
    prep = _prepare([b], data)
    target = prep.targets[0]
    return _evaluation(b, prep, _terms(prep, target), target, data, confidence, bootstrap, seed)


def compare(
    candidate: str | Path | Bundle,
    baseline: str | Path | Bundle,
    data: LoggedData,
    *,
    confidence: float = 0.95,
    bootstrap: int = 0,
    seed: int = 0,
) -> Comparison:
    """Evaluate two bundles on the same logged choices (those both can evaluate) and the paired
    differences, candidate minus baseline, with normal cluster-robust intervals.

    Raises:
        NoUsableRows: no logged choice can be evaluated by both bundles.
        sdk.BundleError: a bundle is refused.
    """
    _check(confidence, bootstrap)
    cand, base = _bundle(candidate), _bundle(baseline)
    prep = _prepare([cand, base], data)
    terms = [_terms(prep, t) for t in prep.targets]
    evaluations = [
        _evaluation(b, prep, t, target, data, confidence, bootstrap, seed)
        for b, t, target in zip((cand, base), terms, prep.targets, strict=True)
    ]
    z = normal_ppf(0.5 + confidence / 2)
    difference = {
        name: _normal(
            terms[0].values[name] - terms[1].values[name],
            terms[0].influence[name] - terms[1].influence[name],
            prep,
            z,
        )
        for name in ("ips", "snips", "dr")
    }
    return Comparison(candidate=evaluations[0], baseline=evaluations[1], difference=difference)
