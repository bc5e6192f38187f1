"""Dependency-free statistics for experiment reports: distributions, intervals and tests.

The report engine uses this module per experiment, arm and segment: conversion rates with
Wilson intervals (:func:`proportion_ci`), treatment-minus-control differences and relative
lifts (:func:`diff_proportions`), chi-square tests of 2x2 and r x c tables and the goodness of
fit behind the sample-ratio-mismatch check (:func:`chi_square_gof`), Welch's t-test for revenue
per visitor (:func:`welch_t_test`), streaming moments over a large event log
(:class:`RunningStats`), sample sizes (:func:`min_sample_size`) and small-sample warnings
(:func:`small_sample_warning`).

Conventions:

* Two-arm functions take the control first and the treatment second and report treatment minus
  control (``p2 - p1``, ``mean2 - mean1``).
* Quantities that are mathematically undefined for the data (a rate with ``n = 0``, a test whose
  pooled rate is 0 or 1, a t statistic with zero standard error, a variance of fewer than two
  values) are ``float("nan")``; only the relative lift of :class:`ProportionDiff` uses ``None``
  instead. Nothing raises on valid data, including ``n = 0``, no or all conversions, zero
  variance and ``n = 1e9``.
* Arguments that cannot be right (negative counts, ``successes > n``, a confidence outside
  ``(0, 1)``, a probability outside ``[0, 1]``, degrees of freedom ``<= 0``, ragged tables) raise
  :class:`ValueError`. A NaN argument to a distribution function gives NaN.
* Special functions are computed from their textbook series and continued fractions, with the
  logarithms of the prefactors formed so that large parameters do not cancel; on the tested
  grids they agree with scipy to 1e-14 relative typically and 1.3e-12 at worst, tails included
  (see ``tests/sdk/test_stats.py``). Each call is pure Python: a t p-value or quantile costs
  about 0.1 ms, a proportion comparison about 10 us.

Must not import anything but the standard library (``math``): the server and the SDK must not
need numpy or scipy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ChiSquareResult",
    "ProportionDiff",
    "RunningStats",
    "WelchResult",
    "beta_inc",
    "chi2_cdf",
    "chi2_sf",
    "chi_square_2x2",
    "chi_square_gof",
    "chi_square_independence",
    "diff_proportions",
    "gamma_inc_lower",
    "gamma_inc_upper",
    "mean_ci",
    "min_sample_size",
    "normal_cdf",
    "normal_pdf",
    "normal_ppf",
    "normal_sf",
    "proportion_ci",
    "small_sample_warning",
    "t_cdf",
    "t_pdf",
    "t_ppf",
    "t_sf",
    "welch_from_samples",
    "welch_t_test",
]

_NAN = float("nan")
_EPS = 2.220446049250313e-16
_TINY = 1e-300  # Lentz's guard against a zero denominator
_MAX_ITER = 1_000_000  # continued fractions need O(sqrt(max(a, b))) terms at worst
_MAX_FLOAT = 1.7976931348623157e308
_LOG_MAX_FLOAT = math.log(_MAX_FLOAT)
_SQRT2 = math.sqrt(2.0)
_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
#: Above this size a parameter's log-gamma is taken from Stirling's series (see _lgamma_corr).
_STIRLING_MIN = 10.0


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _z_two_sided(confidence: float) -> float:
    """The normal quantile ``z`` with ``P(|Z| <= z) = confidence``."""
    _check_confidence(confidence)
    return normal_ppf(1.0 - (1.0 - confidence) / 2.0)


def _check_counts(successes: float, n: float, where: str) -> None:
    if not (math.isfinite(successes) and math.isfinite(n)) or n < 0 or not 0 <= successes <= n:
        raise ValueError(f"{where}: need 0 <= successes <= n (finite), got {successes!r}, {n!r}")


def _log1pmx(u: float, d: float) -> float:
    """``log(u) - d`` where ``d = u - 1`` is given accurately: ``log1p(d) - d`` w/o cancellation.

    Near ``u = 1`` (``|d| < 1/4``) the Taylor series ``-d^2/2 + d^3/3 - ...``; elsewhere
    ``log(u) - d``, taking the logarithm of ``u`` itself so that a tiny ``u`` keeps its digits.
    """
    if abs(d) >= 0.25:
        return math.log(u) - d
    # Terms shrink at least 4x each; about 28 terms reach 1e-17.
    total = 0.0
    power = d * d
    k = 2
    while True:
        term = power / k
        total += -term if k % 2 == 0 else term
        if abs(term) <= _EPS * abs(total) * 0.125 or k > 60:
            return total
        power *= d
        k += 1


#: Stirling-series coefficients ``B_2k / (2k (2k - 1))``, k = 1..7.
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156)


def _lgamma_corr(x: float) -> float:
    """Stirling's remainder ``lgamma(x) - ((x - 0.5) log x - x + log sqrt(2 pi))``, x >= 10.

    The asymptotic series ``sum B_2k / (2k (2k - 1) x^(2k - 1))`` to k = 7; the first omitted
    term is below 3e-17 at x = 10.
    """
    r2 = 1.0 / (x * x)
    total = 0.0
    for coef in reversed(_STIRLING):
        total = total * r2 + coef
    return total / x


def _lgamma_ratio(big: float, small: float) -> float:
    """``lgamma(big) - lgamma(big + small)`` for ``big >= 10``, without cancellation.

    From Stirling's formula: ``-(big - 0.5) log1p(small / big) - small log(big + small) + small``
    plus the difference of the remainders.
    """
    total = big + small
    return (
        -(big - 0.5) * math.log1p(small / big)
        - small * math.log(total)
        + small
        + (_lgamma_corr(big) - _lgamma_corr(total))
    )


def _lbeta(a: float, b: float) -> float:
    """``log B(a, b)``, accurate in absolute terms when one or both parameters are large."""
    small, big = (a, b) if a <= b else (b, a)
    if big < _STIRLING_MIN:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    if small < _STIRLING_MIN:
        return math.lgamma(small) + _lgamma_ratio(big, small)
    # Both large: Stirling for all three terms, grouped so that the a log a terms cancel exactly.
    total = a + b
    return (
        _LN_SQRT_2PI
        + (a - 0.5) * math.log(a / total)
        + (b - 0.5) * math.log(b / total)
        - 0.5 * math.log(total)
        + (_lgamma_corr(a) + _lgamma_corr(b) - _lgamma_corr(total))
    )


# --------------------------------------------------------------------------------------------
# Normal distribution
# --------------------------------------------------------------------------------------------


def normal_pdf(x: float) -> float:
    """Standard normal density ``exp(-x^2 / 2) / sqrt(2 pi)``."""
    return math.exp(-0.5 * x * x) / _SQRT_2PI


def normal_cdf(x: float) -> float:
    """Standard normal distribution function ``P(Z <= x)``.

    Method: ``erfc(-x / sqrt(2)) / 2`` (C library ``erfc``), so the lower tail keeps its relative
    accuracy down to the smallest doubles (about x = -38).
    """
    return 0.5 * math.erfc(-x / _SQRT2)


def normal_sf(x: float) -> float:
    """Standard normal survival function ``P(Z > x) = normal_cdf(-x)``, accurate in the tail."""
    return 0.5 * math.erfc(x / _SQRT2)


# Acklam's rational approximations of the normal quantile (relative error below 1.15e-9).
_ACKLAM_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_ACKLAM_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_ACKLAM_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_ACKLAM_D = (
    7.784695709041462e-03,
    3.224671290700398e-01,
    2.445134137142996e00,
    3.754408661907416e00,
)
_ACKLAM_P_LOW = 0.02425


def _normal_ppf_lower(p: float) -> float:
    """Normal quantile for ``0 < p <= 0.5``: Acklam's approximation, one Halley step."""
    a, b, c, d = _ACKLAM_A, _ACKLAM_B, _ACKLAM_C, _ACKLAM_D
    if p < _ACKLAM_P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0
        )
    else:
        q = p - 0.5
        r = q * q
        x = (
            (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
            * q
            / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
        )
    # Halley's step on normal_cdf(x) - p; skipped where the density underflows (p < 1e-300,
    # where Acklam's 1.15e-9 relative error stands).
    if 0.5 * x * x < 690.0:
        u = (normal_cdf(x) - p) * _SQRT_2PI * math.exp(0.5 * x * x)
        x -= u / (1.0 + 0.5 * x * u)
    return x


def normal_ppf(p: float) -> float:
    """Standard normal quantile: the ``x`` with ``normal_cdf(x) = p``.

    Method: Acklam's rational approximation (relative error < 1.15e-9) refined by one step of
    Halley's method on ``erfc``, which brings it to about 1e-15. The upper half is computed as
    ``-normal_ppf(1 - p)`` (exact subtraction), so both tails are symmetric.

    Args:
        p: a probability in ``[0, 1]``; 0 and 1 give ``-inf`` and ``inf``.

    Raises:
        ValueError: ``p`` is outside ``[0, 1]``.
    """
    if math.isnan(p):
        return _NAN
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return _normal_ppf_lower(p)
    return -_normal_ppf_lower(1.0 - p)


# --------------------------------------------------------------------------------------------
# Incomplete gamma and chi-square
# --------------------------------------------------------------------------------------------


def _gamma_log_prefactor(a: float, x: float) -> float:
    """``log(x^a e^(-x) / Gamma(a))``.

    For ``a >= 10`` Stirling's formula turns it into ``a (log(x/a) - (x-a)/a) + log sqrt(a/2pi)``
    minus Stirling's remainder, which does not cancel when ``x`` is near ``a``.
    """
    if a < _STIRLING_MIN or x < 1e-100 * a:  # no cancellation to avoid (or x / a underflows)
        return a * math.log(x) - x - math.lgamma(a)
    return a * _log1pmx(x / a, (x - a) / a) + 0.5 * math.log(a) - _LN_SQRT_2PI - _lgamma_corr(a)


def _gamma_inc_pair(a: float, x: float) -> tuple[float, float]:
    """Regularized ``(P(a, x), Q(a, x))``: one computed directly, the other as one minus it.

    Method (Numerical Recipes, ch. 6.2): for ``x < a + 1`` the series
    ``P = x^a e^-x / Gamma(a) * sum_n x^n / (a (a+1) ... (a+n))``; otherwise the continued
    fraction ``Q = x^a e^-x / Gamma(a) * 1/(x+1-a- 1(1-a)/(x+3-a- 2(2-a)/(x+5-a- ...)))``
    evaluated by the modified Lentz algorithm.
    """
    if x == 0.0:
        return 0.0, 1.0
    if math.isinf(x):
        return 1.0, 0.0
    log_pre = _gamma_log_prefactor(a, x)
    if x < a + 1.0:
        term = 1.0 / a
        total = term
        ap = a
        for _ in range(_MAX_ITER):
            ap += 1.0
            term *= x / ap
            total += term
            if term < total * _EPS:
                break
        p = math.exp(log_pre) * total
        return p, 1.0 - p
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    q = math.exp(log_pre) * h
    return 1.0 - q, q


def _check_gamma_args(a: float, x: float) -> None:
    if not a > 0.0 or not x >= 0.0:
        raise ValueError(f"need a > 0 and x >= 0, got a={a!r}, x={x!r}")


def gamma_inc_lower(a: float, x: float) -> float:
    """Regularized lower incomplete gamma ``P(a, x) = gamma(a, x) / Gamma(a)``.

    Method: power series for ``x < a + 1``, else ``1 - Q`` from Lentz's continued fraction.
    Relative accuracy about 1e-14 where ``P`` is computed directly (``x < a + 1``).

    Raises:
        ValueError: ``a <= 0`` or ``x < 0``.
    """
    if math.isnan(a) or math.isnan(x):
        return _NAN
    _check_gamma_args(a, x)
    return _gamma_inc_pair(a, x)[0]


def gamma_inc_upper(a: float, x: float) -> float:
    """Regularized upper incomplete gamma ``Q(a, x) = 1 - P(a, x)``.

    Method: Lentz's continued fraction for ``x >= a + 1`` (so tiny upper tails keep their
    relative accuracy), else ``1 - P`` from the series.

    Raises:
        ValueError: ``a <= 0`` or ``x < 0``.
    """
    if math.isnan(a) or math.isnan(x):
        return _NAN
    _check_gamma_args(a, x)
    return _gamma_inc_pair(a, x)[1]


def _chi2_pair(x: float, df: float) -> tuple[float, float]:
    if not df > 0.0:
        raise ValueError(f"df must be > 0, got {df!r}")
    if x <= 0.0:
        return 0.0, 1.0
    if df == 1.0:  # Q(1/2, x/2) = erfc(sqrt(x/2)), exact in both tails
        r = math.sqrt(0.5 * x)
        return math.erf(r), math.erfc(r)
    if df == 2.0:  # Q(1, x/2) = exp(-x/2)
        return -math.expm1(-0.5 * x), math.exp(-0.5 * x)
    return _gamma_inc_pair(0.5 * df, 0.5 * x)


def chi2_cdf(x: float, df: float) -> float:
    """Chi-square distribution function ``P(X <= x) = P(df/2, x/2)``.

    Method: regularized incomplete gamma (see :func:`gamma_inc_lower`); ``erf`` for df = 1 and
    ``expm1`` for df = 2. ``x <= 0`` gives 0.

    Raises:
        ValueError: ``df <= 0``.
    """
    if math.isnan(x) or math.isnan(df):
        return _NAN
    return _chi2_pair(x, df)[0]


def chi2_sf(x: float, df: float) -> float:
    """Chi-square survival function ``P(X > x) = Q(df/2, x/2)``: the p-value of a statistic.

    Method: regularized upper incomplete gamma, series plus Lentz's continued fraction (see
    :func:`gamma_inc_upper`); ``erfc`` for df = 1 and ``exp`` for df = 2. ``x <= 0`` gives 1.

    Raises:
        ValueError: ``df <= 0``.
    """
    if math.isnan(x) or math.isnan(df):
        return _NAN
    return _chi2_pair(x, df)[1]


# --------------------------------------------------------------------------------------------
# Incomplete beta and Student's t
# --------------------------------------------------------------------------------------------


def _beta_log_prefactor(a: float, b: float, x: float, y: float, lnx: float, lny: float) -> float:
    """``log(x^a y^b / B(a, b))`` with ``y = 1 - x``.

    When both parameters are large the Stirling form of ``B`` is combined with the powers so
    that nothing of size ``a log x`` cancels: with ``x0 = a / (a+b)``, ``y0 = b / (a+b)`` it is
    ``a (log(x/x0) - (x/x0 - 1)) + b (log(y/y0) - (y/y0 - 1)) + log sqrt(ab / (2 pi (a+b)))``
    minus the Stirling remainders (the two linear terms cancel exactly).
    """
    if min(a, b) >= _STIRLING_MIN:
        e = b * x - a * y  # (x - x0)(a + b) with x0 = a / (a + b)
        total = a + b
        return (
            a * _log1pmx(x * total / a, e / a)
            + b * _log1pmx(y * total / b, -e / b)
            + 0.5 * math.log(a * b / (a + b))
            - _LN_SQRT_2PI
            - (_lgamma_corr(a) + _lgamma_corr(b) - _lgamma_corr(a + b))
        )
    return a * lnx + b * lny - _lbeta(a, b)


def _beta_cf(a: float, b: float, x: float, y: float) -> float:
    """Continued fraction of ``I_x(a, b)`` (``y = 1 - x``) by the modified Lentz algorithm.

    The classical fraction (Numerical Recipes ``betacf``) is
    ``1 / (1 + d1 / (1 + d2 / (1 + ...)))`` with ``d(2m) = m (b-m) x / ((a+2m-1)(a+2m))`` and
    ``d(2m+1) = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1))``; it is used for ``x <= 1/2``. For
    ``x > 1/2`` and large ``a`` (Student's t with large df) each ``d(2m+1)`` is close to -1 and
    ``1 + d(2m+1)`` cancels, so there the odd contraction is used instead,
    ``1 / (B0 - A1 / (B1 - A2 / (B2 - ...)))`` with ``A(m) = d(2m-1) d(2m)`` and
    ``B(m) = 1 + d(2m) + d(2m+1)`` expanded in ``y``:

        B(m) = ((A-1)(1+2m-b) - 2m(m-b)) / ((A-1)(A+1))
               + y ((a+m)(a+b+m) / (A (A+1)) - m (b-m) / ((A-1) A)),   A = a + 2m

    (``B0 = (1 - b + (a+b) y) / (a+1)``). Both have the same convergents; they converge
    quickly for ``x < (a+1)/(a+b+2)``, in O(sqrt(max(a, b))) steps at worst.
    """
    qab = a + b
    if x <= 0.5:
        return _beta_cf_classic(a, b, x)
    f = (1.0 - b + qab * y) / (a + 1.0)
    if abs(f) < _TINY:
        f = _TINY
    c, d = f, 0.0
    d_odd = -qab * x / (a + 1.0)  # d(2m-1), starting with d1
    for m in range(1, _MAX_ITER):
        big_a = a + 2.0 * m
        d_even = m * (b - m) * x / ((big_a - 1.0) * big_a)
        num = d_odd * d_even  # A(m); the fraction's partial numerator is -A(m)
        term_odd = (a + m) * (qab + m) / (big_a * (big_a + 1.0))
        den = ((big_a - 1.0) * (1.0 + 2.0 * m - b) - 2.0 * m * (m - b)) / (
            (big_a - 1.0) * (big_a + 1.0)
        ) + y * (term_odd - m * (b - m) / ((big_a - 1.0) * big_a))
        d = den - num * d
        if abs(d) < _TINY:
            d = _TINY
        c = den - num / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = c * d
        f *= delta
        d_odd = -term_odd * x
        if abs(delta - 1.0) < _EPS:
            break
    return 1.0 / f


def _beta_cf_classic(a: float, b: float, x: float) -> float:
    """The classical continued fraction of :func:`_beta_cf`, for ``x <= 1/2``."""
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _TINY:
        d = _TINY
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_ITER):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < _TINY:
            d = _TINY
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < _TINY:
            d = _TINY
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def _beta_inc_pair(
    a: float, b: float, x: float, y: float, lnx: float, lny: float
) -> tuple[float, float]:
    """``(I_x(a, b), 1 - I_x(a, b))`` given ``y = 1 - x`` and accurate ``log x``, ``log y``.

    The continued fraction is evaluated for ``I_x(a, b)`` when ``x < (a + 1) / (a + b + 2)``,
    else for ``I_y(b, a)`` (symmetry ``I_x(a, b) = 1 - I_y(b, a)``); the other member of the
    pair is one minus it. Callers pass the logarithms so that e.g. Student's t can form
    ``log x = -log1p(t^2 / df)`` without rounding ``x`` first.
    """
    if x <= 0.0:
        return 0.0, 1.0
    if y <= 0.0:
        return 1.0, 0.0
    if x < (a + 1.0) / (a + b + 2.0):
        v = math.exp(_beta_log_prefactor(a, b, x, y, lnx, lny)) * _beta_cf(a, b, x, y) / a
        return v, 1.0 - v
    v = math.exp(_beta_log_prefactor(b, a, y, x, lny, lnx)) * _beta_cf(b, a, y, x) / b
    return 1.0 - v, v


