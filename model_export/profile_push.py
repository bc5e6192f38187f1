"""Customers' order-history profiles for the decision server (``tailor profiles push``): the
configured data read as :func:`model_export.inputs.profiles.build_profiles` reads it, each
customer's aggregates as of a date as a :class:`~sdk.schema.CustomerProfile`, sent through
the SDK's ``Client.push_profiles`` to ``POST /v1/profiles/import`` (keyed by the customer id,
the id the site's backend signs user tokens for).

Only aggregates leave: purchases, revenue, first and last purchase time, the newest 50
categories. A customer id that is not a valid wire id (letters, digits, ``_ . : -``, at most
128) cannot name a user and is counted as skipped.

Must not import server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from model_export.inputs.config import TrainingConfig
from model_export.scoring import customers_as_of
from sdk.schema import PROFILE_CATEGORIES_MAX, CustomerProfile, ProfilesImported

__all__ = ["PushRun", "customer_rows", "push_config"]

_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
#: Rows handed to the client at a time (it sends them 1,000 a call).
CHUNK = 10_000
#: Invalid rows whose reasons a run keeps (to print).
KEPT_REASONS = 20


@dataclass
class PushRun:
    """What a push did: the date, rows sent, the server's counts, customers skipped (id not
    valid on the wire) and the first reasons of invalid rows."""

    as_of: datetime
    sent: int = 0
    skipped: int = 0
    written: int = 0
    unchanged: int = 0
    stale: int = 0
    invalid: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, answer: ProfilesImported) -> None:
        """Count one answer of the server."""
        self.written += answer.written
        self.unchanged += answer.unchanged
        self.stale += answer.stale
        self.invalid += answer.invalid
        for result in answer.results:
            if result.status == "invalid" and len(self.reasons) < KEPT_REASONS:
                self.reasons.append(f"{result.user_id}: {result.reason}")


def customer_rows(frame: pl.DataFrame, as_of: datetime) -> Iterator[CustomerProfile | str]:
    """Each customer of a :func:`~model_export.inputs.profiles.build_profiles` frame as the
    row the server takes, or its customer id when that is not a valid wire id."""
    columns = ("customer_id", "purchases", "revenue", "first_purchase", "last_purchase")
    names = frame.select(
        *columns,
        pl.col("recent_categories").list.eval(pl.element().str.slice(0, 64)),
    )
    for customer, purchases, revenue, first, last, categories in names.iter_rows():
        if not _ID.fullmatch(customer):
            yield customer
            continue
        bought = bool(purchases)
        yield CustomerProfile(
            user_id=customer,
            as_of=as_of,
            purchases=int(purchases or 0),
            revenue=float(revenue or 0.0) if bought else 0.0,
            first_purchase_at=first if bought else None,
            last_purchase_at=last if bought else None,
            # newest last, each once at its latest position, the newest 50
            categories=list(dict.fromkeys(reversed(categories or [])))[::-1][
                -PROFILE_CATEGORIES_MAX:
            ],
        )


def push_config(
    config: TrainingConfig,
    push: Callable[[Sequence[CustomerProfile]], ProfilesImported],
    *,
    as_of: datetime | None = None,
) -> PushRun:
    """Read the configured data and push every customer's profile as of ``as_of`` (the
    config's cutoff, else just after the newest transaction) with ``push`` (a client's
    ``push_profiles``).

    Raises:
        TrainingDataError: no valid transaction was read.
        sdk.errors.APIError, sdk.errors.TransportError: a call failed (earlier ones were
            stored; pushing again is safe).
    """
    frame, as_of = customers_as_of(config, as_of)
    run = PushRun(as_of=as_of)
    batch: list[CustomerProfile] = []
    for row in customer_rows(frame, as_of):
        if isinstance(row, str):
            run.skipped += 1
            continue
        batch.append(row)
        if len(batch) == CHUNK:
            run.add(push(batch))
            run.sent += len(batch)
            batch = []
    if batch:
        run.add(push(batch))
        run.sent += len(batch)
    return run
