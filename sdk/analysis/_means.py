"""Means: streaming moments, the t interval of a mean and Welch's test of two means.

Must not import anything but the standard library and the other statistics modules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sdk.analysis._distributions import check_confidence, t_ppf, t_sf


class RunningStats:
    """Count, mean and sample variance of a stream, in one pass (Welford's algorithm).

    ``add`` updates ``mean += (x - mean) / n`` and ``m2 += (x - old_mean)(x - new_mean)`` on
    values shifted by the first one seen (so a large common offset, e.g. timestamps or
    ``1e9 + noise``, costs no precision); ``merge`` combines two summaries with Chan et al.'s
    pairwise formula, so partial summaries (per file, per worker) can be reduced in any order.
    A NaN value poisons the summary: filter before adding.
    """

    __slots__ = ("_m2", "_mean", "_shift", "count")

    def __init__(self) -> None:
        self.count = 0
        self._shift = 0.0  # the first value; _mean is the mean of (x - _shift)
        self._mean = 0.0
        self._m2 = 0.0

    def add(self, x: float) -> None:
        """Add one value."""
        if self.count == 0:
            self._shift = float(x)
        self.count += 1
        y = x - self._shift
        delta = y - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (y - self._mean)

    def update(self, values: Iterable[float]) -> None:
        """Add every value of an iterable."""
        for x in values:
            self.add(x)

    def merge(self, other: RunningStats) -> None:
        """Fold another summary into this one (in place); ``other`` is unchanged."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self._shift = other.count, other._shift
            self._mean, self._m2 = other._mean, other._m2
            return
        n = self.count + other.count
        delta = (other._shift - self._shift) + (other._mean - self._mean)
        self._mean += delta * other.count / n
        self._m2 += other._m2 + delta * delta * (self.count * other.count / n)
        self.count = n

    @property
    def mean(self) -> float:
        """Mean of the values; NaN when empty."""
        return self._shift + self._mean if self.count else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (``ddof = 1``); NaN for fewer than 2 values."""
        return self._m2 / (self.count - 1) if self.count > 1 else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (``ddof = 1``); NaN for fewer than 2 values."""
        return math.sqrt(self.variance)

    def __repr__(self) -> str:
        return f"RunningStats(count={self.count}, mean={self.mean!r}, variance={self.variance!r})"


def mean_ci(mean: float, var: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """t interval of a mean: ``mean -+ t(df = n - 1) sqrt(var / n)``.

    Assumes independent values and an approximately normal sample mean (CLT). Zero variance
    gives the point ``(mean, mean)``.

    Args:
        mean: sample mean.
        var: sample variance (``ddof = 1``).
        n: sample size.
        confidence: two-sided confidence level in ``(0, 1)``.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n < 2`` or an input is NaN.

    Raises:
        ValueError: ``var < 0``, ``n < 0`` or invalid confidence.
    """
    check_confidence(confidence)
    if var < 0.0 or n < 0:
        raise ValueError(f"mean_ci: need var >= 0 and n >= 0, got {var!r}, {n!r}")
    if not n >= 2 or math.isnan(mean) or math.isnan(var):
        return math.nan, math.nan
    half = t_ppf(1.0 - (1.0 - confidence) / 2.0, n - 1.0) * math.sqrt(var / n)
    return mean - half, mean + half


@dataclass(frozen=True, slots=True, kw_only=True)
class WelchResult:
    """Welch's unequal-variance t-test of treatment (2) minus control (1).

    Attributes:
        t: ``diff / se`` with ``se = sqrt(var1/n1 + var2/n2)`` (sign of ``mean2 - mean1``,
            i.e. minus scipy's ``ttest_ind(a, b)``); NaN when ``se = 0`` or an arm has fewer
            than 2 values.
        df: Welch-Satterthwaite degrees of freedom; NaN as ``t``.
        p_value: two-sided ``2 P(T(df) > |t|)``; NaN as ``t``.
        diff: ``mean2 - mean1``; NaN when an arm is empty.
        low: lower bound of the interval ``diff -+ t_ppf(df) se``; NaN as ``t``.
        high: upper bound of that interval.
    """

    t: float
    df: float
    p_value: float
    diff: float
    low: float
    high: float


def welch_t_test(
    mean1: float,
    var1: float,
    n1: float,
    mean2: float,
    var2: float,
    n2: float,
    confidence: float = 0.95,
) -> WelchResult:
    """Welch's t-test and interval for ``mean2 - mean1`` from summary statistics.

    Method: ``se^2 = v1/n1 + v2/n2``, ``t = (mean2 - mean1) / se``, Welch-Satterthwaite
    ``df = se^4 / ((v1/n1)^2/(n1-1) + (v2/n2)^2/(n2-1))`` (fractional), two-sided p-value and
    interval from Student's t. Assumes independent values and approximately normal sample
    means (fine for revenue per visitor at report sizes; heavy tails need more data).

    Args:
        mean1: control mean.
        var1: control sample variance (``ddof = 1``).
        n1: control size.
        mean2: treatment mean.
        var2: treatment sample variance (``ddof = 1``).
        n2: treatment size.
        confidence: two-sided confidence level of the interval.

    Raises:
        ValueError: a negative variance or size, or an invalid confidence.
    """
    check_confidence(confidence)
    if var1 < 0.0 or var2 < 0.0 or n1 < 0 or n2 < 0:
        raise ValueError("welch_t_test: variances and sizes must be >= 0")
    diff = float(mean2 - mean1) if n1 >= 1 and n2 >= 1 else math.nan
    undefined = WelchResult(
        t=math.nan, df=math.nan, p_value=math.nan, diff=diff, low=math.nan, high=math.nan
    )
    if not (n1 >= 2 and n2 >= 2) or math.isnan(diff) or math.isnan(var1) or math.isnan(var2):
        return undefined
    g1, g2 = var1 / n1, var2 / n2
    se2 = g1 + g2
    if se2 <= 0.0:
        return undefined
    se = math.sqrt(se2)
    df = se2 * se2 / (g1 * g1 / (n1 - 1.0) + g2 * g2 / (n2 - 1.0))
    t = diff / se
    p_value = min(1.0, 2.0 * t_sf(abs(t), df))
    half = t_ppf(1.0 - (1.0 - confidence) / 2.0, df) * se
    return WelchResult(t=t, df=df, p_value=p_value, diff=diff, low=diff - half, high=diff + half)


def welch_from_samples(
    a: Iterable[float], b: Iterable[float], confidence: float = 0.95
) -> WelchResult:
    """:func:`welch_t_test` of ``mean(b) - mean(a)`` from raw values (``a`` is the control).

    Means and variances come from :class:`RunningStats` (one pass each).
    """
    sa, sb = RunningStats(), RunningStats()
    sa.update(a)
    sb.update(b)
    return welch_t_test(
        sa.mean, sa.variance, sa.count, sb.mean, sb.variance, sb.count, confidence=confidence
    )
