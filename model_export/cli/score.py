"""``tailor score``: every customer of a config's data scored by a bundle, written as CSV or
Parquet (:mod:`model_export.scoring`).

Must not import server.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["add_parser"]


def _as_of(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _out(text: str) -> Path:
    path = Path(text)
    if path.suffix not in (".csv", ".parquet"):
        raise argparse.ArgumentTypeError(f"must end in .csv or .parquet: {text!r}")
    return path


def _horizon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not 0 < value <= 3650:
        raise argparse.ArgumentTypeError("--horizon-days must be in (0, 3650]")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("--workers must be in [1, 64]")
    return value


def _score(args: argparse.Namespace, console: Console) -> int:
    import msgspec

    from model_export.errors import TrainingDataError
    from model_export.inputs.config import load_config
    from model_export.inputs.ingest import IngestError
    from model_export.scoring import score_file
    from sdk import TailorError, load_bundle

    started = time.perf_counter()
    try:
        bundle = load_bundle(args.bundle)
        config = load_config(args.config)
        run = score_file(
            bundle, config, args.out, as_of=args.as_of, horizon_days=args.horizon_days,
            workers=args.workers,
        )  # fmt: skip
    except (TailorError, OSError, ValueError, msgspec.ValidationError, IngestError,
            TrainingDataError) as exc:  # fmt: skip
        console.print(f"[red]cannot score:[/] {exc}")
        return 1
    took = time.perf_counter() - started
    horizon = f"{run.horizon_days:g} days" if run.horizon_days is not None else "the bundle's"
    console.print(
        f"scored {run.table.height} customers as of {run.as_of.isoformat()} "
        f"(horizon {horizon}) in {took:.1f} s"
    )
    sources = ", ".join(f"{column}: {source}" for column, source in run.sources.items())
    console.print(f"scores from: {sources}")
    console.print(f"[green]wrote[/] {args.out}")
    return 0


def add_parser(sub: Any) -> None:
    """The parser of ``tailor score``."""
    score = sub.add_parser(
        "score",
        help="score every customer of a config's data with a bundle, as CSV or Parquet",
    )
    score.add_argument("--bundle", required=True, help="bundle directory")
    score.add_argument("--config", required=True, help="the training TOML config (its data)")
    score.add_argument("--out", required=True, type=_out, help="scores.csv or scores.parquet")
    score.add_argument(
        "--horizon-days",
        type=_horizon,
        default=None,
        help="forecast horizon (default: the bundle's); another one is answered by the "
        "bundle's buy-till-you-die models",
    )
    score.add_argument(
        "--as-of",
        type=_as_of,
        default=None,
        help="score as of this date or time (default: the config's cutoff, else the newest "
        "transaction)",
    )
    score.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="processes to score in (default: one per CPU from 50,000 customers, else one)",
    )
    score.set_defaults(run=_score)
