"""The serving side of the buy-till-you-die models (``sdk/btyd.py``), numpy alone, against
scipy over the whole input range: frequencies up to 500 repeat purchases, histories and
horizons up to ten years (in weeks), parameters on both sides of every branch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import hyp2f1 as scipy_hyp2f1

from sdk.btyd import (
    BgNbd,
    GammaGamma,
    ParetoNbd,
    bgnbd_expected_purchases,
    bgnbd_p_alive,
    bgnbd_p_no_purchase,
    gamma_gamma_mean_value,
    hyp2f1,
    pareto_nbd_expected_purchases,
    pareto_nbd_p_alive,
    pareto_nbd_p_no_purchase,
    purchase_summary,
    score_customers,
)
from sdk.manifest import AdjustDef, BgNbdDef, BtydDef, GammaGammaDef, ParetoNbdDef

#: The CDNOW sample's published estimates, a > 1, a large (the direct series), b below 1.
PARAMS = [
    BgNbd(0.243, 4.414, 0.793, 2.426),
    BgNbd(1.7, 12.0, 1.6, 6.0),
    BgNbd(0.5, 2.0, 9.0, 30.0),
    BgNbd(3.0, 0.5, 0.35, 0.8),
]


def customers(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Summaries and horizons over the whole range: x 0-500, T up to 520 weeks, t up to 520."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.zeros(n // 5), rng.integers(1, 20, n // 5), rng.integers(0, 501, n)])
    m = len(x)
    T = np.concatenate([rng.uniform(0, 1, m // 4), rng.uniform(0, 520, m - m // 4)])
    t_x = T * rng.uniform(0, 1, m)
    t_x[x == 0] = 0.0
    t = np.concatenate([np.zeros(m // 10), rng.uniform(0, 1, m // 10), rng.uniform(0, 520, m)])[:m]
    return x.astype(float), t_x, T, t


def reference_odds(params: BgNbd, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    r, alpha, a, b = params
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_odds = np.log(a / (b + x - 1)) + (r + x) * np.log((alpha + T) / (alpha + t_x))
        return np.where(x > 0, np.exp(log_odds), 0.0)


def reference_expected(params: BgNbd, x, t_x, T, t) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The paper's equation 10 with scipy's 2F1, in the log domain; where scipy's series
    overflows, the Euler-transformed form, as lifetimes does."""
    r, alpha, a, b = params
    A, B, C = r + x, b + x, a + b + x - 1
    z = t / (alpha + T + t)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_f = np.log(scipy_hyp2f1(A, B, C, z))
        alt = np.log(scipy_hyp2f1(C - A, C - B, C, z)) + (C - A - B) * np.log1p(-z)
        log_f = np.where(np.isfinite(log_f), log_f, alt)
        bracket = 1 - np.exp(log_f + A * np.log1p(-z))
    return C / (a - 1) * bracket / (1 + reference_odds(params, x, t_x, T))


def test_hyp2f1_matches_scipy_in_the_domain_the_models_use() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    x = rng.integers(0, 501, n).astype(float)
    r, a, b = rng.uniform(0.05, 5, n), rng.uniform(0.05, 10, n), rng.uniform(0.05, 40, n)
    z = np.concatenate([rng.uniform(0, 0.999, n - 100), np.full(100, 0.0)])
    direct = a > r + x
    # the two forms bgnbd_expected_purchases sums, each where it picks it
    for args in (
        (r[direct] + x[direct], b[direct] + x[direct], (a + b + x - 1)[direct], z[direct]),
        ((a + b - 1 - r)[~direct], (a - 1)[~direct], (a + b + x - 1)[~direct], z[~direct]),
    ):
        mine = hyp2f1(*args)
        ref = scipy_hyp2f1(*args)
        assert np.all(np.isfinite(mine)) and np.all(np.isfinite(ref))
        rel = np.abs(mine - ref) / np.abs(ref)
        assert np.median(rel) < 1e-14
        assert np.quantile(rel, 0.999) < 1e-9
    assert hyp2f1(1.0, 1.0, 2.0, 0.5) == pytest.approx(-np.log(0.5) / 0.5, rel=1e-15)
    assert hyp2f1(-3.0, 2.0, 1.5, 0.9) == pytest.approx(scipy_hyp2f1(-3.0, 2.0, 1.5, 0.9))


