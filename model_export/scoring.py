"""``tailor score``: every customer of the configured data scored by a bundle, as a table for a
CRM or an email tool (segment, persona, lifecycle, RFM code, activity, churn risk, expected
purchases and value, the top offer).

Each customer is the visit a profile at the as-of time would send
(:func:`model_export.inputs.profiles.iter_profile_requests`, the rows ``tailor train`` learned
from), decided by the bundle's own :class:`sdk.Decider` in batches, so a row holds exactly what
``Decider.decide`` answers for that customer. A horizon other than the bundle's is answered by
its buy-till-you-die models (:func:`sdk.btyd.score_customers`), which forecast any horizon; the
supervised models were trained for one.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from model_export.errors import TrainingDataError
from model_export.fit.btyd import summary_of
from model_export.inputs import ingest, profiles
from model_export.inputs.config import TrainingConfig
from sdk import Decider
from sdk.btyd import score_customers
from sdk.bundle import Bundle
from sdk.schema import DecideRequest, Decision

__all__ = ["COLUMNS", "ScoreRun", "score_file", "score_frame"]

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
#: Decision score of each column.
_SCORES = {
    "p_alive": "pAlive",
    "churn_probability": "churnProbability",
    "expected_purchases": "expectedPurchases",
    "expected_value": "expectedValue",
}


@dataclass(frozen=True)
class ScoreRun:
    """A scored table and how it was made."""

    table: pl.DataFrame
    as_of: datetime
    horizon_days: float | None
    #: which model gave each score column (``supervised``, ``btyd`` or ``none``)
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


def _row_values(d: Decision) -> tuple[object, ...]:
    scores = d.scores or {}
    return (
        d.segment.id if d.segment is not None else None,
        d.persona.id if d.persona is not None else None,
        d.lifecycle.stage,
        d.rfm.code if d.rfm is not None else None,
        *(scores.get(name) for name in _SCORES.values()),
        d.offers[0].id if d.offers else None,
    )


def score_frame(
    bundle: Bundle,
    customers: pl.DataFrame,
    as_of: datetime,
    *,
    horizon_days: float | None = None,
    chunk_size: int = 10_000,
) -> ScoreRun:
    """Score the customers of a profile frame (:func:`model_export.inputs.profiles.build_profiles`
    at ``as_of``).

    Raises:
        ValueError: ``horizon_days`` differs from the bundle's and the bundle has no
            buy-till-you-die models to forecast it.
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
    decider = Decider(bundle, clock=lambda: as_of)
    rows: list[tuple[object, ...]] = []
    extra: dict[str, list[float]] = {name: [] for name in _SCORES.values()}
    for chunk in _chunks(profiles.iter_profile_requests(customers, as_of), chunk_size):
        rows.extend(_row_values(d) for d in decider.decide_many(chunk))
        if other_horizon and btyd is not None:
            forecast = score_customers(btyd, summary_of(chunk), horizon_days=horizon_days)
            for name in extra:
                extra[name].extend(forecast.get(name, np.full(len(chunk), np.nan)).tolist())
    names = COLUMNS[1:]
    columns = {name: [r[i] for r in rows] for i, name in enumerate(names)}
    served_by_btyd = {"pAlive", *btyd.serves} if btyd is not None else set()
    sources = {}
    for column, score in _SCORES.items():
        if other_horizon:
            columns[column] = [None if v != v else round(v, 6) for v in extra[score]]
        if other_horizon or score in served_by_btyd:
            found = any(v is not None for v in columns[column])
            sources[column] = "btyd" if found else "none"
        else:
            found = any(v is not None for v in columns[column])
            sources[column] = "supervised" if found else "none"
    table = pl.DataFrame(
        {"customer_id": customers.get_column("customer_id"), **columns},
        schema_overrides=dict.fromkeys(_SCORES, pl.Float64),
    ).select(COLUMNS)
    return ScoreRun(table, as_of, horizon_days if other_horizon else bundle_horizon, sources)


def score_file(
    bundle: Bundle,
    config: TrainingConfig,
    out: Path,
    *,
    as_of: datetime | None = None,
    horizon_days: float | None = None,
) -> ScoreRun:
    """Read the configured data, score every customer with a purchase before ``as_of`` (the
    config's cutoff, else just after the newest transaction) and write ``out`` (``.csv`` or
    ``.parquet``).

    Raises:
        ValueError: ``out`` is neither ``.csv`` nor ``.parquet``, or the horizon cannot be
            scored (:func:`score_frame`).
        TrainingDataError: no transaction before ``as_of``.
    """
    if out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out must end in .csv or .parquet, not {out.suffix or out.name!r}")
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
    customers = customers.filter(pl.col("purchases") > 0)
    if customers.is_empty():
        raise TrainingDataError(f"no customer bought before {as_of.isoformat()}")
    run = score_frame(bundle, customers, as_of, horizon_days=horizon_days)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        run.table.write_csv(out)
    else:
        run.table.write_parquet(out)
    return run
