"""RFM scoring from learned quintile edges: the one function training and serving both use.

:func:`score_rfm` turns a profile's recency, frequency and monetary value into quintile scores
1-5, a code such as ``"R5F3M4"`` and a weighted score, using only the edges of an
:class:`~sdk.manifest.RfmDef` learned by ``model_export.fit.rfm``. Pure and deterministic.

Must not import anything but the standard library and ``sdk.manifest``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import NamedTuple

from sdk.manifest import RfmDef

__all__ = ["DEFAULT_WEIGHTS", "RfmScore", "rfm_code", "score_rfm", "weighted_score"]

#: Default weights of the weighted score: recency, the strongest single predictor of the next
#: purchase, weighs most.
DEFAULT_WEIGHTS: dict[str, float] = {"r": 0.4, "f": 0.3, "m": 0.3}


class RfmScore(NamedTuple):
    """Quintile scores 1-5, the code ``R{r}F{f}M{m}`` and the weighted score (1.0-5.0)."""

    r: int
    f: int
    m: int
    code: str
    score: float


def rfm_code(r: int, f: int, m: int) -> str:
    """The code of three scores, e.g. ``rfm_code(5, 3, 4) == "R5F3M4"``."""
    return f"R{r}F{f}M{m}"


def weighted_score(r: int, f: int, m: int, weights: dict[str, float]) -> float:
    """``(wr*r + wf*f + wm*m) / (wr + wf + wm)`` with weights keyed ``r``, ``f``, ``m``.

    Raises:
        ValueError: a weight is missing or negative, or all weights are 0.
    """
    try:
        wr, wf, wm = float(weights["r"]), float(weights["f"]), float(weights["m"])
    except KeyError as exc:
        raise ValueError(f"RFM weights need keys r, f and m; missing {exc}") from None
    total = wr + wf + wm
    if min(wr, wf, wm) < 0 or not total > 0:
        raise ValueError(f"RFM weights must be >= 0 with a positive sum, got {weights}")
    return (wr * r + wf * f + wm * m) / total


def _passed(edges: list[float], value: float) -> int:
    """How many edges ``value`` is strictly above (0-4)."""
    return bisect_left(edges, value)


def score_rfm(
    edges: RfmDef,
    recency_days: float | None,
    purchases: float | None,
    revenue: float | None,
) -> RfmScore:
    """Score one profile with the edges learned at training.

    A value ``x`` passes edge ``e`` when ``x > e``: frequency and monetary score ``1 + (edges
    passed)``, recency ``5 - (edges passed)``, so scores are always 1..5. A buyer with unknown
    recency scores R1 and unknown revenue counts as 0. The weighted score is
    ``(wr*R + wf*F + wm*M) / (wr + wf + wm)``.

    Args:
        edges: quintile edges and weights from the bundle manifest.
        recency_days: days since the last purchase.
        purchases: number of purchases (orders).
        revenue: total spent.

    Returns:
        ``RfmScore(r, f, m, code, score)``; never-purchased profiles are ``R1F1M1``, 1.0.
    """
    if purchases is None or not purchases > 0:
        r = f = m = 1
    else:
        if recency_days is None or math.isnan(recency_days):
            r = 1
        else:
            r = 5 - _passed(edges.recency_edges, recency_days)
        f = 1 + _passed(edges.frequency_edges, purchases)
        money = 0.0 if revenue is None or math.isnan(revenue) else revenue
        m = 1 + _passed(edges.monetary_edges, money)
    return RfmScore(r, f, m, rfm_code(r, f, m), weighted_score(r, f, m, edges.weights))