@pytest.mark.parametrize(
    ("a", "b", "c", "z"),
    [(1, 1, 2, 1.0), (1, 1, 2, -0.1), (1, 1, 0, 0.5), (3, 3, 4, 0.5), (1, 1, 2, float("nan"))],
)
def test_hyp2f1_refuses_what_its_series_cannot_sum(a: float, b: float, c: float, z: float) -> None:
    with pytest.raises(ValueError, match="hyp2f1 takes"):
        hyp2f1(a, b, c, z)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"a={p.a}")
def test_expected_purchases_match_the_scipy_reference_over_the_whole_range(params: BgNbd) -> None:
    x, t_x, T, t = customers(4000, seed=int(params.a * 100))
    mine = bgnbd_expected_purchases(params, x, t_x, T, t)
    ref = reference_expected(params, x, t_x, T, t)
    ok = np.isfinite(ref)
    assert ok.mean() > 0.9  # the reference itself fails on a few extreme rows
    assert np.all(np.isfinite(mine)) and np.all(mine >= 0)
    np.testing.assert_allclose(mine[ok], ref[ok], rtol=1e-8, atol=1e-12)
    assert np.all(mine[t == 0] == 0)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"a={p.a}")
def test_probabilities_are_probabilities_and_move_the_right_way(params: BgNbd) -> None:
    x, t_x, T, t = customers(2000, seed=7)
    alive = bgnbd_p_alive(params, x, t_x, T)
    assert np.all((alive > 0) & (alive <= 1)) and np.all(alive[x == 0] == 1)
    reference = 1 / (1 + reference_odds(params, x, t_x, T))
    np.testing.assert_allclose(alive, reference, rtol=1e-12, atol=1e-300)
    none = bgnbd_p_no_purchase(params, x, t_x, T, t)
    assert np.all((none >= 0) & (none <= 1)) and np.all(none[t == 0] == 1)
    longer = bgnbd_p_no_purchase(params, x, t_x, T, t + 10)
    assert np.all(longer <= none + 1e-15)  # a longer horizon never lowers P(any purchase)
    more = bgnbd_expected_purchases(params, x, t_x, T, t + 10)
    assert np.all(more >= bgnbd_expected_purchases(params, x, t_x, T, t) - 1e-12)
    # an inactive customer buys nothing: P(none) is at least P(inactive)
    assert np.all(none >= 1 - alive - 1e-12)


def test_no_purchase_agrees_with_a_simulation_of_the_model() -> None:
    """P(no purchase in t) of a customer who has not bought again in T weeks, from the closed
    form, against 400,000 simulated customers of the BG/NBD story (before a first repeat
    purchase nobody drops out, so only the purchase rate matters), kept when their history
    matches."""
    params = BgNbd(0.243, 4.414, 0.793, 2.426)
    rng = np.random.default_rng(11)
    n = 400_000
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    T, t = 30.0, 39.0
    # simulate purchases over [0, T + t]; keep customers whose history in [0, T] has x = 0
    first = rng.exponential(1 / lam)
    quiet_in_history = first > T
    none_after = quiet_in_history & (first > T + t)
    simulated = none_after.sum() / quiet_in_history.sum()
    exact = bgnbd_p_no_purchase(params, 0, 0, T, t)
    assert simulated == pytest.approx(float(exact), abs=0.01)


