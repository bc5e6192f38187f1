"""``tailor`` command line: ``tailor train`` builds a bundle, ``tailor inspect`` shows one,
``tailor bundle verify|diff|promote|rollback`` manage which bundle is live.

Exit codes: 0 success; 1 a bundle was refused or a requirement regressed; 2 usage errors
(bad arguments, a malformed ``--require`` or ``--sample``).

Must not import server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from model_export.bundle.lifecycle import BundleDiff, FieldChange, Migration, RequirementCheck

__all__ = ["main"]


def _train(args: argparse.Namespace, console: Console) -> int:
    from model_export.fit.models import TrainConfig
    from model_export.inputs.catalogue import load_catalogue
    from model_export.run import train_bundle

    out = Path(args.out)
    if args.if_missing and (out / "manifest.json").is_file():
        console.print(f"[green]bundle exists[/] at {out}; not retraining (--if-missing)")
        return 0
    with console.status("training...") as status:

        def progress(message: str) -> None:
            status.update(message)
            console.log(message)

        if args.config:
            m = _train_from_config(args, out, progress, console)
            if m is None:
                return 1
        else:
            config = TrainConfig(seed=args.seed, k=args.segments)
            catalogue = load_catalogue(args.catalogue) if args.catalogue else None
            m = train_bundle(
                out,
                n_visitors=args.visitors,
                config=config,
                catalogue=catalogue,
                name=args.name,
                progress=progress,
            ).manifest
    table = Table(title=f"bundle {m.model_version}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(m.training.metrics.items()):
        table.add_row(key, f"{value:.6g}")
    console.print(table)
    personas = Table(title="segments")
    for col in ("segment", "persona", "share"):
        personas.add_column(col)
    names = {p.id: p.name for p in m.personas}
    for seg in m.segments:
        personas.add_row(str(seg.id), names[seg.persona], f"{seg.share:.1%}")
    console.print(personas)
    console.print(f"[green]wrote[/] {out}")
    if args.report:
        _write_card(Path(args.report), m, console)
    return 0


def _train_from_config(args: argparse.Namespace, out: Path, progress: Any, console: Console) -> Any:
    """Train from the TOML config; print what was read and rejected. None when refused."""
    import msgspec

    from model_export.inputs.config import load_config
    from model_export.inputs.ingest import IngestError
    from model_export.run_config import TrainingDataError, train_from_config

    try:
        config = load_config(args.config)
        report = train_from_config(config, out, progress=progress)
    except (OSError, ValueError, msgspec.ValidationError, IngestError, TrainingDataError) as exc:
        console.print(f"[red]cannot train:[/] {exc}")
        return None
    table = Table(title="inputs")
    for col in ("input", "files", "rows read", "accepted", "rejected"):
        table.add_column(col, justify="right" if col != "input" else "left")
    for kind, r in report.inputs.items():
        why = ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items()) if v) or "none"
        table.add_row(kind, str(len(r.files)), str(r.rows_read), str(r.rows_accepted), why)
    console.print(table)
    return report.manifest


def _write_card(path: Path, manifest: Any, console: Console) -> None:
    from model_export.bundle.card import render_report

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(manifest), encoding="utf-8")
    console.print(f"[green]model card[/] {path}")


def _inspect(args: argparse.Namespace, console: Console) -> int:
    from sdk import BundleError
    from sdk.bundle import load_bundle

    try:
        bundle = load_bundle(args.bundle)
    except BundleError as exc:
        console.print(f"[red]refused:[/] {exc}")
        return 1
    m = bundle.manifest
    console.print(f"model version {m.model_version}, created {m.created_at.isoformat()}")
    console.print(f"verified: hashes, ONNX inputs/outputs, parity ({bundle.path / 'parity.jsonl'})")
    if args.report:
        _write_card(Path(args.report), m, console)
    return 0


# --- tailor bundle ... -----------------------------------------------------------------------

_CHANGE_STYLE = {
    "better": "green",
    "worse": "red",
    "same": "dim",
    "added": "cyan",
    "removed": "yellow",
}


def _num(value: float | None) -> str:
    from model_export.bundle.card import format_number

    return "—" if value is None else format_number(value)


def _json_out(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def _bundle_verify(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.lifecycle import verify

    result = verify(args.bundle)
    if args.json:
        _json_out(result)
    elif result.ok:
        console.print(
            f"[green]ok[/] {args.bundle}: {result.model_version}, feature set "
            f"{result.feature_set_version}, created "
            f"{result.created_at.isoformat(timespec='seconds') if result.created_at else '?'}"
        )
        console.print("verified: manifest, sha256 of every file, ONNX inputs/outputs, parity")
    else:
        console.print(f"[red]refused[/] {args.bundle}: {result.error_type}: {result.error}")
    return 0 if result.ok else 1


def _field_text(change: FieldChange) -> str:
    from model_export.bundle.card import format_condition

    def show(value: Any) -> str:
        if change.field.rsplit(".", 1)[-1] in ("when", "eligibility") and isinstance(value, dict):
            text = format_condition(value)
        else:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        return text if len(text) <= 70 else text[:69] + "…"

    if change.before is None:
        return f"{change.field}: + {show(change.after)}"
    if change.after is None:
        return f"{change.field}: - {show(change.before)}"
    return f"{change.field}: {show(change.before)} → {show(change.after)}"


def _migration_table(title: str, mig: Migration, *, by_id: bool) -> Table:
    table = Table(title=title, show_footer=True, caption_justify="left")
    table.add_column("current ↓ / candidate →", footer="total")
    col_totals = [sum(col) for col in zip(*mig.counts, strict=True)] if mig.counts else []
    for name, total in zip(mig.columns, col_totals or [0] * len(mig.columns), strict=True):
        table.add_column(name, justify="right", footer=str(total))
    table.add_column("total", justify="right", footer=str(mig.total))
    for i, (name, row) in enumerate(zip(mig.rows, mig.counts, strict=True)):
        cells = []
        for j, n in enumerate(row):
            diagonal = mig.row_ids[i] == mig.column_ids[j] if by_id else i == j
            if n == 0:
                cells.append(Text("·", style="dim"))
            else:
                cells.append(Text(str(n), style="bold green" if diagonal else ""))
        table.add_row(name, *cells, str(sum(row)))
    share = f"{mig.same / mig.total:.1%}" if mig.total else "n/a"
    same = f"; same id on both sides: {mig.same} of {mig.total} rows ({share})" if by_id else ""
    table.caption = f"adjusted Rand index {mig.ari:.3f}{same}"
    return table


def _print_diff(d: BundleDiff, console: Console) -> None:
    for role, side in (("current", d.current), ("candidate", d.candidate)):
        console.print(
            f"[bold]{role:9}[/] {side.model_version}  feature set {side.feature_set_version}  "
            f"created {side.created_at:%Y-%m-%d %H:%M}Z  {side.path}"
        )
    console.print(f"rows: {d.rows} from {d.rows_source}")
    if d.feature_set_changed or d.features_added or d.features_removed:
        added = " ".join(f"+{f}" for f in d.features_added)
        removed = " ".join(f"-{f}" for f in d.features_removed)
        console.print(
            f"[yellow]feature set {d.current.feature_set_version} → "
            f"{d.candidate.feature_set_version}[/] {added} {removed}".rstrip()
        )
    metrics = Table(title="metrics (held out)")
    for col, justify in (("metric", "left"), ("current", "right"), ("candidate", "right")):
        metrics.add_column(col, justify=justify)  # type: ignore[arg-type]
    metrics.add_column("delta", justify="right")
    for m in d.metrics:
        style = _CHANGE_STYLE[m.change]
        delta = m.change if m.delta is None else f"{m.delta:+.4g}"
        name = f"{m.name} (lower is better)" if m.lower_is_better else m.name
        metrics.add_row(name, _num(m.current), _num(m.candidate), Text(delta, style=style))
    console.print(metrics)
    if d.policy:
        policy = Table(title="offline policy value")
        for col in ("estimate", "current", "candidate", "delta"):
            policy.add_column(col, justify="left" if col == "estimate" else "right")
        for m in d.policy:
            change = f"{m.delta:+.4g}" if m.delta is not None else ""
            policy.add_row(
                m.name, _num(m.current), _num(m.candidate), Text(change, _CHANGE_STYLE[m.change])
            )
        console.print(policy)
    console.print(_migration_table("segment migration", d.segments, by_id=False))
    console.print(_migration_table("persona migration", d.personas, by_id=True))
    if d.catalogue:
        changes = Table(title="catalogue changes")
        for col in ("kind", "id", "change", "details"):
            changes.add_column(col)
        for c in d.catalogue:
            details = "\n".join(_field_text(f) for f in c.fields)
            changes.add_row(c.kind, c.id, c.change, details)
        console.print(changes)
    else:
        console.print("catalogue: no changes to offers, slots, lifecycle rules or personas")


def _bundle_diff(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.lifecycle import BundleRefused, SampleError, diff

    try:
        result = diff(args.current, args.candidate, args.sample)
    except BundleRefused as exc:
        console.print(f"[red]refused:[/] {exc}")
        return 1
    except SampleError as exc:
        console.print(f"[red]bad sample:[/] {exc}")
        return 2
    if args.json:
        _json_out(result)
    else:
        _print_diff(result, console)
    return 0


def _checks_table(checks: list[RequirementCheck]) -> Table:
    table = Table(title="requirements")
    for col in ("requirement", "current", "candidate", "delta", "result"):
        table.add_column(col, justify="left" if col in ("requirement", "result") else "right")
    for c in checks:
        verdict = Text("ok" if c.ok else "REGRESSED", style="green" if c.ok else "bold red")
        delta = "—" if c.delta is None else f"{c.delta:+.4g}"
        table.add_row(c.requirement.spec, _num(c.current), _num(c.candidate), delta, verdict)
    return table


def _bundle_promote(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.lifecycle import (
        LifecycleError,
        RegressionRefused,
        RequirementError,
        promote,
    )

    try:
        result = promote(args.candidate, args.live, require=args.require, current=args.current)
    except RequirementError as exc:
        console.print(f"[red]bad requirement:[/] {exc}")
        return 2
    except RegressionRefused as exc:
        console.print(_checks_table(exc.checks))
        console.print(f"[red]refused:[/] {exc}")
        return 1
    except LifecycleError as exc:
        console.print(f"[red]refused:[/] {exc}")
        return 1
    if args.json:
        _json_out(result)
        return 0
    if result.checks:
        console.print(_checks_table(result.checks))
    if result.note:
        console.print(f"[yellow]note:[/] {result.note}")
    verb = "promoted" if result.changed else "unchanged"
    console.print(f"[green]{verb}[/] {result.live} -> {result.target} ({result.model_version})")
    if result.previous:
        console.print(f"previous: {result.previous} (tailor bundle rollback {result.live})")
    return 0


def _bundle_rollback(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.lifecycle import LifecycleError, rollback

    try:
        result = rollback(args.live)
    except LifecycleError as exc:
        console.print(f"[red]refused:[/] {exc}")
        return 1
    if args.json:
        _json_out(result)
        return 0
    console.print(
        f"[green]rolled back[/] {result.live} -> {result.target} ({result.model_version})"
    )
    console.print(f"previous: {result.previous} (roll back again to return to it)")
    return 0


def _bundle_policy(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.lifecycle import LifecycleError, load_policy, with_policy

    try:
        manifest = with_policy(args.bundle, args.out, load_policy(args.policy), args.name)
    except LifecycleError as exc:
        console.print(f"[red]refused:[/] {exc}")
        return 1
    if args.json:
        _json_out(manifest)
        return 0
    console.print(
        f"[green]wrote[/] {args.out} ({manifest.model_version}): "
        f"{len(manifest.experiments)} experiments, holdout "
        f"{manifest.holdout.share if manifest.holdout else 0:g}, exploration epsilon "
        f"{manifest.exploration.epsilon if manifest.exploration else 0:g}"
    )
    return 0


def _bundle_parser(sub: Any) -> None:
    bundle = sub.add_parser(
        "bundle",
        help="verify, compare, promote and roll back bundles",
        description="Manage the live bundle: servers load bundles through the symlink LIVE.",
    )
    cmds = bundle.add_subparsers(dest="bundle_command", required=True)
    verify = cmds.add_parser("verify", help="verify a bundle as serving does (exit 1 if refused)")
    verify.add_argument("bundle")
    verify.set_defaults(run=_bundle_verify)
    diff = cmds.add_parser("diff", help="compare metrics, segments, personas and the catalogue")
    diff.add_argument("current")
    diff.add_argument("candidate")
    diff.add_argument(
        "--sample",
        default=None,
        metavar="JSONL",
        help="decide requests (JSON lines) to migrate instead of both bundles' parity rows",
    )
    diff.set_defaults(run=_bundle_diff)
    promote = cmds.add_parser(
        "promote",
        help="verify CANDIDATE and point the symlink LIVE at it atomically",
        epilog="SPEC is NAME (must not get worse), NAME>=DELTA or NAME<=DELTA, where DELTA "
        "bounds candidate minus current; lower is better for names containing "
        "loss/mae/brier/diff.",
    )
    promote.add_argument("candidate")
    promote.add_argument("live")
    promote.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="SPEC",
        help="a metric that must not regress against the current bundle (repeatable)",
    )
    promote.add_argument(
        "--current", default=None, help="bundle to compare with (default: LIVE's target)"
    )
    promote.set_defaults(run=_bundle_promote)
    rollback = cmds.add_parser("rollback", help="point LIVE back at LIVE.previous")
    rollback.add_argument("live")
    rollback.set_defaults(run=_bundle_rollback)
    policy = cmds.add_parser(
        "policy",
        help="copy BUNDLE to --out with the holdout, experiments and exploration of a policy file",
    )
    policy.add_argument("bundle")
    policy.add_argument("--policy", required=True, metavar="FILE", help="policy TOML or JSON")
    policy.add_argument("--out", required=True, help="bundle directory to write")
    policy.add_argument("--name", default="policy", help="model version prefix")
    policy.set_defaults(run=_bundle_policy)
    for cmd in (verify, diff, promote, rollback, policy):
        cmd.add_argument("--json", action="store_true", help="print the result as JSON")


# --- tailor evaluate / export-vw / retrain ---------------------------------------------------


def _read_log_or_fail(args: argparse.Namespace, console: Console) -> Any:
    """The logged choices of ``--log`` (only ``--slot`` when given), or None when unreadable."""
    from model_export.offline.evaluate import EvaluationError, read_log

    try:
        data = read_log(args.log, reward=args.reward)
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

    data = _read_log_or_fail(args, console)
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
        _json_out(result)
    else:
        _print_evaluation(data, result, console)
    return 0


def _export_vw(args: argparse.Namespace, console: Console) -> int:
    from model_export.offline.vw import export_vw

    data = _read_log_or_fail(args, console)
    if data is None:
        return 1
    report = export_vw(data, args.out)
    if args.json:
        _json_out(report)
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
    from model_export.inputs.ingest import IngestError
    from model_export.offline.evaluate import EvaluationError
    from model_export.offline.retrain import log as retrain_log
    from model_export.offline.retrain import retrain
    from model_export.run_config import TrainingDataError
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


def _offline_parser(sub: Any) -> None:
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
    """``tailor report``: experiment reports from an event log (see sdk/reports.py)."""
    from sdk.analysis.reports import design_of, experiment_reports, read_log
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
        _json_out(reports)
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


def _report_parser(sub: Any) -> None:
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tailor`` command."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        # a separate program, not an import: model_export and server stay independent
        os.execv(sys.executable, [sys.executable, "-m", "server", *argv[1:]])
    parser = argparse.ArgumentParser(prog="tailor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train models and write a bundle")
    train.add_argument("--out", default="var/bundles/demo", help="bundle directory to write")
    train.add_argument("--visitors", type=int, default=20_000, help="synthetic visits")
    train.add_argument("--seed", type=int, default=7)
    train.add_argument("--segments", type=int, default=None, help="fix k instead of choosing")
    train.add_argument("--catalogue", default=None, help="catalogue JSON (default: demo)")
    train.add_argument("--name", default="demo", help="model version prefix")
    train.add_argument("--if-missing", action="store_true", help="skip if a bundle exists")
    train.add_argument(
        "--config",
        default=None,
        metavar="TOML",
        help="train from your own data described by this config (else: synthetic demo data)",
    )
    train.add_argument("--report", default=None, metavar="PATH", help="also write the model card")
    sub.add_parser(
        "serve",
        help="run the decision server (python -m server): same options",
        add_help=False,
    )
    inspect = sub.add_parser("inspect", help="verify a bundle and show its version")
    inspect.add_argument("bundle")
    inspect.add_argument("--report", default=None, metavar="PATH", help="write the model card")
    _bundle_parser(sub)
    _offline_parser(sub)
    _report_parser(sub)
    args = parser.parse_args(argv)
    console = Console(stderr=False)
    if args.command == "train":
        return _train(args, console)
    if args.command == "report":
        return int(args.run(args, console))
    if args.command in ("bundle", "evaluate", "export-vw", "retrain"):
        return int(args.run(args, console))
    return _inspect(args, console)


if __name__ == "__main__":
    sys.exit(main())
