"""HTTP handlers: decide, health, readiness, the demo page and the tag.

``POST /v1/decide`` decodes the body itself with the schema's msgspec decoder, so that errors
name the exact field (``... - at `$.context.page.url```) and so that ``text/plain`` bodies are
accepted: the tag sends ``text/plain`` JSON to stay a CORS "simple request" (no preflight).
The decider is pure and takes tens of microseconds, so it runs on the event loop: a thread
hand-off would cost more than the work.

Must not import model_export.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException

from sdk.schema import Consent, DecideRequest, request_decoder
from server.problems import Problem
from server.state import Engine

__all__ = ["route_handlers"]

_encoder = msgspec.json.Encoder()
_JSON_TYPES = ("application/json", "text/plain", "application/problem+json")


def _engine(state: State) -> Engine:
    engine: Engine = state.engine
    return engine


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media and not (media in _JSON_TYPES or media.endswith("+json")):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send JSON as application/json or text/plain, not {media}",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise Problem(
            413, "body-too-large", "Request body too large", f"the limit is {limit} bytes"
        )
    try:
        return await request.body()
    except ClientException as exc:
        if exc.status_code == 413:
            raise Problem(
                413, "body-too-large", "Request body too large", f"the limit is {limit} bytes"
            ) from exc
        raise


def client_ip(request: Request[Any, Any, Any], hops: int) -> str | None:
    """The visitor's IP: the socket peer, or with ``hops`` trusted proxies the ``hops``-th
    address from the right of ``X-Forwarded-For`` (entries further left can be forged)."""
    peer = request.client.host if request.client else None
    if hops <= 0:
        return peer
    forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",")]
    forwarded = [a for a in forwarded if a]
    return forwarded[-hops] if len(forwarded) >= hops else peer


def _decode(body: bytes) -> DecideRequest:
    try:
        return request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise Problem(422, "invalid-request", "Invalid decide request", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Problem(400, "malformed-json", "Malformed JSON", str(exc)) from exc


@post("/v1/decide", status_code=200, include_in_schema=True)
async def decide(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Decide one visit: persona, segment, lifecycle, ranked offers and slot variants."""
    engine = _engine(state)
    body = await _read_body(request, engine.settings.max_body_bytes)
    decide_request = _decode(body)
    if engine.decider is None:
        raise Problem(
            503, "not-ready", "No verified bundle", engine.error or "bundle not loaded yet"
        )
    updates: dict[str, Any] = {}
    if request.headers.get("sec-gpc") == "1" and decide_request.consent.personalization:
        updates["consent"] = Consent(personalization=False, storage=False)
    # a location sent by the client is not trusted: the server derives it
    location = (
        engine.geo.resolve(request.headers, client_ip(request, engine.settings.trusted_proxy_hops))
        if engine.geo is not None
        else None
    )
    updates["context"] = msgspec.structs.replace(decide_request.context, location=location)
    decide_request = msgspec.structs.replace(decide_request, **updates)
    decision = engine.decider.decide(decide_request)
    return Response(
        _encoder.encode(decision),
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, Any]]:
    """Readiness: a verified bundle is loaded."""
    engine = _engine(state)
    if engine.decider is None:
        raise Problem(
            503, "not-ready", "No verified bundle", engine.error or "bundle not loaded yet"
        )
    return Response({"status": "ready", "modelVersion": engine.decider.bundle.version})


def _asset(
    engine: Engine, name: str, request: Request[Any, Any, Any], cache: str
) -> Response[bytes]:
    asset = engine.assets.get(name)
    if asset is None:
        raise Problem(404, "not-found", "Not found", f"{name} is not built")
    etag = f'"{asset.etag}"'
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers={"etag": etag, "cache-control": cache})
    return Response(
        asset.body, media_type=asset.media_type, headers={"etag": etag, "cache-control": cache}
    )


@get("/", include_in_schema=False)
async def demo_page(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """The demo store page (only when settings.demo is on)."""
    engine = _engine(state)
    if not engine.settings.demo:
        raise Problem(404, "not-found", "Not found", "the demo page is disabled")
    return _asset(engine, "demo.html", request, "no-cache")


@get("/tag/v1/tailor.js", include_in_schema=False)
async def tag(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """The browser tag, at a versioned URL (cacheable for an hour, revalidated by ETag)."""
    return _asset(_engine(state), "tailor.js", request, "public, max-age=3600")


@get("/tag/v1/tailor.js.map", include_in_schema=False)
async def tag_map(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """The tag's source map."""
    return _asset(_engine(state), "tailor.js.map", request, "public, max-age=3600")


route_handlers = [decide, healthz, readyz, demo_page, tag, tag_map]