def test_gamma_gamma_mean_moves_from_the_population_to_the_customer() -> None:
    params = GammaGamma(6.25, 3.74, 15.44)
    assert gamma_gamma_mean_value(params, 0, 0) == pytest.approx(params.population_mean)
    few, many = gamma_gamma_mean_value(params, [1, 500], [100.0, 100.0])
    assert params.population_mean < few < many < 100.0
    assert many == pytest.approx(100.0, rel=0.01)
    with pytest.raises(ValueError, match="q must exceed 1"):
        gamma_gamma_mean_value(GammaGamma(1, 0.9, 1), 1, 1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: bgnbd_p_alive(BgNbd(0, 1, 1, 1), 1, 1, 2), "parameter r"),
        (lambda: bgnbd_p_alive(BgNbd(1, 1, 1, 1), -1, 0, 2), "x"),
        (lambda: bgnbd_p_alive(BgNbd(1, 1, 1, 1), 1, 3, 2), "t_x <= T"),
        (lambda: bgnbd_p_no_purchase(BgNbd(1, 1, 1, 1), 1, 1, 2, -1), "horizon"),
        (lambda: bgnbd_expected_purchases(BgNbd(1, 1, 1, 1), 1, 1, 2, 1), "a != 1"),
        (lambda: bgnbd_expected_purchases(BgNbd(1, 1, 0.5, 0.4), 1, 1, 2, 1), "a \\+ b > 1"),
    ],
)
def test_bad_parameters_and_inputs_are_refused(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        call()


def test_a_profile_summary_is_defined_once_for_fit_and_serving() -> None:
    s = purchase_summary(
        [3, 1, 0, None, 2, 4],
        [90.0, 20.0, 0.0, None, None, 40.0],
        [70.0, 14.0, None, 5.0, 21.0, 28.0],
        [7.0, None, None, 5.0, 0.0, 35.0],  # last: a last purchase before the first (bad data)
        7.0,
    )
    assert s.known.tolist() == [True, True, False, False, True, True]
    assert s.x.tolist() == [2, 0, 0, 0, 1, 3]
    assert s.T.tolist() == [10, 2, 0, 0, 3, 4]
    assert s.t_x.tolist() == [9, 0, 0, 0, 3, 0]
    assert s.m.tolist() == [30, 20, 0, 0, 0, 10]


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"a={p.a}")
def test_one_customer_in_plain_floats_equals_the_vectorised_scores(params: BgNbd) -> None:
    defn = BtydDef(
        unit_days=7.0,
        horizon_days=273.0,
        bgnbd=BgNbdDef(r=params.r, alpha=params.alpha, a=params.a, b=params.b),
        gamma_gamma=GammaGammaDef(p=6.25, q=3.74, v=15.44),
    )
    rng = np.random.default_rng(5)
    n = 300
    purchases = rng.integers(1, 400, n).astype(float)
    first = rng.uniform(0, 3000, n)
    last = first * rng.uniform(0, 1, n)
    revenue = purchases * rng.uniform(5, 80, n)
    many = score_customers(defn, purchase_summary(purchases, revenue, first, last, 7.0))
    for i in range(0, n, 7):
        one = score_customers(
            defn, purchase_summary([purchases[i]], [revenue[i]], [first[i]], [last[i]], 7.0)
        )
        for name, column in many.items():
            assert one[name][0] == pytest.approx(column[i], rel=1e-10, abs=1e-300), name


PARETO = [
    ParetoNbd(0.553, 10.578, 0.606, 11.669),  # CDNOW: alpha < beta
    ParetoNbd(1.2, 20.0, 2.5, 6.0),  # alpha >= beta, s > 1
    ParetoNbd(0.4, 3.0, 1.0, 3.0),  # alpha == beta, s == 1
]


