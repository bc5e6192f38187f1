"""HTTP handlers for feedback events and visitor profiles.

``POST /v1/events`` takes an :class:`~sdk.schema.EventBatch` as ``application/json`` or
``text/plain`` (``navigator.sendBeacon`` sends ``text/plain`` so no CORS preflight is needed),
decoded with msgspec so that a problem names the field (``... - at `$.events[0].type```), and
answers ``202 {"accepted": n}``. Consent rules, since an event carries no consent of its own:

* ``Sec-GPC: 1`` (Global Privacy Control) is a refusal: the batch is dropped, nothing is applied
  or logged, and the answer is ``202 {"accepted": 0}`` (a beacon cannot act on an error). So is
  a batch whose ``consent`` (the tag sends the visitor's) grants neither personalization nor
  storage; one without storage consent is logged but changes no profile.
* Events change a visitor's profile only when the store already holds one, i.e. when a decide
  request with storage consent recorded a visit: the tag sends events whatever the consent, and
  no profile is ever created from events alone. The next read of the profile sees them
  (read-your-writes within a process). The visit's cached decision is dropped only after a
  ``conversion`` or ``not_interested`` (a first-order offer must not follow a purchase, a
  rejected offer must not come back); other events keep the visit's variants stable.
* Every accepted event is appended to the event log (no IP address, no user agent).

``GET /v1/visitors/{id}`` returns everything stored about a visitor (404 when nothing is);
``DELETE /v1/visitors/{id}`` erases the profile, its suppressions and cached decisions and
appends an erasure marker (the id's hash only) to the event log; it answers 204 whether or not
anything was stored (idempotent; the log may hold the visitor even without a profile). Purging
the log itself is offline: :meth:`server.eventlog.EventLog.purge_erased`. A visitor id that is
not a schema ``Id`` is a 400 problem. These two routes expose and erase personal data: they
need a secret key (``server.security`` treats every ``/v1/`` route not listed as public so).

The handlers read ``state.engine`` through :class:`EventsEngine`. Profile store calls are
synchronous and, for the in-memory store, take microseconds, so they run on the event loop; a
store doing network I/O should be called through ``sync_to_thread`` instead.

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
    consent = batch.consent
    refused = consent is not None and not (consent.personalization or consent.storage)
    if refused or request.headers.get("sec-gpc") == "1":
        return _json({"accepted": 0}, 202)
    received_at = datetime.now(UTC)
    by_visitor: defaultdict[str, list[Event]] = defaultdict(list)
    for event in batch.events:
        by_visitor[event.visitor_id].append(event)
    for visitor_id, events in by_visitor.items():
        if consent is not None and not consent.storage:
            continue  # the visitor allows personalization but no stored profile
        if engine.profiles.get(visitor_id, now=received_at) is None:
            continue  # no stored profile: no storage consent was seen for this visitor
        engine.profiles.apply(visitor_id, events, now=received_at)
        if engine.decision_cache is not None and any(e.type in _DECISIVE for e in events):
            engine.decision_cache.invalidate(visitor_id)
    if engine.eventlog is not None:
        engine.eventlog.append_events(batch.events, received_at=received_at)
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