def beta_inc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function ``I_x(a, b)``.

    Method: the continued fraction of Numerical Recipes (``betacf``) evaluated by the modified
    Lentz algorithm, on ``I_x(a, b)`` or on ``1 - I_{1-x}(b, a)`` whichever converges; the
    prefactor ``x^a (1-x)^b / B(a, b)`` is formed in logs with Stirling's series for large
    parameters. About 1e-14 relative where the value is computed directly (the smaller tail).

    Args:
        a: shape, ``> 0``.
        b: shape, ``> 0``.
        x: point in ``[0, 1]``.

    Raises:
        ValueError: ``a <= 0``, ``b <= 0`` or ``x`` outside ``[0, 1]``.
    """
    if math.isnan(a) or math.isnan(b) or math.isnan(x):
        return _NAN
    if not (a > 0.0 and b > 0.0 and 0.0 <= x <= 1.0):
        raise ValueError(f"need a > 0, b > 0 and 0 <= x <= 1, got {a!r}, {b!r}, {x!r}")
    if x == 0.0 or x == 1.0:
        return x
    return _beta_inc_pair(a, b, x, 1.0 - x, math.log(x), math.log1p(-x))[0]


def _check_df(df: float) -> None:
    if not df > 0.0:
        raise ValueError(f"df must be > 0, got {df!r}")


def _t_tails(t: float, df: float) -> tuple[float, float]:
    """``(P(T > |t|), P(T < |t|) - 1/2)`` (both ``>= 0``) for finite ``t`` and ``df``.

    ``P(T > |t|) = I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``; the second member is
    ``(1 - I_x) / 2``, which the pair computes directly when ``t`` is near 0.
    """
    s = abs(t) / math.sqrt(df)
    if s == 0.0:
        return 0.5, 0.0
    a = 0.5 * df
    if s > 1e150:  # t^2/df overflows; I_x(a, 1/2) = x^a / (a B(a, 1/2)) (1 + O(x)), x ~ s^-2
        log_s = math.log(abs(t)) - 0.5 * math.log(df)
        return 0.5 * math.exp(-2.0 * a * log_s - _lbeta(a, 0.5)) / a, 0.5
    r = s * s
    x, y = 1.0 / (1.0 + r), r / (1.0 + r)
    lnx = -math.log1p(r)
    lny = math.log(r) + lnx
    i, ic = _beta_inc_pair(a, 0.5, x, y, lnx, lny)
    return 0.5 * i, 0.5 * ic


def t_pdf(t: float, df: float) -> float:
    """Student's t density with ``df`` degrees of freedom (``df = inf`` gives the normal).

    Raises:
        ValueError: ``df <= 0``.
    """
    if math.isnan(t) or math.isnan(df):
        return _NAN
    _check_df(df)
    if math.isinf(df):
        return normal_pdf(t)
    if math.isinf(t):
        return 0.0
    return math.exp(_t_logpdf(t, df))


def _t_logpdf(t: float, df: float) -> float:
    """Log of the t density for finite ``t`` and ``df``, without overflow for huge ``|t|``."""
    s = abs(t) / math.sqrt(df)
    # log(1 + t^2/df); beyond s = 1e150 the square overflows and the 1 is negligible.
    log1p_r = math.log1p(s * s) if s <= 1e150 else 2.0 * (math.log(abs(t)) - 0.5 * math.log(df))
    return -_lbeta(0.5 * df, 0.5) - 0.5 * math.log(df) - 0.5 * (df + 1.0) * log1p_r


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function ``P(T <= t)``; ``df`` may be fractional (Welch).

    Method: ``P(T > |t|) = I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``, the regularized
    incomplete beta function by Lentz's continued fraction (:func:`beta_inc`), with ``log x``
    taken as ``-log1p(t^2/df)`` so large ``df`` (up to ~1e9 and beyond) loses no accuracy.
    Both tails keep their relative accuracy. ``df = inf`` gives the normal distribution.
    About 50-150 us a call in CPython, for any ``df`` up to 1e15.

    Raises:
        ValueError: ``df <= 0``.
    """
    if math.isnan(t) or math.isnan(df):
        return _NAN
    _check_df(df)
    if math.isinf(df):
        return normal_cdf(t)
    if math.isinf(t):
        return 0.0 if t < 0 else 1.0
    tail, centre = _t_tails(t, df)
    return tail if t < 0 else 0.5 + centre


