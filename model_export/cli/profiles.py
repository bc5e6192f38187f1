"""``tailor profiles push``: every customer's order-history profile of a config's data, pushed
to a decision server (``POST /v1/profiles/import``, :mod:`model_export.profile_push`) so that
identified visitors are decided with their whole history. Run it nightly; pushing again is
safe.

Exit codes: 0 pushed (stale rows included), 1 a call failed, the data could not be read or a
row was invalid, 2 usage errors.

Must not import server.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from model_export.cli.score import _as_of

__all__ = ["add_parser"]

#: The environment variable read for the secret key when neither option names one.
KEY_ENV = "TAILOR_SECRET_KEY"


def _key(args: argparse.Namespace) -> str:
    """The secret key from ``--key-file`` or the ``--key-env`` variable.

    Raises:
        ValueError: the file or the variable is missing or empty (never printing the key).
    """
    if args.key_file is not None:
        try:
            key = Path(args.key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read the key file: {exc.strerror}") from exc
        if not key:
            raise ValueError(f"the key file {args.key_file} is empty")
        return key
    key = os.environ.get(args.key_env, "").strip()
    if not key:
        raise ValueError(f"no secret key: set {args.key_env} or pass --key-file")
    return key


def _push(args: argparse.Namespace, console: Console) -> int:
    import msgspec

    from model_export.errors import TrainingDataError
    from model_export.inputs.config import load_config
    from model_export.inputs.ingest import IngestError
    from model_export.profile_push import push_config
    from sdk import Client, TailorError

    try:
        key = _key(args)
        config = load_config(args.config)
        with Client(args.url, api_key=key, timeout=args.timeout, breaker=False) as client:
            run = push_config(config, client.push_profiles, as_of=args.as_of)
    except (TailorError, OSError, ValueError, msgspec.ValidationError, IngestError,
            TrainingDataError) as exc:  # fmt: skip
        console.print(f"[red]cannot push profiles:[/] {exc}")
        return 1
    console.print(
        f"pushed {run.sent} customer profiles as of {run.as_of.isoformat()} to {args.url}: "
        f"written {run.written}, unchanged {run.unchanged}, stale {run.stale}, "
        f"invalid {run.invalid}"
    )
    if run.skipped:
        console.print(f"skipped {run.skipped} customers whose id is not a valid user id")
    for reason in run.reasons:
        console.print(f"[yellow]invalid[/] {reason}")
    return 1 if run.invalid else 0


def add_parser(sub: Any) -> None:
    """The parser of ``tailor profiles push``."""
    group = sub.add_parser(
        "profiles", help="push customers' order-history profiles to a decision server"
    )
    commands = group.add_subparsers(dest="profiles_command", required=True)
    push = commands.add_parser(
        "push",
        help="push every customer's profile (purchases, revenue, purchase times, categories) "
        "as of a date; the server keys them by customer id (the user id of identified visitors)",
    )
    push.add_argument("--config", required=True, help="the training TOML config (its data)")
    push.add_argument("--url", required=True, help="the decision server, e.g. https://…")
    keys = push.add_mutually_exclusive_group()
    keys.add_argument("--key-file", default=None, help="a file holding the secret key (sk_…)")
    keys.add_argument(
        "--key-env",
        default=KEY_ENV,
        help=f"the environment variable holding the secret key (default {KEY_ENV})",
    )
    push.add_argument(
        "--as-of",
        type=_as_of,
        default=None,
        help="the history as of this date or time (default: the config's cutoff, else just "
        "after the newest transaction); a server keeps the latest and ignores older ones",
    )
    push.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    push.set_defaults(run=_push)
