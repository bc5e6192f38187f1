"""``tailor report``: experiment reports (arms, segments, lifts, tests) from an event log.

Must not import server.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgspec
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from model_export.cli._common import json_out

__all__ = ["add_parser"]


def _rpt_pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.2%}"


def _rpt_num(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None else f"{x:{fmt}}"


def _rpt_x100(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _rpt_pp(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.2f} pp"


def _rpt_p(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _rpt_ci(low: float | None, high: float | None, fmt: str) -> str:
    return "" if low is None or high is None else f" [{low:{fmt}}, {high:{fmt}}]"


def _report(args: argparse.Namespace, console: Console) -> int:
    """``tailor report``: experiment reports from an event log (see sdk.analysis.reports)."""
    from sdk.analysis.reports import design_of, experiment_reports
    from sdk.logs import read_log
    from sdk.manifest import manifest_decoder

    weights: dict[str, dict[str, float]] | None = None
    controls: dict[str, str] | None = None
    if args.bundle:
        try:
            manifest = manifest_decoder.decode((Path(args.bundle) / "manifest.json").read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            console.print(Text(f"cannot read the bundle manifest: {exc}", style="red"))
            return 1
        weights, controls = design_of(manifest)
    missing = [p for p in args.log if not Path(p).exists()]
    if missing:
        console.print(Text(f"no such log directory or file: {', '.join(missing)}", style="red"))
        return 2
    reader = read_log(args.log)
    reports = experiment_reports(
        reader, weights=weights, controls=controls, confidence=args.confidence
    )
    if args.experiment is not None:
        reports = [r for r in reports if r.experiment == args.experiment]
        if not reports:
            console.print(Text(f"no experiment {args.experiment!r} in the log", style="red"))
            return 2
    if args.json:
        json_out(reports)
        return 0
    console.print(
        f"read {reader.lines} lines from {len(reader.files)} files"
        + (f", [yellow]{reader.malformed} malformed[/]" if reader.malformed else "")
    )
    if not console.is_terminal:  # piped: do not squeeze the wide tables into 80 columns
        console = Console(width=140)
    for report in reports:
        console.print(
            Text(
                f"\n{report.experiment}: {report.visitors} visitors, control {report.control}, "
                f"confidence {report.confidence:.0%}",
                style="bold",
            )
        )
        arms = Table(box=box.SIMPLE_HEAD, title="arms", title_justify="left")
        for col in ("group", "arm", "visitors", "CTR", "conversion rate", "RPV", "AOV"):
            arms.add_column(col, justify="left" if col in ("group", "arm") else "right")
        lifts = Table(box=box.SIMPLE_HEAD, title="against the control", title_justify="left")
        for col in ("group", "arm", "lift", "relative", "p", "RPV lift", "p (RPV)"):
            lifts.add_column(col, justify="left" if col in ("group", "arm") else "right")
        for group in [report.overall, *report.segments]:
            name = Text("all" if group.segment is None else f"segment {group.segment}")
            for arm in group.arms:
                arms.add_row(
                    name,
                    Text(arm.arm),
                    str(arm.visitors),
                    _rpt_pct(arm.ctr),
                    _rpt_pct(arm.conversion_rate)
                    + _rpt_ci(arm.conversion_rate_ci.low, arm.conversion_rate_ci.high, ".2%"),
                    _rpt_num(arm.revenue_per_visitor)
                    + _rpt_ci(
                        arm.revenue_per_visitor_ci.low, arm.revenue_per_visitor_ci.high, ".2f"
                    ),
                    _rpt_num(arm.average_order_value),
                )
            for c in group.comparisons:
                lifts.add_row(
                    name,
                    Text(c.arm),
                    Text(
                        _rpt_pp(c.conversion_lift)
                        + _rpt_ci(
                            _rpt_x100(c.conversion_lift_ci.low),
                            _rpt_x100(c.conversion_lift_ci.high),
                            "+.2f",
                        ),
                        style="bold green" if c.significant else "",
                    ),
                    "—"
                    if c.conversion_relative_lift is None
                    else f"{c.conversion_relative_lift:+.1%}",
                    _rpt_p(c.conversion_p_value),
                    Text(
                        _rpt_num(c.revenue_per_visitor_lift, "+.2f")
                        + _rpt_ci(
                            c.revenue_per_visitor_lift_ci.low,
                            c.revenue_per_visitor_lift_ci.high,
                            "+.2f",
                        ),
                        style="bold green" if c.revenue_significant else "",
                    ),
                    _rpt_p(c.revenue_p_value),
                )
            arms.add_section()
            lifts.add_section()
        console.print(arms)
        console.print(lifts)
        srm = report.overall.srm
        if srm.p_value is not None:
            console.print(f"sample-ratio check: p = {srm.p_value:.3g}")
        for warning in report.warnings:
            console.print(Text(f"warning: {warning}", style="yellow"))
    return 0


def _rpt_confidence(text: str) -> float:
    value = float(text)
    if not 0.5 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"confidence must be in [0.5, 1), got {text}")
    return value


def add_parser(sub: Any) -> None:
    """The parser of ``tailor report``."""
    report = sub.add_parser(
        "report",
        help="experiment reports (per arm and segment, lifts, tests) from an event log",
    )
    report.add_argument(
        "--log",
        action="append",
        required=True,
        metavar="DIR",
        help="event log directory or file (repeatable)",
    )
    report.add_argument(
        "--bundle", default=None, help="bundle whose manifest gives arm weights and controls"
    )
    report.add_argument("--experiment", default=None, metavar="KEY", help="only this experiment")
    report.add_argument(
        "--confidence", type=_rpt_confidence, default=0.95, help="confidence level (default 0.95)"
    )
    report.add_argument("--json", action="store_true", help="print the reports as JSON")
    report.set_defaults(run=_report)
