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
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from sdk.btyd import (
    BgNbd,
    GammaGamma,
    ParetoNbd,
    PurchaseSummary,
    check_servable,
    pareto_nbd_expected_purchases,
    pareto_nbd_p_alive,
    pareto_nbd_p_no_purchase,
    purchase_summary,
)
from sdk.manifest import BgNbdDef, BtydDef, BtydScore, GammaGammaDef, ParetoNbdDef
from sdk.schema import DecideRequest

__all__ = [
    "BtydFit",
    "BtydModels",
    "Summary",
    "bgnbd_log_likelihood",
    "btyd_models",
    "define_btyd",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "fit_pareto_nbd",
    "gamma_gamma_log_likelihood",
    "pareto_nbd_log_likelihood",
    "summarise",
    "summary_of",
]

Array = npt.NDArray[np.float64]

#: Days in the default time unit (weeks, as the literature reports its estimates).
WEEK = 7.0


class _Histories(Protocol):
    """What a fit reads: one position per customer."""

    @property
    def x(self) -> Array: ...
    @property
    def t_x(self) -> Array: ...
    @property
    def T(self) -> Array: ...
    @property
    def m(self) -> Array: ...


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


def pareto_nbd_log_likelihood(params: ParetoNbd, x: Array, t_x: Array, T: Array) -> float:
    """The Pareto/NBD log-likelihood of the customers' summaries (Fader and Hardie's note on
    implementing the model, with scipy's ``2F1``; ``A0``'s two terms combined in logs)."""
    r, alpha, s, beta = params
    big, gap = max(alpha, beta), abs(alpha - beta)
    second = s + 1 if alpha >= beta else r + x
    rsx = r + s + x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        term_tx = np.log(hyp2f1(rsx, second, rsx + 1, gap / (big + t_x))) - rsx * np.log(big + t_x)
        term_t = np.log(hyp2f1(rsx, second, rsx + 1, gap / (big + T))) - rsx * np.log(big + T)
        log_a0 = term_tx + np.log(-np.expm1(np.minimum(term_t - term_tx, 0.0)))
        alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
        dropped = np.log(s) - np.log(rsx) + log_a0
        total = (
            gammaln(r + x)
            - gammaln(r)
            + r * np.log(alpha)
            + s * np.log(beta)
            + np.logaddexp(alive, dropped)
        )
    return float(np.sum(total))


@dataclass(frozen=True)
class BtydFit:
    """A fitted model, its maximised log-likelihood and the customers it was fitted on."""

    params: BgNbd | GammaGamma | ParetoNbd
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


def fit_bgnbd(summary: _Histories) -> BtydFit:
    """The BG/NBD maximum-likelihood estimates for ``summary``'s customers.

    Raises:
        ValueError: no customer, or no customer with a repeat purchase (the dropout process
            cannot be identified).
    """
    x, t_x, T = summary.x, summary.t_x, summary.T
    if len(x) == 0 or not np.any(x > 0):
        raise ValueError("BG/NBD needs customers with repeat purchases")
    scale = max(float(np.mean(T)), 1e-6)  # alpha is in time units: start near the data's

    def negative(log_params: Array) -> float:
        value = -bgnbd_log_likelihood(BgNbd(*np.exp(log_params)), x, t_x, T)
        return value if np.isfinite(value) else 1e300

    starts = [(1.0, scale, 1.0, 1.0), (0.3, scale / 8, 0.8, 2.5), (2.0, scale * 2, 3.0, 8.0)]
    bounds = [(np.log(1e-6), np.log(1e6))] * 4
    params, value = _maximise(negative, starts, bounds)
    return BtydFit(BgNbd(*map(float, params)), -value, len(x))


