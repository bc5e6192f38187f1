"""HTTP handlers for feedback events (``POST /v1/events``) and visitor profiles (``GET`` and
``DELETE /v1/visitors/{id}``, secret key).

Events are accepted as JSON or ``text/plain`` (``sendBeacon``), applied to profiles that a
consented decide request created and appended to the event log, both as :mod:`sdk.consent`
allows (without storage consent anonymously, URLs without their query);
a refused batch is answered ``202 {"accepted": 0}``. Deleting a visitor erases the profile and
cached decisions and appends an erasure marker to the log.

A public key is in every page, so its batches are checked before anything is applied or
logged: each event names a decision the server issued to its visitor and an event id never
seen (:class:`server.stores.EventGuard`: 403 ``forged-event``, 409 ``replayed-event``), a
decision converts once, values are bounded (422), and a stored profile changes only with the
batch's valid visitor token. Their records are marked untrusted; secret keys' are trusted.
When the shared guard (Redis) does not answer, a public batch is spooled to local disk
(:mod:`server.stores.batch_spool`), answered 202 with ``spooled``, and checked, applied and
logged by :func:`replay_batches` once Redis answers again.

Must not import model_export.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from sdk import Decider
from sdk.consent import event_log_policy, event_permissions, gpc
from sdk.schema import Event, EventBatch, Id
from sdk.tokens import TokenCheck
from server.bodies import decode_body, read_body
from server.eventlog import EventLog
from server.identity import Identity
from server.openapi import EVENTS_DOCS, VISITOR_DELETE_DOCS, VISITOR_GET_DOCS
from server.problems import Problem
from server.stores import DECISIVE_EVENTS, EventGuard, ProfileStore
from server.stores.batch_spool import BatchSpool, SpooledBatch
from server.stores.redis_conn import RedisState, StateUnavailable
from server.stores.spool import apply_or_spool
from server.visitors import erase_visitor, state_unavailable

__all__ = ["DecisionCache", "EventsEngine", "is_public", "route_handlers"]


_encoder = msgspec.json.Encoder()
_batch_decoder = msgspec.json.Decoder(EventBatch)


class _Settings(Protocol):
    @property
    def max_body_bytes(self) -> int: ...

    @property
    def browser_max_conversion_value(self) -> float: ...


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

    @property
    def guard(self) -> EventGuard: ...

    @property
    def decider(self) -> Decider | None:
        """The serving decider: its sensitivity scrubs the events."""
        ...


def _engine(state: State) -> EventsEngine:
    engine: EventsEngine = state.engine
    return engine


def is_public(request: Request[Any, Any, Any]) -> bool:
    """Whether the caller is a public key (the tag, the keyless demo): anything but a secret
    key is, as for decides."""
    key = request.scope.get("state", {}).get("tailor_key")
    return getattr(key, "kind", None) != "secret"


def _check_values(events: list[Event], limit: float) -> None:
    """Refuse a browser's event value above ``limit`` (422, naming the event)."""
    for i, event in enumerate(events):
        if event.value is not None and event.value > limit:
            raise Problem(
                422,
                "value-too-large",
                "Value too large for a browser",
                f"a public key may report a value of at most {limit:g}; send real order "
                "values from your backend as confirmed conversions (POST /v1/conversions, "
                f"secret key) - at `$.events[{i}].value`",
            )


async def _guard(engine: EventsEngine, events: list[Event], batch_id: str) -> None:
    """Refuse a public-key batch with a forged or replayed event (nothing of it is recorded);
    :class:`StateUnavailable` when the shared guard does not answer."""
    refusal = await engine.guard.check_and_record(events, batch_id=batch_id)
    if refusal is None:
        return
    if refusal.kind == "forged-event":
        raise Problem(403, refusal.kind, "Forged event", refusal.detail)
    raise Problem(409, refusal.kind, "Replayed event", refusal.detail)


def _proven(identity: Identity | None, batch: EventBatch) -> set[str]:
    """The visitors of a public-key batch its visitor token proves (their stored profiles may
    change); none without a token or an identity."""
    if identity is None or batch.visitor_token is None:
        return set()
    visitors = {e.visitor_id for e in batch.events}
    return {v for v in visitors if identity.check(batch.visitor_token, v) is TokenCheck.VALID}


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
    appended to the event log; a public key's are checked first (see the module)."""
    engine = _engine(state)
    body = await read_body(request, engine.settings.max_body_bytes)
    batch = decode_body(body, _batch_decoder, "event batch")
    allowed = event_permissions(batch.consent, refused_by_gpc=gpc(request.headers))
    if not allowed.accept:
        return _json({"accepted": 0}, 202)
    public = is_public(request)
    # sensitive categories and pages leave the events before anything stores or logs them
    decider = engine.decider
    if decider is not None and decider.sensitivity:
        batch = msgspec.structs.replace(
            batch, events=[decider.sensitivity.scrub_event(e) for e in batch.events]
        )
    received_at = datetime.now(UTC)
    proven: set[str] = set()
    if public:
        _check_values(batch.events, engine.settings.browser_max_conversion_value)
        batch_id = uuid.uuid4().hex
        try:
            await _guard(engine, batch.events, batch_id)
        except StateUnavailable as exc:  # checked, applied and logged when Redis is back
            spool: BatchSpool | None = getattr(engine, "batch_spool", None)
            item = SpooledBatch(batch_id=batch_id, received_at=received_at, batch=batch)
            if spool is None or not spool.append([item]):
                raise state_unavailable() from exc
            return _json({"accepted": len(batch.events), "spooled": len(batch.events)}, 202)
        proven = _proven(state.get("identity"), batch)
    await record_batch(engine, batch, public=public, proven=proven, received_at=received_at)
    return _json({"accepted": len(batch.events)}, 202)


