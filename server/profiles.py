"""The profile-import route (``POST /v1/profiles/import``, secret key): the order history of
known customers, pushed by the site's backend (``tailor profiles push``), so that a visitor
identified as one of them is decided with their whole history on any device.

Each row is one customer's aggregates as of ``asOf`` (:class:`~sdk.schema.CustomerProfile`;
no order rows are sent or stored) and becomes the base of the purchase counts of the user's
stored record (:func:`server.stores.base.with_history`), the record every visitor linked to
the user reads. Nothing counts twice: purchases recorded live (conversions, conversion events)
dated at or after ``asOf`` count on top of the base, older ones are in it; a later push
replaces the base and drops the live purchases it now contains; the same push again is
``unchanged``, an older ``asOf`` than the stored one ``stale``. A row that contradicts itself
is ``invalid`` with its reason (the others are stored); a body that violates the schema is a
422 problem and nothing is stored. An erased user stays erased until a later push creates
their record again (conversions never re-create it). With the shared store down: 503
``state-unavailable``; a push may then be repeated safely.

Must not import model_export.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State

from sdk.schema import (
    PROFILE_BATCH_MAX,
    CustomerProfile,
    ProfileBatch,
    ProfileOutcome,
    ProfilesImported,
)
from server.bodies import decode_body, read_body
from server.openapi import SECRET_KEY_SECURITY, wire_docs
from server.problems import Problem
from server.routes import BATCH_BODY_FACTOR
from server.state import Engine
from server.stores.base import History
from server.stores.redis_conn import StateUnavailable
from server.visitors import state_unavailable

__all__ = ["CLOCK_SKEW", "PROFILES_IMPORT_DOCS", "as_history", "route_handlers", "why_invalid"]

#: How far in the future an ``asOf`` may be (clocks of the backend and the server differ).
CLOCK_SKEW = timedelta(minutes=5)
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ProfileBatch)

PROFILES_IMPORT_DOCS = wire_docs(
    operation_id="importProfiles",
    summary="Push customers' order-history profiles",
    description=(
        f"The order history of known customers, 1 to {PROFILE_BATCH_MAX} a call, as "
        "aggregates as of `asOf` (purchases, revenue, first and last purchase, categories; "
        "never order rows), stored as the base of the profile of the user `userId`: a visitor "
        "identified as that user (a decide with `userId`, signed by the backend's user token "
        "for a public key) is decided with it on any device. Purchases recorded live at or "
        "after `asOf` count on top; a later push replaces the base and the live purchases "
        "before its `asOf`, so nothing counts twice. Each row's outcome is in `results`: "
        "`written`, `unchanged` (the same history again), `stale` (a later `asOf` is stored) "
        "or `invalid` (with its `reason`; nothing stored for it). Idempotent: a failed call "
        "may be repeated. An erased user is created again only by a later push."
    ),
    request=ProfileBatch,
    response=ProfilesImported,
    response_description="Every row's outcome, in order, and their counts",
    problems=(400, 413, 415, 422, 503),
    tags=("visitors",),
    security=SECRET_KEY_SECURITY,
)


def why_invalid(row: CustomerProfile, now: datetime) -> str | None:
    """Why ``row`` contradicts itself or the clock (None: it does not)."""
    first, last = row.first_purchase_at, row.last_purchase_at
    if row.as_of > now + CLOCK_SKEW:
        return "asOf is in the future"
    if row.purchases == 0:
        if row.revenue > 0 or first is not None or last is not None:
            return "no purchases, yet revenue or purchase times are given"
        return None
    if first is None or last is None:
        return "firstPurchaseAt and lastPurchaseAt are required when purchases > 0"
    if first > last:
        return "firstPurchaseAt is after lastPurchaseAt"
    if last > row.as_of:
        return "lastPurchaseAt is after asOf (the history has only orders before asOf)"
    if row.purchases == 1 and first != last:
        return "one purchase with two different purchase times"
    return None


def as_history(row: CustomerProfile) -> History:
    """The stored :class:`History` of a valid row (times in UTC, blank categories dropped)."""

    def utc(value: datetime | None) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    categories = (c.strip() for c in row.categories)
    return History(
        as_of=row.as_of.astimezone(UTC),
        purchases=row.purchases,
        revenue=row.revenue,
        first_purchase=utc(row.first_purchase_at),
        last_purchase=utc(row.last_purchase_at),
        categories=tuple(dict.fromkeys(c for c in categories if c)),
    )


_REASONS = {"stale": "a history with a later asOf is stored"}


@post("/v1/profiles/import", status_code=200, **PROFILES_IMPORT_DOCS)
async def import_profiles(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Customers' order histories: each the base of its user's stored profile."""
    engine: Engine = state.engine
    body = await read_body(request, engine.settings.max_body_bytes * BATCH_BODY_FACTOR)
    batch = decode_body(body, _decoder, "profile batch")
    store = engine.profiles
    if store is None:
        raise Problem(503, "no-profile-store", "No profile store", "this server stores nothing")
    now = datetime.now(UTC)
    outcomes: list[ProfileOutcome | None] = [None] * len(batch.profiles)
    valid: list[tuple[int, str, History]] = []
    seen: set[str] = set()
    for i, row in enumerate(batch.profiles):
        reason = why_invalid(row, now)
        if reason is None and row.user_id in seen:
            reason = "the same userId twice in one batch"
        seen.add(row.user_id)
        if reason is not None:
            outcomes[i] = ProfileOutcome(user_id=row.user_id, status="invalid", reason=reason)
        else:
            valid.append((i, row.user_id, as_history(row)))
    try:
        pushed = await store.push_histories([(u, h) for _, u, h in valid], now=now)
    except StateUnavailable as exc:
        raise state_unavailable() from exc  # 503 with Retry-After; pushing again is safe
    for (i, user_id, _), result in zip(valid, pushed, strict=True):
        status: Any = result.status
        outcomes[i] = ProfileOutcome(user_id=user_id, status=status, reason=_REASONS.get(status))
        if engine.decision_cache is not None:
            for visitor in result.visitors:  # decided again on the new history
                engine.decision_cache.invalidate(visitor)
    results = [o for o in outcomes if o is not None]
    counts = {s: sum(o.status == s for o in results) for s in ("written", "unchanged", "stale")}
    answer = ProfilesImported(
        **counts, invalid=sum(o.status == "invalid" for o in results), results=results
    )
    return Response(
        _encoder.encode(answer),
        status_code=200,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


route_handlers = [import_profiles]
