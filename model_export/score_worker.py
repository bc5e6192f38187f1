"""A worker process of ``tailor score`` (:func:`model_export.scoring.score_frame`): reads a part
of the profile frame as Arrow IPC on stdin and writes its table as Arrow IPC on stdout.

``python -m model_export.score_worker BUNDLE MODEL_VERSION AS_OF [HORIZON_DAYS]``: the bundle is
loaded (and verified) again, and refused unless it is the model version the caller scored with.

Must not import server.
"""

from __future__ import annotations

import io
import sys
from datetime import datetime

import polars as pl

from model_export.scoring import at_horizon, score_table
from sdk import load_bundle


def main(argv: list[str]) -> int:
    path, version, as_of_text, horizon = argv
    bundle = load_bundle(path)
    if bundle.manifest.model_version != version:
        now = bundle.manifest.model_version
        sys.stderr.write(f"the bundle at {path} is now {now}, not {version}\n")
        return 1
    if horizon:
        bundle = at_horizon(bundle, float(horizon))
    customers = pl.read_ipc(io.BytesIO(sys.stdin.buffer.read()))
    table = score_table(bundle, customers, datetime.fromisoformat(as_of_text))
    table.write_ipc(sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
