"""Buy-till-you-die customer-value models, evaluated where decisions are made (the decider, the
server, ``tailor score``) from the parameters a bundle carries, with numpy alone: no scipy.

Three standard models of non-contractual repeat buying, in the literature's notation. A
customer is summarised by ``x`` (repeat purchase occasions: purchase days after the first),
``t_x`` (time from the first to the last purchase) and ``T`` (time from the first purchase to
now), all in the unit the model was fitted in (the bundle says which):

- **BG/NBD** (Fader, Hardie and Lee 2005, "Counting your customers the easy way"): while
  active a customer buys at a Poisson rate ``lambda ~ Gamma(r, alpha)`` and after each purchase
  becomes inactive with probability ``p ~ Beta(a, b)``. :func:`bgnbd_p_alive`,
  :func:`bgnbd_expected_purchases` (expected purchases in the next ``t``) and
  :func:`bgnbd_p_no_purchase` (probability of none in the next ``t``; one minus it is the
  probability of any).
- **Gamma-Gamma** (Fader, Hardie and Lee 2005, "RFM and CLV"): the value of a customer's
  purchases varies around a customer mean that varies across customers;
  :func:`gamma_gamma_mean_value` is the expected value of the customer's future purchases from
  ``x`` purchases of mean value ``m``.

The one special function they need, the Gauss hypergeometric ``2F1``, is :func:`hyp2f1`: its
power series, summed until a bound on the remaining tail is below the tolerance. The expected
purchases use whichever of two equal forms (Euler's transformation) has the faster-converging
series for the customer, so that large frequencies and long horizons stay exact
(``tests/sdk/test_btyd.py`` compares everything with scipy over the whole input range).

Must not import server or model_export; no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from sdk._btyd_adjust import ADJUST_BOUND, adjust_one, adjust_score
from sdk.manifest import BtydDef

__all__ = [
    "ADJUST_BOUND",
    "BgNbd",
    "GammaGamma",
    "ParetoNbd",
    "PurchaseSummary",
    "adjust_score",
    "bgnbd_expected_purchases",
    "bgnbd_p_alive",
    "bgnbd_p_no_purchase",
    "check_servable",
    "gamma_gamma_mean_value",
    "hyp2f1",
    "pareto_nbd_expected_purchases",
    "pareto_nbd_p_alive",
    "pareto_nbd_p_no_purchase",
    "purchase_summary",
    "score_customers",
]

Array = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

#: Series terms a row may take before :func:`hyp2f1` gives up (z = 0.999 needs about 40,000).
MAX_TERMS = 200_000
#: Up to this many points, :func:`hyp2f1` sums each in plain floats rather than with numpy.
_SCALAR_ROWS = 4


def _check_positive(model: str, params: dict[str, float]) -> None:
    """ValueError naming the first parameter of ``model`` that is not positive and finite."""
    for name, value in params.items():
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{model} parameter {name} must be positive and finite: {value!r}")


class BgNbd(NamedTuple):
    """BG/NBD parameters: ``r``, ``alpha`` (the purchase rate's Gamma shape and rate) and
    ``a``, ``b`` (the dropout probability's Beta). All must be positive."""

    r: float
    alpha: float
    a: float
    b: float

    def check(self) -> BgNbd:
        """These parameters, or ValueError when one is not a positive finite number."""
        _check_positive("BG/NBD", self._asdict())
        return self


class ParetoNbd(NamedTuple):
    """Pareto/NBD parameters: ``r``, ``alpha`` (the purchase rate's Gamma) and ``s``,
    ``beta`` (the dropout rate's Gamma: a customer's lifetime is exponential). All positive."""

    r: float
    alpha: float
    s: float
    beta: float

    def check(self) -> ParetoNbd:
        """These parameters, or ValueError when one is not a positive finite number."""
        _check_positive("Pareto/NBD", self._asdict())
        return self


class GammaGamma(NamedTuple):
    """Gamma-Gamma spend parameters ``p``, ``q`` and ``v`` (the literature's gamma). ``q`` must
    exceed 1 for the mean to exist."""

    p: float
    q: float
    v: float

    def check(self) -> GammaGamma:
        """These parameters, or ValueError when they cannot give a mean."""
        _check_positive("Gamma-Gamma", self._asdict())
        if self.q <= 1:
            raise ValueError(f"Gamma-Gamma q must exceed 1 for a finite mean: {self.q!r}")
        return self

    @property
    def population_mean(self) -> float:
        """The expected value of a purchase of a customer never seen buying: ``p v / (q - 1)``."""
        return self.p * self.v / (self.q - 1)


def _arrays(*values: ArrayLike) -> list[Array]:
    return [np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(*values)]


def hyp2f1(a: ArrayLike, b: ArrayLike, c: ArrayLike, z: ArrayLike, *, tol: float = 1e-15) -> Array:
    """Gauss's hypergeometric function ``2F1(a, b; c; z)`` by its power series, elementwise.

    Domain: ``0 <= z < 1``, ``c > 0`` and ``c + 1 - a - b > 0``. There, once ``n`` passes
    ``-a`` and ``-b`` and the point where ``(a + n)(b + n) <= (c + n)(n + 1)`` (which then holds for
    every later ``n``: the difference grows by ``c + 1 - a - b`` a step), the ratio of consecutive
    terms stays within ``z``, so the rest of the series is at most ``|term| z / (1 - z)``; each
    element stops when that bound is below ``tol`` times its sum.

    Raises:
        ValueError: an argument is outside the domain, or a series did not converge within
            :data:`MAX_TERMS` terms.
    """
    a_, b_, c_, z_ = _arrays(a, b, c, z)
    if np.any(~np.isfinite(z_)) or np.any(z_ < 0) or np.any(z_ >= 1):
        raise ValueError("hyp2f1 takes 0 <= z < 1")
    if np.any(~(c_ > 0)) or np.any(~(c_ + 1 - a_ - b_ > 0)):
        raise ValueError("hyp2f1 takes c > 0 and c + 1 - a - b > 0")
    shape = z_.shape
    a_, b_, c_, z_ = (v.ravel() for v in (a_, b_, c_, z_))
    if z_.size <= _SCALAR_ROWS:  # a decide's one customer: plain floats beat numpy's overhead
        values = [
            _hyp2f1_one(float(p), float(q), float(r), float(w), tol)
            for p, q, r, w in zip(a_, b_, c_, z_, strict=True)
        ]
        return np.array(values, dtype=np.float64).reshape(shape)
    total = np.ones_like(z_)
    term = np.ones_like(z_)
    rows = np.flatnonzero(z_ > 0)
    tail = z_ / (1 - z_)
    n = 0
    while rows.size:
        if n >= MAX_TERMS:
            raise ValueError(f"hyp2f1: a series did not converge in {MAX_TERMS} terms")
        ra, rb, rc = a_[rows] + n, b_[rows] + n, c_[rows] + n
        step = term[rows] * (ra * rb) / (rc * (n + 1)) * z_[rows]
        term[rows] = step
        total[rows] += step
        n += 1
        # past the turning point (both upper parameters non-negative from here on, and the
        # next ratio within z), the tail is bounded by the term
        ra, rb = ra + 1, rb + 1
        settled = (ra >= 0) & (rb >= 0) & (ra * rb <= (rc + 1) * (n + 1))
        small = np.abs(step) * tail[rows] <= tol * np.abs(total[rows])
        rows = rows[~(settled & small)]
    return total.reshape(shape)


def _hyp2f1_one(a: float, b: float, c: float, z: float, tol: float) -> float:
    """:func:`hyp2f1` of one point (same series, same stopping rule), in plain floats."""
    total = term = 1.0
    if z == 0.0:
        return total
    tail = z / (1.0 - z)
    n = 0
    while n < MAX_TERMS:
        term *= (a + n) * (b + n) / ((c + n) * (n + 1)) * z
        total += term
        n += 1
        an, bn = a + n, b + n
        if (
            an >= 0
            and bn >= 0
            and an * bn <= (c + n) * (n + 1)
            and abs(term) * tail <= tol * abs(total)
        ):
            return total
    raise ValueError(f"hyp2f1: a series did not converge in {MAX_TERMS} terms")


def _summary(x: ArrayLike, t_x: ArrayLike, T: ArrayLike, *more: ArrayLike) -> list[Array]:
    values = _arrays(x, t_x, T, *more)
    x_, t_x_, T_ = values[:3]
    if np.any(~np.isfinite(x_)) or np.any(x_ < 0):
        raise ValueError("x (repeat purchases) must be a non-negative number")
    if np.any(~(t_x_ >= 0)) or np.any(~(t_x_ <= T_)):
        raise ValueError("need 0 <= t_x <= T (time of the last purchase within the history)")
    return values


def _alive_odds(params: BgNbd, x: Array, t_x: Array, T: Array) -> Array:
    """``a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x)`` for ``x > 0``, else 0: the odds
    of having become inactive after the last purchase against still being active."""
    r, alpha, a, b = params
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_odds = (
            np.log(a) - np.log(b + x - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        odds = np.exp(np.minimum(log_odds, 700.0))
    return np.where(x > 0, odds, 0.0)


def check_servable(params: BgNbd) -> BgNbd:
    """``params`` when :func:`bgnbd_expected_purchases` can evaluate them: positive, ``a``
    not 1 (the formula's limit is not implemented) and ``a + b > 1`` (else the series is
    undefined for a customer without repeat purchases); ValueError otherwise."""
    params.check()
    if abs(params.a - 1.0) < 1e-9:
        raise ValueError("bgnbd_expected_purchases needs a != 1")
    if params.a + params.b <= 1:
        raise ValueError("bgnbd_expected_purchases needs a + b > 1")
    return params


def bgnbd_p_alive(params: BgNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """The probability that a customer with this history is still active (BG/NBD)."""
    x_, t_x_, T_ = _summary(x, t_x, T)
    alive: Array = 1.0 / (1.0 + _alive_odds(params.check(), x_, t_x_, T_))
    return alive


def bgnbd_p_no_purchase(
    params: BgNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, t: ArrayLike
) -> Array:
    """The probability of no purchase in the next ``t`` (BG/NBD): inactive already, or active
    and no purchase from a Poisson process whose rate has the posterior
    ``Gamma(r + x, alpha + T)`` (a customer becomes inactive only right after a purchase)."""
    r, alpha, _, _ = params.check()
    x_, t_x_, T_, t_ = _summary(x, t_x, T, t)
    if np.any(~(t_ >= 0)):
        raise ValueError("the horizon t must be non-negative")
    alive = 1.0 / (1.0 + _alive_odds(params, x_, t_x_, T_))
    quiet = np.exp((r + x_) * (np.log(alpha + T_) - np.log(alpha + T_ + t_)))
    none: Array = (1.0 - alive) + alive * quiet
    return none


def bgnbd_expected_purchases(
    params: BgNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, t: ArrayLike
) -> Array:
    """Expected purchases in the next ``t`` (BG/NBD, the paper's equation 10):
    ``(a + b + x - 1) / (a - 1) [1 - ((alpha + T) / (alpha + T + t))^(r + x)
    2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))] / (1 + odds)``.

    With ``z = t / (alpha + T + t)`` the bracket is also
    ``1 - (1 - z)^(a - 1) 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z)`` (Euler's
    transformation); the first form's series is used where ``a > r + x`` and the second's
    elsewhere, each inside :func:`hyp2f1`'s domain, so no term overflows for any ``x``.

    Raises:
        ValueError: ``a`` is 1 (the formula's limit is not implemented), ``a + b <= 1`` (the
            series is undefined for a customer without repeat purchases) or an input is out of
            range.
    """
    r, alpha, a, b = check_servable(params)
    x_, t_x_, T_, t_ = _summary(x, t_x, T, t)
    if np.any(~(t_ >= 0)) or np.any(~np.isfinite(t_)):
        raise ValueError("the horizon t must be non-negative and finite")
    z = t_ / (alpha + T_ + t_)
    log_keep = np.log(alpha + T_) - np.log(alpha + T_ + t_)  # log(1 - z), exact for small z
    c = a + b + x_ - 1
    direct = a > r + x_
    bracket = np.empty_like(z)
    if np.any(direct):
        d = direct
        series = hyp2f1(r + x_[d], b + x_[d], c[d], z[d])
        bracket[d] = 1.0 - np.exp((r + x_[d]) * log_keep[d]) * series
    if not np.all(direct):
        e = ~direct
        series = hyp2f1(a + b - 1 - r, a - 1, c[e], z[e])
        bracket[e] = 1.0 - np.exp((a - 1) * log_keep[e]) * series
    return (c / (a - 1)) * bracket / (1.0 + _alive_odds(params, x_, t_x_, T_))


def gamma_gamma_mean_value(params: GammaGamma, x: ArrayLike, m: ArrayLike) -> Array:
    """The expected value of a customer's future purchase from ``x`` purchases of mean value
    ``m`` (Gamma-Gamma): ``p (v + x m) / (p x + q - 1)``; with ``x = 0`` the population mean.

    Raises:
        ValueError: a negative count or value.
    """
    p, q, v = params.check()
    x_, m_ = _arrays(x, m)
    if np.any(~(x_ >= 0)) or np.any(~(m_ >= 0)):
        raise ValueError("purchases and their mean value must be non-negative")
    return p * (v + x_ * m_) / (p * x_ + q - 1)


class PurchaseSummary(NamedTuple):
    """Customers as the models see them (one position each): ``x`` repeat purchases, ``t_x``
    the time from the first purchase to the last, ``T`` from the first to now, ``m`` the mean
    value of a purchase, in the models' time unit; ``known`` marks customers with a purchase
    (the others have no summary and get no score)."""

    x: Array
    t_x: Array
    T: Array
    m: Array
    known: npt.NDArray[np.bool_]


def purchase_summary(
    purchases: Sequence[float | None],
    revenue: Sequence[float | None],
    days_since_first_purchase: Sequence[float | None],
    days_since_last_purchase: Sequence[float | None],
    unit_days: float,
) -> PurchaseSummary:
    """The one definition of a customer's summary, from a profile's fields (training fits on
    it, serving and ``tailor score`` evaluate on it): ``x = purchases - 1``,
    ``T = days since the first purchase``, ``t_x = T - days since the last purchase`` (both in
    units of ``unit_days``) and ``m = revenue / purchases``. A customer is ``known`` with at
    least one purchase and its first-purchase age; a missing last-purchase age counts as the
    first (one purchase), a negative gap as none."""

    def column(values: Sequence[float | None]) -> Array:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

    n = column(purchases)
    first = column(days_since_first_purchase)
    last = column(days_since_last_purchase)
    value = column(revenue)
    known = (n >= 1) & np.isfinite(first) & (first >= 0)
    last = np.where(np.isfinite(last), last, first)
    T = np.where(known, first, 0.0) / unit_days
    t_x = np.clip(np.where(known, first - last, 0.0) / unit_days, 0.0, T)
    x = np.where(known, np.floor(n) - 1, 0.0)
    t_x = np.where(x > 0, t_x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(known & np.isfinite(value) & (value > 0), value / np.maximum(n, 1), 0.0)
    return PurchaseSummary(x=x, t_x=t_x, T=T, m=m, known=known)


def score_customers(
    defn: BtydDef,
    summary: PurchaseSummary,
    *,
    horizon_days: float | None = None,
    etas: Mapping[str, ArrayLike] | None = None,
) -> dict[str, Array]:
    """Per customer of ``summary`` (NaN where not ``known``): ``pAlive``, ``churnProbability``
    (no purchase within the horizon), ``expectedPurchases`` and, with a spend model,
    ``expectedValue`` (expected purchases times the expected value of one) over
    ``horizon_days`` (the bundle's by default). With ``etas`` (per adjusted score, one value
    per customer of ``summary``: the adjustment models' outputs), the scores the bundle
    adjusts (``defn.adjusted``) are shifted by :func:`adjust_score`."""
    out = _btyd_scores(defn, summary, horizon_days)
    for name in defn.adjusted:
        if etas is not None and name in etas and name in out:
            base = out[name]
            if len(base) <= _SCALAR_ROWS:  # one decide: plain floats, the same formula
                shifts = np.asarray(etas[name], dtype=np.float64).tolist()
                out[name] = np.array(
                    [adjust_one(name, b, e) for b, e in zip(base.tolist(), shifts, strict=True)]
                )
            else:
                out[name] = adjust_score(name, base, etas[name])
    return out


def _btyd_scores(
    defn: BtydDef, summary: PurchaseSummary, horizon_days: float | None
) -> dict[str, Array]:
    bg = defn.bgnbd
    params = BgNbd(bg.r, bg.alpha, bg.a, bg.b)
    t = (defn.horizon_days if horizon_days is None else horizon_days) / defn.unit_days
    k = summary.known
    pn = defn.pareto_nbd
    if int(k.sum()) <= _SCALAR_ROWS:  # one decide: plain floats, the same formulas
        return _score_few(defn, params, summary, t)
    x, t_x, T = summary.x[k], summary.t_x[k], summary.T[k]
    out: dict[str, Array] = {}

    def spread(values: Array) -> Array:
        column = np.full(len(k), np.nan)
        column[k] = values
        return column

    if pn is not None:
        pareto = ParetoNbd(pn.r, pn.alpha, pn.s, pn.beta)
        out["pAlive"] = spread(pareto_nbd_p_alive(pareto, x, t_x, T))
        out["churnProbability"] = spread(pareto_nbd_p_no_purchase(pareto, x, t_x, T, t))
        purchases = pareto_nbd_expected_purchases(pareto, x, t_x, T, t)
    else:
        out["pAlive"] = spread(bgnbd_p_alive(params, x, t_x, T))
        out["churnProbability"] = spread(bgnbd_p_no_purchase(params, x, t_x, T, t))
        purchases = bgnbd_expected_purchases(params, x, t_x, T, t)
    out["expectedPurchases"] = spread(purchases)
    if defn.gamma_gamma is not None:
        gg = defn.gamma_gamma
        spend = gamma_gamma_mean_value(GammaGamma(gg.p, gg.q, gg.v), x + 1, summary.m[k])
        out["expectedValue"] = spread(purchases * spend)
    return out


def _score_few(
    defn: BtydDef, params: BgNbd, summary: PurchaseSummary, t: float
) -> dict[str, Array]:
    """:func:`score_customers` for a handful of customers, in plain floats (a single decide
    would otherwise spend most of its time in numpy's per-call overhead); Pareto/NBD through
    :func:`_pareto_one` when the bundle serves it."""
    r, alpha, a, b = check_servable(params)
    if not (t >= 0 and math.isfinite(t)):
        raise ValueError("the horizon t must be non-negative and finite")
    gg = defn.gamma_gamma
    names = ["pAlive", "churnProbability", "expectedPurchases"]
    names += ["expectedValue"] if gg is not None else []
    out = {name: np.full(len(summary.known), np.nan) for name in names}
    pn = defn.pareto_nbd
    pareto = ParetoNbd(pn.r, pn.alpha, pn.s, pn.beta).check() if pn is not None else None
    for i in np.flatnonzero(summary.known).tolist():
        x, t_x, T = float(summary.x[i]), float(summary.t_x[i]), float(summary.T[i])
        if pareto is not None:
            alive, quiet, purchases = _pareto_one(pareto, x, t_x, T, t)
            out["pAlive"][i], out["churnProbability"][i] = alive, quiet
            out["expectedPurchases"][i] = purchases
            if gg is not None:
                spend = gg.p * (gg.v + (x + 1) * float(summary.m[i]))
                out["expectedValue"][i] = purchases * spend / (gg.p * (x + 1) + gg.q - 1)
            continue
        keep = math.log(alpha + T) - math.log(alpha + T + t)
        odds = 0.0
        if x > 0:
            log_odds = math.log(a) - math.log(b + x - 1)
            log_odds += (r + x) * (math.log(alpha + T) - math.log(alpha + t_x))
            odds = math.exp(min(log_odds, 700.0))
        alive = 1.0 / (1.0 + odds)
        c, z = a + b + x - 1, t / (alpha + T + t)
        if a > r + x:
            bracket = 1.0 - math.exp((r + x) * keep) * _hyp2f1_one(r + x, b + x, c, z, 1e-15)
        else:
            bracket = 1.0 - math.exp((a - 1) * keep) * _hyp2f1_one(
                a + b - 1 - r, a - 1, c, z, 1e-15
            )
        purchases = c / (a - 1) * bracket / (1.0 + odds)
        out["pAlive"][i] = alive
        out["churnProbability"][i] = (1.0 - alive) + alive * math.exp((r + x) * keep)
        out["expectedPurchases"][i] = purchases
        if gg is not None:
            spend = gg.p * (gg.v + (x + 1) * float(summary.m[i])) / (gg.p * (x + 1) + gg.q - 1)
            out["expectedValue"][i] = purchases * spend
    return out


def _pareto_log_a0_ratio(params: ParetoNbd, x: Array, t_x: Array, T: Array) -> Array:
    """``log(s / (r + s + x) (alpha + T)^(r + x) (beta + T)^s A0)``: the log odds of having
    dropped out against being alive (Fader and Hardie's note on the Pareto/NBD, with ``A0``'s
    two hypergeometric terms summed by :func:`hyp2f1` after Euler's transformation, which keeps
    every series inside its domain)."""
    r, alpha, s, beta = params
    big = max(alpha, beta)
    gap = abs(alpha - beta)
    rsx = r + s + x
    c = rsx + 1
    upper: Array
    power: Array
    if alpha >= beta:  # 2F1(rsx, s + 1; c; z) = (1 - z)^(-s) 2F1(1, r + x; c; z)
        upper, power = r + x, np.full_like(x, -s)
    else:  # 2F1(rsx, r + x; c; z) = (1 - z)^(1 - r - x) 2F1(1, s + 1; c; z)
        upper, power = np.full_like(x, s + 1.0), 1.0 - r - x

    def log_term(at: Array) -> Array:
        z = gap / (big + at)
        series = hyp2f1(np.ones_like(x), upper, c, z)
        return power * np.log1p(-z) + np.log(series) - rsx * np.log(big + at)

    first, second = log_term(t_x), log_term(T)
    with np.errstate(divide="ignore"):
        log_a0 = first + np.log(-np.expm1(np.minimum(second - first, 0.0)))
    ratio: Array = (
        np.log(s) - np.log(rsx) + (r + x) * np.log(alpha + T) + s * np.log(beta + T) + log_a0
    )
    return ratio


def pareto_nbd_p_alive(params: ParetoNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """The probability that a customer with this history is still alive (Pareto/NBD)."""
    x_, t_x_, T_ = _summary(x, t_x, T)
    log_odds = _pareto_log_a0_ratio(params.check(), x_, t_x_, T_)
    with np.errstate(over="ignore"):
        alive: Array = 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700.0)))
    return alive


def pareto_nbd_expected_purchases(
    params: ParetoNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, t: ArrayLike
) -> Array:
    """Expected purchases in the next ``t`` (Pareto/NBD): ``P(alive) (r + x)(beta + T) /
    ((alpha + T)(s - 1)) [1 - ((beta + T) / (beta + T + t))^(s - 1)]``, and its limit
    ``P(alive) (r + x) / (alpha + T) (beta + T) log(1 + t / (beta + T))`` at ``s = 1``."""
    r, alpha, s, beta = params.check()
    x_, t_x_, T_, t_ = _summary(x, t_x, T, t)
    if np.any(~(t_ >= 0)) or np.any(~np.isfinite(t_)):
        raise ValueError("the horizon t must be non-negative and finite")
    alive = pareto_nbd_p_alive(params, x_, t_x_, T_)
    rate = (r + x_) / (alpha + T_)
    keep = np.log(beta + T_) - np.log(beta + T_ + t_)
    if abs(s - 1.0) < 1e-9:
        lifetime = -(beta + T_) * keep
    else:
        lifetime = (beta + T_) / (s - 1) * -np.expm1((s - 1) * keep)
    expected: Array = alive * rate * lifetime
    return expected


def _share_of_dropout(a1: Array, rate1: Array, a2: float, rate2: Array) -> Array:
    """``E[mu / (lambda + mu)]`` for independent ``lambda ~ Gamma(a1, rate1)`` and
    ``mu ~ Gamma(a2, rate2)``: the probability that the dropout comes before the next purchase.
    With ``U = mu' / (lambda' + mu') ~ Beta(a2, a1)`` on the unit-rate variables it is
    ``E[A U / (B + (A - B) U)]``, an Euler integral: ``(A / B) a2 / (a1 + a2)
    2F1(1, a2 + 1; a1 + a2 + 1; 1 - A / B)``; written from whichever side keeps the series'
    argument in [0, 1)."""
    a2_ = np.full_like(a1, a2)
    c = a1 + a2_ + 1.0
    mu_side = rate1 <= rate2  # 1 - A/B in [0, 1)
    out = np.empty_like(a1)
    m = mu_side
    if m.any():
        ratio = rate1[m] / rate2[m]
        out[m] = ratio * a2_[m] / (a1[m] + a2_[m]) * hyp2f1(1.0, a2_[m] + 1.0, c[m], 1.0 - ratio)
    n = ~mu_side
    if n.any():
        ratio = rate2[n] / rate1[n]
        other = ratio * a1[n] / (a1[n] + a2_[n]) * hyp2f1(1.0, a1[n] + 1.0, c[n], 1.0 - ratio)
        out[n] = 1.0 - other
    return out


def pareto_nbd_p_no_purchase(
    params: ParetoNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, t: ArrayLike
) -> Array:
    """The probability of no purchase in the next ``t`` (Pareto/NBD): dropped out already, or
    alive and either dropping out before the next purchase or buying nothing in ``t``.

    Alive at ``T``, the rates are independent ``lambda ~ Gamma(r + x, alpha + T)`` and
    ``mu ~ Gamma(s, beta + T)``; given them no purchase in ``t`` has probability
    ``e^-(lambda + mu) t + mu / (lambda + mu) (1 - e^-(lambda + mu) t)``. Its expectation is
    ``K + D(alpha + T, beta + T) - K D(alpha + T + t, beta + T + t)``, where ``K`` is
    ``((alpha + T) / (alpha + T + t))^(r + x) ((beta + T) / (beta + T + t))^s`` (the tilt
    ``e^-(lambda + mu) t`` shifts both rates by ``t``) and ``D`` is
    :func:`_share_of_dropout`."""
    r, alpha, s, beta = params.check()
    x_, t_x_, T_, t_ = _summary(x, t_x, T, t)
    if np.any(~(t_ >= 0)) or np.any(~np.isfinite(t_)):
        raise ValueError("the horizon t must be non-negative and finite")
    alive = pareto_nbd_p_alive(params, x_, t_x_, T_)
    a1 = r + x_
    rate1, rate2 = alpha + T_, beta + T_
    keep = np.exp(
        a1 * (np.log(rate1) - np.log(rate1 + t_)) + s * (np.log(rate2) - np.log(rate2 + t_))
    )
    now = _share_of_dropout(a1, rate1, s, rate2)
    later = _share_of_dropout(a1, rate1 + t_, s, rate2 + t_)
    quiet = np.clip(keep + now - keep * later, 0.0, 1.0)
    return np.asarray((1.0 - alive) + alive * quiet, dtype=np.float64)


def _pareto_one(
    params: ParetoNbd, x: float, t_x: float, T: float, t: float
) -> tuple[float, float, float]:
    """Pareto/NBD's P(alive), P(no purchase in ``t``) and expected purchases of one customer
    in plain floats (a single decide): the formulas of the three array functions."""
    r, alpha, s, beta = params
    big, gap = max(alpha, beta), abs(alpha - beta)
    rsx = r + s + x
    upper, power = (r + x, -s) if alpha >= beta else (s + 1.0, 1.0 - r - x)

    def log_term(at: float) -> float:
        z = gap / (big + at)
        series = _hyp2f1_one(1.0, upper, rsx + 1.0, z, 1e-15)
        return power * math.log1p(-z) + math.log(series) - rsx * math.log(big + at)

    first, second = log_term(t_x), log_term(T)
    drop = -math.expm1(min(second - first, 0.0))
    log_a0 = first + math.log(drop) if drop > 0 else -math.inf
    ratio = math.log(s / rsx) + (r + x) * math.log(alpha + T) + s * math.log(beta + T) + log_a0
    alive = 1.0 / (1.0 + math.exp(min(ratio, 700.0)))

    def dropout_first(rate1: float, rate2: float) -> float:
        a1 = r + x
        c = a1 + s + 1.0
        if rate1 <= rate2:
            ratio_ = rate1 / rate2
            return ratio_ * s / (a1 + s) * _hyp2f1_one(1.0, s + 1.0, c, 1.0 - ratio_, 1e-15)
        ratio_ = rate2 / rate1
        return 1.0 - ratio_ * a1 / (a1 + s) * _hyp2f1_one(1.0, a1 + 1.0, c, 1.0 - ratio_, 1e-15)

    rate1, rate2 = alpha + T, beta + T
    keep = math.exp((r + x) * math.log(rate1 / (rate1 + t)) + s * math.log(rate2 / (rate2 + t)))
    quiet = keep + dropout_first(rate1, rate2) - keep * dropout_first(rate1 + t, rate2 + t)
    quiet = min(max(quiet, 0.0), 1.0)
    stay = math.log(beta + T) - math.log(beta + T + t)
    if abs(s - 1.0) < 1e-9:
        lifetime = -(beta + T) * stay
    else:
        lifetime = (beta + T) / (s - 1) * -math.expm1((s - 1) * stay)
    expected = alive * (r + x) / (alpha + T) * lifetime
    return alive, (1.0 - alive) + alive * quiet, expected
