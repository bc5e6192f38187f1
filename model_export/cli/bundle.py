"""``tailor bundle verify|diff|promote|rollback|policy|keygen|sign``: which bundle is live, and
why, and who signed it.

Must not import server.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from model_export.cli._common import json_out, num
from model_export.cli.train import add_public_key_option, add_signing_key_option

if TYPE_CHECKING:
    from model_export.bundle.lifecycle import BundleDiff, FieldChange, Migration, RequirementCheck

__all__ = ["add_parser"]


_CHANGE_STYLE = {
    "better": "green",
    "worse": "red",
    "same": "dim",
    "added": "cyan",
    "removed": "yellow",
}


def _bundle_verify(args: argparse.Namespace, console: Console) -> int:
    import msgspec

    from model_export.bundle.lifecycle import verify
    from model_export.bundle.signing import signature_report

    signed, line = signature_report(args.bundle, args.public_key)
    result = verify(args.bundle)
    if args.json:
        json_out({**msgspec.to_builtins(result), "ok": result.ok and signed, "signature": line})
        return 0 if result.ok and signed else 1
    console.print(line, style=None if signed else "red")
    if result.ok:
        console.print(
            f"[green]ok[/] {args.bundle}: {result.model_version}, feature set "
            f"{result.feature_set_version}, created "
            f"{result.created_at.isoformat(timespec='seconds') if result.created_at else '?'}"
        )
        console.print("verified: manifest, sha256 of every file, ONNX inputs/outputs, parity")
    else:
        console.print(f"[red]refused[/] {args.bundle}: {result.error_type}: {result.error}")
    return 0 if result.ok and signed else 1


def _bundle_keygen(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.signing import SigningError, generate_key_pair

    try:
        pair = generate_key_pair(args.out, overwrite=args.force)
    except SigningError as exc:
        console.print(f"[red]refused:[/] {exc}")
        return 1
    if not args.json:
        console.print(f"[green]wrote[/] private key {pair.private_key} (0600: keep it secret)")
        console.print(f"[green]wrote[/] public key {pair.public_key} (key id {pair.key_id})")
        console.print(f"public key inline, for TAILOR_BUNDLE_PUBLIC_KEYS: {pair.public_raw_b64}")
    else:
        json_out(pair)
    return 0


def _bundle_sign(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.signing import SigningError, sign_and_check
    from sdk.bundle import load_bundle
    from sdk.errors import BundleError

    try:
        load_bundle(args.bundle)  # sign only what verifies
        kid = sign_and_check(args.bundle, args.key)
    except (SigningError, BundleError) as exc:
        console.print(f"[red]refused:[/] {exc}")
        return 1
    if args.json:
        json_out({"bundle": args.bundle, "keyId": kid})
    else:
        console.print(f"[green]signed[/] {args.bundle} with key {kid}")
    return 0


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
        metrics.add_row(name, num(m.current), num(m.candidate), Text(delta, style=style))
    console.print(metrics)
    if d.policy:
        policy = Table(title="offline policy value")
        for col in ("estimate", "current", "candidate", "delta"):
            policy.add_column(col, justify="left" if col == "estimate" else "right")
        for m in d.policy:
            change = f"{m.delta:+.4g}" if m.delta is not None else ""
            policy.add_row(
                m.name, num(m.current), num(m.candidate), Text(change, _CHANGE_STYLE[m.change])
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
        json_out(result)
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
        table.add_row(c.requirement.spec, num(c.current), num(c.candidate), delta, verdict)
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
        json_out(result)
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
        json_out(result)
        return 0
    console.print(
        f"[green]rolled back[/] {result.live} -> {result.target} ({result.model_version})"
    )
    console.print(f"previous: {result.previous} (roll back again to return to it)")
    return 0


def _bundle_policy(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.lifecycle import LifecycleError, load_policy, with_policy

    try:
        manifest = with_policy(
            args.bundle,
            args.out,
            load_policy(args.policy),
            args.name,
            signing_key=args.signing_key,
        )
    except LifecycleError as exc:
        console.print(f"[red]refused:[/] {exc}")
        return 1
    if args.json:
        json_out(manifest)
        return 0
    console.print(
        f"[green]wrote[/] {args.out} ({manifest.model_version}): "
        f"{len(manifest.experiments)} experiments, holdout "
        f"{manifest.holdout.share if manifest.holdout else 0:g}, exploration epsilon "
        f"{manifest.exploration.epsilon if manifest.exploration else 0:g}"
    )
    return 0


def add_parser(sub: Any) -> None:
    """The parser of ``tailor bundle verify|diff|promote|rollback|policy``."""
    bundle = sub.add_parser(
        "bundle",
        help="verify, compare, promote and roll back bundles",
        description="Manage the live bundle: servers load bundles through the symlink LIVE.",
    )
    cmds = bundle.add_subparsers(dest="bundle_command", required=True)
    verify = cmds.add_parser("verify", help="verify a bundle as serving does (exit 1 if refused)")
    verify.add_argument("bundle")
    add_public_key_option(verify)
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
    add_signing_key_option(policy)
    policy.set_defaults(run=_bundle_policy)
    keygen = cmds.add_parser("keygen", help="write an Ed25519 key pair for signing bundles")
    keygen.add_argument("--out", required=True, metavar="DIR", help="directory for the keys")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    keygen.set_defaults(run=_bundle_keygen)
    sign = cmds.add_parser("sign", help="verify BUNDLE and write its signature.json")
    sign.add_argument("bundle")
    sign.add_argument("--key", required=True, metavar="PATH", help="private key PEM file")
    sign.set_defaults(run=_bundle_sign)
    for cmd in (verify, diff, promote, rollback, policy, keygen, sign):
        cmd.add_argument("--json", action="store_true", help="print the result as JSON")
