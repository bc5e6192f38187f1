"""Supervised adjustments of the buy-till-you-die scores (:mod:`sdk.btyd`): a shift of a score
on its link scale by a bundle model's output, bounded.

Must not import server or model_export; numpy only.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["ADJUST_BOUND", "adjust_one", "adjust_score"]

#: The most a supervised adjustment may shift a score on its link scale: a factor of about 20
#: on expected purchases or value, or 3 on the log-odds of buying.
ADJUST_BOUND = 3.0


def adjust_score(name: str, btyd: npt.ArrayLike, eta: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """A buy-till-you-die score shifted by a supervised model's ``eta`` (clipped to
    :data:`ADJUST_BOUND`; NaN counts as no shift) on its link scale.

    ``churnProbability``: the probability of buying is ``sigmoid(logit(1 - churn) + eta)`` and
    the churn probability is one minus it. ``expectedPurchases`` and ``expectedValue``:
    ``score * exp(eta)``. Training fits ``eta`` with the BTYD link as an offset
    (:mod:`model_export.fit.stacked`), so an adjustment learned on shorter windows than the
    horizon keeps the BTYD model's scaling to the horizon.
    """
    base = np.asarray(btyd, dtype=np.float64)
    shift = np.asarray(eta, dtype=np.float64)
    shift = np.clip(np.nan_to_num(shift, nan=0.0), -ADJUST_BOUND, ADJUST_BOUND)
    if name == "churnProbability":
        buy = np.clip(1.0 - base, 1e-12, 1.0 - 1e-12)
        link = np.log(buy) - np.log1p(-buy) + shift
        return np.asarray(1.0 - 0.5 * (1.0 + np.tanh(link / 2.0)), dtype=np.float64)
    if name in ("expectedPurchases", "expectedValue"):
        return np.asarray(base * np.exp(shift), dtype=np.float64)
    raise ValueError(f"no adjustment is defined for the score {name!r}")


def adjust_one(name: str, base: float, eta: float) -> float:
    """:func:`adjust_score` of one value in plain floats (numpy's per-call overhead would be
    most of a single decide)."""
    shift = 0.0 if eta != eta else min(max(eta, -ADJUST_BOUND), ADJUST_BOUND)
    if base != base:
        return base
    if name == "churnProbability":
        buy = min(max(1.0 - base, 1e-12), 1.0 - 1e-12)
        link = math.log(buy) - math.log1p(-buy) + shift
        return 1.0 - 0.5 * (1.0 + math.tanh(link / 2.0))
    return base * math.exp(shift)
