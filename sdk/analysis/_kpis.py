"""KPIs over time: visitors, click-through, conversion and revenue per visitor per UTC day
or hour and group of visitors.

Must not import server or model_export.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from sdk.analysis._gather import (
    UNCONFIRMED_NOTE,
    UNKNOWN_SEGMENT,
    Cell,
    aware,
    in_window,
    segment_key,
    segment_order,
    value_of,
)
from sdk.analysis._results import KpiPoint, KpiSeries, ratio
from sdk.logs import DecisionRecord, ErasureRecord, LogRecord

#: The decision field that groups visitors, by name.
_GROUPINGS: dict[str, Callable[[DecisionRecord], int | str | None]] = {
    "segment": lambda r: r.segment,
    "persona": lambda r: r.persona,
    "lifecycle": lambda r: r.lifecycle,
}
_BUCKETS = {"day": timedelta(days=1), "hour": timedelta(hours=1)}


def _bucket_of(when: datetime, bucket: str) -> datetime:
    utc = when.astimezone(UTC)
    if bucket == "day":
        return utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return utc.replace(minute=0, second=0, microsecond=0)


def kpis_over_time(
    records: Iterable[LogRecord],
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
    the bucket; revenue sums the values of the confirmed ones (``trusted``: sent by the site's
    backend), and ``unconfirmedRevenue`` those browsers reported.

    Args:
        records: log records (:func:`sdk.logs.read_log`).
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
    start, end = aware(start), aware(end)
    group_field = _GROUPINGS[by]
    # visitor -> [(time, group)] of decisions; bucket -> visitor -> activity
    history: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    active: dict[datetime, set[str]] = defaultdict(set)
    interactions: dict[datetime, set[tuple[str, str, str | None, str]]] = defaultdict(set)
    buys: dict[datetime, dict[str, float]] = defaultdict(dict)
    claimed: dict[datetime, dict[str, float]] = defaultdict(dict)
    for record in records:
        if isinstance(record, ErasureRecord):
            continue
        when = aware(record.timestamp)
        if not in_window(when, start, end):
            continue
        b = _bucket_of(when, bucket)
        visitor = record.visitor_id
        active[b].add(visitor)
        if isinstance(record, DecisionRecord):
            history[visitor].append((when, segment_key(group_field(record))))
        elif record.type == "conversion":
            # every conversion makes a buyer; only a confirmed one's value is revenue
            buys[b][visitor] = buys[b].get(visitor, 0.0) + (
                value_of(record.value) if record.trusted else 0.0
            )
            if not record.trusted:
                claimed[b][visitor] = claimed[b].get(visitor, 0.0) + value_of(record.value)
        elif record.type in ("impression", "click"):
            interactions[b].add((record.type, record.decision_id or "", record.slot, visitor))
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
        cells: dict[str, Cell] = defaultdict(Cell)
        member = {v: group_of(v, bucket_end) for v in active[b]}
        for visitor, group in member.items():
            cell = cells[group]
            cell.visitors += 1
            if visitor in buys[b]:
                cell.conversions += 1
                cell.revenue += buys[b][visitor]
                cell.unconfirmed_revenue += claimed[b].get(visitor, 0.0)
        for kind, _, _, visitor in interactions[b]:
            cell = cells[member[visitor]]
            if kind == "impression":
                cell.impressions += 1
            else:
                cell.clicks += 1
        for group in sorted(cells, key=segment_order):
            cell = cells[group]
            groups.add(group)
            points.append(
                KpiPoint(
                    bucket=b,
                    group=group,
                    visitors=cell.visitors,
                    impressions=cell.impressions,
                    clicks=cell.clicks,
                    ctr=ratio(cell.clicks, cell.impressions),
                    conversions=cell.conversions,
                    conversion_rate=ratio(cell.conversions, cell.visitors),
                    revenue=cell.revenue,
                    revenue_per_visitor=ratio(cell.revenue, cell.visitors),
                    unconfirmed_revenue=cell.unconfirmed_revenue,
                )
            )
    unconfirmed = sum(p.unconfirmed_revenue for p in points)
    return KpiSeries(
        by=by,
        bucket=bucket,
        groups=sorted(groups, key=segment_order),
        points=points,
        notes=[UNCONFIRMED_NOTE.format(amount=unconfirmed)] if unconfirmed > 0 else [],
    )
