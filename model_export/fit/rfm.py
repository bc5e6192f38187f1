"""RFM quintile scores of customer profiles, and the edges that let serving score the same way
(:func:`sdk.rfm.score_rfm`).

Must not import server.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from sdk.manifest import RfmDef
from sdk.rfm import DEFAULT_WEIGHTS, RfmScore, rfm_code, score_rfm, weighted_score

__all__ = [
    "DEFAULT_WEIGHTS",
    "RfmScore",
    "rank_quintiles",
    "rfm_def",
    "rfm_scores",
    "score_rfm",
]

#: (profile column, output prefix) of the three axes, in R, F, M order.
_AXES = (("recency_days", "r"), ("purchases", "f"), ("revenue", "m"))


def _quintile(column: str) -> pl.Expr:
    """``ceil(5 * (2 * average_rank - 1) / (2 * n))`` in integer arithmetic (1..5)."""
    twice_rank = (pl.col(column).rank("average") * 2).cast(pl.Int64)
    two_n = pl.col(column).count().cast(pl.Int64) * 2
    return ((5 * (twice_rank - 1) + two_n - 1) // two_n).clip(1, 5).cast(pl.Int8)


def _buyers(profiles: pl.DataFrame) -> pl.DataFrame:
    return profiles.filter(pl.col("purchases") > 0).select(
        "customer_id",
        *(pl.col(c).cast(pl.Float64).fill_nan(None) for c, _ in _AXES),
    )


def rank_quintiles(profiles: pl.DataFrame) -> pl.DataFrame:
    """The rank-based scores of every buyer: customer_id, rfm_r, rfm_f, rfm_m (Int8).

    A value's quintile is ``ceil(5 * p)`` with ``p = (2 * average_rank - 1) / (2 * n)``, the
    mid-rank percentile of its tie group; recency scores ``6 - quintile`` (5 = most recent).
    A buyer with an unknown value on an axis gets no rank there (null)."""
    buyers = _buyers(profiles)
    out = buyers.select("customer_id")
    for column, axis in _AXES:
        part = buyers.select("customer_id", column).drop_nulls()
        q = part.select("customer_id", _quintile(column).alias(f"rfm_{axis}"))
        if axis == "r":
            q = q.with_columns((6 - pl.col("rfm_r")).cast(pl.Int8).alias("rfm_r"))
        out = out.join(q, on="customer_id", how="left")
    return out


def _edges(values: pl.DataFrame, column: str) -> list[float]:
    """Edge k (1..4) = the largest value whose quintile is <= k, else min - 1."""
    q = values.select(pl.col(column), _quintile(column).alias("q"))
    smallest = q.get_column(column).min()
    assert isinstance(smallest, int | float)
    edges = []
    for k in range(1, 5):
        below = q.filter(pl.col("q") <= k).get_column(column).max()
        edges.append(float(below) if isinstance(below, int | float) else float(smallest) - 1.0)
    return edges


def rfm_def(profiles: pl.DataFrame, weights: Mapping[str, float] | None = None) -> RfmDef:
    """Learn the quintile edges of recency, frequency and monetary value from the buyers.

    Edge ``k`` of an axis is the largest value scored below the ``k``-th boundary by
    :func:`rank_quintiles` (the smallest value minus 1 when none is); serving scores with the
    edges alone, and on the training customers both scores agree. Non-buyers score ``R1F1M1``.

    Args:
        profiles: a frame with customer_id, purchases, revenue and recency_days (as
            :func:`model_export.inputs.profiles.build_profiles` returns).
        weights: weights of the weighted score, keys r, f, m; default :data:`DEFAULT_WEIGHTS`.

    Raises:
        ValueError: no customer has a purchase (or a known value on some axis), or bad weights.
    """
    chosen = dict(DEFAULT_WEIGHTS if weights is None else weights)
    weighted_score(1, 1, 1, chosen)  # validates the weights
    buyers = _buyers(profiles)
    edges: dict[str, list[float]] = {}
    for column, axis in _AXES:
        values = buyers.select(column).drop_nulls()
        if values.height == 0:
            raise ValueError(f"no buyer with a known {column}: cannot fit RFM edges")
        edges[axis] = _edges(values, column)
    return RfmDef(
        recency_edges=edges["r"],
        frequency_edges=edges["f"],
        monetary_edges=edges["m"],
        weights=chosen,
    )


def _passed(column: pl.Expr, edges: list[float]) -> pl.Expr:
    return pl.sum_horizontal([(column > e).cast(pl.Int8) for e in edges]).cast(pl.Int8)


def rfm_scores(profiles: pl.DataFrame, edges: RfmDef) -> pl.DataFrame:
    """Score every profile with ``edges``, exactly as :func:`sdk.rfm.score_rfm` would.

    Returns:
        customer_id, rfm_r, rfm_f, rfm_m (Int8), rfm_code and rfm_score, in profile order.
    """
    purchases = pl.col("purchases").cast(pl.Float64).fill_nan(None)
    recency = pl.col("recency_days").cast(pl.Float64).fill_nan(None)
    revenue = pl.col("revenue").cast(pl.Float64).fill_nan(None).fill_null(0.0)
    bought = (purchases > 0).fill_null(False)
    one = pl.lit(1, pl.Int8)
    r = pl.when(bought & recency.is_not_null()).then(5 - _passed(recency, edges.recency_edges))
    f = pl.when(bought).then(1 + _passed(purchases, edges.frequency_edges))
    m = pl.when(bought).then(1 + _passed(revenue, edges.monetary_edges))
    scored = profiles.select(
        "customer_id",
        r.otherwise(one).cast(pl.Int8).alias("rfm_r"),
        f.otherwise(one).cast(pl.Int8).alias("rfm_f"),
        m.otherwise(one).cast(pl.Int8).alias("rfm_m"),
    )
    # Codes and weighted scores come from the serving functions themselves (125 combinations),
    # so training and serving agree to the last bit.
    combos = [(r_, f_, m_) for r_ in range(1, 6) for f_ in range(1, 6) for m_ in range(1, 6)]
    index = (
        (pl.col("rfm_r").cast(pl.Int32) - 1) * 25
        + (pl.col("rfm_f").cast(pl.Int32) - 1) * 5
        + (pl.col("rfm_m").cast(pl.Int32) - 1)
    )
    keys = list(range(len(combos)))
    codes = [rfm_code(*c) for c in combos]
    scores = [weighted_score(*c, edges.weights) for c in combos]
    return scored.with_columns(
        index.replace_strict(keys, codes, return_dtype=pl.String()).alias("rfm_code"),
        index.replace_strict(keys, scores, return_dtype=pl.Float64()).alias("rfm_score"),
    )
