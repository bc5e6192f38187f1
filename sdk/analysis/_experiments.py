"""Per-experiment statistics: one report per experiment, overall and per segment, with the
sample-ratio-mismatch check and every arm compared with the control.

Must not import server or model_export.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from sdk.analysis._design import HOLDOUT
from sdk.analysis._gather import UNCONFIRMED_NOTE, Cell, Log, aware, segment_order
from sdk.analysis._results import (
    ArmCount,
    ArmStats,
    Comparison,
    ExperimentReport,
    ExperimentSummary,
    GroupReport,
    Interval,
    SrmCheck,
    finite,
    interval,
    ratio,
)
from sdk.analysis.stats import (
    chi_square_2x2,
    chi_square_gof,
    diff_proportions,
    mean_ci,
    proportion_ci,
    small_sample_warning,
    welch_t_test,
)
from sdk.logs import LogRecord, is_anonymous

#: A sample-ratio-mismatch test below this p-value is flagged.
SRM_ALPHA = 0.001

_ARM_RE = re.compile(r"\barm ([01])\b")


def _named(text: str, names: tuple[str, str]) -> str:
    """``small_sample_warning`` numbers the arms (0 the control); name them instead."""
    return _ARM_RE.sub(lambda m: f"arm {names[int(m.group(1))]!r}", text)


def _arms_of(
    exp: str, observed: Iterable[str], weights: Mapping[str, float] | None, control: str | None
) -> tuple[list[str], str]:
    """The arms in report order (the control first) and the control."""
    declared = list(weights or {})
    extra = sorted(set(observed) - set(declared))
    arms = declared + extra
    if control is None:
        if exp == HOLDOUT:
            control = HOLDOUT
        elif declared:
            control = declared[0]
        elif "control" in arms:
            control = "control"
        else:
            control = arms[0] if arms else "control"
    if control not in arms:
        arms.insert(0, control)
    arms.remove(control)
    return [control, *arms], control


def _srm(
    arms: list[str], cells: Mapping[str, Cell], weights: Mapping[str, float] | None
) -> tuple[SrmCheck, str | None]:
    """The SRM check of one group and the warning about it, if any."""
    observed = {arm: cells[arm].visitors for arm in arms}
    note: str | None = None
    if weights and all(arm in weights for arm in arms):
        split = {arm: max(float(weights[arm]), 0.0) for arm in arms}
    else:
        split = dict.fromkeys(arms, 1.0)
        if weights:
            note = "arms outside the configured split were seen: SRM assumes equal arms"
    total_weight = sum(split.values())
    shares = {arm: (w / total_weight if total_weight else 0.0) for arm, w in split.items()}
    tested = [arm for arm in arms if split[arm] > 0]
    statistic: float | None = None
    p_value: float | None = None
    mismatch = any(split[arm] == 0 and observed[arm] > 0 for arm in arms)
    if len(tested) >= 2 and sum(observed[a] for a in tested) > 0:
        result = chi_square_gof([observed[a] for a in tested], [split[a] for a in tested])
        statistic, p_value = finite(result.statistic), finite(result.p_value)
        mismatch = mismatch or (p_value is not None and p_value < SRM_ALPHA)
    check = SrmCheck(
        expected_shares=shares,
        observed=observed,
        statistic=statistic,
        p_value=p_value,
        mismatch=mismatch,
    )
    if mismatch:
        seen = ", ".join(f"{a} {observed[a]}" for a in arms)
        want = ", ".join(f"{a} {shares[a]:.1%}" for a in arms)
        p_text = (
            f"p = {p_value:.2g}" if p_value is not None else "an arm without weight has visitors"
        )
        note = (
            f"sample-ratio mismatch ({p_text}): visitors {seen} against the configured split "
            f"{want}; assignment or logging is broken, do not trust this experiment's results"
        )
    return check, note


def _arm_stats(arm: str, cell: Cell, confidence: float) -> ArmStats:
    n = cell.visitors
    rpv = cell.rpv
    rpv_ci = (
        mean_ci(rpv.mean, rpv.variance, rpv.count, confidence) if n >= 2 else (math.nan, math.nan)
    )
    return ArmStats(
        arm=arm,
        visitors=n,
        impressions=cell.impressions,
        clicks=cell.clicks,
        ctr=ratio(cell.clicks, cell.impressions),
        conversions=cell.conversions,
        conversion_rate=ratio(cell.conversions, n),
        conversion_rate_ci=interval(*proportion_ci(cell.conversions, n, confidence)),
        orders=cell.orders,
        confirmed_orders=cell.confirmed_orders,
        revenue=cell.revenue,
        revenue_per_visitor=ratio(cell.revenue, n),
        revenue_per_visitor_ci=interval(*rpv_ci),
        average_order_value=ratio(cell.revenue, cell.confirmed_orders),
        unconfirmed_revenue=cell.unconfirmed_revenue,
    )


def _compare(
    arm: str,
    control: str,
    a: Cell,
    c: Cell,
    confidence: float,
    min_visitors: int,
    min_conversions: int,
) -> Comparison:
    alpha = 1.0 - confidence
    diff = diff_proportions(c.conversions, c.visitors, a.conversions, a.visitors, confidence)
    chi = chi_square_2x2(c.conversions, c.visitors, a.conversions, a.visitors)
    p_conv = finite(chi.p_value)
    ra, rc = a.rpv, c.rpv
    if ra.count >= 2 and rc.count >= 2:
        welch = welch_t_test(
            rc.mean, rc.variance, rc.count, ra.mean, ra.variance, ra.count, confidence
        )
        rev_diff, rev_ci, p_rev = finite(welch.diff), interval(welch.low, welch.high), welch.p_value
    else:
        rev_diff, rev_ci, p_rev = None, Interval(low=None, high=None), math.nan
    if rev_diff is None and ra.count and rc.count:
        rev_diff = ra.mean - rc.mean
    control_rpv = rc.mean if rc.count else math.nan
    warning = small_sample_warning(
        [c.visitors, a.visitors],
        [c.conversions, a.conversions],
        min_visitors=min_visitors,
        min_conversions=min_conversions,
        alpha=alpha,
    )
    warnings = [_named(w, (control, arm)) for w in warning.split("; ")] if warning else []
    p_rev_num = finite(p_rev)
    return Comparison(
        arm=arm,
        control=control,
        conversion_lift=finite(diff.diff),
        conversion_lift_ci=interval(diff.low, diff.high),
        conversion_relative_lift=finite(diff.relative_lift),
        conversion_relative_lift_ci=interval(diff.relative_low, diff.relative_high),
        conversion_p_value=p_conv,
        significant=p_conv is not None and p_conv < alpha,
        revenue_per_visitor_lift=rev_diff,
        revenue_per_visitor_lift_ci=rev_ci,
        revenue_per_visitor_relative_lift=(
            finite(rev_diff / control_rpv) if rev_diff is not None and control_rpv else None
        ),
        revenue_p_value=p_rev_num,
        revenue_significant=p_rev_num is not None and p_rev_num < alpha,
        enough_data=not warnings,
        warnings=warnings,
    )


def _group(
    segment: str | None,
    arms: list[str],
    cells: Mapping[str, Cell],
    weights: Mapping[str, float] | None,
    confidence: float,
    min_visitors: int,
    min_conversions: int,
) -> GroupReport:
    control = arms[0]
    srm, srm_note = _srm(arms, cells, weights)
    comparisons = [
        _compare(
            arm, control, cells[arm], cells[control], confidence, min_visitors, min_conversions
        )
        for arm in arms[1:]
    ]
    warnings = [srm_note] if srm_note else []
    for comparison in comparisons:
        warnings.extend(w for w in comparison.warnings if w not in warnings)
    return GroupReport(
        segment=segment,
        visitors=sum(cells[arm].visitors for arm in arms),
        arms=[_arm_stats(arm, cells[arm], confidence) for arm in arms],
        comparisons=comparisons,
        srm=srm,
        warnings=warnings,
    )


def experiment_reports(
    records: Iterable[LogRecord],
    *,
    weights: Mapping[str, Mapping[str, float]] | None = None,
    controls: Mapping[str, str] | None = None,
    confidence: float = 0.95,
    min_visitors: int = 100,
    min_conversions: int = 10,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[ExperimentReport]:
    """One report per experiment of the log, and per experiment of ``weights``.

    Args:
        records: log records (:func:`sdk.logs.read_log`).
        weights: experiment -> arm -> weight of the configured split (:func:`design_of`); the
            arms are reported in this order and used for the SRM check. Unknown: equal split.
        controls: experiment -> control arm. Unknown: the first arm of ``weights``, else
            ``holdout`` for the holdout, else an arm named ``control``, else the first arm by
            name.
        confidence: two-sided confidence level of every interval; ``alpha = 1 - confidence``.
        min_visitors: fewer visitors in an arm than this makes a comparison inconclusive.
        min_conversions: likewise for conversions.
        start: ignore records before this time (timezone-aware; naive means UTC).
        end: ignore records at or after this time.

    Returns:
        Reports ordered by experiment key, the holdout first.

    Raises:
        ValueError: ``confidence`` is not in (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    weights = weights or {}
    controls = controls or {}
    log = Log.gather(records, aware(start), aware(end))
    keys = sorted(set(log.exposures) | set(weights), key=lambda k: (k != HOLDOUT, k))
    reports = []
    for exp in keys:
        exposures = log.exposures.get(exp, {})
        clean = {v: x for v, x in exposures.items() if len(x.arms) == 1}
        contaminated = len(exposures) - len(clean)
        observed = {next(iter(x.arms)) for x in clean.values()}
        arms, control = _arms_of(exp, observed, weights.get(exp), controls.get(exp))
        segments = sorted({x.segment for x in clean.values()}, key=segment_order)
        cells: dict[str | None, dict[str, Cell]] = {
            group: {arm: Cell() for arm in arms} for group in [None, *segments]
        }
        for visitor, x in clean.items():
            arm = next(iter(x.arms))
            orders = confirmed = 0
            revenue = unconfirmed = 0.0
            for conv in log.conversions.get(visitor, ()):
                ref = log.decisions.get(conv.decision) if conv.decision else None
                attached = ref is not None and ref.visitor == visitor and exp in ref.arms
                if conv.when >= x.first or attached:
                    orders += 1
                    if conv.trusted:
                        confirmed += 1
                        revenue += conv.value
                    else:
                        unconfirmed += conv.value
            for group in (None, x.segment):
                cell = cells[group][arm]
                cell.visitors += 1
                cell.orders += orders
                cell.confirmed_orders += confirmed
                cell.conversions += orders > 0
                cell.revenue += revenue
                cell.unconfirmed_revenue += unconfirmed
                cell.rpv.add(revenue)
        prefix = exp + ":"
        for kind, decision_id, slot, visitor in log.interactions:
            ref = log.decisions.get(decision_id)
            seen = clean.get(visitor)
            if ref is None or seen is None or ref.visitor != visitor or exp not in ref.arms:
                continue
            if exp != HOLDOUT and not (slot and ref.slot_arms.get(slot, "").startswith(prefix)):
                continue
            arm = ref.arms[exp]
            if arm not in seen.arms:
                continue
            for group in (None, seen.segment):
                cell = cells[group][arm]
                if kind == "impression":
                    cell.impressions += 1
                else:
                    cell.clicks += 1
        w = weights.get(exp)
        groups = [
            _group(g, arms, cells[g], w, confidence, min_visitors, min_conversions)
            for g in [None, *segments]
        ]
        overall = groups[0]
        warnings = list(overall.warnings)
        if not clean:
            warnings.insert(0, "no visitors exposed yet")
        if contaminated:
            warnings.append(
                f"{contaminated} visitors were exposed to more than one arm and are left out "
                "(sticky assignment broken: changed weights, seeds or visitor ids?)"
            )
        anonymous = sum(1 for v in clean if is_anonymous(v))
        if anonymous:
            warnings.append(
                f"{anonymous} exposures were logged without storage consent and count as one "
                "visitor each (no id joins a visitor's decisions)"
            )
        unconfirmed = sum(a.unconfirmed_revenue for a in overall.arms)
        if unconfirmed > 0:
            warnings.append(UNCONFIRMED_NOTE.format(amount=unconfirmed))
        if len(log.currencies) > 1:
            warnings.append(
                "revenue adds up values in several currencies: " + ", ".join(sorted(log.currencies))
            )
        reports.append(
            ExperimentReport(
                experiment=exp,
                control=control,
                arms=arms,
                confidence=confidence,
                visitors=len(clean),
                contaminated=contaminated,
                anonymous=anonymous,
                first_exposure=min((x.first for x in exposures.values()), default=None),
                last_exposure=max((x.last for x in exposures.values()), default=None),
                overall=overall,
                segments=groups[1:],
                warnings=warnings,
            )
        )
    return reports


def summarize(report: ExperimentReport) -> ExperimentSummary:
    """The line of the experiment list for a report."""
    return ExperimentSummary(
        experiment=report.experiment,
        control=report.control,
        arms=[ArmCount(arm=a.arm, visitors=a.visitors) for a in report.overall.arms],
        visitors=report.visitors,
        contaminated=report.contaminated,
        first_exposure=report.first_exposure,
        last_exposure=report.last_exposure,
        significant_arms=[c.arm for c in report.overall.comparisons if c.significant],
        srm_mismatch=report.overall.srm.mismatch,
        warnings=len(report.warnings),
    )
