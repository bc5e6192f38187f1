"""Binomial proportions: the interval of one rate and the difference and ratio of two.

Must not import anything but the standard library and the other statistics modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sdk.analysis._distributions import normal_sf, z_two_sided


def check_counts(successes: float, n: float, where: str) -> None:
    """Raise ValueError (naming ``where``) unless ``0 <= successes <= n``, both finite."""
    if not (math.isfinite(successes) and math.isfinite(n)) or n < 0 or not 0 <= successes <= n:
        raise ValueError(f"{where}: need 0 <= successes <= n (finite), got {successes!r}, {n!r}")


def proportion_ci(
    successes: float, n: float, confidence: float = 0.95, method: str = "wilson"
) -> tuple[float, float]:
    """Confidence interval of a binomial proportion ``successes / n``.

    Methods:
        ``"wilson"`` (default): the Wilson score interval
        ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, without continuity
        correction. Good coverage for small ``n`` and rates near 0 or 1; the lower bound is
        exactly 0 when ``successes = 0`` and the upper bound exactly 1 when ``successes = n``.

        ``"normal"``: the Wald interval ``p -+ z sqrt(p(1-p)/n)``, clipped to ``[0, 1]``. It
        collapses to a point at 0 or ``n`` successes; prefer Wilson.

    Args:
        successes: number of successes (conversions); need not be an integer.
        n: number of trials (visitors).
        confidence: two-sided confidence level in ``(0, 1)``.
        method: ``"wilson"`` or ``"normal"``.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n = 0``.

    Raises:
        ValueError: invalid counts, confidence or method.
    """
    check_counts(successes, n, "proportion_ci")
    z = z_two_sided(confidence)
    if method not in ("wilson", "normal"):
        raise ValueError(f"method must be 'wilson' or 'normal', got {method!r}")
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    if method == "normal":
        half = z * math.sqrt(p * (1.0 - p) / n)
        return max(0.0, p - half), min(1.0, p + half)
    z2n = z * z / n
    denom = 1.0 + z2n
    centre = (p + 0.5 * z2n) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + 0.25 * z2n / n) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True, slots=True, kw_only=True)
class ProportionDiff:
    """Treatment (arm 2) minus control (arm 1) for two conversion rates.

    Attributes:
        diff: ``p2 - p1``; NaN when either arm has no trials.
        low: lower bound of the Newcombe hybrid score interval of ``diff``; NaN as ``diff``.
        high: upper bound of that interval.
        relative_lift: ``p2 / p1 - 1``; ``None`` when ``p1 = 0`` or an arm has no trials.
        relative_low: lower bound of the Katz log-risk-ratio interval of the lift, minus 1;
            ``None`` unless both rates are > 0.
        relative_high: upper bound of that interval.
        p_value: two-sided pooled z-test of ``p1 = p2``; NaN when an arm has no trials or the
            pooled rate is 0 or 1 (no conversions anywhere, or all converted).
    """

    diff: float
    low: float
    high: float
    relative_lift: float | None
    relative_low: float | None
    relative_high: float | None
    p_value: float


def diff_proportions(
    s1: float, n1: float, s2: float, n2: float, confidence: float = 0.95
) -> ProportionDiff:
    """Difference and relative lift of two conversion rates, with intervals and a p-value.

    Methods:
        Interval of ``p2 - p1``: Newcombe's hybrid score interval (Newcombe 1998, method 10),
        built from the two Wilson intervals ``(l1, u1)``, ``(l2, u2)``:
        ``d - sqrt((p2 - l2)^2 + (u1 - p1)^2)`` to ``d + sqrt((u2 - p2)^2 + (p1 - l1)^2)``.
        Unlike the Wald interval it stays sensible with few or zero conversions; its coverage
        is close to nominal (slightly conservative).

        Relative lift ``p2/p1 - 1``: Katz's interval of the log risk ratio,
        ``log(p2/p1) -+ z sqrt(1/s2 - 1/n2 + 1/s1 - 1/n1)``, exponentiated, minus 1.

        p-value: two-sided z-test with the pooled rate ``p = (s1 + s2) / (n1 + n2)`` and
        ``se = sqrt(p (1 - p) (1/n1 + 1/n2))``; identical to the uncorrected 2x2 chi-square.

    Args:
        s1: control conversions.
        n1: control visitors.
        s2: treatment conversions.
        n2: treatment visitors.
        confidence: two-sided confidence level in ``(0, 1)``.

    Raises:
        ValueError: invalid counts or confidence.
    """
    check_counts(s1, n1, "diff_proportions (control)")
    check_counts(s2, n2, "diff_proportions (treatment)")
    z = z_two_sided(confidence)
    if n1 == 0 or n2 == 0:
        return ProportionDiff(
            diff=math.nan,
            low=math.nan,
            high=math.nan,
            relative_lift=None,
            relative_low=None,
            relative_high=None,
            p_value=math.nan,
        )
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = proportion_ci(s1, n1, confidence)
    l2, u2 = proportion_ci(s2, n2, confidence)
    diff = p2 - p1
    low = diff - math.hypot(p2 - l2, u1 - p1)
    high = diff + math.hypot(u2 - p2, p1 - l1)

    rel: float | None = None
    rel_low: float | None = None
    rel_high: float | None = None
    if s1 > 0:
        rel = p2 / p1 - 1.0
        if s2 > 0:
            log_rr = math.log(p2) - math.log(p1)
            se_log = math.sqrt(max(0.0, 1.0 / s2 - 1.0 / n2 + 1.0 / s1 - 1.0 / n1))
            rel_low = math.expm1(log_rr - z * se_log)
            rel_high = math.expm1(log_rr + z * se_log)

    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    p_value = min(1.0, 2.0 * normal_sf(abs(diff) / se)) if se > 0.0 else math.nan
    return ProportionDiff(
        diff=diff,
        low=max(-1.0, low),
        high=min(1.0, high),
        relative_lift=rel,
        relative_low=rel_low,
        relative_high=rel_high,
        p_value=p_value,
    )
