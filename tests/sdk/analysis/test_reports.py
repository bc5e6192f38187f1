"""Experiment reports on small hand-built logs with known answers (sdk.analysis.reports)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from sdk.analysis import reports, stats
from sdk.analysis.reports import (
    ExperimentReport,
    experiment_reports,
    kpis_over_time,
    summarize,
)
from sdk.logs import LogNotFoundError, LogRecord, anonymous_id, read_log
from tests.sdk.analysis.records import decision, event, lines, write_log


def hero(exp: str, arm: str) -> dict[str, str | None]:
    """The slots of a decision whose hero the experiment decided."""
    return {"hero": f"{exp}:{arm}", "banner": None}


def small_log() -> list[LogRecord]:
    """Experiment ``x``: A (control) has v1, v2 (segment 1) and v3 (segment 2); B has v4
    (segment 2) and v5 (segment 1); v6 saw both arms."""
    x = {"x": "A"}
    y = {"x": "B"}
    return [
        decision("v1", "d1", x, slots=hero("x", "A")),
        decision("v2", "d2", x, slots=hero("x", "A")),
        decision("v3", "d3", x, segment=2, slots=hero("x", "A")),
        decision("v4", "d4", y, segment=2, slots=hero("x", "B")),
        decision("v5", "d5", y, slots=hero("x", "B")),
        decision("v6", "d6a", x, slots=hero("x", "A")),
        decision("v6", "d6b", y, slots=hero("x", "B"), at="2026-05-04T11:00:00Z"),
        # a later decision of v1 in another segment: the first exposure's segment counts
        decision("v1", "d1b", x, segment=3, slots=hero("x", "A"), at="2026-05-04T12:00:00Z"),
        # impressions: v1 twice on the same slot (counted once), once more on d1b,
        # once on the banner (not decided by x: not counted)
        event("impression", "v1", decision_id="d1", slot="hero"),
        event("impression", "v1", decision_id="d1", slot="hero"),
        event("impression", "v1", decision_id="d1b", slot="hero"),
        event("impression", "v1", decision_id="d1", slot="banner"),
        event("click", "v1", decision_id="d1", slot="hero"),
        event("impression", "v2", decision_id="d2", slot="hero"),
        event("impression", "v4", decision_id="d4", slot="hero"),
        event("click", "v4", decision_id="d4", slot="hero"),
        # someone else's decision id: ignored
        event("click", "v5", decision_id="d4", slot="hero"),
        # v6 is contaminated: nothing of theirs counts
        event("impression", "v6", decision_id="d6a", slot="hero"),
        event("conversion", "v6", value=99.0),
        # conversions: v2 buys twice (10 + 30); v3's purchase came before exposure (ignored);
        # v4 buys 50 with a timestamp before the decision but attached to it (counted);
        # an event of a visitor never exposed is ignored
        event("conversion", "v2", value=10.0),
        event("conversion", "v2", value=30.0, at="2026-05-05T09:00:00Z"),
        event("conversion", "v3", value=20.0, at="2026-05-04T09:00:00Z"),
        event("conversion", "v4", value=50.0, decision_id="d4", at="2026-05-04T09:59:59Z"),
        event("conversion", "stranger", value=1000.0),
        event("dismiss", "v5", decision_id="d5", slot="hero"),
    ]


def only(reports: list[ExperimentReport], key: str) -> ExperimentReport:
    (report,) = (r for r in reports if r.experiment == key)
    return report


def test_counts_rates_and_revenue_are_exact() -> None:
    report = only(experiment_reports(small_log()), "x")
    assert report.control == "A" and report.arms == ["A", "B"]
    assert report.visitors == 5 and report.contaminated == 1
    assert report.first_exposure == datetime(2026, 5, 4, 10, tzinfo=UTC)
    assert report.last_exposure == datetime(2026, 5, 4, 12, tzinfo=UTC)
    a, b = report.overall.arms
    assert (a.arm, a.visitors, a.impressions, a.clicks) == ("A", 3, 3, 1)
    assert a.ctr == pytest.approx(1 / 3)
    assert (a.conversions, a.orders, a.revenue) == (1, 2, 40.0)
    assert a.conversion_rate == pytest.approx(1 / 3)
    assert a.revenue_per_visitor == pytest.approx(40 / 3)
    assert a.average_order_value == pytest.approx(20.0)
    assert (b.arm, b.visitors, b.impressions, b.clicks, b.ctr) == ("B", 2, 1, 1, 1.0)
    assert (b.conversions, b.orders, b.revenue, b.average_order_value) == (1, 1, 50.0, 50.0)
    assert b.conversion_rate == 0.5 and b.revenue_per_visitor == 25.0
    low, high = stats.proportion_ci(1, 3)
    assert (a.conversion_rate_ci.low, a.conversion_rate_ci.high) == pytest.approx((low, high))
    assert any("1 visitors were exposed to more than one arm" in w for w in report.warnings)


def test_segments_use_the_segment_of_the_first_exposure() -> None:
    report = only(experiment_reports(small_log()), "x")
    assert [g.segment for g in report.segments] == ["1", "2"]
    one, two = report.segments
    assert {a.arm: a.visitors for a in one.arms} == {"A": 2, "B": 1}
    assert {a.arm: a.visitors for a in two.arms} == {"A": 1, "B": 1}
    assert {a.arm: a.revenue for a in one.arms} == {"A": 40.0, "B": 0.0}
    assert {a.arm: a.revenue for a in two.arms} == {"A": 0.0, "B": 50.0}
    assert {a.arm: a.impressions for a in one.arms} == {"A": 3, "B": 0}


def test_comparisons_use_the_stats_module() -> None:
    rows: list[LogRecord] = []
    for i in range(400):
        arm = "A" if i % 2 else "B"
        rows.append(decision(f"v{i}", f"d{i}", {"x": arm}, slots=hero("x", arm)))
        # A: 20 of 200 buy 10 each; B: 40 of 200 buy 10 each
        if (arm == "A" and i % 20 == 1) or (arm == "B" and i % 10 == 0):
            rows.append(event("conversion", f"v{i}", value=10.0))
    report = only(experiment_reports(rows, confidence=0.9), "x")
    a, b = report.overall.arms
    assert (a.visitors, a.conversions, b.visitors, b.conversions) == (200, 20, 200, 40)
    (c,) = report.overall.comparisons
    want = stats.diff_proportions(20, 200, 40, 200, 0.9)
    assert c.conversion_lift == pytest.approx(0.1)
    assert (c.conversion_lift_ci.low, c.conversion_lift_ci.high) == pytest.approx(
        (want.low, want.high)
    )
    assert c.conversion_relative_lift == pytest.approx(1.0)
    assert c.conversion_relative_lift_ci.low == pytest.approx(want.relative_low)
    assert c.conversion_p_value == pytest.approx(stats.chi_square_2x2(20, 200, 40, 200).p_value)
    assert c.significant and c.revenue_significant and c.enough_data and not c.warnings
    revenue_a = [10.0] * 20 + [0.0] * 180
    revenue_b = [10.0] * 40 + [0.0] * 160
    welch = stats.welch_from_samples(revenue_a, revenue_b, 0.9)
    assert c.revenue_per_visitor_lift == pytest.approx(1.0)
    assert (c.revenue_per_visitor_lift_ci.low, c.revenue_per_visitor_lift_ci.high) == (
        pytest.approx((welch.low, welch.high))
    )
    assert c.revenue_p_value == pytest.approx(welch.p_value)
    assert c.revenue_per_visitor_relative_lift == pytest.approx(1.0)
    assert summarize(report).significant_arms == ["B"]


def _split(a: int, b: int) -> list[LogRecord]:
    return [decision(f"a{i}", f"da{i}", {"x": "A"}) for i in range(a)] + [
        decision(f"b{i}", f"db{i}", {"x": "B"}) for i in range(b)
    ]


def test_sample_ratio_mismatch_is_flagged_on_a_60_40_split_of_a_50_50_test() -> None:
    weights = {"x": {"A": 1.0, "B": 1.0}}
    bad = only(experiment_reports(_split(600, 400), weights=weights), "x")
    srm = bad.overall.srm
    assert srm.mismatch and srm.p_value is not None and srm.p_value < 1e-6
    assert srm.observed == {"A": 600, "B": 400}
    assert srm.expected_shares == {"A": 0.5, "B": 0.5}
    assert srm.statistic == pytest.approx(40.0)
    assert any(w.startswith("sample-ratio mismatch") for w in bad.warnings)
    assert summarize(bad).srm_mismatch
    fair = only(experiment_reports(_split(510, 490), weights=weights), "x")
    assert not fair.overall.srm.mismatch and fair.overall.srm.p_value == pytest.approx(
        stats.chi_square_gof([510, 490], [1, 1]).p_value
    )
    assert not any("sample-ratio" in w for w in fair.warnings)
    # the same 60/40 split is fine when it is the configured one
    planned = experiment_reports(_split(600, 400), weights={"x": {"A": 3.0, "B": 2.0}})
    assert not only(planned, "x").overall.srm.mismatch


def test_an_arm_without_traffic_is_a_mismatch_too() -> None:
    weights = {"x": {"A": 1.0, "B": 1.0, "C": 1.0}}
    report = only(experiment_reports(_split(300, 300), weights=weights), "x")
    assert report.arms == ["A", "B", "C"]
    assert report.overall.srm.observed == {"A": 300, "B": 300, "C": 0}
    assert report.overall.srm.mismatch
    assert [c.arm for c in report.overall.comparisons] == ["B", "C"]


def test_tiny_samples_warn_and_name_the_arms() -> None:
    report = only(experiment_reports(_split(5, 7)), "x")
    (c,) = report.overall.comparisons
    assert not c.enough_data and not c.significant
    assert "arm 'A' has 5 visitors (fewer than 100)" in c.warnings
    assert "arm 'B' has 7 visitors (fewer than 100)" in c.warnings
    assert "arm 'B' has 0 conversions (fewer than 10)" in c.warnings
    assert set(c.warnings) <= set(report.warnings)
    # no conversions: every test is undefined, and that is null, never NaN
    assert c.conversion_p_value is None and c.conversion_relative_lift is None
    assert c.revenue_p_value is None and c.revenue_per_visitor_lift_ci.low is None
    text = msgspec.json.encode(report).decode()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["overall"]["comparisons"][0]["conversionPValue"] is None
    looser = only(experiment_reports(_split(5, 7), min_visitors=5, min_conversions=0), "x")
    assert looser.overall.comparisons[0].enough_data


def test_controls_weights_and_the_holdout() -> None:
    rows = [
        decision("h1", "dh1", {"holdout": "holdout"}, slots={"hero": None, "banner": None}),
        decision("p1", "dp1", {"holdout": "personalized", "y": "treat"}, slots=hero("y", "treat")),
        decision("p2", "dp2", {"holdout": "personalized", "y": "control"}),
        event("impression", "h1", decision_id="dh1", slot="hero"),
        event("impression", "h1", decision_id="dh1", slot="banner"),
        event("impression", "p1", decision_id="dp1", slot="banner"),
    ]
    reports = experiment_reports(rows, weights={"later": {"on": 1.0, "off": 1.0}})
    assert [r.experiment for r in reports] == ["holdout", "later", "y"]
    holdout, later, y = reports
    assert holdout.control == "holdout" and holdout.arms == ["holdout", "personalized"]
    # the holdout decides every slot; an experiment only the slots labelled with its arms
    assert {a.arm: a.impressions for a in holdout.overall.arms} == {
        "holdout": 2,
        "personalized": 1,
    }
    assert y.control == "control" and y.arms == ["control", "treat"]
    assert {a.arm: a.impressions for a in y.overall.arms} == {"control": 0, "treat": 0}
    assert later.visitors == 0 and later.arms == ["on", "off"]
    assert later.warnings[0] == "no visitors exposed yet"
    chosen = experiment_reports(rows, controls={"y": "treat"})
    assert only(chosen, "y").arms == ["treat", "control"]


def test_time_window_and_currencies() -> None:
    rows = [
        decision("v1", "d1", {"x": "A"}, at="2026-05-01T10:00:00Z"),
        decision("v2", "d2", {"x": "B"}, at="2026-05-03T10:00:00Z"),
        event("conversion", "v2", value=5.0, at="2026-05-03T11:00:00Z", currency="EUR"),
        event("conversion", "v2", value=5.0, at="2026-05-03T12:00:00Z", currency="usd"),
    ]
    start = datetime(2026, 5, 2, tzinfo=UTC)
    report = only(experiment_reports(rows, start=start), "x")
    assert {a.arm: a.visitors for a in report.overall.arms} == {"B": 1}
    assert any("several currencies: EUR, USD" in w for w in report.warnings)
    naive_end = datetime(2026, 5, 3, 11, 30)  # noqa: DTZ001 - naive means UTC
    report = only(experiment_reports(rows, end=naive_end), "x")
    assert {a.arm: a.orders for a in report.overall.arms} == {"A": 0, "B": 1}
    with pytest.raises(ValueError, match="confidence"):
        experiment_reports(rows, confidence=1.0)


def test_kpis_over_time() -> None:
    rows = [
        decision("v1", "d1", None, segment=1, at="2026-05-04T10:00:00Z"),
        decision("v2", "d2", None, segment=2, at="2026-05-04T11:00:00Z"),
        event("impression", "v1", decision_id="d1", slot="hero", at="2026-05-04T10:00:01Z"),
        event("impression", "v1", decision_id="d1", slot="hero", at="2026-05-04T10:00:02Z"),
        event("click", "v1", decision_id="d1", slot="hero", at="2026-05-04T10:00:03Z"),
        event("impression", "v2", decision_id="d2", slot="hero", at="2026-05-04T11:00:01Z"),
        # next day: v1 comes back as segment 2 and buys; v2 buys without a new decision
        decision("v1", "d3", None, segment=2, at="2026-05-05T09:00:00Z"),
        event("conversion", "v1", value=30.0, at="2026-05-05T09:10:00Z"),
        event("conversion", "v2", value=10.0, at="2026-05-05T20:00:00Z"),
        event("conversion", "v3", value=5.0, at="2026-05-05T21:00:00Z"),
    ]
    series = kpis_over_time(rows)
    assert series.by == "segment" and series.bucket == "day"
    assert series.groups == ["1", "2", "unknown"]
    day1 = [p for p in series.points if p.bucket == datetime(2026, 5, 4, tzinfo=UTC)]
    day2 = [p for p in series.points if p.bucket == datetime(2026, 5, 5, tzinfo=UTC)]
    assert [(p.group, p.visitors, p.impressions, p.clicks, p.ctr) for p in day1] == [
        ("1", 1, 1, 1, 1.0),
        ("2", 1, 1, 0, 0.0),
    ]
    assert [(p.group, p.visitors, p.conversions, p.revenue) for p in day2] == [
        ("2", 2, 2, 40.0),
        ("unknown", 1, 1, 5.0),
    ]
    assert day2[0].conversion_rate == 1.0 and day2[0].revenue_per_visitor == 20.0
    hourly = kpis_over_time(rows, bucket="hour", end=datetime(2026, 5, 5, tzinfo=UTC))
    assert [(p.bucket.hour, p.group) for p in hourly.points] == [(10, "1"), (11, "2")]
    with pytest.raises(ValueError, match="bucket"):
        kpis_over_time(rows, bucket="week")  # type: ignore[arg-type]


def test_reports_read_the_log_through_sdk_logs(tmp_path: Path) -> None:
    logs = tmp_path / "events"
    logs.mkdir()
    records = small_log()
    write_log(logs / "events-20260504-100000-1.jsonl", records[:5], tail="\n")
    write_log(
        logs / "events-20260504-100000-2.jsonl",
        records[5:],
        tail='{"kind": "decision", "visitorId": "v9", "tim\n[1, 2]\nnot json\n',
    )
    (logs / ".events-20260504-100000-1.jsonl.purge").write_text(lines(records[:1]))
    (logs / "notes.txt").write_text("hello\n")
    extra = write_log(tmp_path / "extra.jsonl", [decision("v7", "d7", {"x": "B"})])
    with pytest.raises(LogNotFoundError):
        read_log([logs, extra, tmp_path / "missing"])
    reader = read_log([logs, extra, tmp_path / "missing"], missing_ok=True)
    assert len(list(reader)) == len(records) + 1
    assert reader.malformed == 3 and reader.lines == len(records) + 4
    assert [p.name for p in reader.files] == [
        "events-20260504-100000-1.jsonl",
        "events-20260504-100000-2.jsonl",
        "extra.jsonl",
    ]
    report = only(experiment_reports(read_log(logs)), "x")
    assert report == only(experiment_reports(records), "x")  # same numbers as in memory
    assert report.visitors == 5
    assert only(experiment_reports(reader), "x").visitors == 6  # a reader can be re-read
    assert not math.isnan(report.overall.arms[0].revenue)
    assert kpis_over_time(read_log(logs)) == kpis_over_time(records)


def test_public_names() -> None:
    # what server/reports.py, server/openapi.py and `tailor report` import from here
    used = "ExperimentList ExperimentReport KpiSeries design_of experiment_reports kpis_over_time"
    assert {*used.split(), "summarize"} <= set(reports.__all__)
    for name in reports.__all__:
        assert getattr(reports, name) is not None
    assert not hasattr(reports, "read_log")  # the one reader is sdk.logs.read_log


def test_anonymous_decisions_count_as_one_exposure_each() -> None:
    """Without storage consent a decision is logged under ``anon-<decision id>`` and so are its
    events: each is one visitor of its own, with its conversion attributed to it."""
    a, b, c = (anonymous_id(d) for d in ("da", "db", "dc"))
    log = [
        decision("v1", "d1", {"x": "A"}, slots=hero("x", "A")),
        decision(a, "da", {"x": "A"}, slots=hero("x", "A")),
        decision(b, "db", {"x": "B"}, slots=hero("x", "B")),
        decision(c, "dc", {"x": "B"}, slots=hero("x", "B")),
        event("impression", b, decision_id="db", slot="hero"),
        event("conversion", b, decision_id="db", value=25.0),
        # a conversion without a decision gets a fresh stand-in: attributed to no exposure
        event("conversion", anonymous_id(None), value=1000.0),
    ]
    report = only(experiment_reports(log), "x")
    assert report.visitors == 4 and report.anonymous == 3 and report.contaminated == 0
    assert any("without storage consent" in w for w in report.warnings)
    arms = {s.arm: s for s in report.overall.arms}
    assert arms["A"].visitors == 2 and arms["B"].visitors == 2
    assert arms["B"].orders == 1 and arms["B"].revenue == 25.0 and arms["B"].impressions == 1
    assert arms["A"].revenue == 0.0
    assert only(experiment_reports(small_log()), "x").anonymous == 0
