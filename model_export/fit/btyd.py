"""Fitting the buy-till-you-die models of :mod:`sdk.btyd` by maximum likelihood on order
histories: BG/NBD for repeat purchases and activity, Gamma-Gamma for the value of purchases.

Transactions become one row per customer as the literature does (:func:`summarise`): orders on
the same day are one purchase occasion; ``x`` counts the occasions after the first, ``t_x`` is
the time from the first to the last, ``T`` the time from the first to the end of the
calibration window, in weeks by default; ``m`` is the mean value of the repeat occasions (the
first one is left out of the spend model, as Fader, Hardie and Lee do, since a first order often
differs in kind).

The likelihoods are the papers' (BG/NBD: Fader, Hardie and Lee 2005, equation 6; Gamma-Gamma:
Fader, Hardie and Lee 2005, "RFM and CLV", equation 3), maximised over the logarithms of the
parameters with L-BFGS-B from several starting points. On the CDNOW sample's calibration
period they reproduce the published BG/NBD estimates (``tests/model_export/test_btyd.py``).

Must not import server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import betaln, gammaln

from sdk.btyd import BgNbd, GammaGamma

__all__ = [
    "BtydFit",
    "Summary",
    "bgnbd_log_likelihood",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "summarise",
]

Array = npt.NDArray[np.float64]

#: Days in the default time unit (weeks, as the literature reports its estimates).
WEEK = 7.0


@dataclass(frozen=True)
class Summary:
    """Customers as the models see them, one position per customer."""

    customer_ids: list[str]
    #: repeat purchase occasions (days with a purchase after the first)
    x: Array
    #: time from the first to the last occasion
    t_x: Array
    #: time from the first occasion to the end of the window
    T: Array
    #: mean value of the repeat occasions (0 without any)
    m: Array
    #: the time unit, in days
    unit_days: float

    def __len__(self) -> int:
        return len(self.customer_ids)


def summarise(
    orders: Iterable[tuple[str, date, float]], end: date, *, unit_days: float = WEEK
) -> Summary:
    """One :class:`Summary` row per customer with an order on or before ``end`` (orders after
    it are ignored): ``orders`` are ``(customer id, day, value)``; orders of one customer on one
    day are one occasion whose value is their sum."""
    days: dict[str, dict[date, float]] = {}
    for customer, day, value in orders:
        if day > end:
            continue
        per_day = days.setdefault(customer, {})
        per_day[day] = per_day.get(day, 0.0) + float(value)
    ids = sorted(days)
    n = len(ids)
    x, t_x, T, m = (np.zeros(n) for _ in range(4))
    for i, customer in enumerate(ids):
        occasions = sorted(days[customer].items())
        first, last = occasions[0][0], occasions[-1][0]
        x[i] = len(occasions) - 1
        t_x[i] = (last - first).days / unit_days
        T[i] = (end - first).days / unit_days
        repeat = [v for _, v in occasions[1:]]
        m[i] = sum(repeat) / len(repeat) if repeat else 0.0
    return Summary(ids, x, t_x, T, m, unit_days)


def bgnbd_log_likelihood(params: BgNbd, x: Array, t_x: Array, T: Array) -> float:
    """The BG/NBD log-likelihood of the customers' summaries."""
    r, alpha, a, b = params
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    active = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped = np.where(
            x > 0,
            betaln(a + 1, b + x - 1) - betaln(a, b) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return float(np.sum(common + np.logaddexp(active, dropped)))


def gamma_gamma_log_likelihood(params: GammaGamma, x: Array, m: Array) -> float:
    """The Gamma-Gamma log-likelihood of customers with ``x >= 1`` purchases of mean ``m``
    (the density of the observed mean; others must be left out by the caller)."""
    p, q, v = params
    px = p * x
    return float(
        np.sum(
            gammaln(px + q)
            - gammaln(px)
            - gammaln(q)
            + q * np.log(v)
            + (px - 1) * np.log(m)
            + px * np.log(x)
            - (px + q) * np.log(v + x * m)
        )
    )


@dataclass(frozen=True)
class BtydFit:
    """A fitted model, its maximised log-likelihood and the customers it was fitted on."""

    params: BgNbd | GammaGamma
    log_likelihood: float
    customers: int


def _maximise(
    objective: object, starts: Sequence[Sequence[float]], bounds: Sequence[tuple[float, float]]
) -> tuple[Array, float]:
    """The best of L-BFGS-B runs from ``starts`` over log-parameters within ``bounds``."""
    best: tuple[Array, float] | None = None
    for start in starts:
        result = minimize(objective, np.log(start), method="L-BFGS-B", bounds=bounds)
        if np.isfinite(result.fun) and (best is None or result.fun < best[1]):
            best = (np.exp(result.x), float(result.fun))
    if best is None:
        raise ValueError("the likelihood could not be maximised from any starting point")
    return best


def fit_bgnbd(summary: Summary) -> BtydFit:
    """The BG/NBD maximum-likelihood estimates for ``summary``'s customers.

    Raises:
        ValueError: no customer, or no customer with a repeat purchase (the dropout process
            cannot be identified).
    """
    x, t_x, T = summary.x, summary.t_x, summary.T
    if len(summary) == 0 or not np.any(x > 0):
        raise ValueError("BG/NBD needs customers with repeat purchases")
    scale = max(float(np.mean(T)), 1e-6)  # alpha is in time units: start near the data's

    def negative(log_params: Array) -> float:
        value = -bgnbd_log_likelihood(BgNbd(*np.exp(log_params)), x, t_x, T)
        return value if np.isfinite(value) else 1e300

    starts = [(1.0, scale, 1.0, 1.0), (0.3, scale / 8, 0.8, 2.5), (2.0, scale * 2, 3.0, 8.0)]
    bounds = [(np.log(1e-6), np.log(1e6))] * 4
    params, value = _maximise(negative, starts, bounds)
    return BtydFit(BgNbd(*map(float, params)), -value, len(summary))


def fit_gamma_gamma(summary: Summary) -> BtydFit:
    """The Gamma-Gamma maximum-likelihood estimates from the customers with a repeat purchase
    of positive value.

    Raises:
        ValueError: fewer than 10 such customers, or estimates without a finite mean
            (``q <= 1``).
    """
    keep = (summary.x > 0) & (summary.m > 0)
    x, m = summary.x[keep], summary.m[keep]
    if len(x) < 10:
        raise ValueError("Gamma-Gamma needs at least 10 customers with repeat purchases")
    mean = float(np.mean(m))

    def negative(log_params: Array) -> float:
        value = -gamma_gamma_log_likelihood(GammaGamma(*np.exp(log_params)), x, m)
        return value if np.isfinite(value) else 1e300

    starts = [(1.0, 2.0, mean), (5.0, 3.0, mean), (10.0, 10.0, mean * 9)]
    bounds = [(np.log(1e-6), np.log(1e6))] * 3
    params, value = _maximise(negative, starts, bounds)
    fitted = GammaGamma(*map(float, params))
    if fitted.q <= 1:
        raise ValueError(f"Gamma-Gamma estimates have no finite mean (q = {fitted.q:.3f})")
    return BtydFit(fitted, -value, int(keep.sum()))
