"""Experiment reports from the event log: exposures, rates, revenue, lifts and their tests.

:func:`read_log` reads the JSON Lines files of ``server.eventlog`` (a directory or files);
:func:`experiment_reports` turns ``kind: decision`` and ``kind: event`` records into one
:class:`ExperimentReport` per experiment (the global holdout is the experiment ``holdout``
with control ``holdout``), overall and per segment; :func:`kpis_over_time` gives visitors,
click-through, conversion and revenue per visitor per day (or hour) and segment. Results are
msgspec Structs (camelCase on the wire); the server's ``/v1/reports/...`` routes, ``tailor
report`` and the dashboard all show these numbers.

Definitions (per experiment; "exposed" visitors are the unit of analysis):

* **Exposure**: a decision line whose ``experiment`` maps the experiment to an arm. A visitor's
  first exposure is the earliest such line; their **segment** is the one of that line (taken
  when the arm was assigned, so the treatment cannot change it). A visitor exposed to two arms
  of one experiment is **contaminated**: counted in no arm, reported in ``contaminated``.
* **Visitors**: distinct exposed, uncontaminated visitor ids per arm.
* **Impressions / clicks**: distinct (decision, slot) pairs with an ``impression`` / ``click``
  event on a decision of that arm, on the slots the experiment decided (the slots the decision
  labels ``experiment:arm``; every slot for the holdout, which decides them all). **CTR** =
  clicks / impressions.
* **Conversions**: visitors with at least one ``conversion`` event at or after their first
  exposure (or attached to one of their exposure decisions, whatever its timestamp);
  **conversion rate** = conversions / visitors. **Orders**: those conversion events;
  **revenue**: the sum of their ``value``; **revenue per visitor** (RPV) = revenue / visitors;
  **average order value** (AOV) = revenue / orders.

Statistics (:mod:`sdk.analysis.stats`; two-sided, at ``confidence``, ``alpha = 1 - confidence``):

* conversion rate: Wilson interval; each arm against the control: absolute lift with Newcombe's
  interval, relative lift with Katz's log risk-ratio interval, Pearson's chi-square test of the
  2x2 table (``significant`` when ``p < alpha``);
* revenue per visitor: t interval; against the control Welch's t-test and interval on
  per-visitor revenue (zeros for visitors who did not buy; ``revenueSignificant``);
* sample-ratio mismatch: chi-square goodness of fit of visitors per arm against the
  configured split (arm weights; equal when unknown), flagged when ``p < 0.001``;
* warnings: too few visitors or conversions to conclude (:func:`sdk.analysis.stats.small_sample_warning`),
  sample-ratio mismatch, contamination, revenue in several currencies.

The tests assume independent visitors and fixed sample sizes: looking at a report every day
and stopping at the first significant result inflates false positives, and every segment and
every extra arm is one more comparison (with 6 segments, expect about ``6 * alpha`` false
positives in an A/A test). Read segment results as exploratory.

Must import only the standard library, msgspec and ``sdk.analysis.stats`` (``sdk.manifest`` for type
checking); ``import sdk`` does not import this module.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from sdk.analysis.stats import (
    RunningStats,
    chi_square_2x2,
    chi_square_gof,
    diff_proportions,
    mean_ci,
    proportion_ci,
    small_sample_warning,
    welch_t_test,
)

if TYPE_CHECKING:
    from sdk.manifest import Manifest

__all__ = [
    "HOLDOUT",
    "SRM_ALPHA",
    "ArmCount",
    "ArmStats",
    "Comparison",
    "ExperimentList",
    "ExperimentReport",
    "ExperimentSummary",
    "GroupReport",
    "Interval",
    "KpiPoint",
    "KpiSeries",
    "LogReader",
    "SrmCheck",
    "design_of",
    "experiment_reports",
    "kpis_over_time",
    "read_log",
    "summarize",
]

#: The experiment key (and control arm) of the global holdout (see ``sdk._policy``).
HOLDOUT = "holdout"
_PERSONALIZED = "personalized"
#: A sample-ratio-mismatch test below this p-value is flagged.
SRM_ALPHA = 0.001
#: The group key of visitors whose decision had no segment (no consent: no profile).
UNKNOWN_SEGMENT = "unknown"
_REPORTED_EVENTS = frozenset({"impression", "click", "conversion"})


# --- results --------------------------------------------------------------------------------


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of report Structs: immutable, camelCase; undefined numbers are null."""