def reference_pareto_alive(params: ParetoNbd, x, t_x, T) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Fader and Hardie's P(alive) with scipy's 2F1 untransformed, where it is finite."""
    r, alpha, s, beta = params
    big, gap = max(alpha, beta), abs(alpha - beta)
    second = s + 1 if alpha >= beta else r + x
    rsx = r + s + x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a1 = np.log(scipy_hyp2f1(rsx, second, rsx + 1, gap / (big + t_x))) - rsx * np.log(big + t_x)
        a2 = np.log(scipy_hyp2f1(rsx, second, rsx + 1, gap / (big + T))) - rsx * np.log(big + T)
        log_a0 = a1 + np.log(-np.expm1(np.minimum(a2 - a1, 0.0)))
        log_odds = np.log(s / rsx) + (r + x) * np.log(alpha + T) + s * np.log(beta + T) + log_a0
        return 1 / (1 + np.exp(log_odds))


@pytest.mark.parametrize("params", PARETO, ids=lambda p: f"s={p.s}")
def test_pareto_nbd_matches_the_scipy_reference_and_behaves(params: ParetoNbd) -> None:
    x, t_x, T, t = customers(3000, seed=int(params.s * 10))
    alive = pareto_nbd_p_alive(params, x, t_x, T)
    ref = reference_pareto_alive(params, x, t_x, T)
    ok = np.isfinite(ref)
    assert ok.mean() > 0.8
    np.testing.assert_allclose(alive[ok], ref[ok], rtol=1e-7, atol=1e-12)
    assert np.all((alive >= 0) & (alive <= 1))
    expected = pareto_nbd_expected_purchases(params, x, t_x, T, t)
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0) and np.all(expected[t == 0] == 0)
    assert np.all(pareto_nbd_expected_purchases(params, x, t_x, T, t + 10) >= expected - 1e-12)
    # a customer who just bought is more likely alive than one silent for as long
    fresh = pareto_nbd_p_alive(params, 3, 50, 50)
    silent = pareto_nbd_p_alive(params, 3, 5, 50)
    assert fresh > silent


def test_pareto_nbd_expected_purchases_are_continuous_at_s_equal_one() -> None:
    at_one = pareto_nbd_expected_purchases(ParetoNbd(0.5, 8.0, 1.0, 9.0), 2, 10, 30, 39)
    near = pareto_nbd_expected_purchases(ParetoNbd(0.5, 8.0, 1.0 + 1e-6, 9.0), 2, 10, 30, 39)
    assert float(at_one) == pytest.approx(float(near), rel=1e-5)


def _dropout_first(a1: float, rate1: float, s: float, rate2: float) -> float:
    """E[mu / (lambda + mu)] as a one-dimensional integral, without any 2F1:
    mu / (lambda + mu) = integral of mu e^-(lambda + mu) u du, and both expectations inside
    are closed forms."""
    from scipy import integrate

    def inside(u: float) -> float:
        return float(s * rate2**s * (rate2 + u) ** (-s - 1) * (rate1 / (rate1 + u)) ** a1)

    value, _ = integrate.quad(inside, 0, np.inf, epsabs=1e-13, epsrel=1e-11, limit=500)
    return float(value)


def _quiet_by_integration(params: ParetoNbd, x: float, t_x: float, T: float, t: float) -> float:
    """P(no purchase in t) from the definition, with E[mu / (lambda + mu)] integrated
    numerically (:func:`_dropout_first`), then mixed with P(alive)."""
    r, alpha, s, beta = params
    a1, rate1, rate2 = r + x, alpha + T, beta + T
    keep = (rate1 / (rate1 + t)) ** a1 * (rate2 / (rate2 + t)) ** s
    quiet = (
        keep
        + _dropout_first(a1, rate1, s, rate2)
        - keep * _dropout_first(a1, rate1 + t, s, rate2 + t)
    )
    alive = float(pareto_nbd_p_alive(params, x, t_x, T))
    return (1 - alive) + alive * quiet


@pytest.mark.parametrize("params", PARETO, ids=lambda p: f"s={p.s}")
@pytest.mark.parametrize(
    "history",
    [(0, 0, 30, 39), (2, 20, 30, 39), (10, 25, 26, 52), (30, 37, 38, 100), (0, 0, 5, 200)],
)
def test_pareto_nbd_no_purchase_matches_the_integral_of_its_definition(
    params: ParetoNbd, history: tuple[float, float, float, float]
) -> None:
    got = float(pareto_nbd_p_no_purchase(params, *history))
    assert got == pytest.approx(_quiet_by_integration(params, *history), abs=1e-9)


def test_pareto_nbd_no_purchase_is_the_double_integral_over_the_posterior_rates() -> None:
    """The decomposition itself, once, against scipy's dblquad of the model's definition over
    the alive customer's posterior purchase and dropout rates."""
    from scipy import integrate, stats

    params, (x, t_x, T, t) = PARETO[1], (2.0, 20.0, 30.0, 39.0)
    r, alpha, s, beta = params
    rates = stats.gamma(r + x, scale=1 / (alpha + T))
    dropouts = stats.gamma(s, scale=1 / (beta + T))

    def given(mu: float, lam: float) -> float:
        gone = np.exp(-(lam + mu) * t)
        return float((gone + mu / (lam + mu) * (1 - gone)) * rates.pdf(lam) * dropouts.pdf(mu))

    inner, _ = integrate.dblquad(
        given, 0, rates.ppf(1 - 1e-12), 0, dropouts.ppf(1 - 1e-12), epsabs=1e-10, epsrel=1e-8
    )
    alive = float(pareto_nbd_p_alive(params, x, t_x, T))
    expected = (1 - alive) + alive * inner
    assert float(pareto_nbd_p_no_purchase(params, x, t_x, T, t)) == pytest.approx(
        expected, abs=1e-8
    )


@pytest.mark.parametrize("params", PARETO, ids=lambda p: f"s={p.s}")
def test_pareto_nbd_no_purchase_is_a_probability_over_the_whole_range(params: ParetoNbd) -> None:
    x, t_x, T, t = customers(3000, seed=int(params.s * 7))
    quiet = pareto_nbd_p_no_purchase(params, x, t_x, T, t)
    assert np.all(np.isfinite(quiet)) and np.all((quiet >= 0) & (quiet <= 1))
    assert np.all(quiet[t == 0] == pytest.approx(1.0, abs=1e-12))
    longer = pareto_nbd_p_no_purchase(params, x, t_x, T, t + 5)
    assert np.all(longer <= quiet + 1e-12)
    # never below the chance of having dropped out already
    assert np.all(quiet >= 1 - pareto_nbd_p_alive(params, x, t_x, T) - 1e-12)


