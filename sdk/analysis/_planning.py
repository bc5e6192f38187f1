"""Planning an experiment and warning when its arms are too small to read.

Must not import anything but the standard library and the other statistics modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sdk.analysis._distributions import normal_ppf
from sdk.analysis._proportions import check_counts


def min_sample_size(
    baseline_rate: float, mde_relative: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Visitors per arm for a two-sided two-proportion z-test to detect a relative change.

    Method: the normal-approximation formula (Fleiss, no continuity correction), equal arms:
    ``n = (z_(1-alpha/2) sqrt(2 pbar qbar) + z_power sqrt(p1 q1 + p2 q2))^2 / (p2 - p1)^2``
    with ``p1 = baseline_rate``, ``p2 = p1 (1 + mde_relative)``, ``pbar = (p1 + p2) / 2``,
    rounded up.

    Args:
        baseline_rate: control conversion rate, in ``(0, 1)``.
        mde_relative: minimum detectable effect relative to the baseline (0.1 = +10%); non-zero
            and keeping ``p2`` in ``(0, 1)``.
        alpha: two-sided significance level, in ``(0, 1)``.
        power: probability of detecting the effect, in ``(0, 1)``.

    Raises:
        ValueError: an argument outside its range.
    """
    p1 = baseline_rate
    p2 = p1 * (1.0 + mde_relative)
    if not (0.0 < p1 < 1.0 and 0.0 < p2 < 1.0 and mde_relative != 0.0):
        raise ValueError(
            f"min_sample_size: need 0 < baseline_rate < 1, mde_relative != 0 and the treated rate "
            f"in (0, 1); got {baseline_rate!r}, {mde_relative!r}"
        )
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(
            f"min_sample_size: alpha and power must be in (0, 1): {alpha!r}, {power!r}"
        )
    z_a = normal_ppf(1.0 - alpha / 2.0)
    z_b = normal_ppf(power)
    pbar = 0.5 * (p1 + p2)
    num = z_a * math.sqrt(2.0 * pbar * (1.0 - pbar)) + z_b * math.sqrt(
        p1 * (1.0 - p1) + p2 * (1.0 - p2)
    )
    n = (num / (p2 - p1)) ** 2
    # Round up, but not past an n that is an integer up to rounding error.
    return max(1, math.ceil(n - 1e-9 * n))


def small_sample_warning(
    visitors: Sequence[float],
    conversions: Sequence[float],
    *,
    min_visitors: int = 100,
    min_conversions: int = 10,
    alpha: float = 0.05,
    power: float = 0.8,
) -> str | None:
    """A warning when an experiment's arms are too small to read; ``None`` when they are not.

    Arm 0 is the control. The rule, every failing part reported (joined by ``"; "``):

    1. an arm has fewer than ``min_visitors`` visitors;
    2. an arm has fewer than ``min_conversions`` conversions (the normal approximations behind
       the intervals and tests need roughly 10 events);
    3. for a treatment arm whose rate differs from the control's (both rates in ``(0, 1)``):
       the smaller of the two arms has fewer visitors than :func:`min_sample_size` needs to
       detect the *observed* relative lift at ``alpha`` and ``power``. This is a heuristic
       (the observed lift is itself noisy): it flags effects the data cannot yet resolve.

    Args:
        visitors: visitors per arm, control first.
        conversions: conversions per arm, same order.
        min_visitors: rule 1 threshold.
        min_conversions: rule 2 threshold.
        alpha: rule 3 significance level.
        power: rule 3 power.

    Raises:
        ValueError: the sequences differ in length or hold invalid counts.
    """
    if len(visitors) != len(conversions):
        raise ValueError("small_sample_warning: one conversion count per arm")
    for i, (n, s) in enumerate(zip(visitors, conversions, strict=True)):
        check_counts(s, n, f"small_sample_warning (arm {i})")
    reasons: list[str] = []
    for i, n in enumerate(visitors):
        if n < min_visitors:
            reasons.append(f"arm {i} has {n:g} visitors (fewer than {min_visitors})")
    for i, s in enumerate(conversions):
        if s < min_conversions:
            reasons.append(f"arm {i} has {s:g} conversions (fewer than {min_conversions})")
    if visitors and visitors[0] > 0:
        p0 = conversions[0] / visitors[0]
        for i in range(1, len(visitors)):
            n, s = visitors[i], conversions[i]
            if n == 0 or not 0.0 < p0 < 1.0:
                continue
            p = s / n
            if not 0.0 < p < 1.0 or p == p0:
                continue
            lift = p / p0 - 1.0
            needed = min_sample_size(p0, lift, alpha, power)
            have = min(visitors[0], n)
            if have < needed:
                reasons.append(
                    f"arm {i}: the observed lift of {lift:+.1%} needs about {needed} visitors per "
                    f"arm (alpha={alpha:g}, power={power:g}), the smaller arm has {have:g}"
                )
    return "; ".join(reasons) if reasons else None