class Interval(_Out, frozen=True, kw_only=True):
    """A two-sided confidence interval; both bounds null when undefined."""

    low: float | None
    high: float | None


class ArmStats(_Out, frozen=True, kw_only=True):
    """The numbers of one arm in one group (overall or a segment)."""

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
    """One time bucket of one group."""

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


class KpiSeries(_Out, frozen=True, kw_only=True):
    """KPIs per time bucket and group, ordered by bucket then group."""

    by: str
    bucket: str
    groups: list[str]
    points: list[KpiPoint]


# --- reading the log --------------------------------------------------------------------------

_decoder = msgspec.json.Decoder()


class LogReader:
    """The records of event log files, in file order; iterate it (more than once if needed).

    Directories contribute their ``*.jsonl`` files (not hidden ones), sorted by name, which for
    ``server.eventlog`` is the order they were opened. Blank lines are skipped; lines that are
    not a JSON object (a torn last line after a crash, a line being written) are skipped and
    counted in :attr:`malformed`.

    Attributes:
        files: the files read by the last iteration.
        lines: the non-blank lines read by the last iteration.
        malformed: the lines skipped as malformed by the last iteration.
    """

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.files: list[Path] = []
        self.lines = 0
        self.malformed = 0

    def _files(self) -> list[Path]:
        found: list[Path] = []
        for path in self.paths:
            if path.is_dir():
                found.extend(
                    sorted(
                        p
                        for p in path.iterdir()
                        if p.suffix == ".jsonl" and not p.name.startswith(".") and p.is_file()
                    )
                )
            elif path.is_file():
                found.append(path)
        return found

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.files = self._files()
        self.lines = 0
        self.malformed = 0
        for path in self.files:
            try:
                fh = path.open("rb")
            except (FileNotFoundError, PermissionError):
                continue  # rotated away or purged meanwhile
            with fh:
                for line in fh:
                    if not line.strip():
                        continue
                    self.lines += 1
                    try:
                        record = _decoder.decode(line)
                    except msgspec.DecodeError:
                        self.malformed += 1
                        continue
                    if not isinstance(record, dict):
                        self.malformed += 1
                        continue
                    yield record


