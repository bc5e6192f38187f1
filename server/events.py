"""HTTP handlers for feedback events (``POST /v1/events``) and visitor profiles (``GET`` and
``DELETE /v1/visitors/{id}``, secret key).

Events are accepted as JSON or ``text/plain`` (``sendBeacon``), applied to profiles that a
consented decide request created and appended to the event log, both as :mod:`sdk.consent`
allows (without storage consent anonymously, URLs without their query);
a refused batch is answered ``202 {"accepted": 0}``. Deleting a visitor erases the profile and
cached decisions and appends an erasure marker to the log.

Must not import model_export.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from sdk.consent import event_log_policy, event_permissions, gpc
from sdk.schema import Event, EventBatch, Id
from server.bodies import decode_body, read_body
from server.eventlog import EventLog
from server.openapi import EVENTS_DOCS, VISITOR_DELETE_DOCS, VISITOR_GET_DOCS
from server.problems import Problem
from server.stores import ProfileStore

__all__ = ["DecisionCache", "EventsEngine", "route_handlers"]


_encoder = msgspec.json.Encoder()
_batch_decoder = msgspec.json.Decoder(EventBatch)
#: Event types after which a visit's cached decision is recomputed.
_DECISIVE = frozenset({"conversion", "not_interested"})


class _Settings(Protocol):
    @property
    def max_body_bytes(self) -> int: ...


class DecisionCache(Protocol):
    """The part of the decision cache these handlers use."""

    def invalidate(self, visitor_id: str) -> object:
        """Drop the cached decisions of ``visitor_id``."""
        ...


class EventsEngine(Protocol):
    """What these handlers need from ``state.engine`` (a :class:`server.state.Engine`)."""

    @property
    def settings(self) -> _Settings: ...

    @property
    def profiles(self) -> ProfileStore: ...

    @property
    def eventlog(self) -> EventLog | None: ...

    @property
    def decision_cache(self) -> DecisionCache | None: ...


def _engine(state: State) -> EventsEngine:
    engine: EventsEngine = state.engine
    return engine


def _visitor_id(value: str) -> str:
    try:
        return msgspec.convert(value, Id)
    except msgspec.ValidationError as exc:
        raise Problem(
            400, "invalid-visitor-id", "Invalid visitor id", f"{exc} - at `visitorId`"
        ) from exc


def _json(body: object, status: int = 200) -> Response[bytes]:
    return Response(
        _encoder.encode(body),
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


@post("/v1/events", status_code=202, **EVENTS_DOCS)
async def ingest_events(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Feedback events (impressions, clicks, conversions...): applied to stored profiles and
    appended to the event log."""
    engine = _engine(state)
    body = await read_body(request, engine.settings.max_body_bytes)
    batch = decode_body(body, _batch_decoder, "event batch")
    allowed = event_permissions(batch.consent, refused_by_gpc=gpc(request.headers))
    if not allowed.accept:
        return _json({"accepted": 0}, 202)
    received_at = datetime.now(UTC)
    by_visitor: defaultdict[str, list[Event]] = defaultdict(list)
    for event in batch.events:
        by_visitor[event.visitor_id].append(event)
    stored: set[str] = set()
    for visitor_id, events in by_visitor.items():
        if not allowed.apply_to_profiles:
            continue  # the visitor allows personalization but no stored profile
        if engine.profiles.get(visitor_id, now=received_at) is None:
            continue  # no stored profile: no storage consent was seen for this visitor
        stored.add(visitor_id)
        engine.profiles.apply(visitor_id, events, now=received_at)
        if engine.decision_cache is not None and any(e.type in _DECISIVE for e in events):
            engine.decision_cache.invalidate(visitor_id)
    if engine.eventlog is not None:
        consent = batch.consent
        engine.eventlog.append_events(
            batch.events,
            received_at=received_at,
            policy=lambda visitor_id: event_log_policy(
                consent, refused_by_gpc=False, stored=visitor_id in stored
            ),
        )
    metrics = getattr(engine, "metrics", None)
    if metrics is not None:
        metrics.observe_events(batch.events)  # incl. the tag's flicker timings
    return _json({"accepted": len(batch.events)}, 202)


@get("/v1/visitors/{visitor_id:str}", **VISITOR_GET_DOCS)
async def get_visitor(visitor_id: FromPath[str], state: State) -> Response[bytes]:
    """Everything stored about a visitor: behaviour, suppressed and dismissed offers."""
    engine = _engine(state)
    profile = engine.profiles.snapshot(_visitor_id(visitor_id))
    if profile is None:
        raise Problem(404, "visitor-not-found", "Visitor not found", "no profile is stored")
    return _json(profile)


@delete("/v1/visitors/{visitor_id:str}", status_code=204, **VISITOR_DELETE_DOCS)
async def delete_visitor(visitor_id: FromPath[str], state: State) -> None:
    """Erase a visitor: profile, suppressions, cached decisions; mark the event log."""
    engine = _engine(state)
    valid = _visitor_id(visitor_id)
    engine.profiles.delete(valid)
    if engine.decision_cache is not None:
        engine.decision_cache.invalidate(valid)
    if engine.eventlog is not None:
        engine.eventlog.append_erasure(valid)


route_handlers = [ingest_events, get_visitor, delete_visitor]
