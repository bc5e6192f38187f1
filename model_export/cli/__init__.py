"""``tailor`` command line: ``tailor train`` builds a bundle, ``tailor inspect`` shows one,
``tailor score`` scores every customer with one, ``tailor profiles push`` sends their
order-history profiles to a decision server, ``tailor bundle verify|diff|promote|rollback``
manage which bundle is live.

Exit codes: 0 success; 1 a bundle was refused or a requirement regressed; 2 usage errors
(bad arguments, a malformed ``--require`` or ``--sample``).

Must not import server.
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from model_export.cli import bundle, offline, profiles, report, score, train

__all__ = ["main"]


def _version() -> str:
    """``tailor X.Y.Z (hashing: compiled|python, decision path: compiled|python)``: the package
    and which paths run (:data:`sdk.hashing.IMPLEMENTATION`, :data:`sdk.native.IMPLEMENTATION`)."""
    from importlib.metadata import PackageNotFoundError, version

    from sdk.hashing import IMPLEMENTATION
    from sdk.native import IMPLEMENTATION as DECISION_PATH

    try:
        number = version("tailor")
    except PackageNotFoundError:
        number = "unknown"
    return f"tailor {number} (hashing: {IMPLEMENTATION}, decision path: {DECISION_PATH})"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tailor`` command."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["serve"], ["sink"]):
        # a separate program, not an import: model_export and server stay independent
        program = "server" if argv[0] == "serve" else "server.sink"
        os.execv(sys.executable, [sys.executable, "-m", program, *argv[1:]])
    parser = argparse.ArgumentParser(prog="tailor", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_train_parser(sub)
    sub.add_parser(
        "serve",
        help="run the decision server (python -m server): same options",
        add_help=False,
    )
    sub.add_parser(
        "sink",
        help="write the Redis event stream to log files (python -m server.sink): same options",
        add_help=False,
    )
    train.add_inspect_parser(sub)
    bundle.add_parser(sub)
    offline.add_parsers(sub)
    report.add_parser(sub)
    score.add_parser(sub)
    profiles.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.run(args, Console(stderr=False)))


if __name__ == "__main__":
    sys.exit(main())
