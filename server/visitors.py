"""HTTP handlers for a visitor's own data, proven by their visitor token: ``POST /v1/me``
reads it and ``POST /v1/me/forget`` erases it (public key; ``text/plain`` JSON bodies like
decide, so that no CORS preflight is needed).

:func:`erase_visitor` is the one erasure, shared with the site's backends' ``DELETE
/v1/visitors/{id}`` (secret key, :mod:`server.events`): the profile, suppressions and pinned
decisions in every replica, the cached decisions of every worker, and an erasure marker in the
event log. While the shared store does not answer, these routes answer 503 (nothing is read
or erased), never a stale or partial answer.

Must not import model_export.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State

from sdk.schema import DataRequest
from sdk.tokens import TokenCheck, token_visitor_id
from server.bodies import decode_body, read_body
from server.eventlog import EventLog
from server.identity import Identity
from server.openapi import JSON_MEDIA_TYPE, PUBLIC_KEY_SECURITY, wire_docs
from server.problems import Problem
from server.state import Engine
from server.stores import ProfileStore, VisitorProfile
from server.stores.redis_conn import StateUnavailable

__all__ = [
    "ME_DOCS",
    "ME_FORGET_DOCS",
    "Erased",
    "MyData",
    "VisitorStores",
    "erase_visitor",
    "route_handlers",
    "state_unavailable",
]

_encoder = msgspec.json.Encoder()


class MyData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What `POST /v1/me` answers: everything stored about the token's visitor."""

    visitor_id: str
    #: the stored profile, or null when nothing is stored (no storage consent, expired, erased)
    profile: VisitorProfile | None
    stored: bool


class Erased(msgspec.Struct, frozen=True, kw_only=True):
    """What `POST /v1/me/forget` answers: whether a profile was stored and is now erased."""

    erased: bool


class _Proof(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A :class:`~sdk.schema.DataRequest` as decoded: an absent token is a 401, not a 422."""

    visitor_token: str | None = None


_proof_decoder = msgspec.json.Decoder(_Proof)
_WHY = {
    TokenCheck.MISSING: "no visitorToken was sent",
    TokenCheck.MALFORMED: "the visitor token is malformed",
    TokenCheck.BAD_SIGNATURE: "the visitor token's signature is not valid for this server",
    TokenCheck.OTHER_VISITOR: "the visitor token is for another visitor",
    TokenCheck.EXPIRED: "the visitor token has expired; a new decision issues a new one",
}
_DATA_DESCRIPTION = (
    ' The body is `{"visitorToken": ...}` (a `DataRequest`), sent as `application/json` or '
    "`text/plain` like decide; a token that is absent, malformed, forged, expired or not "
    "verifiable by this server is a 401 `invalid-visitor-token`."
)
ME_DOCS = wire_docs(
    operation_id="myData",
    summary="A visitor reads their own data",
    description="Everything stored about the visitor whose token is sent." + _DATA_DESCRIPTION,
    request=DataRequest,
    request_media_types=(JSON_MEDIA_TYPE, "text/plain"),
    response=MyData,
    response_description="The stored profile (null when none is stored)",
    problems=(400, 413, 415, 422),
    tags=("visitors",),
    security=PUBLIC_KEY_SECURITY,
)
ME_FORGET_DOCS = wire_docs(
    operation_id="forgetMe",
    summary="A visitor erases their own data",
    description=(
        "The erasure of `DELETE /v1/visitors/{id}` for the visitor whose token is sent: "
        "profile, suppressions, cached decisions, and a marker in the event log."
        + _DATA_DESCRIPTION
    ),
    request=DataRequest,
    request_media_types=(JSON_MEDIA_TYPE, "text/plain"),
    response=Erased,
    response_description="Whether a stored profile was erased",
    problems=(400, 413, 415, 422),
    tags=("visitors",),
    security=PUBLIC_KEY_SECURITY,
)


def _engine(state: State) -> Engine:
    engine: Engine = state.engine
    return engine


def _json(body: object) -> Response[bytes]:
    return Response(
        _encoder.encode(body),
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


class _Invalidates(Protocol):
    def invalidate(self, visitor_id: str) -> object:
        """Drop the cached decisions of ``visitor_id``."""
        ...


class VisitorStores(Protocol):
    """Where a visitor's data lives (a :class:`server.state.Engine`)."""

    @property
    def profiles(self) -> ProfileStore | None: ...

    @property
    def decision_cache(self) -> _Invalidates | None: ...

    @property
    def eventlog(self) -> EventLog | None: ...


def state_unavailable() -> Problem:
    """The 503 problem of a visitor's data request while the shared store does not answer."""
    problem = Problem(
        503,
        "state-unavailable",
        "Visitor state unavailable",
        "the shared state store did not answer; nothing was read or changed, try again",
    )
    problem.headers = {"cache-control": "no-store", "retry-after": "5"}
    return problem


async def erase_visitor(engine: VisitorStores, visitor_id: str) -> bool:
    """Erase everything stored about a visitor (one linked to a user: the person, the user's
    record and every visitor linked to it, each as follows): profile, suppressions and pinned
    decisions (in the shared store one call, which also tells every worker of every replica to
    drop its cached decisions of the visitor), this worker's cached decisions, and an erasure
    marker appended to the event log (``EventLog.purge_erased`` removes their lines);
    returns whether a profile was stored.

    Raises:
        Problem: 503 ``state-unavailable``, the shared store did not answer (nothing erased).
    """
    store = engine.profiles
    visitors: tuple[str, ...] = (visitor_id,)
    try:
        if store is not None:  # a visitor linked to a user: the person, every linked visitor
            visitors = await store.linked(visitor_id)
        erased = await store.delete(visitor_id) if store is not None else False
    except StateUnavailable as exc:
        raise state_unavailable() from exc
    for visitor in visitors:
        if engine.decision_cache is not None:
            engine.decision_cache.invalidate(visitor)
        if engine.eventlog is not None:
            engine.eventlog.append_erasure(visitor)
    return erased


async def _proven_visitor(request: Request[Any, Any, Any], engine: Engine) -> str:
    """The visitor id a data request's token proves, or a 401 problem that says why (never
    echoing the token)."""
    body = await read_body(request, engine.settings.max_body_bytes)
    token = decode_body(body, _proof_decoder, "data request").visitor_token
    visitor_id = token_visitor_id(token) if token else None
    identity: Identity = request.app.state.identity
    check = identity.check(token, visitor_id) if visitor_id is not None else None
    if check is not TokenCheck.VALID or visitor_id is None:
        why = _WHY[check or (TokenCheck.MALFORMED if token else TokenCheck.MISSING)]
        problem = Problem(401, "invalid-visitor-token", "Invalid visitor token", why)
        problem.headers = {"cache-control": "no-store"}
        raise problem
    return visitor_id


@post("/v1/me", status_code=200, **ME_DOCS)
async def my_data(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Everything stored about the visitor whose token is sent."""
    engine = _engine(state)
    visitor_id = await _proven_visitor(request, engine)
    try:
        profile = await engine.profiles.snapshot(visitor_id) if engine.profiles else None
    except StateUnavailable as exc:
        raise state_unavailable() from exc
    return _json(MyData(visitor_id=visitor_id, profile=profile, stored=profile is not None))


@post("/v1/me/forget", status_code=200, **ME_FORGET_DOCS)
async def forget_me(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Erase everything stored about the visitor whose token is sent."""
    engine = _engine(state)
    visitor_id = await _proven_visitor(request, engine)
    return _json(Erased(erased=await erase_visitor(engine, visitor_id)))


route_handlers = [my_data, forget_me]
