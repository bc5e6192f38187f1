"""The confirmed-conversions route (``POST /v1/conversions``, secret key): purchases the
site's backend vouches for, the only revenue reports and retraining take as real.

A browser's conversion event is bounded and untrusted (:mod:`server.events`); the backend
that took the order confirms it here with its order id. Each order counts once (the event
guard remembers order ids for 30 days, claimed for the whole batch in one step; a duplicate is
skipped, not an error; with the shared guard's Redis down, 503 ``state-unavailable`` and
nothing counted, so the backend's retry is safe), changes the
visitor's stored profile when there is one (a purchase and its revenue, as a conversion event
does) and is logged as a ``conversion`` event with ``trusted: true`` and its ``orderId``.
Nothing in the batch says which consent the visitor gave, so it is logged as an event of
unknown consent: with ids for a visitor with a stored profile, else anonymously.

Must not import model_export.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State

from sdk.consent import event_log_policy
from sdk.schema import Conversion, ConversionBatch, Event
from server.bodies import decode_body, read_body
from server.events import EventsEngine
from server.openapi import CONVERSIONS_DOCS, ConversionsAccepted
from server.stores.redis_conn import StateUnavailable
from server.stores.spool import apply_or_spool
from server.visitors import state_unavailable

__all__ = ["as_event", "route_handlers"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ConversionBatch)


def as_event(conversion: Conversion) -> Event:
    """The ``conversion`` event a confirmed conversion is applied and logged as."""
    return Event(
        type="conversion",
        visitor_id=conversion.visitor_id,
        decision_id=conversion.decision_id,
        offer_id=conversion.offer_id,
        value=conversion.value,
        currency=conversion.currency,
        timestamp=conversion.timestamp,
        properties={"orderId": conversion.order_id},
    )


@post("/v1/conversions", status_code=202, **CONVERSIONS_DOCS)
async def record_conversions(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Confirmed conversions: counted once per order id, applied to stored profiles and logged
    as trusted revenue."""
    engine: EventsEngine = state.engine
    body = await read_body(request, engine.settings.max_body_bytes)
    batch = decode_body(body, _decoder, "conversion batch")
    try:  # one step for the whole batch: a failure claims none, so a retry is safe
        claimed = await engine.guard.claim_orders([c.order_id for c in batch.conversions])
    except StateUnavailable as exc:
        raise state_unavailable() from exc  # 503 with Retry-After; nothing was counted
    fresh = [c for c, new in zip(batch.conversions, claimed, strict=True) if new]
    events = [as_event(c) for c in fresh]
    received_at = datetime.now(UTC)
    stored: set[str] = set()
    spool = getattr(engine, "spool", None)
    for event in events:
        visitor_id = event.visitor_id
        # None: no profile (no storage consent was seen for this visitor), or spooled
        if (
            await apply_or_spool(engine.profiles, spool, visitor_id, [event], now=received_at)
            is None
        ):
            continue
        stored.add(visitor_id)
        if engine.decision_cache is not None:
            engine.decision_cache.invalidate(visitor_id)
    if engine.eventlog is not None and events:
        engine.eventlog.append_events(
            events,
            received_at=received_at,
            policy=lambda visitor_id: event_log_policy(
                None, refused_by_gpc=False, stored=visitor_id in stored
            ),
            trusted=True,
        )
    metrics = getattr(engine, "metrics", None)
    if metrics is not None and events:
        metrics.observe_events(events)
    answer = ConversionsAccepted(
        accepted=len(events), duplicates=len(batch.conversions) - len(events)
    )
    return Response(
        _encoder.encode(answer),
        status_code=202,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


route_handlers = [record_conversions]
