"""The security ASGI middleware: authenticates the API key of every request under the protected
prefix (``/v1/``), checks the route's key kind and the browser's ``Origin``, answers CORS
preflights, applies rate limits (a secret key's per key; a public key's per key and client
address, so one client cannot exhaust a whole site's budget; per-IP) and refuses with
problem+json; the :class:`Principal` it admits is put in ``scope["state"]["tailor_key"]``.
The buckets are per process, or shared by every worker and replica in Redis once the app
attaches a store to its :class:`~server.security.ratelimit.SharedRateLimiter`; client
addresses are hashed with a salt derived from the configured keys, so every process hashes
an address alike without the address being kept anywhere.

Must not import litestar or model_export.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_to_bytes

from server.security.addresses import client_address, host_of_authority, loopback_host, parse_ip
from server.security.keys import DEMO_KEY_ID, KeyKind, SecurityConfig
from server.security.origins import Origin, OriginRules, canonical_origin
from server.security.ratelimit import RateLimiter, SharedRateLimiter
from server.security.responses import (
    ASGIApp,
    Receive,
    Refusal,
    Scope,
    Send,
    missing_key,
    rate_limited,
    send_problem,
    with_cors,
)
from server.security.route_rules import (
    DEFAULT_PUBLIC_ROUTES,
    DEMO_READ_ROUTES,
    compile_routes,
    matches,
    normalize_path,
)

__all__ = ["AUTH_SECONDS_KEY", "STATE_KEY", "Principal", "SecurityMiddleware"]

#: Where the middleware puts the :class:`Principal` in ``scope["state"]``.
STATE_KEY = "tailor_key"
#: Where it puts the seconds it spent authorizing the request (key, origin, rate limits); the
#: metrics middleware reports them as the ``auth`` stage of ``Server-Timing``.
AUTH_SECONDS_KEY = "tailor_auth_seconds"
_EXPOSE = b"Server-Timing, Retry-After, ETag"
_ALLOW_METHODS = b"GET, POST, DELETE, OPTIONS"
_ALLOW_HEADERS = b"Content-Type, Authorization, X-Tailor-Key"
_MAX_AGE = b"600"
_WANTED = frozenset(
    {
        b"authorization",
        b"x-tailor-key",
        b"origin",
        b"host",
        b"x-forwarded-for",
        b"access-control-request-method",
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as put in ``scope["state"]["tailor_key"]``; never holds the key itself.

    Attributes:
        id: the key's configured id (``demo`` for the keyless loopback demo).
        kind: ``public`` or ``secret``.
        origin: the request's ``Origin`` when it was checked against a public key, else None.
        client: for public keys, a keyed hash of the client's address (its rate-limit and
            new-profile buckets); the address itself is not kept.
    """

    id: str
    kind: KeyKind
    origin: str | None = None
    client: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Key:
    id: str
    kind: KeyKind
    digest: bytes
    origins: OriginRules
    rate_per_minute: int


_Route = Literal["open", "public", "secret"]


