"""``tailor train`` (a bundle from synthetic data or a TOML config) and ``tailor inspect``.

Must not import server.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "add_inspect_parser",
    "add_public_key_option",
    "add_signing_key_option",
    "add_train_parser",
]


def _train(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.signing import SigningError, load_private_key, signature_report
    from model_export.fit.segments import TrainConfig
    from model_export.inputs.catalogue import load_catalogue
    from model_export.inputs.demo import demo_inputs
    from model_export.training import train

    out = Path(args.out)
    if args.if_missing and (out / "manifest.json").is_file():
        console.print(f"[green]bundle exists[/] at {out}; not retraining (--if-missing)")
        return 0
    if args.signing_key:  # a bad key fails now, not after the training run
        try:
            load_private_key(args.signing_key)
        except SigningError as exc:
            console.print(f"[red]cannot sign:[/] {exc}")
            return 1
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
            inputs = demo_inputs(
                n_visitors=args.visitors,
                config=config,
                catalogue=catalogue,
                name=args.name,
                progress=progress,
            )
            m = train(inputs, out, progress=progress, signing_key=args.signing_key).manifest
    if args.signing_key:  # write_bundle checked the signature before publishing
        console.print(signature_report(out, None)[1])
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

    from model_export.errors import TrainingDataError
    from model_export.inputs.config import load_config
    from model_export.inputs.customer import customer_inputs
    from model_export.inputs.ingest import IngestError
    from model_export.training import train

    try:
        config = load_config(args.config)
        report = train(
            customer_inputs(config, progress=progress),
            out,
            progress=progress,
            signing_key=args.signing_key,
        )
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
    for note in report.notes:  # skipped, demoted or unchecked models, with the reason
        console.print(f"[yellow]note:[/] {note}")
    btyd = report.manifest.btyd
    if btyd is not None:
        served = ", ".join(["pAlive", *btyd.serves])
        console.print(
            f"buy-till-you-die models serve: {served} (horizon {btyd.horizon_days:g} days)"
        )
        if btyd.adjusted:
            adjusted = ", ".join(btyd.adjusted)
            console.print(f"adjusted by supervised models (stacked origins): {adjusted}")
    return report.manifest


def _write_card(path: Path, manifest: Any, console: Console) -> None:
    from model_export.bundle.card import render_report

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(manifest), encoding="utf-8")
    console.print(f"[green]model card[/] {path}")


def _inspect(args: argparse.Namespace, console: Console) -> int:
    from model_export.bundle.signing import signature_report
    from sdk import BundleError
    from sdk.bundle import load_bundle

    signed, line = signature_report(args.bundle, args.public_key)
    console.print(line, style=None if signed else "red")
    if not signed:  # before anything else in the bundle is read
        return 1
    try:
        bundle = load_bundle(args.bundle, public_keys=args.public_key)
    except BundleError as exc:
        console.print(f"[red]refused:[/] {exc}")
        return 1
    m = bundle.manifest
    console.print(f"model version {m.model_version}, created {m.created_at.isoformat()}")
    console.print(f"verified: hashes, ONNX inputs/outputs, parity ({bundle.path / 'parity.jsonl'})")
    if args.report:
        _write_card(Path(args.report), m, console)
    return 0


def add_train_parser(sub: Any) -> None:
    """The parser of ``tailor train``."""
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
    add_signing_key_option(train)
    train.set_defaults(run=_train)


def add_inspect_parser(sub: Any) -> None:
    """The parser of ``tailor inspect``."""
    inspect = sub.add_parser("inspect", help="verify a bundle and show its version")
    inspect.add_argument("bundle")
    inspect.add_argument("--report", default=None, metavar="PATH", help="write the model card")
    add_public_key_option(inspect)
    inspect.set_defaults(run=_inspect)


def add_signing_key_option(parser: Any) -> None:
    """``--signing-key PATH`` (default ``$TAILOR_SIGNING_KEY``): sign the bundle written."""
    parser.add_argument(
        "--signing-key",
        default=os.environ.get("TAILOR_SIGNING_KEY") or None,
        metavar="PATH",
        help="Ed25519 private key PEM to sign the bundle with (default: $TAILOR_SIGNING_KEY)",
    )


def add_public_key_option(parser: Any) -> None:
    """``--public-key KEY`` (repeatable): require a signature by one of these keys."""
    parser.add_argument(
        "--public-key",
        action="append",
        default=None,
        metavar="KEY",
        help="trusted public key (PEM file, or base64 raw key); requires a valid signature",
    )