def t_sf(t: float, df: float) -> float:
    """Student's t survival function ``P(T > t) = t_cdf(-t, df)``, accurate in the upper tail.

    Raises:
        ValueError: ``df <= 0``.
    """
    return t_cdf(-t, df)


def t_ppf(p: float, df: float) -> float:
    """Student's t quantile: the ``t`` with ``t_cdf(t, df) = p``; ``df`` may be fractional.

    Method: numeric inversion of :func:`t_sf` on the smaller tail ``q = min(p, 1 - p)``:
    Newton's method on ``log t_sf(t) - log q`` in ``log t`` (exact for the power-law tails of
    small df) from the Cornish-Fisher approximation, safeguarded by a bracket that is bisected
    (geometrically while wide) when a step leaves it. Converges to a few ulps of ``t``
    (relative accuracy ~1e-14), in 2-8 evaluations of :func:`t_sf`.

    Args:
        p: a probability in ``[0, 1]``; 0 and 1 give ``-inf`` and ``inf``.
        df: degrees of freedom, ``> 0``; ``inf`` gives the normal quantile.

    Raises:
        ValueError: ``p`` outside ``[0, 1]`` or ``df <= 0``.
    """
    if math.isnan(p) or math.isnan(df):
        return _NAN
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    _check_df(df)
    if math.isinf(df) or p in (0.0, 0.5, 1.0):
        return normal_ppf(p)
    q = p if p < 0.5 else 1.0 - p  # exact for p >= 0.5
    sign = -1.0 if p < 0.5 else 1.0
    # Start from the Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5), poor only for
    # small df in the far tail, where the bracket expands geometrically.
    z = -normal_ppf(q)
    z2 = z * z
    t = z + z * (z2 + 1.0) / (4.0 * df) + z * ((5.0 * z2 + 16.0) * z2 + 3.0) / (96.0 * df * df)
    t = min(t, _MAX_FLOAT)
    if _t_tails(_MAX_FLOAT, df)[0] > q:  # only for df near 1 and subnormal q
        return sign * math.inf
    lo, hi = 0.0, _MAX_FLOAT  # invariant: t_sf(lo) > q >= t_sf(hi)
    for _ in range(300):
        sf = _t_tails(t, df)[0]
        if sf > q:
            lo = t
        elif sf < q:
            hi = t
        else:
            break
        # Newton on log t_sf(t) - log q in log t: exact for power-law tails (small df), and
        # quadratic near the root. d log t_sf / d log t = -t t_pdf / t_sf.
        if sf > 0.0:
            ratio = math.exp(math.log(sf) - math.log(t) - _t_logpdf(t, df))  # t_sf / (t t_pdf)
            diff = sf - q
            gap = math.log1p(diff / q) if abs(diff) < 0.5 * q else math.log(sf) - math.log(q)
            log_new = math.log(t) + gap * ratio
            new = _MAX_FLOAT if log_new >= _LOG_MAX_FLOAT else math.exp(log_new)
            if abs(new - t) <= 2.0 * _EPS * t:
                t = new
                break
        else:
            new = math.nan
        if not lo < new < hi:  # safeguard: bisect, geometrically when the bracket is wide
            if lo > 0.0 and hi > 4.0 * lo:
                new = math.sqrt(lo) * math.sqrt(hi)
            else:
                new = 0.5 * lo + 0.5 * hi
        if hi - lo <= 2.0 * _EPS * hi:
            break
        t = new
    return sign * t


