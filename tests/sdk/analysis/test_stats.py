"""sdk.analysis.stats against scipy (and numpy) on grids and generated data, plus coverage
and edge cases.

Tolerances, set from the measured maxima with a margin (scipy is not exact either, so the
measured differences bound sdk.analysis.stats' own error from above):

* distribution functions and quantiles (normal, t, chi-square): 1e-12 relative; quantiles
  relative to ``max(1, |x|)``. Measured: normal cdf/sf 2.4e-13 (at x = -37, where rounding
  ``x / sqrt(2)`` dominates), t and chi-square cdf/sf <= 6e-14, quantiles <= 9e-14 (t with
  df = 2.5, where the round trip shows scipy is the less accurate of the two).
* incomplete beta and gamma, values above 1e-100, parameters 0.05..1000: 1e-11 relative
  (measured <= 1.3e-12; deep tails lose about eps * |log value|).
* intervals, test statistics and p-values built on them: 1e-10 relative.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.special as scipy_special
import scipy.stats as scipy_stats

from sdk.analysis import stats

DIST_RTOL = 1e-12
SPECIAL_RTOL = 1e-11
STAT_RTOL = 1e-10
T_DFS = (1.0, 2.5, 5.0, 30.0, 1000.0)
CHI2_DFS = (1.0, 2.0, 5.0, 50.0)


def _max_rel(ours: list[float], ref: np.ndarray) -> float:
    ours_arr = np.asarray(ours, dtype=float)
    assert np.all(np.isfinite(ours_arr))
    return float(np.max(np.abs(ours_arr - ref) / np.abs(ref)))


def _tail_probs() -> np.ndarray:
    """Probabilities from 1e-12 to 1 - 1e-12, dense in both tails."""
    tail = np.logspace(-12, -1, 45)
    return np.concatenate([tail, np.linspace(0.02, 0.98, 49), 1.0 - tail])


# --------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------


def test_normal_cdf_and_sf_match_scipy() -> None:
    xs = np.concatenate([np.linspace(-37.0, 37.0, 741), [-1e-8, 0.0, 1e-8]])
    cdf = scipy_stats.norm.cdf(xs)
    sf = scipy_stats.norm.sf(xs)
    assert _max_rel([stats.normal_cdf(x) for x in xs[cdf > 0]], cdf[cdf > 0]) < DIST_RTOL
    assert _max_rel([stats.normal_sf(x) for x in xs[sf > 0]], sf[sf > 0]) < DIST_RTOL
    assert stats.normal_pdf(1.3) == pytest.approx(scipy_stats.norm.pdf(1.3), rel=1e-15)


def test_normal_ppf_matches_scipy_in_both_tails() -> None:
    ps = np.concatenate([np.logspace(-300, -12, 60), _tail_probs(), 1.0 - np.logspace(-16, -12, 5)])
    ref = scipy_stats.norm.ppf(ps)
    ours = np.array([stats.normal_ppf(p) for p in ps])
    assert np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))) < DIST_RTOL
    assert (stats.normal_ppf(0.0), stats.normal_ppf(0.5), stats.normal_ppf(1.0)) == (
        -math.inf,
        0.0,
        math.inf,
    )
    assert stats.normal_ppf(0.975) == pytest.approx(1.959963984540054, rel=1e-15)


@pytest.mark.parametrize("df", T_DFS)
def test_t_cdf_and_sf_match_scipy_down_to_1e_12(df: float) -> None:
    # Points whose tail probabilities run from 1e-12 to 1/2, on both sides, plus a plain grid.
    quantiles = scipy_stats.t.ppf(_tail_probs(), df)
    ts = np.concatenate([quantiles, np.linspace(-6.0, 6.0, 121), [0.0]])
    cdf, sf = scipy_stats.t.cdf(ts, df), scipy_stats.t.sf(ts, df)
    assert cdf.min() < 2e-12 and sf.min() < 2e-12
    assert _max_rel([stats.t_cdf(t, df) for t in ts], cdf) < DIST_RTOL
    assert _max_rel([stats.t_sf(t, df) for t in ts], sf) < DIST_RTOL
    pdf = scipy_stats.t.pdf(ts, df)
    assert _max_rel([stats.t_pdf(t, df) for t in ts], pdf) < DIST_RTOL


@pytest.mark.parametrize("df", [*T_DFS, 57.31, 1e5, 2e9])
def test_t_ppf_matches_scipy_and_inverts_t_cdf(df: float) -> None:
    ps = _tail_probs()
    ref = scipy_stats.t.ppf(ps, df)
    ours = np.array([stats.t_ppf(p, df) for p in ps])
    assert np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))) < DIST_RTOL
    # Round trip, independent of scipy: the smaller tail at t_ppf(p) is p to ~1e-14.
    for p, t in zip(ps, ours, strict=True):
        tail = stats.t_cdf(t, df) if p < 0.5 else stats.t_sf(t, df)
        assert tail == pytest.approx(min(p, 1.0 - p), rel=1e-13)


def test_t_large_df_is_accurate_and_tends_to_normal() -> None:
    # Welch df reach ~2e9 with a billion visitors per arm: no loss of accuracy, no slowness.
    for df in (1e5, 1e7, 2e9):
        ts = np.linspace(-8.0, 8.0, 33)
        ref = scipy_stats.t.cdf(ts, df)
        assert _max_rel([stats.t_cdf(t, df) for t in ts], ref) < DIST_RTOL
    assert stats.t_cdf(1.5, math.inf) == stats.normal_cdf(1.5)
    assert stats.t_ppf(0.975, math.inf) == stats.normal_ppf(0.975)
    assert stats.t_cdf(-1e200, 1.0) == pytest.approx(1.0 / (math.pi * 1e200), rel=1e-12)
    assert stats.t_ppf(1e-300, 1.0) == pytest.approx(-1.0 / (math.pi * 1e-300), rel=1e-12)


@pytest.mark.parametrize("df", CHI2_DFS)
def test_chi2_cdf_and_sf_match_scipy_down_to_1e_12(df: float) -> None:
    tail = np.logspace(-12, -0.4, 40)
    xs = np.concatenate(
        [
            scipy_stats.chi2.isf(tail, df),
            scipy_stats.chi2.ppf(tail, df),
            np.linspace(0.01, 3.0 * df + 30.0, 100),
        ]
    )
    sf, cdf = scipy_stats.chi2.sf(xs, df), scipy_stats.chi2.cdf(xs, df)
    assert sf.min() < 2e-12 and cdf.min() < 2e-12
    assert _max_rel([stats.chi2_sf(x, df) for x in xs], sf) < DIST_RTOL
    assert _max_rel([stats.chi2_cdf(x, df) for x in xs], cdf) < DIST_RTOL
    assert stats.chi2_sf(0.0, df) == 1.0 and stats.chi2_cdf(0.0, df) == 0.0


def test_incomplete_beta_and_gamma_match_scipy() -> None:
    rng = np.random.default_rng(20240611)
    a, b = np.exp(rng.uniform(math.log(0.05), math.log(1000.0), (2, 1500)))
    x = rng.uniform(0.0, 1.0, 1500)
    ref = scipy_special.betainc(a, b, x)
    keep = ref > 1e-100
    ours = [
        stats.beta_inc(ai, bi, xi) for ai, bi, xi in zip(a[keep], b[keep], x[keep], strict=True)
    ]
    assert _max_rel(ours, ref[keep]) < SPECIAL_RTOL

    a = np.exp(rng.uniform(math.log(0.05), math.log(1000.0), 1500))
    x = a * np.exp(rng.uniform(-1.5, 1.5, 1500))
    for ours_fn, ref_fn in (
        (stats.gamma_inc_lower, scipy_special.gammainc),
        (stats.gamma_inc_upper, scipy_special.gammaincc),
    ):
        ref = ref_fn(a, x)
        keep = ref > 1e-100
        ours = [ours_fn(ai, xi) for ai, xi in zip(a[keep], x[keep], strict=True)]
        assert _max_rel(ours, ref[keep]) < SPECIAL_RTOL
    assert stats.beta_inc(2.0, 3.0, 0.0) == 0.0 and stats.beta_inc(2.0, 3.0, 1.0) == 1.0
    assert stats.gamma_inc_lower(2.0, 0.0) == 0.0 and stats.gamma_inc_upper(2.0, 0.0) == 1.0


def test_distribution_arguments_are_checked() -> None:
    for call in (
        lambda: stats.normal_ppf(1.5),
        lambda: stats.t_ppf(-0.1, 3.0),
        lambda: stats.t_cdf(1.0, 0.0),
        lambda: stats.chi2_sf(1.0, -1.0),
        lambda: stats.beta_inc(0.0, 1.0, 0.5),
        lambda: stats.beta_inc(1.0, 1.0, 1.5),
        lambda: stats.gamma_inc_upper(1.0, -1.0),
    ):
        with pytest.raises(ValueError):
            call()
    assert math.isnan(stats.normal_ppf(math.nan))
    assert math.isnan(stats.t_cdf(math.nan, 3.0))
    assert math.isnan(stats.chi2_sf(math.nan, 3.0))


# --------------------------------------------------------------------------------------------
# Proportions
# --------------------------------------------------------------------------------------------

COUNTS = [(0, 1), (1, 1), (0, 7), (3, 7), (7, 7), (0, 50), (1, 50), (25, 50), (49, 50)]
COUNTS += [(50, 50), (12, 1000), (500, 1000), (3, 100_000), (123_456, 10_000_000)]


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_interval_matches_scipy_binomtest(confidence: float) -> None:
    for k, n in COUNTS:
        ref = scipy_stats.binomtest(k, n).proportion_ci(confidence, method="wilson")
        low, high = stats.proportion_ci(k, n, confidence)
        assert low == pytest.approx(ref.low, rel=STAT_RTOL, abs=1e-15)
        assert high == pytest.approx(ref.high, rel=STAT_RTOL, abs=1e-15)
        assert 0.0 <= low <= k / n <= high <= 1.0


def test_normal_interval_is_the_clipped_wald_formula() -> None:
    z = scipy_stats.norm.ppf(0.975)
    for k, n in COUNTS:
        p = k / n
        half = z * math.sqrt(p * (1 - p) / n)
        low, high = stats.proportion_ci(k, n, method="normal")
        assert low == pytest.approx(max(0.0, p - half), rel=STAT_RTOL, abs=1e-15)
        assert high == pytest.approx(min(1.0, p + half), rel=STAT_RTOL, abs=1e-15)


def _wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def test_diff_proportions_matches_newcombe_katz_and_the_pooled_z_test() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        n1, n2 = (int(v) for v in rng.integers(20, 5000, 2))
        s1 = int(rng.binomial(n1, rng.uniform(0.02, 0.5)))
        s2 = int(rng.binomial(n2, rng.uniform(0.02, 0.5)))
        if min(s1, s2, n1 - s1, n2 - s2) == 0:
            continue
        for confidence in (0.9, 0.95):
            r = stats.diff_proportions(s1, n1, s2, n2, confidence)
            p1, p2 = s1 / n1, s2 / n2
            (l1, u1), (l2, u2) = _wilson(s1, n1, confidence), _wilson(s2, n2, confidence)
            assert r.diff == pytest.approx(p2 - p1, rel=STAT_RTOL)
            assert r.low == pytest.approx(
                p2 - p1 - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), rel=STAT_RTOL
            )
            assert r.high == pytest.approx(
                p2 - p1 + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2), rel=STAT_RTOL
            )
            # Katz log interval: scipy's relative_risk uses the same method.
            rr = scipy_stats.contingency.relative_risk(s2, n2, s1, n1)
            ci = rr.confidence_interval(confidence)
            assert r.relative_lift is not None and r.relative_low is not None
            assert r.relative_high is not None
            assert r.relative_lift + 1 == pytest.approx(rr.relative_risk, rel=STAT_RTOL)
            assert r.relative_low + 1 == pytest.approx(ci.low, rel=STAT_RTOL)
            assert r.relative_high + 1 == pytest.approx(ci.high, rel=STAT_RTOL)
        # The pooled z-test is the uncorrected 2x2 chi-square test.
        table = [[s1, n1 - s1], [s2, n2 - s2]]
        ref = scipy_stats.chi2_contingency(table, correction=False)
        assert r.p_value == pytest.approx(ref.pvalue, rel=STAT_RTOL)


@pytest.mark.parametrize("correction", [False, True])
def test_chi_square_2x2_matches_scipy(correction: bool) -> None:
    rng = np.random.default_rng(11)
    for _ in range(60):
        n1, n2 = (int(v) for v in rng.integers(5, 3000, 2))
        s1, s2 = int(rng.integers(1, n1)), int(rng.integers(1, n2))
        ref = scipy_stats.chi2_contingency([[s1, n1 - s1], [s2, n2 - s2]], correction=correction)
        r = stats.chi_square_2x2(s1, n1, s2, n2, correction=correction)
        assert r.df == 1
        assert r.statistic == pytest.approx(ref.statistic, rel=STAT_RTOL, abs=1e-12)
        assert r.p_value == pytest.approx(ref.pvalue, rel=STAT_RTOL)
    # Yates never pushes |O - E| below 0: a perfectly balanced table stays at 0.
    assert stats.chi_square_2x2(50, 100, 50, 100, correction=True).statistic == 0.0


def test_chi_square_independence_matches_scipy_on_r_by_c_tables() -> None:
    rng = np.random.default_rng(13)
    for shape in [(2, 3), (3, 2), (4, 5), (6, 3)]:
        for _ in range(10):
            table = rng.integers(1, 400, shape).astype(float)
            ref = scipy_stats.chi2_contingency(table)
            r = stats.chi_square_independence(table.tolist())
            assert r.df == ref.dof
            assert r.statistic == pytest.approx(ref.statistic, rel=STAT_RTOL)
            assert r.p_value == pytest.approx(ref.pvalue, rel=STAT_RTOL)


def test_chi_square_gof_matches_scipy_chisquare() -> None:
    rng = np.random.default_rng(17)
    for k in (2, 3, 5, 10):
        for _ in range(10):
            weights = rng.uniform(0.5, 3.0, k)
            observed = rng.multinomial(int(rng.integers(100, 100_000)), weights / weights.sum())
            expected = observed.sum() * weights / weights.sum()
            ref = scipy_stats.chisquare(observed, expected)
            r = stats.chi_square_gof(observed.tolist(), weights.tolist())
            assert r.df == k - 1
            assert r.statistic == pytest.approx(ref.statistic, rel=STAT_RTOL)
            assert r.p_value == pytest.approx(ref.pvalue, rel=STAT_RTOL)
    # A real sample-ratio mismatch: 50/50 configured, 50.8/49.2 observed on 200k visitors.
    assert stats.chi_square_gof([101_600, 98_400], [1, 1]).p_value < 1e-10


# --------------------------------------------------------------------------------------------
# Means
# --------------------------------------------------------------------------------------------


def test_welch_matches_scipy_ttest_ind() -> None:
    for seed in range(8):
        rng = np.random.default_rng(seed)
        n1, n2 = int(rng.integers(2, 60)), int(rng.integers(2, 400))
        a = rng.normal(10.0, rng.uniform(0.1, 5.0), n1)
        b = rng.normal(10.0 + rng.uniform(-2.0, 2.0), rng.uniform(0.1, 5.0), n2)
        ref = scipy_stats.ttest_ind(a, b, equal_var=False)
        r = stats.welch_from_samples(a.tolist(), b.tolist(), confidence=0.9)
        assert r.t == pytest.approx(-ref.statistic, rel=STAT_RTOL)  # ours is b - a
        assert r.p_value == pytest.approx(ref.pvalue, rel=STAT_RTOL)
        assert r.df == pytest.approx(ref.df, rel=STAT_RTOL)
        g1, g2 = a.var(ddof=1) / n1, b.var(ddof=1) / n2
        assert r.df == pytest.approx((g1 + g2) ** 2 / (g1**2 / (n1 - 1) + g2**2 / (n2 - 1)))
        assert r.diff == pytest.approx(b.mean() - a.mean(), rel=STAT_RTOL)
        ci = ref.confidence_interval(0.9)  # of mean(a) - mean(b)
        assert r.low == pytest.approx(-ci.high, rel=STAT_RTOL)
        assert r.high == pytest.approx(-ci.low, rel=STAT_RTOL)


def test_mean_ci_is_the_t_interval() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 3, 10, 500):
        x = rng.exponential(4.0, n)
        low, high = stats.mean_ci(float(x.mean()), float(x.var(ddof=1)), n, 0.95)
        ref = scipy_stats.t.interval(0.95, n - 1, loc=x.mean(), scale=scipy_stats.sem(x))
        assert (low, high) == pytest.approx(ref, rel=STAT_RTOL)


def test_running_stats_match_numpy_including_merge() -> None:
    rng = np.random.default_rng(5)
    for offset in (0.0, 1e9):  # a large offset defeats the naive sum-of-squares formula
        x = offset + rng.lognormal(0.0, 1.5, 10_001)
        whole = stats.RunningStats()
        whole.update(x.tolist())
        merged = stats.RunningStats()
        for chunk in np.array_split(x, [0, 1, 7, 3000, 3000, 9999]):
            part = stats.RunningStats()
            part.update(chunk.tolist())
            merged.merge(part)
        for rs in (whole, merged):
            assert rs.count == x.size
            assert rs.mean == pytest.approx(x.mean(), rel=1e-14)
            assert rs.variance == pytest.approx(x.var(ddof=1), rel=1e-12)
            assert rs.std == pytest.approx(x.std(ddof=1), rel=1e-12)
    empty, one = stats.RunningStats(), stats.RunningStats()
    one.add(3.0)
    assert math.isnan(empty.mean) and math.isnan(empty.variance)
    assert one.mean == 3.0 and math.isnan(one.variance)
    empty.merge(one)
    assert (empty.count, empty.mean) == (1, 3.0)


# --------------------------------------------------------------------------------------------
# Coverage (simulation, seeded)
# --------------------------------------------------------------------------------------------


def test_difference_and_lift_intervals_cover_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(2024)
    p1, p2, n1, n2 = 0.10, 0.12, 1500, 1200
    s1s, s2s = rng.binomial(n1, p1, 2000), rng.binomial(n2, p2, 2000)
    diff_hits = lift_hits = 0
    for s1, s2 in zip(s1s.tolist(), s2s.tolist(), strict=True):
        r = stats.diff_proportions(s1, n1, s2, n2, 0.95)
        diff_hits += r.low <= p2 - p1 <= r.high
        assert r.relative_low is not None and r.relative_high is not None
        lift_hits += r.relative_low <= p2 / p1 - 1 <= r.relative_high
    assert 0.93 <= diff_hits / 2000 <= 0.97
    assert 0.93 <= lift_hits / 2000 <= 0.97


def test_welch_interval_covers_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(99)
    n1, n2, mu1, mu2 = 12, 40, 5.0, 6.0
    a = rng.normal(mu1, 3.0, (2000, n1))
    b = rng.normal(mu2, 0.8, (2000, n2))
    m1, v1, m2, v2 = a.mean(1), a.var(1, ddof=1), b.mean(1), b.var(1, ddof=1)
    hits = 0
    for i in range(2000):
        r = stats.welch_t_test(m1[i], v1[i], n1, m2[i], v2[i], n2, 0.95)
        hits += r.low <= mu2 - mu1 <= r.high
    assert 0.93 <= hits / 2000 <= 0.97


# --------------------------------------------------------------------------------------------
# Planning and warnings
# --------------------------------------------------------------------------------------------


def _power(p1: float, p2: float, n: int, alpha: float) -> float:
    z_a = scipy_stats.norm.ppf(1 - alpha / 2)
    pbar = (p1 + p2) / 2
    num = abs(p2 - p1) * math.sqrt(n) - z_a * math.sqrt(2 * pbar * (1 - pbar))
    return float(scipy_stats.norm.cdf(num / math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))))


@pytest.mark.parametrize(
    ("baseline", "mde", "alpha", "power"),
    [(0.1, 0.1, 0.05, 0.8), (0.02, 0.05, 0.05, 0.9), (0.5, -0.1, 0.01, 0.8), (0.3, 1.0, 0.1, 0.5)],
)
def test_min_sample_size_is_the_smallest_n_with_the_power(
    baseline: float, mde: float, alpha: float, power: float
) -> None:
    n = stats.min_sample_size(baseline, mde, alpha, power)
    p2 = baseline * (1 + mde)
    assert _power(baseline, p2, n, alpha) >= power - 1e-9
    assert _power(baseline, p2, n - 1, alpha) < power
    assert stats.min_sample_size(0.1, 0.1) == 14751  # the textbook 10% -> 11% example
    with pytest.raises(ValueError):
        stats.min_sample_size(0.6, 1.0)  # treated rate 1.2


def test_small_sample_warning_rules() -> None:
    assert stats.small_sample_warning([100_000, 100_000], [10_000, 11_000]) is None
    few = stats.small_sample_warning([50, 5000], [3, 400])
    assert few is not None
    assert "arm 0 has 50 visitors" in few and "arm 0 has 3 conversions" in few
    assert "arm 1 has" not in few
    weak = stats.small_sample_warning([10_000, 10_000], [1000, 1030])
    assert weak is not None and "+3.0%" in weak
    assert str(stats.min_sample_size(0.1, 0.03)) in weak
    assert stats.small_sample_warning([0, 0], [0, 0]) is not None  # empty arms warn, not raise
    with pytest.raises(ValueError):
        stats.small_sample_warning([10, 10], [11, 0])


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------


def test_no_visitors_gives_nan_not_errors() -> None:
    assert all(math.isnan(v) for v in stats.proportion_ci(0, 0))
    r = stats.diff_proportions(0, 0, 5, 10)
    assert math.isnan(r.diff) and math.isnan(r.low) and math.isnan(r.p_value)
    assert r.relative_lift is None and r.relative_low is None
    chi = stats.chi_square_2x2(0, 0, 5, 10)
    assert math.isnan(chi.statistic) and math.isnan(chi.p_value)
    assert math.isnan(stats.chi_square_gof([0, 0], [1, 1]).p_value)
    w = stats.welch_t_test(math.nan, math.nan, 0, 3.0, 1.0, 10)
    assert all(math.isnan(v) for v in (w.t, w.df, w.p_value, w.diff, w.low, w.high))
    assert all(math.isnan(v) for v in stats.mean_ci(1.0, 0.0, 1))
    empty = stats.welch_from_samples([], [1.0, 2.0])
    assert math.isnan(empty.diff) and math.isnan(empty.p_value)


def test_zero_and_all_conversions() -> None:
    low, high = stats.proportion_ci(0, 200)
    assert low == 0.0 and 0.0 < high < 0.03
    low, high = stats.proportion_ci(200, 200)
    assert high == 1.0 and 0.97 < low < 1.0
    none = stats.diff_proportions(0, 1000, 0, 1000)
    assert none.diff == 0.0 and none.low < 0.0 < none.high
    assert none.relative_lift is None and math.isnan(none.p_value)
    one_side = stats.diff_proportions(0, 1000, 10, 1000)
    assert one_side.relative_lift is None and one_side.p_value < 0.01
    lost = stats.diff_proportions(10, 1000, 0, 1000)
    assert lost.relative_lift == -1.0 and lost.relative_low is None
    every = stats.diff_proportions(1000, 1000, 1000, 1000)
    assert every.diff == 0.0 and math.isnan(every.p_value)
    assert every.relative_lift == 0.0
    assert math.isnan(stats.chi_square_2x2(0, 10, 0, 20).p_value)
    assert math.isnan(stats.chi_square_2x2(10, 10, 20, 20).p_value)


def test_zero_variance() -> None:
    same = stats.welch_t_test(5.0, 0.0, 10, 5.0, 0.0, 10)
    differ = stats.welch_t_test(5.0, 0.0, 10, 6.0, 0.0, 10)
    for r in (same, differ):
        assert all(math.isnan(v) for v in (r.t, r.df, r.p_value, r.low, r.high))
    assert differ.diff == 1.0
    one_sided = stats.welch_t_test(5.0, 0.0, 10, 6.0, 1.0, 10)
    assert one_sided.df == pytest.approx(9.0) and one_sided.p_value > 0
    assert stats.mean_ci(4.0, 0.0, 10) == (4.0, 4.0)
    rs = stats.RunningStats()
    rs.update([2.5] * 1000)
    assert rs.variance == 0.0


def test_a_billion_visitors() -> None:
    n = 1e9
    low, high = stats.proportion_ci(0.1 * n, n)
    assert low < 0.1 < high and high - low < 5e-5
    r = stats.diff_proportions(0.1 * n, n, 0.1001 * n, n)
    assert r.low < 1e-4 < r.high and r.p_value < 1e-12  # z = 7.45
    assert r.relative_low is not None and r.relative_low > 0
    chi = stats.chi_square_2x2(0.1 * n, n, 0.1001 * n, n)
    assert chi.p_value == pytest.approx(r.p_value, rel=1e-8)
    w = stats.welch_t_test(10.0, 4.0, n, 10.001, 4.0, n)
    ref = scipy_stats.ttest_ind_from_stats(10.0, 2.0, n, 10.001, 2.0, n, equal_var=False)
    assert w.df == pytest.approx(2 * n - 2) and w.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert w.low < 0.001 < w.high
    gof = stats.chi_square_gof([n, n + 40_000], [1, 1])
    assert gof.p_value == pytest.approx(scipy_stats.chisquare([n, n + 40_000]).pvalue, rel=1e-9)
    assert stats.min_sample_size(0.1, 1e-4) > 1e9


def test_invalid_input_raises_value_error() -> None:
    for call in (
        lambda: stats.proportion_ci(5, 3),
        lambda: stats.proportion_ci(-1, 3),
        lambda: stats.proportion_ci(1, 3, confidence=1.0),
        lambda: stats.proportion_ci(1, 3, method="exact"),
        lambda: stats.diff_proportions(1, 2, 3, 2),
        lambda: stats.chi_square_independence([[1, 2], [3]]),
        lambda: stats.chi_square_independence([[1, 2]]),
        lambda: stats.chi_square_independence([[1, -2], [3, 4]]),
        lambda: stats.chi_square_gof([1, 2], [1]),
        lambda: stats.chi_square_gof([1, 2], [1, 0]),
        lambda: stats.welch_t_test(0, -1, 5, 0, 1, 5),
        lambda: stats.mean_ci(0, 1, 5, confidence=0.0),
    ):
        with pytest.raises(ValueError):
            call()


# --------------------------------------------------------------------------------------------
# Module hygiene
# --------------------------------------------------------------------------------------------


#: The modules behind sdk.analysis.stats; they may import only each other and the stdlib.
STATS_MODULES = (
    "stats",
    "_special",
    "_distributions",
    "_proportions",
    "_chisquare",
    "_means",
    "_planning",
)


def test_module_imports_only_the_standard_library() -> None:
    package = Path(stats.__file__).parent
    allowed = {"__future__", "math", "collections", "dataclasses"}
    allowed |= {f"sdk.analysis.{name}" for name in STATS_MODULES}
    for name in STATS_MODULES:
        source = (package / f"{name}.py").read_text(encoding="utf-8")
        imported: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                imported.add(module if module.startswith("sdk.") else module.split(".")[0])
        assert imported <= allowed, name
    code = (
        "import sys, json; import sdk.analysis.stats; "
        "print(json.dumps([m for m in ('numpy', 'scipy') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_public_names() -> None:
    for name in stats.__all__:
        assert getattr(stats, name) is not None
    assert "RunningStats" in stats.__all__ and "welch_t_test" in stats.__all__
