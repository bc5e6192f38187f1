"""The results of the experiment reports and KPIs: msgspec Structs, camelCase on the wire,
with undefined numbers as null, and the helpers that fill them.

Must not import server or model_export.
"""

from __future__ import annotations

import math
from datetime import datetime

import msgspec


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of report Structs: immutable, camelCase; undefined numbers are null."""


class Interval(_Out, frozen=True, kw_only=True):
    """A two-sided confidence interval; both bounds null when undefined."""

    low: float | None
    high: float | None


class ArmStats(_Out, frozen=True, kw_only=True):
    """The numbers of one arm in one group (overall or a segment).

    ``orders`` and ``conversions`` count every conversion event; ``revenue`` (and revenue per
    visitor, its interval and the average order value over ``confirmedOrders``) counts only
    confirmed ones: ``POST /v1/conversions`` or events sent with a secret key. Values that
    browsers reported are summed apart in ``unconfirmedRevenue``: a public key is in every
    page, so they are claims, not revenue."""

    arm: str
    visitors: int
    impressions: int
    clicks: int
    ctr: float | None
    conversions: int
    conversion_rate: float | None
    conversion_rate_ci: Interval
    orders: int
    revenue: float
    revenue_per_visitor: float | None
    revenue_per_visitor_ci: Interval
    average_order_value: float | None
    confirmed_orders: int = 0
    unconfirmed_revenue: float = 0.0


class Comparison(_Out, frozen=True, kw_only=True):
    """One arm against the control in one group: treatment minus control."""

    arm: str
    control: str
    conversion_lift: float | None
    conversion_lift_ci: Interval
    conversion_relative_lift: float | None
    conversion_relative_lift_ci: Interval
    conversion_p_value: float | None
    significant: bool
    revenue_per_visitor_lift: float | None
    revenue_per_visitor_lift_ci: Interval
    revenue_per_visitor_relative_lift: float | None
    revenue_p_value: float | None
    revenue_significant: bool
    enough_data: bool
    warnings: list[str]


class SrmCheck(_Out, frozen=True, kw_only=True):
    """Sample-ratio mismatch: visitors per arm against the configured split."""

    expected_shares: dict[str, float]
    observed: dict[str, int]
    statistic: float | None
    p_value: float | None
    mismatch: bool


class GroupReport(_Out, frozen=True, kw_only=True):
    """An experiment's arms and comparisons among all its visitors (``segment`` null) or
    among one segment's."""

    segment: str | None
    visitors: int
    arms: list[ArmStats]
    comparisons: list[Comparison]
    srm: SrmCheck
    warnings: list[str]


class ExperimentReport(_Out, frozen=True, kw_only=True):
    """The report of one experiment (``holdout``: personalization against the holdout)."""

    experiment: str
    control: str
    arms: list[str]
    confidence: float
    visitors: int
    contaminated: int
    #: of ``visitors``, exposures logged without storage consent: each anonymous decision is
    #: one visitor of its own (:func:`sdk.logs.is_anonymous`)
    anonymous: int = 0
    first_exposure: datetime | None
    last_exposure: datetime | None
    overall: GroupReport
    segments: list[GroupReport]
    warnings: list[str]


class ArmCount(_Out, frozen=True, kw_only=True):
    """Visitors of one arm."""

    arm: str
    visitors: int


class ExperimentSummary(_Out, frozen=True, kw_only=True):
    """One line of the experiment list."""

    experiment: str
    control: str
    arms: list[ArmCount]
    visitors: int
    contaminated: int
    first_exposure: datetime | None
    last_exposure: datetime | None
    significant_arms: list[str]
    srm_mismatch: bool
    warnings: int


class ExperimentList(_Out, frozen=True, kw_only=True):
    """Every experiment of the log (and of the serving bundle's manifest), and what was read."""

    experiments: list[ExperimentSummary]
    files: int
    lines: int
    malformed_lines: int
    generated_at: datetime


class KpiPoint(_Out, frozen=True, kw_only=True):
    """One time bucket of one group; ``revenue`` is confirmed revenue only, browser-reported
    conversion values are in ``unconfirmedRevenue`` (see :class:`ArmStats`)."""

    bucket: datetime
    group: str
    visitors: int
    impressions: int
    clicks: int
    ctr: float | None
    conversions: int
    conversion_rate: float | None
    revenue: float
    revenue_per_visitor: float | None
    unconfirmed_revenue: float = 0.0


class KpiSeries(_Out, frozen=True, kw_only=True):
    """KPIs per time bucket and group, ordered by bucket then group; ``notes`` say what the
    numbers leave out (browser-reported revenue)."""

    by: str
    bucket: str
    groups: list[str]
    points: list[KpiPoint]
    notes: list[str] = []


# --- filling them ----------------------------------------------------------------------------


def finite(x: float | None) -> float | None:
    """A finite float, or None for NaN, infinities and None."""
    return x if x is not None and math.isfinite(x) else None


def interval(low: float | None, high: float | None) -> Interval:
    """The interval of two bounds; both null when either is not finite."""
    low, high = finite(low), finite(high)
    if low is None or high is None:
        return Interval(low=None, high=None)
    return Interval(low=low, high=high)


def ratio(a: float, b: float) -> float | None:
    """``a / b``, or None when ``b`` is 0."""
    return a / b if b else None