def _pareto_bundle(params: ParetoNbd) -> BtydDef:
    """BTYD models serving ``params`` as the repeat-buying model (CDNOW's other estimates)."""
    return BtydDef(
        unit_days=7.0,
        horizon_days=273.0,
        bgnbd=BgNbdDef(r=0.243, alpha=4.414, a=0.793, b=2.426),
        pareto_nbd=ParetoNbdDef(r=params.r, alpha=params.alpha, s=params.s, beta=params.beta),
        gamma_gamma=GammaGammaDef(p=6.25, q=3.74, v=15.44),
        serves=["churnProbability", "expectedPurchases", "expectedValue"],
    )


def test_a_bundle_serving_pareto_nbd_scores_with_it() -> None:
    pareto = ParetoNbd(0.553, 10.578, 0.606, 11.669)
    defn = _pareto_bundle(pareto)
    summary = purchase_summary([1, 3, 8, None], [20.0, 90.0, 300.0, None], [10, 200, 250, None],
                               [10, 30, 2, None], 7.0)  # fmt: skip
    for rows in (summary, _many(summary, 10)):  # the single-decide size and a batch
        got = score_customers(defn, rows)
        k = rows.known
        x, t_x, T = rows.x[k], rows.t_x[k], rows.T[k]
        np.testing.assert_allclose(got["pAlive"][k], pareto_nbd_p_alive(pareto, x, t_x, T))
        np.testing.assert_allclose(
            got["churnProbability"][k], pareto_nbd_p_no_purchase(pareto, x, t_x, T, 39.0)
        )
        np.testing.assert_allclose(
            got["expectedPurchases"][k], pareto_nbd_expected_purchases(pareto, x, t_x, T, 39.0)
        )
        assert np.isnan(got["pAlive"][~k]).all()


def _many(summary, times: int):  # type: ignore[no-untyped-def]
    return type(summary)(*(np.tile(column, times) for column in summary))


def test_one_adjusted_customer_in_plain_floats_equals_the_vectorised_adjustment() -> None:
    defn = BtydDef(
        unit_days=7.0,
        horizon_days=91.0,
        bgnbd=BgNbdDef(r=0.243, alpha=4.414, a=0.793, b=2.426),
        gamma_gamma=GammaGammaDef(p=6.25, q=3.74, v=15.44),
        adjusted={s: AdjustDef(model=f"{s}_adjust") for s in
                  ("churnProbability", "expectedPurchases", "expectedValue")},
    )  # fmt: skip
    rng = np.random.default_rng(11)
    n = 40
    summary = purchase_summary(
        rng.integers(1, 30, n).tolist(), rng.uniform(10, 900, n).tolist(),
        rng.uniform(0, 300, n).tolist(), rng.uniform(0, 1, n).tolist(), 7.0,
    )  # fmt: skip
    etas = {s: rng.normal(0, 2.5, n) for s in defn.adjusted}
    etas["churnProbability"][3] = np.nan
    batch = score_customers(defn, summary, etas=etas)
    for i in range(n):
        one = summary._replace(**{f: getattr(summary, f)[i : i + 1] for f in summary._fields})
        single = score_customers(defn, one, etas={s: e[i : i + 1] for s, e in etas.items()})
        for name in defn.adjusted:
            assert single[name][0] == pytest.approx(batch[name][i], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("params", PARETO, ids=lambda p: f"s={p.s}")
def test_one_pareto_customer_in_plain_floats_equals_the_vectorised_scores(
    params: ParetoNbd,
) -> None:
    defn = _pareto_bundle(params)
    x, t_x, T, _ = customers(200, seed=21)
    n = len(x)
    summary = purchase_summary(
        (x + 1).tolist(), ((x + 1) * 25.0).tolist(), (T * 7).tolist(), ((T - t_x) * 7).tolist(), 7.0
    )
    batch = score_customers(defn, summary)
    for i in range(0, n, 7):
        one = summary._replace(**{f: getattr(summary, f)[i : i + 1] for f in summary._fields})
        single = score_customers(defn, one)
        for name, column in batch.items():
            assert single[name][0] == pytest.approx(column[i], rel=1e-9, abs=1e-12), name