def fit_pareto_nbd(summary: _Histories) -> BtydFit:
    """The Pareto/NBD maximum-likelihood estimates for ``summary``'s customers.

    Raises:
        ValueError: no customer, or none with a repeat purchase.
    """
    x, t_x, T = summary.x, summary.t_x, summary.T
    if len(x) == 0 or not np.any(x > 0):
        raise ValueError("Pareto/NBD needs customers with repeat purchases")
    scale = max(float(np.mean(T)), 1e-6)

    def negative(log_params: Array) -> float:
        value = -pareto_nbd_log_likelihood(ParetoNbd(*np.exp(log_params)), x, t_x, T)
        return value if np.isfinite(value) else 1e300

    starts = [
        (0.5, scale / 3, 0.5, scale / 3),
        (1.0, scale, 1.0, scale),
        (0.3, scale / 8, 2.0, scale),
    ]
    bounds = [(np.log(1e-6), np.log(1e6))] * 4
    params, value = _maximise(negative, starts, bounds)
    return BtydFit(ParetoNbd(*map(float, params)), -value, len(x))


def fit_gamma_gamma(summary: _Histories) -> BtydFit:
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


def summary_of(requests: Sequence[DecideRequest], unit_days: float = WEEK) -> PurchaseSummary:
    """:func:`sdk.btyd.purchase_summary` of the requests' behaviour: the summary serving
    computes for the same visits, so the models are fitted on what they will be applied to."""
    behaviors = [r.behavior for r in requests]
    return purchase_summary(
        [b.purchases for b in behaviors],
        [b.revenue for b in behaviors],
        [b.days_since_first_purchase for b in behaviors],
        [b.days_since_last_purchase for b in behaviors],
        unit_days,
    )


def _known(summary: PurchaseSummary) -> Summary:
    k = summary.known
    n = int(k.sum())
    return Summary(
        [""] * n, summary.x[k], summary.t_x[k], summary.T[k], summary.m[k], unit_days=WEEK
    )


def _spend(summary: PurchaseSummary) -> Summary:
    """The spend model's view (every purchase counts, the first included: the serving
    summary has only the mean of all of them)."""
    known = _known(summary)
    return Summary(known.customer_ids, known.x + 1, known.t_x, known.T, known.m, WEEK)


@dataclass(frozen=True)
class BtydModels:
    """What :func:`btyd_models` learned: the served definition (None when the history cannot
    identify a model) and what the run should say about it."""

    definition: BtydDef | None
    notes: list[str] = field(default_factory=list)


def _check_pareto(params: ParetoNbd, horizon: float, longest: float) -> None:
    """Evaluate the served Pareto/NBD functions where serving may meet them (no purchase to
    many, from a first purchase today to twice the longest history, up to twice the horizon):
    ValueError when a series does not converge or a value is not a probability."""
    T = np.array([0.0, 0.5, 1.0, longest, 2 * longest, 2 * longest, 2 * longest])
    x = np.array([0.0, 0.0, 1.0, 5.0, 0.0, 50.0, 400.0])
    t_x = np.minimum(T, np.array([0.0, 0.0, 0.5, longest / 2, 0.0, longest, 2 * longest]))
    for t in (0.0, 1.0, horizon, 2 * horizon):
        quiet = pareto_nbd_p_no_purchase(params, x, t_x, T, np.full_like(T, t))
        alive = pareto_nbd_p_alive(params, x, t_x, T)
        bought = pareto_nbd_expected_purchases(params, x, t_x, T, np.full_like(T, t))
        values = np.concatenate([quiet, alive])
        if not (np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 1))):
            raise ValueError("P(alive) or P(no purchase) is not a probability")
        if not (np.all(np.isfinite(bought)) and np.all(bought >= 0)):
            raise ValueError("expected purchases are not finite and non-negative")


#: The most customers the BTYD models are fitted on (a fixed random sample beyond).
MAX_FIT_CUSTOMERS = 100_000


def _sampled(summary: PurchaseSummary) -> PurchaseSummary:
    n = len(summary.x)
    if n <= MAX_FIT_CUSTOMERS:
        return summary
    rows = np.sort(np.random.default_rng(20_051).choice(n, MAX_FIT_CUSTOMERS, replace=False))
    return PurchaseSummary(
        x=summary.x[rows],
        t_x=summary.t_x[rows],
        T=summary.T[rows],
        m=summary.m[rows],
        known=summary.known[rows],
    )


