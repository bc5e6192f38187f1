"""Chi-square tests: independence of r x c and 2x2 tables, and goodness of fit (the
sample-ratio-mismatch check).

Must not import anything but the standard library and the other statistics modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sdk.analysis._distributions import chi2_sf
from sdk.analysis._proportions import check_counts


@dataclass(frozen=True, slots=True, kw_only=True)
class ChiSquareResult:
    """A chi-square test.

    Attributes:
        statistic: Pearson's ``sum (O - E)^2 / E``; NaN when an expected count is 0 (an empty
            row or column, or no observations).
        p_value: ``P(chi2(df) > statistic)``; NaN with the statistic.
        df: degrees of freedom.
    """

    statistic: float
    p_value: float
    df: int


def chi_square_independence(
    table: Sequence[Sequence[float]], correction: bool = False
) -> ChiSquareResult:
    """Pearson's chi-square test of independence of an r x c contingency table.

    Method: expected counts ``E_ij = row_i * col_j / total``, statistic ``sum (O - E)^2 / E``,
    ``df = (r - 1)(c - 1)``, p-value from :func:`chi2_sf`. With ``correction=True`` and
    ``df = 1``, Yates's continuity correction replaces ``|O - E|`` by ``max(0, |O - E| - 0.5)``
    (it is ignored for larger tables). Assumes independent observations; the chi-square
    approximation wants expected counts of about 5 or more.

    Args:
        table: rows of non-negative counts, at least 2 x 2, all rows the same length.
        correction: apply Yates's correction to 2 x 2 (df = 1) tables.

    Raises:
        ValueError: fewer than 2 rows or columns, ragged rows, negative or non-finite counts.
    """
    rows = [[float(v) for v in row] for row in table]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ValueError("chi_square_independence: the table needs at least 2 rows and 2 columns")
    ncol = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != ncol:
            raise ValueError(f"chi_square_independence: row {i} has {len(row)} cells, not {ncol}")
        if not all(math.isfinite(v) and v >= 0.0 for v in row):
            raise ValueError(f"chi_square_independence: row {i} has a negative or non-finite count")
    df = (len(rows) - 1) * (ncol - 1)
    row_sums = [math.fsum(row) for row in rows]
    col_sums = [math.fsum(row[j] for row in rows) for j in range(ncol)]
    total = math.fsum(row_sums)
    if total == 0.0 or min(row_sums) == 0.0 or min(col_sums) == 0.0:
        return ChiSquareResult(statistic=math.nan, p_value=math.nan, df=df)
    yates = correction and df == 1
    terms = []
    for row, rs in zip(rows, row_sums, strict=True):
        for obs, cs in zip(row, col_sums, strict=True):
            exp = rs * cs / total
            dev = abs(obs - exp)
            if yates:
                dev = max(0.0, dev - 0.5)
            terms.append(dev * dev / exp)
    stat = math.fsum(terms)
    return ChiSquareResult(statistic=stat, p_value=chi2_sf(stat, df), df=df)


def chi_square_2x2(
    s1: float, n1: float, s2: float, n2: float, correction: bool = False
) -> ChiSquareResult:
    """Chi-square test that two conversion rates are equal (df = 1).

    Method: :func:`chi_square_independence` on the table
    ``[[s1, n1 - s1], [s2, n2 - s2]]`` (conversions and non-conversions per arm). Without
    correction its p-value equals the pooled z-test of :func:`diff_proportions`. The statistic
    is NaN when an arm has no visitors or nobody (or everybody) converted.

    Args:
        s1: control conversions.
        n1: control visitors.
        s2: treatment conversions.
        n2: treatment visitors.
        correction: apply Yates's continuity correction.

    Raises:
        ValueError: invalid counts.
    """
    check_counts(s1, n1, "chi_square_2x2 (control)")
    check_counts(s2, n2, "chi_square_2x2 (treatment)")
    return chi_square_independence([[s1, n1 - s1], [s2, n2 - s2]], correction=correction)


def chi_square_gof(observed: Sequence[float], expected_weights: Sequence[float]) -> ChiSquareResult:
    """Pearson's chi-square goodness-of-fit test; the sample-ratio-mismatch (SRM) check.

    Method: expected counts ``E_i = total * w_i / sum(w)``, statistic ``sum (O - E)^2 / E``,
    ``df = k - 1``, p-value from :func:`chi2_sf`. For SRM pass the visitors per arm and the
    configured traffic split; a p-value below ~0.001 is the usual alarm. NaN when nothing was
    observed.

    Args:
        observed: non-negative counts per category (at least 2).
        expected_weights: positive weights (any scale), one per category.

    Raises:
        ValueError: fewer than 2 categories, lengths differ, negative or non-finite counts, or
            a weight that is not positive and finite.
    """
    obs = [float(v) for v in observed]
    weights = [float(w) for w in expected_weights]
    if len(obs) < 2 or len(obs) != len(weights):
        raise ValueError("chi_square_gof: need at least 2 categories and one weight per category")
    if not all(math.isfinite(v) and v >= 0.0 for v in obs):
        raise ValueError("chi_square_gof: counts must be finite and >= 0")
    if not all(math.isfinite(w) and w > 0.0 for w in weights):
        raise ValueError("chi_square_gof: weights must be finite and > 0")
    df = len(obs) - 1
    total = math.fsum(obs)
    if total == 0.0:
        return ChiSquareResult(statistic=math.nan, p_value=math.nan, df=df)
    wsum = math.fsum(weights)
    terms = []
    for o, w in zip(obs, weights, strict=True):
        exp = total * w / wsum
        terms.append((o - exp) ** 2 / exp)
    stat = math.fsum(terms)
    return ChiSquareResult(statistic=stat, p_value=chi2_sf(stat, df), df=df)
