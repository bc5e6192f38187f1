"""The normal, chi-square and Student's t distributions: densities, distribution and survival
functions, quantiles.

Must not import anything but the standard library and the other statistics modules.
"""

from __future__ import annotations

import math

from sdk.analysis._special import (
    EPS,
    LOG_MAX_FLOAT,
    MAX_FLOAT,
    beta_inc_pair,
    gamma_inc_pair,
    lbeta,
)

_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def check_confidence(confidence: float) -> None:
    """Raise ValueError unless ``confidence`` is in ``(0, 1)``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def z_two_sided(confidence: float) -> float:
    """The normal quantile ``z`` with ``P(|Z| <= z) = confidence``."""
    check_confidence(confidence)
    return normal_ppf(1.0 - (1.0 - confidence) / 2.0)


# --- normal --------------------------------------------------------------------------------


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
        return math.nan
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


# --- chi-square ----------------------------------------------------------------------------


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
    return gamma_inc_pair(0.5 * df, 0.5 * x)


def chi2_cdf(x: float, df: float) -> float:
    """Chi-square distribution function ``P(X <= x) = P(df/2, x/2)``.

    Method: regularized incomplete gamma (see :func:`gamma_inc_lower`); ``erf`` for df = 1 and
    ``expm1`` for df = 2. ``x <= 0`` gives 0.

    Raises:
        ValueError: ``df <= 0``.
    """
    if math.isnan(x) or math.isnan(df):
        return math.nan
    return _chi2_pair(x, df)[0]


def chi2_sf(x: float, df: float) -> float:
    """Chi-square survival function ``P(X > x) = Q(df/2, x/2)``: the p-value of a statistic.

    Method: regularized upper incomplete gamma, series plus Lentz's continued fraction (see
    :func:`gamma_inc_upper`); ``erfc`` for df = 1 and ``exp`` for df = 2. ``x <= 0`` gives 1.

    Raises:
        ValueError: ``df <= 0``.
    """
    if math.isnan(x) or math.isnan(df):
        return math.nan
    return _chi2_pair(x, df)[1]


# --- Student's t ---------------------------------------------------------------------------


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
        return 0.5 * math.exp(-2.0 * a * log_s - lbeta(a, 0.5)) / a, 0.5
    r = s * s
    x, y = 1.0 / (1.0 + r), r / (1.0 + r)
    lnx = -math.log1p(r)
    lny = math.log(r) + lnx
    i, ic = beta_inc_pair(a, 0.5, x, y, lnx, lny)
    return 0.5 * i, 0.5 * ic


def t_pdf(t: float, df: float) -> float:
    """Student's t density with ``df`` degrees of freedom (``df = inf`` gives the normal).

    Raises:
        ValueError: ``df <= 0``.
    """
    if math.isnan(t) or math.isnan(df):
        return math.nan
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
    return -lbeta(0.5 * df, 0.5) - 0.5 * math.log(df) - 0.5 * (df + 1.0) * log1p_r


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
        return math.nan
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
        return math.nan
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
    t = min(t, MAX_FLOAT)
    if _t_tails(MAX_FLOAT, df)[0] > q:  # only for df near 1 and subnormal q
        return sign * math.inf
    lo, hi = 0.0, MAX_FLOAT  # invariant: t_sf(lo) > q >= t_sf(hi)
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
            new = MAX_FLOAT if log_new >= LOG_MAX_FLOAT else math.exp(log_new)
            if abs(new - t) <= 2.0 * EPS * t:
                t = new
                break
        else:
            new = math.nan
        if not lo < new < hi:  # safeguard: bisect, geometrically when the bracket is wide
            if lo > 0.0 and hi > 4.0 * lo:
                new = math.sqrt(lo) * math.sqrt(hi)
            else:
                new = 0.5 * lo + 0.5 * hi
        if hi - lo <= 2.0 * EPS * hi:
            break
        t = new
    return sign * t