def _pareto_if_better(
    known: Summary, bg_fit: BtydFit, compare: bool | None, horizon_days: float, notes: list[str]
) -> ParetoNbdDef | None:
    """The Pareto/NBD to serve instead of the BG/NBD of ``bg_fit``, or None: with ``compare``
    None when its log-likelihood is higher (said in ``notes``), True always, False never; and
    only when serving can evaluate it (:func:`_check_pareto`)."""
    if compare is False:
        return None
    try:
        pn_fit = fit_pareto_nbd(known)
    except (ValueError, FloatingPointError) as exc:
        notes.append(f"Pareto/NBD not fitted: {exc}")
        return None
    pn = pn_fit.params
    assert isinstance(pn, ParetoNbd)
    if compare is None:
        better = pn_fit.log_likelihood > bg_fit.log_likelihood
        winner, loser = ("Pareto/NBD", "BG/NBD") if better else ("BG/NBD", "Pareto/NBD")
        lls = sorted((bg_fit.log_likelihood, pn_fit.log_likelihood), reverse=True)
        notes.append(
            f"repeat buying: {winner} serves, it fits the history better than {loser} "
            f"(log-likelihood {lls[0]:,.1f} against {lls[1]:,.1f})"
        )
        if not better:
            return None
    try:
        _check_pareto(pn, horizon_days / WEEK, float(known.T.max(initial=1.0)))
    except (ValueError, FloatingPointError) as exc:
        notes.append(f"Pareto/NBD not served, serving cannot evaluate it: {exc}")
        return None
    return ParetoNbdDef(r=pn.r, alpha=pn.alpha, s=pn.s, beta=pn.beta)


def define_btyd(
    summary: PurchaseSummary,
    horizon_days: float,
    serves: Sequence[BtydScore],
    *,
    pareto: bool | None = None,
) -> tuple[BtydDef, list[str]]:
    """The BTYD models of ``summary``: BG/NBD, and Pareto/NBD when it fits the history better
    (higher log-likelihood, the same number of parameters), with Gamma-Gamma for spend.
    ``pareto`` True or False fixes the repeat-buying model instead (the stacked windows use
    the one the cutoff chose).

    Above :data:`MAX_FIT_CUSTOMERS` customers, the models are fitted on a fixed random sample
    of them (the same every run): four parameters are pinned long before that, and fitting
    Pareto/NBD on a million customers takes minutes.

    Raises:
        ValueError: BG/NBD cannot be fitted or served (Pareto/NBD's failure is only noted).
    """
    notes: list[str] = []
    summary = _sampled(summary)
    known = _known(summary)
    bg_fit = fit_bgnbd(known)
    bg = bg_fit.params
    assert isinstance(bg, BgNbd)
    check_servable(bg)  # what the decider will refuse to load
    chosen = _pareto_if_better(known, bg_fit, pareto, horizon_days, notes)
    spend: GammaGammaDef | None = None
    try:
        gg = fit_gamma_gamma(_spend(summary)).params
        spend = GammaGammaDef(p=gg[0], q=gg[1], v=gg[2])
    except ValueError as exc:
        notes.append(f"Gamma-Gamma not fitted: {exc}")
    served = [s for s in serves if s != "expectedValue" or spend is not None]
    definition = BtydDef(
        unit_days=WEEK,
        horizon_days=float(horizon_days),
        bgnbd=BgNbdDef(r=bg.r, alpha=bg.alpha, a=bg.a, b=bg.b),
        pareto_nbd=chosen,
        gamma_gamma=spend,
        serves=served,
    )
    return definition, notes


def btyd_models(
    at_cutoff: Sequence[DecideRequest], horizon_days: float, serves: Sequence[BtydScore]
) -> BtydModels:
    """BG/NBD and Gamma-Gamma for a bundle, fitted on the customers' visits at the cutoff
    (``at_cutoff``); :mod:`model_export.fit.stacked` checks the same fit out of time.

    Args:
        serves: the decision scores the models may give (the caller keeps those no other
            candidate gives better).
    """
    try:
        definition, notes = define_btyd(summary_of(at_cutoff), horizon_days, serves)
    except ValueError as exc:
        return BtydModels(None, [f"BG/NBD not fitted: {exc}"])
    return BtydModels(definition, notes)