class _ChargeIp(Exception):
    """A refusal that also costs the client's address a token of its per-IP bucket."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


def _address_salt(config: SecurityConfig) -> bytes:
    """The key of the address hash: the same in every worker and replica with the same keys
    (so shared buckets agree), and secret while a secret key's hash is (a keyless demo's is
    not, and holds loopback addresses only)."""
    digests = b"".join(sorted(bytes.fromhex(k.sha256) for k in config.keys))
    return hashlib.blake2b(digests, person=b"tailor-client-ip", digest_size=32).digest()


class SecurityMiddleware:
    """ASGI middleware enforcing keys, origins, CORS and rate limits under a path prefix.

    Args:
        app: the ASGI app to protect.
        config: keys and limits.
        protected_prefix: paths under it (``/v1/``, and ``/v1`` itself) are protected.
        public_routes: ``"METHOD /path"`` entries that accept public keys (``/*`` suffix:
            the path and below; ``GET`` includes ``HEAD``); every other protected route needs
            a secret key.
        demo_routes: secret routes (same syntax) that the keyless loopback demo may call too.
        clock: monotonic seconds for the rate limiter (injectable for tests).
        limiter: the buckets to use (shared with the app, which may attach Redis to it);
            None: new per-process buckets sized by ``config`` on ``clock``.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: SecurityConfig,
        *,
        protected_prefix: str = "/v1/",
        public_routes: Iterable[str] = DEFAULT_PUBLIC_ROUTES,
        demo_routes: Iterable[str] = DEMO_READ_ROUTES,
        clock: Callable[[], float] = time.monotonic,
        limiter: SharedRateLimiter | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self._prefix = "/" + protected_prefix.strip("/")
        self._keys = tuple(
            _Key(
                id=k.id,
                kind=k.kind,
                digest=bytes.fromhex(k.sha256),
                origins=OriginRules.compile(k.origins),
                rate_per_minute=(
                    k.rate_per_minute
                    if k.rate_per_minute is not None
                    else config.per_key_per_minute
                ),
            )
            for k in config.keys
        )
        self._preflight_origins = OriginRules.union(
            k.origins for k in self._keys if k.kind == "public"
        )
        self._public_exact, self._public_trees = compile_routes(public_routes)
        self._demo_exact, self._demo_trees = compile_routes(demo_routes)
        if limiter is None:
            local = RateLimiter(
                burst_seconds=config.burst_seconds,
                maxsize=config.max_tracked_clients,
                clock=clock,
            )
            limiter = SharedRateLimiter(local)
        self.limiter = limiter
        self._limiter = limiter.local  # the per-process buckets
        self._ip_salt = _address_salt(config)

    @classmethod
    def factory(
        cls,
        config: SecurityConfig,
        *,
        protected_prefix: str = "/v1/",
        public_routes: Iterable[str] = DEFAULT_PUBLIC_ROUTES,
        demo_routes: Iterable[str] = DEMO_READ_ROUTES,
        clock: Callable[[], float] = time.monotonic,
        limiter: SharedRateLimiter | None = None,
    ) -> Callable[[ASGIApp], SecurityMiddleware]:
        """``app -> middleware`` for frameworks that wrap each route separately.

        Litestar builds its ``middleware=[...]`` stack once per route handler; middlewares
        made by one factory share their keys and rate-limit buckets, so a key's limit covers
        all routes together::

            Litestar(..., middleware=[SecurityMiddleware.factory(config)])
        """

        async def unset(scope: Scope, receive: Receive, send: Send) -> None:
            raise RuntimeError("SecurityMiddleware.factory prototype has no app")

        prototype = cls(
            unset,
            config,
            protected_prefix=protected_prefix,
            public_routes=public_routes,
            demo_routes=demo_routes,
            clock=clock,
            limiter=limiter,
        )

        def wrap(app: ASGIApp) -> SecurityMiddleware:
            middleware = copy.copy(prototype)  # shares the key table and the rate limiter
            middleware.app = app
            return middleware

        return wrap

    # -- classification --------------------------------------------------------------------

    @staticmethod
    def _paths(scope: Scope) -> tuple[str, ...]:
        """The path as a router sees it: slashes collapsed, no trailing slash; with a root path,
        also without it (Litestar removes it unless it already did), so both are checked."""
        path = str(scope.get("path", "/"))
        root = scope.get("root_path", "")
        paths = (path, path.split(root, 1)[-1]) if root else (path,)
        return tuple(normalize_path(p) for p in paths)

    def _protected(self, path: str) -> bool:
        if path == self._prefix or path.startswith(self._prefix + "/"):
            return True
        # fail closed on dot segments, whatever a router might make of them
        return "/." in path and any(s in (".", "..") for s in path.split("/"))

    def _route(self, method: str, paths: tuple[str, ...]) -> _Route:
        """The strictest class of the candidate paths."""
        classes = {self.route_class(method, p) for p in paths}
        for strictest in ("secret", "public"):
            if strictest in classes:
                return strictest
        return "open"

    def route_class(self, method: str, path: str) -> _Route:
        """``open``, ``public`` or ``secret`` for a normalised path."""
        if not self._protected(path):
            return "open"
        if matches(method, path, self._public_exact, self._public_trees):
            return "public"
        return "secret"

    def demo_route(self, method: str, paths: tuple[str, ...]) -> bool:
        """Whether the keyless loopback demo may call a secret route: every candidate path is
        in :data:`DEMO_READ_ROUTES` and none has a dot segment (fail closed)."""
        return all(
            matches(method, p, self._demo_exact, self._demo_trees)
            and not any(s in (".", "..") for s in p.split("/"))
            for p in paths
        )

    # -- keys --------------------------------------------------------------------------------

    def _lookup(self, raw: bytes) -> _Key | None:
        digest = hashlib.sha256(raw).digest()
        found: _Key | None = None
        for key in self._keys:  # compare with every key: no early exit
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    @staticmethod
    def _presented_key(scope: Scope, headers: dict[bytes, bytes]) -> tuple[bytes | None, bool]:
        """The presented key and whether it came from the query string; redacts the query."""
        raw: bytes | None = None
        auth = headers.get(b"authorization")
        if auth is not None:
            scheme, _, credentials = auth.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                raw = credentials.strip()
        if raw is None:
            header_key = headers.get(b"x-tailor-key", b"").strip()
            raw = header_key or None
        query: bytes = scope.get("query_string") or b""
        if b"key=" not in query:
            return raw, False
        from_query: bytes | None = None
        parts = query.split(b"&")
        for i, part in enumerate(parts):
            name, eq, value = part.partition(b"=")
            if name == b"key" and eq:
                if from_query is None and value:
                    from_query = unquote_to_bytes(value.replace(b"+", b" ")).strip() or None
                parts[i] = b"key=redacted"
        scope["query_string"] = b"&".join(parts)
        if raw is None and from_query is not None:
            return from_query, True
        return raw, False

    # -- the ASGI entry point ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        paths = self._paths(scope)
        if not any(self._protected(p) for p in paths):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":  # no protected websocket routes exist: refuse, fail closed
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        started = time.perf_counter_ns()
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers") or ():
            name = name.lower()
            if name in _WANTED:
                headers[name] = headers[name] + b"," + value if name in headers else bytes(value)
        origin_header = headers.get(b"origin")
        origin_text = origin_header.decode("latin-1").strip() if origin_header is not None else None
        origin = canonical_origin(origin_text) if origin_text is not None else None
        forwarded = headers.get(b"x-forwarded-for")
        address = client_address(
            scope,
            forwarded.decode("latin-1") if forwarded is not None else None,
            self.config.trusted_proxy_hops,
        )
        method = str(scope.get("method", "GET")).upper()
        request_method = headers.get(b"access-control-request-method")
        try:
            if method == "OPTIONS" and origin_text is not None and request_method is not None:
                await self._preflight(
                    scope, send, paths, request_method, origin_text, origin, headers, address
                )
                return
            principal, rate = self._authorize(
                scope, headers, method, paths, origin_text, origin, address
            )
        except _ChargeIp as charged:
            await send_problem(send, scope, await self._charge_ip(address) or charged.refusal)
            return
        except Refusal as refusal:
            await send_problem(send, scope, refusal)
            return
        cors: list[tuple[bytes, bytes]] = []
        if principal.kind == "public" and principal.origin is not None:
            cors = [
                (b"access-control-allow-origin", principal.origin.encode("latin-1")),
                (b"access-control-expose-headers", _EXPOSE),
            ]
        limits: list[tuple[Hashable, int]]
        if principal.kind == "public":
            ip = self._ip_bucket(address)
            principal = dataclasses.replace(principal, client=ip[1])
            limits = [(("key", principal.id, ip[1]), rate)]  # per key and client
            if self.config.per_ip_per_minute:
                limits.append((ip, self.config.per_ip_per_minute))
        else:
            limits = [(("key", principal.id), rate)]
        wait = await self.limiter.acquire(*limits)
        if wait:
            await send_problem(send, scope, rate_limited(wait, cors))
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[STATE_KEY] = principal
        state[AUTH_SECONDS_KEY] = (time.perf_counter_ns() - started) / 1e9
        await self.app(scope, receive, with_cors(send, cors))

    def _authorize(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        method: str,
        paths: tuple[str, ...],
        origin_text: str | None,
        origin: Origin | None,
        address: str | None,
    ) -> tuple[Principal, int]:
        """The principal and its per-key rate, or raise the refusal."""
        route, path = self._route(method, paths), paths[0]
        raw, in_query = self._presented_key(scope, headers)
        if raw is None:
            demo_route = route == "public" or self.demo_route(method, paths)
            if demo_route and self._demo_allows(headers, origin_text, origin, address):
                return (
                    Principal(id=DEMO_KEY_ID, kind="public", origin=origin_text),
                    self.config.per_key_per_minute,
                )
            raise _ChargeIp(
                missing_key(
                    "send an API key as 'Authorization: Bearer <key>', 'X-Tailor-Key: <key>' "
                    "or the 'key' query parameter"
                )
            )
        key = self._lookup(raw)
        if key is None:
            raise _ChargeIp(
                Refusal(
                    401,
                    "unknown-key",
                    "Unknown API key",
                    "the API key is not valid for this server",
                    [(b"www-authenticate", b'Bearer error="invalid_token"')],
                )
            )
        if key.kind == "secret":
            if in_query:
                raise Refusal(
                    403,
                    "secret-key-in-query",
                    "Secret key in URL",
                    "send secret keys in the Authorization header, never in a URL (URLs are "
                    "logged); consider rotating this key",
                )
            return Principal(id=key.id, kind="secret"), key.rate_per_minute
        if route != "public":
            raise _ChargeIp(
                Refusal(
                    403,
                    "secret-key-required",
                    "Secret key required",
                    f"{method} {path} needs a secret key; public keys may only call the "
                    "routes a browser needs (single decide, events, the visitor's own data)",
                )
            )
        if origin_text is not None:
            if not key.origins.allows(origin):
                raise _ChargeIp(
                    Refusal(
                        403,
                        "origin-not-allowed",
                        "Origin not allowed",
                        f"origin {origin_text[:300]!r} is not allowed for this public key",
                    )
                )
        elif method not in ("GET", "HEAD"):
            raise _ChargeIp(
                Refusal(
                    403,
                    "origin-required",
                    "Origin required",
                    "a public key on a POST needs the browser's Origin header; servers "
                    "should use a secret key",
                )
            )
        return Principal(id=key.id, kind="public", origin=origin_text), key.rate_per_minute

    def _demo_allows(
        self,
        headers: dict[bytes, bytes],
        origin_text: str | None,
        origin: Origin | None,
        address: str | None,
    ) -> bool:
        if not self.config.demo_keyless_loopback or address is None:
            return False
        ip = parse_ip(address)
        if ip is None or not ip.is_loopback:
            return False
        host = headers.get(b"host")
        if host is None or not loopback_host(host_of_authority(host.decode("latin-1"))):
            return False
        return origin_text is None or (origin is not None and loopback_host(origin[1]))

    async def _preflight(
        self,
        scope: Scope,
        send: Send,
        paths: tuple[str, ...],
        request_method: bytes,
        origin_text: str,
        origin: Origin | None,
        headers: dict[bytes, bytes],
        address: str | None,
    ) -> None:
        limited = await self._charge_ip(address)
        if limited is not None:
            raise limited
        method = request_method.decode("latin-1").strip().upper()
        public = self._route(method, paths) == "public"
        allowed = public and (
            self._preflight_origins.allows(origin)
            or self._demo_allows(headers, origin_text, origin, address)
        )
        if not allowed:
            why = (
                f"no public key allows origin {origin_text[:300]!r}"
                if public
                else f"{method} {paths[0]} is not callable from browsers"
            )
            raise Refusal(403, "origin-not-allowed", "Origin not allowed", why)
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", origin_text.encode("latin-1")),
                    (b"access-control-allow-methods", _ALLOW_METHODS),
                    (b"access-control-allow-headers", _ALLOW_HEADERS),
                    (b"access-control-max-age", _MAX_AGE),
                    (b"vary", b"Origin"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    # -- rate limits -----------------------------------------------------------------------------

    def _ip_bucket(self, address: str | None) -> tuple[str, bytes]:
        """A keyed hash of the client's address (/64 for IPv6); the address is not kept."""
        address = address or ""
        if ":" in address:  # IPv6 (or a v4 with a port, or a v4-mapped v6): parse it
            ip = parse_ip(address)
            if isinstance(ip, ipaddress.IPv6Address):
                data = ip.packed[:8]
            else:
                data = (str(ip) if ip is not None else address).encode("utf-8", "surrogateescape")
        else:  # a dotted quad as servers write it, or whatever a proxy sent: hashed as is
            data = address.encode("utf-8", "surrogateescape")
        return "ip", hashlib.blake2b(data, key=self._ip_salt, digest_size=16).digest()

    async def _charge_ip(self, address: str | None) -> Refusal | None:
        """Charge a refused or unauthenticated request to its address: the 429 to answer
        instead when the address is out of tokens, else None."""
        if not self.config.per_ip_per_minute:
            return None
        bucket = (self._ip_bucket(address), self.config.per_ip_per_minute)
        wait = await self.limiter.acquire(bucket)
        return rate_limited(wait, ()) if wait else None
