"""``tailor evaluate``, ``tailor export-vw`` and ``tailor retrain``: the event log, offline.

Must not import server.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from model_export.cli._common import json_out

__all__ = ["add_parsers"]


def _read_choices_or_fail(args: argparse.Namespace, console: Console) -> Any:
    """The logged choices of ``--log`` (only ``--slot`` when given), or None when unreadable."""
    from model_export.offline.choices import EvaluationError, read_choices

    try:
        data = read_choices(args.log, reward=args.reward)
    except EvaluationError as exc:
        console.print(f"[red]cannot read the log:[/] {exc}")
        return None
    if getattr(args, "slot", None):
        data = data.where(lambda c: c.slot == args.slot)
    return data


def _cell(e: Any, signed: bool = False) -> str:
    """A value over its confidence interval."""
    fmt = "{:+.4f}" if signed else "{:.4f}"
    if e.ci_low != e.ci_low:  # NaN
        return fmt.format(e.value)
    return f"{fmt.format(e.value)}\n[{fmt.format(e.ci_low)}, {fmt.format(e.ci_high)}]"


def _print_evaluation(data: Any, result: Any, console: Console) -> None:
    from model_export.offline.evaluate import ESTIMATORS, Comparison

    console.print(
        f"log {data.source}: {data.files} file(s), {data.decisions} decisions, "
        f"{len(data.choices)} slot decisions, {data.events} events; reward: {data.reward} "
        f"per slot decision"
    )
    paired = isinstance(result, Comparison)
    cand = result.candidate if paired else result
    title = f"offline value of {cand.model_version}"
    if paired:
        title += f" against {result.baseline.model_version}"
    table = Table(
        title=title,
        caption=f"{cand.confidence:.0%} intervals: {cand.interval}; {cand.rows} slot decisions "
        f"of {cand.visitors} visitors",
        caption_justify="left",
    )
    table.add_column("estimator")
    for col in ("candidate", "baseline", "difference") if paired else ("value",):
        table.add_column(col, justify="right")
    for name in ESTIMATORS:
        row: list[str | Text] = [name, _cell(cand.estimates[name])]
        if paired:
            row.append(_cell(result.baseline.estimates[name]))
            d = result.difference.get(name)
            if d is None:
                row.append("")
            else:
                style = "green" if d.ci_low > 0 else "red" if d.ci_high < 0 else ""
                row.append(Text(_cell(d, signed=True), style=style))
        table.add_row(*row)
    console.print(table)
    for ev in [cand] + ([result.baseline] if paired else []):
        console.print(
            f"{ev.model_version}: effective sample size {ev.ess:.0f} of {ev.rows}, match rate "
            f"{ev.match_rate:.3f}, max weight {ev.max_weight:.2f}, unsupported "
            f"{ev.unsupported:.3f}"
        )
        if ev.unsupported > 0.05:
            console.print(
                f"[yellow]warning:[/] {ev.unsupported:.1%} of {ev.model_version}'s choices were "
                "never possible under the logging policy: IPS/SNIPS underestimate, DR relies on "
                "its reward model there"
            )
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(cand.skipped.items()))
    console.print(f"skipped: {skipped or 'none'}")


def _evaluate(args: argparse.Namespace, console: Console) -> int:
    from model_export.offline.evaluate import EvaluationError, compare, evaluate
    from sdk import BundleError

    data = _read_choices_or_fail(args, console)
    if data is None:
        return 1
    options = {"confidence": args.confidence, "bootstrap": args.bootstrap, "seed": args.seed}
    try:
        if args.baseline:
            result: Any = compare(args.bundle, args.baseline, data, **options)
        else:
            result = evaluate(args.bundle, data, **options)
    except BundleError as exc:
        console.print(f"[red]bundle refused:[/] {exc}")
        return 1
    except EvaluationError as exc:
        console.print(f"[red]cannot evaluate:[/] {exc}")
        return 1
    if args.json:
        json_out(result)
    else:
        _print_evaluation(data, result, console)
    return 0


def _export_vw(args: argparse.Namespace, console: Console) -> int:
    from model_export.offline.vw import export_vw

    data = _read_choices_or_fail(args, console)
    if data is None:
        return 1
    report = export_vw(data, args.out)
    if args.json:
        json_out(report)
        return 0
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped.items()))
    console.print(
        f"[green]wrote[/] {report.path}: {report.lines} lines ({report.randomized} randomized, "
        f"{report.rewarded} with a {args.reward} reward); skipped: {skipped or 'none'}"
    )
    return 0


def _retrain(args: argparse.Namespace, console: Console) -> int:
    import logging

    from model_export.bundle.lifecycle import LifecycleError
    from model_export.errors import TrainingDataError
    from model_export.inputs.ingest import IngestError
    from model_export.offline.evaluate import EvaluationError
    from model_export.offline.retrain import log as retrain_log
    from model_export.offline.retrain import retrain
    from sdk import BundleError

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    retrain_log.setLevel(logging.INFO)
    try:
        result = retrain(
            args.log,
            args.live,
            args.out_dir,
            config=args.config,
            candidate=args.candidate,
            visitors=args.visitors,
            seed=args.seed,
            segments=args.segments,
            name=args.name,
            margin=args.margin,
            estimator=args.estimator,
            rule=args.rule,
            policy=args.policy,
            eval_share=args.eval_share,
            reward=args.reward,
        )
    except (
        EvaluationError,
        LifecycleError,
        BundleError,
        TrainingDataError,
        IngestError,
        OSError,
        ValueError,
        msgspec.ValidationError,
    ) as exc:
        retrain_log.error("retrain failed, the serving bundle stays live: %s", exc)
        if args.json:
            sys.stdout.write(msgspec.json.encode({"status": "error", "error": str(exc)}).decode())
            sys.stdout.write("\n")
        else:
            console.print(f"[red]retrain failed[/] (the serving bundle stays live): {exc}")
        return 1
    if args.json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        style = "green" if result.status == "promoted" else "yellow"
        console.print(f"[{style}]{result.status}[/] {result.candidate_version}: {result.reason}")
        console.print(
            f"live: {result.live}; candidate: {result.candidate}"
            + ("" if result.status == "promoted" else " (kept for inspection)")
        )
    return 0


def add_parsers(sub: Any) -> None:
    """The parsers of ``tailor evaluate``, ``tailor export-vw`` and ``tailor retrain``."""
    rewards = ("click", "conversion", "value")
    evaluate = sub.add_parser(
        "evaluate",
        help="estimate a bundle's click or conversion rate on logged traffic (IPS, SNIPS, DR)",
        description="Replay the logged decisions with BUNDLE and estimate the reward per slot "
        "decision it would have earned, with confidence intervals.",
    )
    evaluate.add_argument("--bundle", required=True, help="the candidate bundle")
    evaluate.add_argument("--baseline", default=None, help="compare with this bundle (paired)")
    export = sub.add_parser(
        "export-vw", help="export the logged decisions as Vowpal Wabbit decision-service JSON"
    )
    export.add_argument("--out", required=True, metavar="FILE.jsonl", help="file to write")
    retrain = sub.add_parser(
        "retrain",
        help="train a candidate, evaluate it against the live bundle on the log, promote if "
        "not worse",
        epilog="Exit code 0 when the candidate was promoted or correctly kept, 1 on an error "
        "(the live bundle is then untouched). Steps are logged on stderr.",
    )
    retrain.add_argument("--live", required=True, help="symlink the servers load bundles through")
    retrain.add_argument("--out-dir", required=True, help="directory for candidate bundles")
    retrain.add_argument(
        "--config", default=None, metavar="TOML", help="train from your data (else: demo)"
    )
    retrain.add_argument(
        "--candidate", default=None, help="evaluate and promote this bundle instead of training"
    )
    retrain.add_argument("--visitors", type=int, default=20_000, help="demo training visits")
    retrain.add_argument("--seed", type=int, default=7, help="demo training seed")
    retrain.add_argument(
        "--segments", type=int, default=None, help="demo training: fix k instead of choosing"
    )
    retrain.add_argument("--name", default="retrain", help="model version prefix")
    retrain.add_argument(
        "--margin", type=float, default=0.0, help="how much worse the candidate may be"
    )
    retrain.add_argument("--estimator", choices=("dr", "snips", "ips"), default="dr")
    retrain.add_argument(
        "--rule",
        choices=("lower", "point"),
        default="lower",
        help="lower: the CI's lower bound of the difference must be >= -margin; point: the "
        "estimate must",
    )
    retrain.add_argument(
        "--policy",
        choices=("serving", "candidate"),
        default="serving",
        help="whose holdout, experiments and exploration the candidate gets",
    )
    retrain.add_argument(
        "--eval-share",
        type=float,
        default=0.3,
        help="visitors held out of training when the log is training data",
    )
    evaluate.set_defaults(run=_evaluate)
    export.set_defaults(run=_export_vw)
    retrain.set_defaults(run=_retrain)
    for cmd in (evaluate, export, retrain):
        cmd.add_argument("--log", required=True, metavar="DIR", help="the server's event log")
        cmd.add_argument("--reward", choices=rewards, default="click", help="what counts")
        cmd.add_argument("--json", action="store_true", help="print the result as JSON")
    for cmd in (evaluate, export):
        cmd.add_argument("--slot", default=None, help="only this slot's decisions")
    evaluate.add_argument("--confidence", type=float, default=0.95, help="of the intervals")
    evaluate.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="N bootstrap resamples of visitors instead of normal intervals",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="of the bootstrap")
