"""Special functions behind the distributions: log-gamma and log-beta pieces and the
regularized incomplete gamma and beta functions, from their series and continued fractions.

Must not import anything but the standard library (``math``).
"""

from __future__ import annotations

import math

EPS = 2.220446049250313e-16
_TINY = 1e-300  # Lentz's guard against a zero denominator
_MAX_ITER = 1_000_000  # continued fractions need O(sqrt(max(a, b))) terms at worst
MAX_FLOAT = 1.7976931348623157e308
LOG_MAX_FLOAT = math.log(MAX_FLOAT)
_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: Above this size a parameter's log-gamma is taken from Stirling's series (see _lgamma_corr).
_STIRLING_MIN = 10.0


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
        if abs(term) <= EPS * abs(total) * 0.125 or k > 60:
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


def lbeta(a: float, b: float) -> float:
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


# --- incomplete gamma ----------------------------------------------------------------------


def _gamma_log_prefactor(a: float, x: float) -> float:
    """``log(x^a e^(-x) / Gamma(a))``.

    For ``a >= 10`` Stirling's formula turns it into ``a (log(x/a) - (x-a)/a) + log sqrt(a/2pi)``
    minus Stirling's remainder, which does not cancel when ``x`` is near ``a``.
    """
    if a < _STIRLING_MIN or x < 1e-100 * a:  # no cancellation to avoid (or x / a underflows)
        return a * math.log(x) - x - math.lgamma(a)
    return a * _log1pmx(x / a, (x - a) / a) + 0.5 * math.log(a) - _LN_SQRT_2PI - _lgamma_corr(a)


def gamma_inc_pair(a: float, x: float) -> tuple[float, float]:
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
            if term < total * EPS:
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
        if abs(delta - 1.0) < EPS:
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
        return math.nan
    _check_gamma_args(a, x)
    return gamma_inc_pair(a, x)[0]


def gamma_inc_upper(a: float, x: float) -> float:
    """Regularized upper incomplete gamma ``Q(a, x) = 1 - P(a, x)``.

    Method: Lentz's continued fraction for ``x >= a + 1`` (so tiny upper tails keep their
    relative accuracy), else ``1 - P`` from the series.

    Raises:
        ValueError: ``a <= 0`` or ``x < 0``.
    """
    if math.isnan(a) or math.isnan(x):
        return math.nan
    _check_gamma_args(a, x)
    return gamma_inc_pair(a, x)[1]


# --- incomplete beta -----------------------------------------------------------------------


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
    return a * lnx + b * lny - lbeta(a, b)


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
        if abs(delta - 1.0) < EPS:
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
        if abs(delta - 1.0) < EPS:
            break
    return h


def beta_inc_pair(
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
        return math.nan
    if not (a > 0.0 and b > 0.0 and 0.0 <= x <= 1.0):
        raise ValueError(f"need a > 0, b > 0 and 0 <= x <= 1, got {a!r}, {b!r}, {x!r}")
    if x == 0.0 or x == 1.0:
        return x
    return beta_inc_pair(a, b, x, 1.0 - x, math.log(x), math.log1p(-x))[0]
