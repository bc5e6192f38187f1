"""``tailor score``: every customer of the configured data scored by a bundle, as a table for a
CRM or an email tool (segment, persona, lifecycle, RFM code, activity, churn risk, expected
purchases and value, the top offer).

Each customer is the visit a profile at the as-of time would send
(:func:`model_export.inputs.profiles.iter_profile_requests`, the rows ``tailor train`` learned
from), profiled by the bundle's own :class:`sdk.Decider` in batches
(:meth:`sdk.Decider.profile_many`: the decision's own functions, without the slots, experiments
and ids a customer table does not hold), so a row holds exactly what ``Decider.decide`` answers
for that customer. A horizon other than the bundle's is answered by
its buy-till-you-die models and their adjustments (:func:`sdk.btyd.score_customers`), which
forecast any horizon; the supervised models were trained for one.

Must not import server.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import polars as pl

from model_export.errors import ModelExportError, TrainingDataError
from model_export.inputs import ingest, profiles
from model_export.inputs.config import TrainingConfig
from sdk import CustomerRow, Decider
from sdk.bundle import Bundle
from sdk.manifest import BtydScore
from sdk.schema import DecideRequest

__all__ = [
    "COLUMNS",
    "PARALLEL_MIN",
    "ScoreRun",
    "ScoringWorkerError",
    "at_horizon",
    "customers_as_of",
    "score_file",
    "score_frame",
    "score_table",
]

#: The columns of the table, in order.
COLUMNS = (
    "customer_id",
    "segment",
    "persona",
    "lifecycle",
    "rfm_code",
    "p_alive",
    "churn_probability",
    "expected_purchases",
    "expected_value",
    "top_offer",
)
_BTYD_SCORES: list[BtydScore] = ["churnProbability", "expectedPurchases", "expectedValue"]
#: Bundle models of the supervised scores (trained for one horizon).
_SUPERVISED = ("churn", "purchases", "value")
#: From this many customers, :func:`score_frame` uses one process per CPU by default.
PARALLEL_MIN = 50_000
#: Decision score of each column.
_SCORES = {
    "p_alive": "pAlive",
    "churn_probability": "churnProbability",
    "expected_purchases": "expectedPurchases",
    "expected_value": "expectedValue",
}


class ScoringWorkerError(ModelExportError):
    """A worker process of :func:`score_frame` failed (its last error line is the message)."""


@dataclass(frozen=True)
class ScoreRun:
    """A scored table and how it was made."""

    table: pl.DataFrame
    as_of: datetime
    horizon_days: float | None
    #: which model gave each score column (``supervised``, ``adjusted``, ``btyd`` or ``none``)
    sources: dict[str, str]


def _chunks(requests: Iterator[DecideRequest], size: int) -> Iterator[list[DecideRequest]]:
    chunk: list[DecideRequest] = []
    for request in requests:
        chunk.append(request)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _row_values(d: CustomerRow) -> tuple[object, ...]:
    return (
        d.segment,
        d.persona,
        d.lifecycle,
        d.rfm_code,
        *(d.scores.get(name) for name in _SCORES.values()),
        d.top_offer,
    )


def at_horizon(bundle: Bundle, days: float) -> Bundle:
    """The bundle forecasting ``days`` instead of its horizon: the buy-till-you-die models
    (with their adjustments, which hold at any horizon) give every score they can; the
    supervised models, trained for the bundle's horizon only, give none."""
    manifest = bundle.manifest
    btyd = manifest.btyd
    assert btyd is not None
    serves = [s for s in _BTYD_SCORES if s not in btyd.adjusted]
    if btyd.gamma_gamma is None:
        serves = [s for s in serves if s != "expectedValue"]
    models = {k: v for k, v in manifest.models.items() if k not in _SUPERVISED}
    changed = msgspec.structs.replace(btyd, horizon_days=days, serves=serves)
    return dataclasses.replace(
        bundle, manifest=msgspec.structs.replace(manifest, btyd=changed, models=models)
    )