# --------------------------------------------------------------------------------------------
# Proportions
# --------------------------------------------------------------------------------------------


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
    _check_counts(successes, n, "proportion_ci")
    z = _z_two_sided(confidence)
    if method not in ("wilson", "normal"):
        raise ValueError(f"method must be 'wilson' or 'normal', got {method!r}")
    if n == 0:
        return _NAN, _NAN
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
    _check_counts(s1, n1, "diff_proportions (control)")
    _check_counts(s2, n2, "diff_proportions (treatment)")
    z = _z_two_sided(confidence)
    if n1 == 0 or n2 == 0:
        return ProportionDiff(
            diff=_NAN,
            low=_NAN,
            high=_NAN,
            relative_lift=None,
            relative_low=None,
            relative_high=None,
            p_value=_NAN,
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
    p_value = min(1.0, 2.0 * normal_sf(abs(diff) / se)) if se > 0.0 else _NAN
    return ProportionDiff(
        diff=diff,
        low=max(-1.0, low),
        high=min(1.0, high),
        relative_lift=rel,
        relative_low=rel_low,
        relative_high=rel_high,
        p_value=p_value,
    )


# --------------------------------------------------------------------------------------------
# Chi-square tests
# --------------------------------------------------------------------------------------------


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
        return ChiSquareResult(statistic=_NAN, p_value=_NAN, df=df)
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
    _check_counts(s1, n1, "chi_square_2x2 (control)")
    _check_counts(s2, n2, "chi_square_2x2 (treatment)")
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
        return ChiSquareResult(statistic=_NAN, p_value=_NAN, df=df)
    wsum = math.fsum(weights)
    terms = []
    for o, w in zip(obs, weights, strict=True):
        exp = total * w / wsum
        terms.append((o - exp) ** 2 / exp)
    stat = math.fsum(terms)
    return ChiSquareResult(statistic=stat, p_value=chi2_sf(stat, df), df=df)


# --------------------------------------------------------------------------------------------
# Means
# --------------------------------------------------------------------------------------------


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
        return self._shift + self._mean if self.count else _NAN

    @property
    def variance(self) -> float:
        """Sample variance (``ddof = 1``); NaN for fewer than 2 values."""
        return self._m2 / (self.count - 1) if self.count > 1 else _NAN

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
    _check_confidence(confidence)
    if var < 0.0 or n < 0:
        raise ValueError(f"mean_ci: need var >= 0 and n >= 0, got {var!r}, {n!r}")
    if not n >= 2 or math.isnan(mean) or math.isnan(var):
        return _NAN, _NAN
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
    _check_confidence(confidence)
    if var1 < 0.0 or var2 < 0.0 or n1 < 0 or n2 < 0:
        raise ValueError("welch_t_test: variances and sizes must be >= 0")
    diff = float(mean2 - mean1) if n1 >= 1 and n2 >= 1 else _NAN
    undefined = WelchResult(t=_NAN, df=_NAN, p_value=_NAN, diff=diff, low=_NAN, high=_NAN)
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


# --------------------------------------------------------------------------------------------
# Planning and warnings
# --------------------------------------------------------------------------------------------


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
        _check_counts(s, n, f"small_sample_warning (arm {i})")
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