async def replay_batch(engine: EventsEngine, identity: Identity | None, item: SpooledBatch) -> bool:
    """Check a spooled public-key batch with the guard and, when it passes, record it as the
    handler would have: True when recorded, False when refused (forged or replayed).

    Raises:
        StateUnavailable: the guard still cannot answer (the batch stays spooled).
    """
    batch = item.batch
    refusal = await engine.guard.check_and_record(batch.events, batch_id=item.batch_id)
    if refusal is not None:
        return False
    proven = _proven(identity, batch)
    await record_batch(engine, batch, public=True, proven=proven, received_at=item.received_at)
    return True


async def replay_batches(
    engine: EventsEngine,
    identity: Identity | None,
    interval: float = 1.0,
    settle: float = 5.0,
) -> None:
    """Each ``interval``: write the decisions this worker issued while Redis was down, and
    replay spooled batches (:mod:`server.stores.batch_spool`) once Redis has answered for
    ``settle`` seconds, by when every worker has written its own (a batch naming one of
    them would otherwise be refused as forged); runs in the lifespan until cancelled."""
    redis: RedisState | None = getattr(engine, "redis", None)
    back_since: float | None = None
    while True:
        await anyio.sleep(interval)
        spool: BatchSpool | None = getattr(engine, "batch_spool", None)
        if redis is None or spool is None:
            continue
        try:
            await engine.guard.flush()
            if not spool.pending_bytes():
                back_since = None
                continue
            await redis.call(lambda c: c.ping())
        except StateUnavailable:
            back_since = None
            continue
        now = anyio.current_time()
        back_since = now if back_since is None else back_since
        if now - back_since >= settle:
            await spool.replay(lambda item: replay_batch(engine, identity, item))


async def record_batch(
    engine: EventsEngine,
    batch: EventBatch,
    *,
    public: bool,
    proven: set[str],
    received_at: datetime,
) -> None:
    """Apply an accepted batch (a secret key's, or a public key's that passed the guard) to
    stored profiles and append it to the event log, as its consent allows."""
    allowed = event_permissions(batch.consent, refused_by_gpc=False)  # refused ones stop before
    by_visitor: defaultdict[str, list[Event]] = defaultdict(list)
    for event in batch.events:
        by_visitor[event.visitor_id].append(event)
    stored: set[str] = set()
    spool = getattr(engine, "spool", None)
    for visitor_id, events in by_visitor.items():
        if not allowed.apply_to_profiles:
            continue  # the visitor allows personalization but no stored profile
        if public and visitor_id not in proven:
            continue  # no valid visitor token: an unstored visitor, whatever its id
        # no stored profile (no storage consent was seen for this visitor): nothing applied;
        # the store unavailable: spooled and applied when it answers again (logged anonymously)
        applied = await apply_or_spool(engine.profiles, spool, visitor_id, events, now=received_at)
        if applied is None:
            continue
        stored.add(visitor_id)
        if engine.decision_cache is not None and any(e.type in DECISIVE_EVENTS for e in events):
            engine.decision_cache.invalidate(visitor_id)  # other workers: by the store
    if engine.eventlog is not None:
        consent = batch.consent
        engine.eventlog.append_events(
            batch.events,
            received_at=received_at,
            policy=lambda visitor_id: event_log_policy(
                consent, refused_by_gpc=False, stored=visitor_id in stored
            ),
            trusted=not public,
        )
    metrics = getattr(engine, "metrics", None)
    if metrics is not None:
        metrics.observe_events(batch.events)  # incl. the tag's flicker timings


@get("/v1/visitors/{visitor_id:str}", **VISITOR_GET_DOCS)
async def get_visitor(visitor_id: FromPath[str], state: State) -> Response[bytes]:
    """Everything stored about a visitor: behaviour, suppressed and dismissed offers."""
    engine = _engine(state)
    try:
        profile = await engine.profiles.snapshot(_visitor_id(visitor_id))
    except StateUnavailable as exc:
        raise state_unavailable() from exc
    if profile is None:
        raise Problem(404, "visitor-not-found", "Visitor not found", "no profile is stored")
    return _json(profile)


@delete("/v1/visitors/{visitor_id:str}", status_code=204, **VISITOR_DELETE_DOCS)
async def delete_visitor(visitor_id: FromPath[str], state: State) -> None:
    """Erase a visitor: profile, suppressions, cached decisions; mark the event log."""
    await erase_visitor(_engine(state), _visitor_id(visitor_id))  # as POST /v1/me/forget


route_handlers = [ingest_events, get_visitor, delete_visitor]