def score_frame(
    bundle: Bundle,
    customers: pl.DataFrame,
    as_of: datetime,
    *,
    horizon_days: float | None = None,
    chunk_size: int = 10_000,
    workers: int | None = None,
) -> ScoreRun:
    """Score the customers of a profile frame (:func:`model_export.inputs.profiles.build_profiles`
    at ``as_of``).

    Args:
        workers: processes to score in (the frame is split between them in order, each part
            handed to a worker process as Arrow IPC, :mod:`model_export.score_worker`); by
            default one per CPU from :data:`PARALLEL_MIN` customers, else one.

    Raises:
        ValueError: ``horizon_days`` differs from the bundle's and the bundle has no
            buy-till-you-die models to forecast it, or ``workers`` is below 1.
        ScoringWorkerError: a worker process failed.
    """
    manifest = bundle.manifest
    btyd = manifest.btyd
    bundle_horizon = btyd.horizon_days if btyd is not None else None
    other_horizon = horizon_days is not None and horizon_days != bundle_horizon
    if other_horizon and btyd is None:
        raise ValueError(
            "this bundle has no buy-till-you-die models, so it scores only the horizon it was "
            "trained for; retrain with [predict] horizon_days, or leave --horizon-days out"
        )
    if workers is not None and workers < 1:
        raise ValueError("workers must be at least 1")
    scored = bundle
    if other_horizon and horizon_days is not None:
        scored = at_horizon(bundle, float(horizon_days))
    count = workers or ((os.cpu_count() or 1) if customers.height >= PARALLEL_MIN else 1)
    count = max(1, min(count, customers.height))
    if count == 1:
        table = score_table(scored, customers, as_of, chunk_size)
    else:
        size = -(-customers.height // count)
        parts = [customers.slice(i * size, size) for i in range(count)]
        helpers = [
            _Worker(bundle, part, as_of, horizon_days if other_horizon else None)
            for part in parts[1:]
        ]
        own = score_table(scored, parts[0], as_of, chunk_size)
        table = pl.concat([own, *(h.result() for h in helpers)])
    final = scored.manifest.btyd
    sources = {}
    for column, score in _SCORES.items():
        if table[column].null_count() == table.height:
            sources[column] = "none"
        elif final is not None and score in final.adjusted:
            sources[column] = "adjusted"
        elif final is not None and (score == "pAlive" or score in final.serves):
            sources[column] = "btyd"
        else:
            sources[column] = "supervised"
    return ScoreRun(table, as_of, horizon_days if other_horizon else bundle_horizon, sources)


def score_table(
    bundle: Bundle, customers: pl.DataFrame, as_of: datetime, chunk_size: int = 10_000
) -> pl.DataFrame:
    """The table (:data:`COLUMNS`) of the customers of a profile frame, in one process:
    :meth:`sdk.Decider.profile_many` of their requests in chunks of ``chunk_size``."""
    decider = Decider(bundle, clock=lambda: as_of)
    rows: list[tuple[object, ...]] = []
    for chunk in _chunks(profiles.iter_profile_requests(customers, as_of), chunk_size):
        rows.extend(_row_values(d) for d in decider.profile_many(chunk))
    names = COLUMNS[1:]
    columns = {name: [r[i] for r in rows] for i, name in enumerate(names)}
    return pl.DataFrame(
        {"customer_id": customers.get_column("customer_id"), **columns},
        schema={
            "customer_id": pl.String,
            "segment": pl.Int64,
            "persona": pl.String,
            "lifecycle": pl.String,
            "rfm_code": pl.String,
            **dict.fromkeys(_SCORES, pl.Float64),
            "top_offer": pl.String,
        },
    ).select(COLUMNS)


class _Worker:
    """One worker process scoring a part of the frame: the part goes to its stdin and the
    table comes back on its stdout, both as Arrow IPC (no pickling), from a thread so that
    the caller scores its own part meanwhile."""

    def __init__(
        self, bundle: Bundle, part: pl.DataFrame, as_of: datetime, horizon_days: float | None
    ) -> None:
        command = [
            sys.executable, "-m", "model_export.score_worker", str(bundle.path),
            bundle.manifest.model_version, as_of.isoformat(),
            "" if horizon_days is None else repr(float(horizon_days)),
        ]  # fmt: skip
        buffer = io.BytesIO()
        part.write_ipc(buffer)
        self._input = buffer.getvalue()
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._out: tuple[bytes, bytes] = (b"", b"")
        self._thread = threading.Thread(target=self._talk, daemon=True)
        self._thread.start()

    def _talk(self) -> None:
        self._out = self._proc.communicate(self._input)

    def result(self) -> pl.DataFrame:
        self._thread.join()
        stdout, stderr = self._out
        if self._proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ScoringWorkerError(
                f"a scoring worker failed (exit {self._proc.returncode}): {tail[0]}"
            )
        return pl.read_ipc(io.BytesIO(stdout))


def customers_as_of(
    config: TrainingConfig, as_of: datetime | None
) -> tuple[pl.DataFrame, datetime]:
    """The profiles of the configured data's customers with a purchase before ``as_of`` (the
    config's cutoff when None, else just after the newest transaction; UTC when naive), and
    that time.

    Raises:
        TrainingDataError: no valid transaction was read.
    """
    results = ingest.read_all(config)
    tx = results["transactions"].frame
    events = results["events"].frame if "events" in results else None
    if tx.is_empty():
        raise TrainingDataError("no valid transactions were read")
    if as_of is None:
        newest = tx["ts"].max()
        assert isinstance(newest, datetime)
        as_of = config.cutoff or (newest + timedelta(seconds=1))
    as_of = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
    customers = profiles.build_profiles(tx, as_of, events=events, include_visitors=False)
    return customers.filter(pl.col("purchases") > 0), as_of


def score_file(
    bundle: Bundle,
    config: TrainingConfig,
    out: Path,
    *,
    as_of: datetime | None = None,
    horizon_days: float | None = None,
    workers: int | None = None,
) -> ScoreRun:
    """Read the configured data, score every customer with a purchase before ``as_of`` (the
    config's cutoff, else just after the newest transaction) and write ``out`` (``.csv`` or
    ``.parquet``), in ``workers`` processes (:func:`score_frame`).

    Raises:
        ValueError: ``out`` is neither ``.csv`` nor ``.parquet``, or the horizon cannot be
            scored (:func:`score_frame`).
        TrainingDataError: no transaction before ``as_of``.
    """
    if out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out must end in .csv or .parquet, not {out.suffix or out.name!r}")
    customers, as_of = customers_as_of(config, as_of)
    if customers.is_empty():
        raise TrainingDataError(f"no customer bought before {as_of.isoformat()}")
    run = score_frame(bundle, customers, as_of, horizon_days=horizon_days, workers=workers)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        run.table.write_csv(out)
    else:
        run.table.write_parquet(out)
    return run
