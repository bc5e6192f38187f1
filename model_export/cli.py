"""``tailor`` command line: ``tailor train`` builds a bundle, ``tailor inspect`` shows one.

Must not import server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["main"]


def _train(args: argparse.Namespace, console: Console) -> int:
    from model_export.build import train_bundle
    from model_export.catalogue import load_catalogue
    from model_export.train import TrainConfig

    out = Path(args.out)
    if args.if_missing and (out / "manifest.json").is_file():
        console.print(f"[green]bundle exists[/] at {out}; not retraining (--if-missing)")
        return 0
    config = TrainConfig(seed=args.seed, k=args.segments)
    catalogue = load_catalogue(args.catalogue) if args.catalogue else None
    with console.status("training...") as status:

        def progress(message: str) -> None:
            status.update(message)
            console.log(message)

        report = train_bundle(
            out,
            n_visitors=args.visitors,
            config=config,
            catalogue=catalogue,
            name=args.name,
            progress=progress,
        )
    m = report.manifest
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
    return 0


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
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tailor`` command."""
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
    inspect = sub.add_parser("inspect", help="verify a bundle and show its version")
    inspect.add_argument("bundle")
    args = parser.parse_args(argv)
    console = Console(stderr=False)
    if args.command == "train":
        return _train(args, console)
    return _inspect(args, console)


if __name__ == "__main__":
    sys.exit(main())
