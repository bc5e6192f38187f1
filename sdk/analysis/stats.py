"""Dependency-free statistics for the experiment reports: distributions, intervals and tests
of proportions and means, chi-square tests, sample sizes and small-sample warnings. This
module is the public surface; the functions live in the private modules of this package.

Must not import anything but the standard library and this package's statistics modules
(never numpy or scipy), and never server or model_export.
"""

from __future__ import annotations

from sdk.analysis._chisquare import (
    ChiSquareResult,
    chi_square_2x2,
    chi_square_gof,
    chi_square_independence,
)
from sdk.analysis._distributions import (
    chi2_cdf,
    chi2_sf,
    normal_cdf,
    normal_pdf,
    normal_ppf,
    normal_sf,
    t_cdf,
    t_pdf,
    t_ppf,
    t_sf,
)
from sdk.analysis._means import (
    RunningStats,
    WelchResult,
    mean_ci,
    welch_from_samples,
    welch_t_test,
)
from sdk.analysis._planning import min_sample_size, small_sample_warning
from sdk.analysis._proportions import ProportionDiff, diff_proportions, proportion_ci
from sdk.analysis._special import beta_inc, gamma_inc_lower, gamma_inc_upper

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