def read_log(paths: str | Path | Iterable[str | Path]) -> LogReader:
    """The records (dicts) of a log directory, of log files, or of several of either.

    Returns:
        A :class:`LogReader`; after iterating it, ``malformed`` counts the skipped lines.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    return LogReader(paths)


# --- the design of the experiments -----------------------------------------------------------


def design_of(manifest: Manifest) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """The arm weights and control arms of a bundle's experiments and holdout.

    Returns:
        ``(weights, controls)``: experiment key -> arm -> weight (manifest order, the first arm
        being the control unless ``control`` names another), and experiment key -> control
        arm. The holdout is ``{"holdout": share, "personalized": 1 - share}`` with control
        ``holdout``. Coverage scales every arm alike, so it does not change the split.
    """
    weights: dict[str, dict[str, float]] = {}
    controls: dict[str, str] = {}
    for exp in manifest.experiments:
        weights[exp.key] = {arm.key: float(arm.weight) for arm in exp.arms}
        controls[exp.key] = exp.control or exp.arms[0].key
    if manifest.holdout is not None and manifest.holdout.share > 0:
        share = float(manifest.holdout.share)
        weights[HOLDOUT] = {HOLDOUT: share, _PERSONALIZED: 1.0 - share}
        controls[HOLDOUT] = HOLDOUT
    return weights, controls


# --- helpers ----------------------------------------------------------------------------------


def _num(x: float | None) -> float | None:
    """A finite float, or None for NaN, infinities and None."""
    return x if x is not None and math.isfinite(x) else None


def _interval(low: float | None, high: float | None) -> Interval:
    low, high = _num(low), _num(high)
    if low is None or high is None:
        return Interval(low=None, high=None)
    return Interval(low=low, high=high)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _kind(record: Mapping[str, Any]) -> Any:
    return record.get("kind", record.get("type"))


def _segment_key(value: Any) -> str:
    if value is None or value == "":
        return UNKNOWN_SEGMENT
    return str(value)


def _segment_order(key: str) -> tuple[int, float, str]:
    if key == UNKNOWN_SEGMENT:
        return (2, 0.0, key)
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def _value(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


_ARM_RE = re.compile(r"\barm ([01])\b")


def _named(text: str, names: tuple[str, str]) -> str:
    """``small_sample_warning`` numbers the arms (0 the control); name them instead."""
    return _ARM_RE.sub(lambda m: f"arm {names[int(m.group(1))]!r}", text)


# --- accumulation -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Exposure:
    """One visitor in one experiment."""

    arms: set[str]
    first: datetime
    last: datetime
    segment: str


@dataclass(slots=True)
class _DecisionRef:
    """What an event needs of the decision it names."""

    visitor: str
    arms: dict[str, str]
    slot_arms: dict[str, str]


@dataclass(slots=True)
class _Conversion:
    when: datetime
    value: float
    decision: str | None


@dataclass(slots=True)
class _Cell:
    """Running totals of one (group, arm)."""

    visitors: int = 0
    conversions: int = 0
    orders: int = 0
    revenue: float = 0.0
    impressions: int = 0
    clicks: int = 0
    rpv: RunningStats = field(default_factory=RunningStats)


def _in_window(when: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or when >= start) and (end is None or when < end)


@dataclass
class _Log:
    """The parts of the log the reports need, gathered in one pass."""

    exposures: dict[str, dict[str, _Exposure]] = field(default_factory=lambda: defaultdict(dict))
    decisions: dict[str, _DecisionRef] = field(default_factory=dict)
    conversions: dict[str, list[_Conversion]] = field(default_factory=lambda: defaultdict(list))
    #: (event type, decision id, slot, visitor): impressions and clicks, deduplicated
    interactions: set[tuple[str, str, str | None, str]] = field(default_factory=set)
    currencies: set[str] = field(default_factory=set)

    @classmethod
    def gather(
        cls, records: Iterable[Mapping[str, Any]], start: datetime | None, end: datetime | None
    ) -> _Log:
        log = cls()
        for record in records:
            kind = _kind(record)
            if kind == "decision":
                log._decision(record, start, end)
            elif kind == "event":
                log._event(record, start, end)
        return log

    def _decision(
        self, record: Mapping[str, Any], start: datetime | None, end: datetime | None
    ) -> None:
        arms = record.get("experiment")
        visitor = record.get("visitorId")
        when = _time(record.get("timestamp"))
        if not arms or not isinstance(arms, dict) or not isinstance(visitor, str) or when is None:
            return
        if not _in_window(when, start, end):
            return
        segment = _segment_key(record.get("segment"))
        arms = {str(k): str(v) for k, v in arms.items()}
        for exp, arm in arms.items():
            seen = self.exposures[exp].get(visitor)
            if seen is None:
                self.exposures[exp][visitor] = _Exposure({arm}, when, when, segment)
                continue
            seen.arms.add(arm)
            if when < seen.first:
                seen.first, seen.segment = when, segment
            seen.last = max(seen.last, when)
        decision_id = record.get("decisionId")
        if isinstance(decision_id, str):
            slot_arms: dict[str, str] = {}
            slots = record.get("slots")
            if isinstance(slots, dict):
                for name, slot in slots.items():
                    label = slot.get("arm") if isinstance(slot, dict) else None
                    if isinstance(label, str):
                        slot_arms[str(name)] = label
            self.decisions[decision_id] = _DecisionRef(visitor, arms, slot_arms)

    def _event(
        self, record: Mapping[str, Any], start: datetime | None, end: datetime | None
    ) -> None:
        kind = record.get("type")
        visitor = record.get("visitorId")
        if kind not in _REPORTED_EVENTS or not isinstance(visitor, str):
            return
        when = _time(record.get("timestamp"))
        if when is None or not _in_window(when, start, end):
            return
        decision = record.get("decisionId")
        decision = decision if isinstance(decision, str) else None
        if kind == "conversion":
            self.conversions[visitor].append(
                _Conversion(when, _value(record.get("value")), decision)
            )
            currency = record.get("currency")
            if isinstance(currency, str) and currency:
                self.currencies.add(currency.upper())
        elif decision is not None:
            slot = record.get("slot")
            self.interactions.add(
                (kind, decision, slot if isinstance(slot, str) else None, visitor)
            )


# --- reports ------------------------------------------------------------------------------------


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
    arms: list[str], cells: Mapping[str, _Cell], weights: Mapping[str, float] | None
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
        statistic, p_value = _num(result.statistic), _num(result.p_value)
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


def _arm_stats(arm: str, cell: _Cell, confidence: float) -> ArmStats:
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
        ctr=_ratio(cell.clicks, cell.impressions),
        conversions=cell.conversions,
        conversion_rate=_ratio(cell.conversions, n),
        conversion_rate_ci=_interval(*proportion_ci(cell.conversions, n, confidence)),
        orders=cell.orders,
        revenue=cell.revenue,
        revenue_per_visitor=_ratio(cell.revenue, n),
        revenue_per_visitor_ci=_interval(*rpv_ci),
        average_order_value=_ratio(cell.revenue, cell.orders),
    )


def _compare(
    arm: str,
    control: str,
    a: _Cell,
    c: _Cell,
    confidence: float,
    min_visitors: int,
    min_conversions: int,
) -> Comparison:
    alpha = 1.0 - confidence
    diff = diff_proportions(c.conversions, c.visitors, a.conversions, a.visitors, confidence)
    chi = chi_square_2x2(c.conversions, c.visitors, a.conversions, a.visitors)
    p_conv = _num(chi.p_value)
    ra, rc = a.rpv, c.rpv
    if ra.count >= 2 and rc.count >= 2:
        welch = welch_t_test(
            rc.mean, rc.variance, rc.count, ra.mean, ra.variance, ra.count, confidence
        )
        rev_diff, rev_ci, p_rev = _num(welch.diff), _interval(welch.low, welch.high), welch.p_value
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
    p_rev_num = _num(p_rev)
    return Comparison(
        arm=arm,
        control=control,
        conversion_lift=_num(diff.diff),
        conversion_lift_ci=_interval(diff.low, diff.high),
        conversion_relative_lift=_num(diff.relative_lift),
        conversion_relative_lift_ci=_interval(diff.relative_low, diff.relative_high),
        conversion_p_value=p_conv,
        significant=p_conv is not None and p_conv < alpha,
        revenue_per_visitor_lift=rev_diff,
        revenue_per_visitor_lift_ci=rev_ci,
        revenue_per_visitor_relative_lift=(
            _num(rev_diff / control_rpv) if rev_diff is not None and control_rpv else None
        ),
        revenue_p_value=p_rev_num,
        revenue_significant=p_rev_num is not None and p_rev_num < alpha,
        enough_data=not warnings,
        warnings=warnings,
    )


def _group(
    segment: str | None,
    arms: list[str],
    cells: Mapping[str, _Cell],
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
    records: Iterable[Mapping[str, Any]],
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
        records: log records as dicts (:func:`read_log`, or built by hand in the same shape).
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
    log = _Log.gather(records, _aware(start), _aware(end))
    keys = sorted(set(log.exposures) | set(weights), key=lambda k: (k != HOLDOUT, k))
    reports = []
    for exp in keys:
        exposures = log.exposures.get(exp, {})
        clean = {v: x for v, x in exposures.items() if len(x.arms) == 1}
        contaminated = len(exposures) - len(clean)
        observed = {next(iter(x.arms)) for x in clean.values()}
        arms, control = _arms_of(exp, observed, weights.get(exp), controls.get(exp))
        segments = sorted({x.segment for x in clean.values()}, key=_segment_order)
        cells: dict[str | None, dict[str, _Cell]] = {
            group: {arm: _Cell() for arm in arms} for group in [None, *segments]
        }
        for visitor, x in clean.items():
            arm = next(iter(x.arms))
            orders = 0
            revenue = 0.0
            for conv in log.conversions.get(visitor, ()):
                ref = log.decisions.get(conv.decision) if conv.decision else None
                attached = ref is not None and ref.visitor == visitor and exp in ref.arms
                if conv.when >= x.first or attached:
                    orders += 1
                    revenue += conv.value
            for group in (None, x.segment):
                cell = cells[group][arm]
                cell.visitors += 1
                cell.orders += orders
                cell.conversions += orders > 0
                cell.revenue += revenue
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


# --- KPIs over time -----------------------------------------------------------------------------

_GROUPINGS = {"segment": "segment", "persona": "persona", "lifecycle": "lifecycle"}
_BUCKETS = {"day": timedelta(days=1), "hour": timedelta(hours=1)}


def _bucket_of(when: datetime, bucket: str) -> datetime:
    utc = when.astimezone(UTC)
    if bucket == "day":
        return utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return utc.replace(minute=0, second=0, microsecond=0)


def kpis_over_time(
    records: Iterable[Mapping[str, Any]],
    *,
    by: Literal["segment", "persona", "lifecycle"] = "segment",
    bucket: Literal["day", "hour"] = "day",
    start: datetime | None = None,
    end: datetime | None = None,
) -> KpiSeries:
    """Visitors, CTR, conversion rate and revenue per visitor per UTC day (or hour) and group.

    A bucket's visitors are those with a decision or an event in it; each is counted in one
    group, that of their latest decision before the bucket ends (else of their first
    decision; ``unknown`` without any). Impressions and clicks are distinct (decision, slot)
    pairs with such events in the bucket; conversions are visitors with a conversion event in
    the bucket; revenue sums those events' values.

    Args:
        records: log records as dicts.
        by: the decision field that groups visitors.
        bucket: ``day`` or ``hour`` (UTC).
        start: ignore records before this time.
        end: ignore records at or after this time.

    Raises:
        ValueError: an unknown ``by`` or ``bucket``.
    """
    if by not in _GROUPINGS:
        raise ValueError(f"by must be one of {sorted(_GROUPINGS)}, got {by!r}")
    if bucket not in _BUCKETS:
        raise ValueError(f"bucket must be one of {sorted(_BUCKETS)}, got {bucket!r}")
    start, end = _aware(start), _aware(end)
    field_name = _GROUPINGS[by]
    # visitor -> [(time, group)] of decisions; bucket -> visitor -> activity
    history: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    active: dict[datetime, set[str]] = defaultdict(set)
    interactions: dict[datetime, set[tuple[str, str, str | None, str]]] = defaultdict(set)
    buys: dict[datetime, dict[str, float]] = defaultdict(dict)
    for record in records:
        kind = _kind(record)
        visitor = record.get("visitorId")
        when = _time(record.get("timestamp"))
        if not isinstance(visitor, str) or when is None or not _in_window(when, start, end):
            continue
        b = _bucket_of(when, bucket)
        if kind == "decision":
            history[visitor].append((when, _segment_key(record.get(field_name))))
            active[b].add(visitor)
        elif kind == "event":
            etype = record.get("type")
            active[b].add(visitor)
            if etype == "conversion":
                buys[b][visitor] = buys[b].get(visitor, 0.0) + _value(record.get("value"))
            elif etype in ("impression", "click"):
                decision = record.get("decisionId")
                slot = record.get("slot")
                interactions[b].add(
                    (
                        str(etype),
                        decision if isinstance(decision, str) else "",
                        slot if isinstance(slot, str) else None,
                        visitor,
                    )
                )
    for decisions in history.values():
        decisions.sort(key=lambda item: item[0])
    times = {v: [t for t, _ in d] for v, d in history.items()}
    step = _BUCKETS[bucket]

    def group_of(visitor: str, bucket_end: datetime) -> str:
        decisions = history.get(visitor)
        if not decisions:
            return UNKNOWN_SEGMENT
        i = bisect_right(times[visitor], bucket_end) - 1
        return decisions[max(i, 0)][1]

    points: list[KpiPoint] = []
    groups: set[str] = set()
    for b in sorted(active):
        bucket_end = b + step - timedelta(microseconds=1)
        cells: dict[str, _Cell] = defaultdict(_Cell)
        member = {v: group_of(v, bucket_end) for v in active[b]}
        for visitor, group in member.items():
            cell = cells[group]
            cell.visitors += 1
            if visitor in buys[b]:
                cell.conversions += 1
                cell.revenue += buys[b][visitor]
        for kind, _, _, visitor in interactions[b]:
            cell = cells[member[visitor]]
            if kind == "impression":
                cell.impressions += 1
            else:
                cell.clicks += 1
        for group in sorted(cells, key=_segment_order):
            cell = cells[group]
            groups.add(group)
            points.append(
                KpiPoint(
                    bucket=b,
                    group=group,
                    visitors=cell.visitors,
                    impressions=cell.impressions,
                    clicks=cell.clicks,
                    ctr=_ratio(cell.clicks, cell.impressions),
                    conversions=cell.conversions,
                    conversion_rate=_ratio(cell.conversions, cell.visitors),
                    revenue=cell.revenue,
                    revenue_per_visitor=_ratio(cell.revenue, cell.visitors),
                )
            )
    return KpiSeries(by=by, bucket=bucket, groups=sorted(groups, key=_segment_order), points=points)
