"""HTTP handlers: decide (single and batch), the bundle endpoints, admin reload, health,
readiness, the demo page and the tag.

Decide bodies are decoded with the schema's msgspec decoder (errors name the field; the tag's
``text/plain`` bodies are accepted); the pure decider runs on the event loop, wrapped by
:func:`decide_visits` (the visitor's state read in one call, the visit recorded and the
decision pinned in one call once it is computed: :mod:`server.visits`). A public key's
request first goes through the identity rules of :mod:`server.identity` (visitor and
user tokens), and its decision gets a visitor token and loses the scores the bundle keeps
private.

Must not import model_export.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response.base import ASGIResponse
from msgspec import Meta

from sdk import Decider, hashing, native
from sdk.bundle import SIGNATURE_FILE, Bundle, BundleSignature
from sdk.consent import effective_consent, gpc
from sdk.schema import DecideRequest, request_decoder
from server.bodies import decode_body, read_body
from server.bus import publish_reload
from server.identity import Identity, Verified, public_decision, verify_request
from server.observability import ServerTiming
from server.openapi import (
    ADMIN_RELOAD_DOCS,
    BUNDLE_DOCS,
    BUNDLE_FILE_DOCS,
    DECIDE_BATCH_DOCS,
    DECIDE_DOCS,
)
from server.problems import Problem, without_paths
from server.security import Principal
from server.state import Engine
from server.stores import Pinned
from server.visits import decide_visits, decided, load_visits, mark_degraded, visit_inputs

__all__ = ["BATCH_BODY_FACTOR", "decide_visits", "route_handlers"]

_encoder = msgspec.json.Encoder()
_HIT_HEADERS = (("cache-control", "no-store"), ("x-tailor-cache", "hit"))
_MISS_HEADERS = (("cache-control", "no-store"), ("x-tailor-cache", "miss"))


def _engine(state: State) -> Engine:
    engine: Engine = state.engine
    return engine


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
    return decode_body(body, request_decoder, "decide request")


#: How far a request's own timestamp may be from the server's clock.
MAX_TIMESTAMP_SKEW = timedelta(days=7)

_batch_decoder = msgspec.json.Decoder(Annotated[list[DecideRequest], Meta(min_length=1)])
MAX_BATCH = 100
#: A decide batch may be this many times larger than ``Settings.max_body_bytes``.
BATCH_BODY_FACTOR = 16


def _decode_batch(body: bytes) -> list[DecideRequest]:
    requests: list[DecideRequest] = decode_body(body, _batch_decoder, "decide batch")
    if len(requests) > MAX_BATCH:
        raise Problem(
            422,
            "invalid-request",
            "Invalid decide batch",
            f"a batch holds at most {MAX_BATCH} requests, got {len(requests)} - at `$`",
        )
    return requests


def _decider(engine: Engine) -> Decider:
    decider = engine.decider
    if decider is None:
        reason = without_paths(engine.error) if engine.error else "bundle not loaded yet"
        raise Problem(503, "not-ready", "No verified bundle", reason)
    return decider


def _key_kind(request: Request[Any, Any, Any]) -> str | None:
    key = request.scope.get("state", {}).get("tailor_key")
    return getattr(key, "kind", None)


def _identity(request: Request[Any, Any, Any]) -> Identity:
    identity: Identity = request.app.state.identity
    return identity


def _new_profile_client(request: Request[Any, Any, Any]) -> tuple[str, bytes] | None:
    """The bucket of a public-key client's new profiles (key id + hashed address), or None
    for secret keys, whose new profiles are not capped."""
    key: Principal | None = request.scope.get("state", {}).get("tailor_key")
    if key is None or key.kind != "public":
        return None
    return (key.id, key.client or b"")


def _prepare(
    request: Request[Any, Any, Any], decide_request: DecideRequest, engine: Engine
) -> Verified:
    """Check the timestamp, apply the consent signals, derive the location the server trusts
    and apply the identity rules (:func:`server.identity.verify_request`; only secret keys are
    trusted with any visitor and user id); returns the request to decide, the visitor token
    its decision carries and whether its visitor id was minted here."""
    stamp = decide_request.timestamp
    if stamp is not None:
        aware = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
        if abs(aware - datetime.now(UTC)) > MAX_TIMESTAMP_SKEW:
            raise Problem(
                422,
                "invalid-request",
                "Invalid decide request",
                f"timestamp is more than {MAX_TIMESTAMP_SKEW.days} days from the server's clock "
                "(replays of old visits belong in the SDK's local mode) - at `$.timestamp`",
            )
    updates: dict[str, Any] = {}
    consent = effective_consent(decide_request.consent, refused_by_gpc=gpc(request.headers))
    if consent is not decide_request.consent:
        updates["consent"] = consent
    trusted_body = _key_kind(request) == "secret" and decide_request.context.location is not None
    if not trusted_body:
        # a location sent by a browser is not trusted: the server derives it
        location = (
            engine.geo.resolve(
                request.headers, client_ip(request, engine.settings.trusted_proxy_hops)
            )
            if engine.geo is not None
            else None
        )
        updates["context"] = msgspec.structs.replace(decide_request.context, location=location)
    if updates:
        decide_request = msgspec.structs.replace(decide_request, **updates)
    public = _key_kind(request) != "secret"
    return verify_request(_identity(request), decide_request, public=public)


def _public_scores(decider: Decider) -> tuple[str, ...]:
    """The profile-derived scores (``"rfm"``, score names) the bundle lets public keys see."""
    return tuple(getattr(decider.bundle.manifest, "public_scores", ()))


@post("/v1/decide", status_code=200, **DECIDE_DOCS)
async def decide(request: Request[Any, Any, Any]) -> ASGIResponse:
    """Decide one visit: persona, segment, lifecycle, ranked offers and slot variants.

    The decision of a visit (visitor + session) is pinned and re-served for the session, so
    the visitor keeps the same persona and variants whichever worker or replica answers; a new
    session sees the updated profile.
    """
    engine = _engine(request.app.state)
    timing = ServerTiming.from_scope(request.scope)  # sent by the metrics middleware
    t0 = time.perf_counter()
    body = await read_body(request, engine.settings.max_body_bytes)
    t1 = time.perf_counter()
    verified = _prepare(request, _decode(body), engine)
    decide_request, token = verified.request, verified.token
    decider = _decider(engine)
    public = _key_kind(request) != "secret"
    # the principal's kind is in the key: public decisions are stripped and carry tokens
    key = engine.decision_cache.key(decide_request, decider.bundle.version, public=public)
    payload = engine.decision_cache.get(key, decide_request.slots)
    cache = "hit"
    t2 = time.perf_counter()
    timing.add("read", t1 - t0)
    timing.add("decode", t2 - t1)
    if payload is None:
        now = datetime.now(UTC)
        req = decider.sensitivity.scrub_request(decide_request)
        read = await load_visits(engine, [req], [key], decider, [verified.minted])
        t3 = time.perf_counter()
        timing.add("state-read", t3 - t2)
        pinned = read[0][0].pinned
        if pinned is not None and pinned.covers(key, req.slots):  # decided by another worker
            payload = pinned.payload
            engine.decision_cache.put(key, pinned.slots.split(" "), payload)
        else:
            cache = "miss"
            profiles, suppressed = visit_inputs([req], read[0], now)
            # back to back with the other fresh decides of this loop turn (server.batcher)
            made, row = await engine.batcher.decide(
                decider, req, profile=profiles[0], suppressed=suppressed[0], sticky=read[0][0].arms
            )
            decisions, rows = mark_degraded([made], [req], read[1]), [row]
            decision = decisions[0]
            shown = (
                public_decision(decision, token, _public_scores(decider)) if public else decision
            )
            t4 = time.perf_counter()
            payload = _encoder.encode(shown)
            timing.add("decide", t4 - t3)
            timing.add("encode", time.perf_counter() - t4)
            slots = list(shown.slots)
            pin = None
            if key is not None and engine.redis is not None:
                pin = Pinned(visit=key, slots=" ".join(slots), payload=payload)
            client = _new_profile_client(request)
            reusable = await decided(
                engine, [req], decisions, read, (profiles, rows), now, client, [pin], decider,
                timing,
            )  # fmt: skip
            if reusable[0]:
                engine.decision_cache.put(key, slots, payload)
    # the ASGI response itself: the hottest route skips Litestar's Response conversion
    return ASGIResponse(
        body=payload,
        media_type="application/json",
        headers=_HIT_HEADERS if cache == "hit" else _MISS_HEADERS,
    )


@post("/v1/decide/batch", status_code=200, **DECIDE_BATCH_DOCS)
async def decide_batch(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Decide up to 100 visits in one call (backend callers): one batched ONNX run, profiles
    and suppressions applied (read in one call), no per-visit cache (each call is fresh)."""
    engine = _engine(state)
    t0 = time.perf_counter()
    body = await read_body(request, engine.settings.max_body_bytes * BATCH_BODY_FACTOR)
    prepared = [_prepare(request, r, engine) for r in _decode_batch(body)]
    requests = [v.request for v in prepared]
    decider = _decider(engine)
    t1 = time.perf_counter()
    decisions = await decide_visits(
        engine, decider, requests, _new_profile_client(request), [v.minted for v in prepared]
    )
    if _key_kind(request) != "secret":  # secret-only by default; a configured public route
        shown = _public_scores(decider)
        decisions = [
            public_decision(d, v.token, shown) for d, v in zip(decisions, prepared, strict=True)
        ]
    t2 = time.perf_counter()
    payload = _batch_encoder.encode(decisions)
    timing = ServerTiming.from_scope(request.scope)
    timing.add("decode", t1 - t0)
    timing.add("decide", t2 - t1)
    return Response(
        payload,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


_batch_encoder = msgspec.json.Encoder()
_signature_decoder = msgspec.json.Decoder(BundleSignature)
_SIGNATURE_MAX_BYTES = 64 << 10


async def _signature(bundle: Bundle) -> bytes | None:
    """The bytes of the serving bundle's ``signature.json`` as it is now (it may be signed in
    place after loading), or None when there is none (or no regular file of at most 64 KiB)."""
    path = anyio.Path(bundle.path / SIGNATURE_FILE)
    try:
        if not await path.is_file() or (await path.stat()).st_size > _SIGNATURE_MAX_BYTES:
            return None
        return await path.read_bytes()
    except OSError:
        return None


@get("/v1/bundle", **BUNDLE_DOCS)
async def bundle_info(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """The serving bundle's version and file hashes (``signature.json`` too when it is signed),
    with the manifest digest as ETag, for SDKs that decide locally and refresh by
    ``If-None-Match``."""
    decider = _decider(_engine(state))
    bundle = decider.bundle
    etag = f'"{bundle.digest}"'
    headers = {"etag": etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    m = bundle.manifest
    files = {"manifest.json": bundle.digest, **m.files}
    body: dict[str, Any] = {
        "modelVersion": m.model_version,
        "digest": bundle.digest,
        "createdAt": m.created_at.isoformat(),
        "formatVersion": m.format_version,
        "featureSetVersion": m.feature_set_version,
        "schemaVersion": m.schema_version,
        "files": files,
        "signed": False,
    }
    signature = await _signature(bundle)
    if signature is not None:
        files[SIGNATURE_FILE] = hashlib.sha256(signature).hexdigest()
        try:
            body["keyId"] = _signature_decoder.decode(signature).key_id
            body["signed"] = True
        except msgspec.DecodeError:
            pass  # listed all the same: a client that checks signatures says it is malformed
    return Response(body, headers=headers)


@get("/v1/bundle/files/{name:str}", **BUNDLE_FILE_DOCS)
async def bundle_file(
    name: FromPath[str], request: Request[Any, Any, Any], state: State
) -> Response[bytes]:
    """One file of the serving bundle (``manifest.json``, ``signature.json`` or a file the
    manifest lists), ETag = sha256."""
    bundle = _decider(_engine(state)).bundle
    if name == SIGNATURE_FILE:
        return await _signature_file(bundle, request)
    if name == "manifest.json":
        digest = bundle.digest
    elif name in bundle.manifest.files:
        digest = bundle.manifest.files[name]
    else:
        raise Problem(404, "not-found", "Not found", f"the bundle has no file {name!r}")
    etag = f'"{digest}"'
    headers = {"etag": etag, "cache-control": "public, max-age=31536000, immutable"}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    data = await anyio.Path(bundle.path / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise Problem(
            409, "bundle-changed", "Bundle changed", "the bundle on disk changed; fetch /v1/bundle"
        )
    return Response(data, media_type="application/octet-stream", headers=headers)


async def _signature_file(bundle: Bundle, request: Request[Any, Any, Any]) -> Response[bytes]:
    """``signature.json`` as it is now (re-signing in place changes it, so it is revalidated,
    not immutable); 409 when ``manifest.json`` on disk is no longer the serving one."""
    data = await _signature(bundle)
    if data is None:
        raise Problem(404, "not-found", "Not found", f"the bundle has no {SIGNATURE_FILE}")
    try:
        manifest = await anyio.Path(bundle.path / "manifest.json").read_bytes()
    except OSError:
        manifest = b""
    if hashlib.sha256(manifest).hexdigest() != bundle.digest:
        raise Problem(
            409, "bundle-changed", "Bundle changed", "the bundle on disk changed; fetch /v1/bundle"
        )
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    headers = {"etag": etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(data, media_type="application/octet-stream", headers=headers)


@post("/v1/admin/reload", status_code=200, **ADMIN_RELOAD_DOCS)
async def admin_reload(state: State) -> Response[dict[str, Any]]:
    """Check the bundle path now: a changed, verified bundle is swapped in; a refused one
    leaves the old one serving (409 problem with the reason). With Redis, every other worker
    and replica is told to check too (``notified``: how many workers listen; None when
    the state is not shared or Redis did not answer). Secret key required."""
    engine = _engine(state)
    result = await anyio.to_thread.run_sync(lambda: engine.holder.check(force=True))
    notified = await publish_reload(state.get("reload_bus"))
    if result.refused is not None:
        raise Problem(
            409,
            "bundle-refused",
            "Bundle refused",
            result.refused,
            serving=result.version,
        )
    body = {"modelVersion": result.version, "changed": result.changed, "notified": notified}
    return Response(body)


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, Any]]:
    """Readiness: a verified bundle is loaded. Where visitor state lives and whether it
    answers is reported under ``state``: a shared store that fails degrades decisions (to
    contextual ones), it does not make the worker unready."""
    engine = _engine(state)
    decider = _decider(engine)
    await engine.probe_state()
    body: dict[str, Any] = {
        "status": "ready",
        "modelVersion": decider.bundle.version,
        "hashing": hashing.IMPLEMENTATION,
        "decisionPath": native.IMPLEMENTATION,
        "state": engine.state_report(),
    }
    if engine.error:  # a newer bundle was refused; the old one keeps serving
        body["lastReloadRefused"] = without_paths(engine.error)
    if engine.eventlog is not None:  # records lost to a full disk or a dead stream, per worker
        body["eventLog"] = engine.eventlog.health()
    return Response(body, headers={"x-tailor-worker": str(os.getpid())})


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (``gzip`` or ``*``, not with q=0)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False


def _asset(
    engine: Engine, name: str, request: Request[Any, Any, Any], cache: str
) -> Response[bytes]:
    asset = engine.assets.get(name)
    if asset is None:
        raise Problem(404, "not-found", "Not found", f"{name} is not built")
    packed = asset.gzipped is not None and accepts_gzip(request.headers.get("accept-encoding", ""))
    # each representation has its own strong ETag
    etag = f'"{asset.etag}-gz"' if packed else f'"{asset.etag}"'
    headers = {"etag": etag, "cache-control": cache, "vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    if packed and asset.gzipped is not None:
        headers["content-encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


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


@get("/tag/v1/tailor-me.js", include_in_schema=False)
async def tag_me(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """The module the tag imports on the first ``tailor.myData()``. ``import()`` fetches it in
    CORS mode from the site's pages, so any origin may read it (it is public, like the tag)."""
    response = _asset(_engine(state), "tailor-me.js", request, "public, max-age=3600")
    response.headers["access-control-allow-origin"] = "*"
    return response


@get("/tag/v1/tailor-me.js.map", include_in_schema=False)
async def tag_me_map(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """The module's source map."""
    return _asset(_engine(state), "tailor-me.js.map", request, "public, max-age=3600")


route_handlers = [
    decide,
    decide_batch,
    bundle_info,
    bundle_file,
    admin_reload,
    healthz,
    readyz,
    demo_page,
    tag,
    tag_map,
    tag_me,
    tag_me_map,
]
