"""Browser safety for the decision API: API keys, origin rules, CORS and rate limits.

:class:`SecurityMiddleware` is a pure ASGI middleware (no framework request objects) that runs
on every request under the protected prefix (``/v1/``): it authenticates the API key, checks the
route's key kind and the browser's ``Origin``, answers CORS preflights, applies per-key and
per-IP token buckets (:mod:`server.ratelimit`) and answers refusals itself with RFC 9457
``application/problem+json``. Its configuration is :class:`SecurityConfig`. Must not import
model_export (nor litestar: it stays usable around any ASGI app).

Keys
    Two kinds: *public* keys (``pk_…``) are embedded in web pages by the tag and are only as
    secret as the page; *secret* keys (``sk_…``) belong to servers. The configuration stores
    only the SHA-256 of each key (:func:`hash_key`); make one with :func:`generate_key`::

        python -c "from server.security import generate_key; print(generate_key('public'))"

    which is ``"pk_" + secrets.token_urlsafe(32)`` (256 random bits) and its digest. A key is
    read from ``Authorization: Bearer <key>``, else ``X-Tailor-Key: <key>``, else the ``key``
    query parameter (the tag's ``text/plain`` POSTs and ``sendBeacon`` cannot set headers).
    The presented key is hashed once and its digest compared with *every* configured digest
    with :func:`hmac.compare_digest`, never stopping at a match, so timing tells nothing about
    which keys exist (the digests an attacker can make are unpredictable anyway). The ``key``
    query parameter is replaced by ``key=redacted`` in the ASGI scope, so handlers and the
    server's access log never see it. Secret keys are refused in the query string: URLs are
    logged by proxies and CDNs.

Routes (by method and path, after the same normalisation as Litestar's router)
    * open: everything outside the prefix (``/``, ``/healthz``, ``/readyz``, ``/metrics``,
      ``/tag/…``, ``/schema/…``);
    * public: :data:`DEFAULT_PUBLIC_ROUTES` (``POST /v1/decide``, ``POST /v1/decide/batch``,
      ``POST /v1/events``, ``GET``/``HEAD /v1/bundle`` and below) take a public or secret key;
    * secret: every other method and path under the prefix (admin, ``GET``/``DELETE
      /v1/visitors/…``, the reports ``GET /v1/reports/…``, and routes added later until they
      are listed as public).

Origins of public keys
    ``origins`` lists the sites that may use a public key, as ``scheme://host[:port]`` with no
    path (``https://shop.example.com``, ``http://localhost:3000``), ``scheme://*.domain[:port]``
    for every subdomain of ``domain`` at any depth but not ``domain`` itself
    (``https://*.example.com`` allows ``https://a.example.com`` and ``https://a.b.example.com``,
    not ``https://example.com`` nor ``https://example.com.evil.com``), or ``"*"`` for any
    ``http``/``https`` origin. Hosts are compared case-insensitively and default ports (443,
    80) are dropped; scheme and port must match; a wildcard needs at least two labels after
    ``*.``. ``Origin: null`` (sandboxed frames, ``file:``) is never allowed. With a public key,
    a request that has an ``Origin`` must have an allowed one; a ``POST`` (or any method but
    ``GET``/``HEAD``) without ``Origin`` is refused, because browsers send ``Origin`` on every
    cross-origin request and on same-origin ``POST``. The check keeps other websites from using
    a key in their visitors' browsers; it is not authentication, since any non-browser client
    can send any ``Origin``. Secret keys ignore ``Origin`` and never get CORS headers.

CORS
    Responses to a public key with an allowed ``Origin`` carry ``Access-Control-Allow-Origin``
    (that origin) and ``Access-Control-Expose-Headers``; every protected response carries
    ``Vary: Origin``; ``Access-Control-Allow-Credentials`` is never sent and ``Access-Control-*``
    headers set by the app on protected routes are dropped. A preflight (``OPTIONS`` with
    ``Origin`` and ``Access-Control-Request-Method``) for a public route gets 204 when at least
    one public key (or the demo rule) allows the origin, since the key is not sent with a
    preflight; otherwise 403.

Demo
    With ``demo_keyless_loopback``, a request without a key to a public route is accepted as
    the implicit public key ``demo`` when the client address is in 127.0.0.0/8 or ::1, the
    ``Host`` header names a loopback host (``localhost``, ``*.localhost``, 127.x, ``[::1]``;
    this defeats DNS rebinding and a local reverse proxy forwarding public traffic), and the
    ``Origin``, if any, is a loopback origin. The same keyless loopback requests may also read
    :data:`DEMO_READ_ROUTES` (``GET``/``HEAD /v1/reports/…``), secret routes otherwise, so that
    the local reports dashboard (``/reports``, an open page outside the prefix) works without
    a key; no other secret route is opened, and a public key still may not call them. Behind a
    proxy, set ``trusted_proxy_hops`` so the client address comes from ``X-Forwarded-For``.
    Never enable it on a shared host.

Rate limits
    Per process (with N workers the effective limit is N times; sharing them needs Redis).
    Every request pays one token from its key's bucket (``rate_per_minute`` or
    ``per_key_per_minute``); a request not authenticated by a secret key (public keys, the
    demo, and refused requests) also pays one from its client's bucket (``per_ip_per_minute``),
    which bounds key guessing and a single visitor. Secret-key callers are servers that speak
    for many visitors from one address, so they have no per-IP limit. IPv6 clients are
    grouped by /64. No IP address is stored: the bucket key is a BLAKE2b MAC of the address
    under a random per-process key, so the table cannot be reversed by hashing every IPv4
    address. A limit of 0 disables it.

Errors (``type`` is ``https://tailor.dev/problems/<slug>``)
    401 ``missing-key``, ``unknown-key`` (with ``WWW-Authenticate: Bearer``); 403
    ``secret-key-required``, ``origin-not-allowed``, ``origin-required``,
    ``secret-key-in-query``; 429 ``rate-limited`` with ``Retry-After`` in whole seconds.

Wiring
    Around any ASGI app: ``SecurityMiddleware(app, config)``. In Litestar, which builds its
    middleware stack once per route: ``Litestar(..., middleware=[SecurityMiddleware.factory(
    config)])``, so that all routes share one set of rate-limit buckets.

The authenticated :class:`Principal` (key id, kind, checked origin; never the key) is put in
``scope["state"]["tailor_key"]``, so a Litestar handler reads ``request.state.tailor_key``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import unquote_to_bytes

import msgspec
from msgspec import Meta

from server.ratelimit import RateLimiter

__all__ = [
    "DEFAULT_PUBLIC_ROUTES",
    "DEMO_READ_ROUTES",
    "STATE_KEY",
    "ApiKey",
    "OriginRules",
    "Principal",
    "SecurityConfig",
    "SecurityConfigError",
    "SecurityMiddleware",
    "generate_key",
    "hash_key",
]

KeyKind: TypeAlias = Literal["public", "secret"]
# ASGI types as plain dicts; Any so that a framework's TypedDict scopes and events fit.
Scope: TypeAlias = Any
Message: TypeAlias = Any
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the middleware puts the :class:`Principal` in ``scope["state"]``.
STATE_KEY = "tailor_key"
#: Routes that accept public keys: ``"METHOD /path"``, a trailing ``/*`` also covers the
#: path's descendants, and ``GET`` covers ``HEAD``.
DEFAULT_PUBLIC_ROUTES: tuple[str, ...] = (
    "POST /v1/decide",
    "POST /v1/decide/batch",
    "POST /v1/events",
    "GET /v1/bundle/*",
)
#: Secret routes that the keyless loopback demo may call too (same syntax): the reports.
DEMO_READ_ROUTES: tuple[str, ...] = ("GET /v1/reports/*",)
DEMO_KEY_ID = "demo"
# Kept equal to server.problems.PROBLEM_TYPE_BASE (a test pins it) without importing litestar.
PROBLEM_TYPE_BASE = "https://tailor.dev/problems/"

_KEY_PREFIX: dict[KeyKind, str] = {"public": "pk_", "secret": "sk_"}
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
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PATTERN_RE = re.compile(rf"(https?)://(\*\.)?({_LABEL}(?:\.{_LABEL})*)(?::([0-9]{{1,5}}))?")
_ORIGIN_RE = re.compile(
    rf"(https?)://({_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::([0-9]{{1,5}}))?"
)
_DEFAULT_PORT = {"http": "80", "https": "443"}
_SLASHES = re.compile("//+")
_encoder = msgspec.json.Encoder()


def hash_key(raw: str) -> str:
    """The hex SHA-256 of an API key: what :class:`ApiKey` stores instead of the key."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def generate_key(kind: KeyKind) -> tuple[str, str]:
    """A new random key (``pk_…`` or ``sk_…``, 256 bits) and its digest for the config.

    Hand the key to its owner once; keep only the digest.
    """
    raw = _KEY_PREFIX[kind] + secrets.token_urlsafe(32)
    return raw, hash_key(raw)


class SecurityConfigError(ValueError):
    """Raised by :meth:`SecurityConfig.from_file` when the file is not a valid configuration."""


# -- origins ----------------------------------------------------------------------------------


_Origin: TypeAlias = tuple[str, str, str, str]


def _origin_string(scheme: str, host: str, port: str) -> str:
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def _canonical_origin(value: str) -> _Origin | None:
    """``(scheme, host, port, canonical text)`` of a presented ``Origin``, or None.

    The port is ``""`` when it is the scheme's default, as browsers serialise it.
    """
    # a real origin is short; the bound also keeps the cache small under junk
    return _parse_origin(value) if len(value) <= 300 else None


@functools.lru_cache(maxsize=4096)  # browsers repeat a handful of origins; thread-safe
def _parse_origin(value: str) -> _Origin | None:
    match = _ORIGIN_RE.fullmatch(value.strip().lower())
    if match is None:
        return None
    scheme, host, port = match.group(1), match.group(2), match.group(3) or ""
    if port == _DEFAULT_PORT[scheme]:
        port = ""
    return scheme, host, port, _origin_string(scheme, host, port)


@dataclass(frozen=True, slots=True)
class OriginRules:
    """Compiled origin patterns (see the module docstring for the grammar)."""

    any_origin: bool = False
    exact: frozenset[str] = frozenset()
    #: ``(scheme, ".domain", port)`` for each ``scheme://*.domain[:port]`` pattern
    wildcards: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def compile(cls, patterns: Iterable[str]) -> OriginRules:
        """Compile patterns; a ValueError names the first invalid one and how to write it."""
        any_origin = False
        exact: set[str] = set()
        wildcards: list[tuple[str, str, str]] = []
        for pattern in patterns:
            if pattern == "*":
                any_origin = True
                continue
            text = pattern.strip().lower()
            match = _PATTERN_RE.fullmatch(text)
            if match is None:
                raise ValueError(_pattern_advice(pattern))
            scheme, star, host, port = match.groups()
            port = port or ""
            if port and not 0 < int(port) < 65536:
                raise ValueError(f"origin pattern {pattern!r}: port out of range")
            if port == _DEFAULT_PORT[scheme]:
                port = ""
            if star:
                if "." not in host:
                    raise ValueError(
                        f"origin pattern {pattern!r} is too broad: a wildcard needs a domain "
                        "of at least two labels, e.g. 'https://*.example.com'"
                    )
                wildcards.append((scheme, "." + host, port))
            else:
                exact.add(_origin_string(scheme, host, port))
        return cls(any_origin=any_origin, exact=frozenset(exact), wildcards=tuple(wildcards))

    @classmethod
    def union(cls, rules: Iterable[OriginRules]) -> OriginRules:
        """Rules allowing what any of ``rules`` allows."""
        rules = list(rules)
        return cls(
            any_origin=any(r.any_origin for r in rules),
            exact=frozenset().union(*(r.exact for r in rules)),
            wildcards=tuple(w for r in rules for w in r.wildcards),
        )

    def allows(self, origin: _Origin | None) -> bool:
        """Whether a canonical origin (from :func:`_canonical_origin`) is allowed."""
        if origin is None:
            return False
        if self.any_origin or origin[3] in self.exact:
            return True
        scheme, host, port, _ = origin
        for w_scheme, suffix, w_port in self.wildcards:
            if scheme == w_scheme and port == w_port and host.endswith(suffix):
                return True
        return False


def _pattern_advice(pattern: str) -> str:
    text = pattern.strip().lower()
    head = f"origin pattern {pattern!r}"
    if "://" not in text:
        return f"{head} needs a scheme: write 'https://{text.rstrip('/')}'"
    scheme, _, rest = text.partition("://")
    if scheme not in _DEFAULT_PORT:
        return f"{head}: only http and https origins exist for browsers"
    if "/" in rest:
        return f"{head}: an origin has no path, write '{scheme}://{rest.split('/')[0]}'"
    return (
        f"{head} is not 'scheme://host[:port]', 'scheme://*.domain[:port]' or '*' "
        "(hosts in ASCII/punycode; IPv6 literals are not supported)"
    )


def _loopback_host(host: str) -> bool:
    """``localhost``, ``*.localhost``, 127.0.0.0/8 or ``[::1]`` (a lowercase host, no port)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    ip = _parse_ip(host)
    return ip is not None and ip.is_loopback


def _host_of_authority(authority: str) -> str:
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[: authority.find("]") + 1]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


# -- client addresses ---------------------------------------------------------------------------

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_ip(text: str) -> _IP | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` or ``[::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _client_address(scope: Scope, forwarded: str | None, hops: int) -> str | None:
    """The socket peer, or with ``hops`` trusted proxies the ``hops``-th ``X-Forwarded-For``
    entry from the right (entries further left can be forged); as ``server.routes``."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    if hops <= 0:
        return peer
    entries = [e.strip() for e in (forwarded or "").split(",")]
    entries = [e for e in entries if e]
    return entries[-hops] if len(entries) >= hops else peer


# -- configuration ----------------------------------------------------------------------------


class ApiKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One API key, stored by digest.

    Attributes:
        id: a name for logs, metrics and ``scope["state"]``; not secret.
        kind: ``public`` (browsers, public routes only) or ``secret`` (servers, every route).
        sha256: lowercase hex SHA-256 of the key (:func:`hash_key`).
        origins: for public keys, the sites allowed to use it (required; see the module
            docstring for the grammar); secret keys must not list any.
        rate_per_minute: this key's limit instead of ``per_key_per_minute``.
    """

    id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    kind: KeyKind
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
    origins: list[str] = []
    rate_per_minute: Annotated[int, Meta(ge=1)] | None = None

    def __post_init__(self) -> None:
        if self.kind == "public" and not self.origins:
            raise ValueError(
                f"public key {self.id!r} lists no origins: add the sites that embed it, "
                "e.g. 'https://shop.example.com', or '*' for any"
            )
        if self.kind == "secret" and self.origins:
            raise ValueError(
                f"secret key {self.id!r} lists origins, but secret keys are for servers "
                "and never get CORS access; use a public key in browsers"
            )
        OriginRules.compile(self.origins)


class SecurityConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Keys, the demo rule and rate limits of :class:`SecurityMiddleware`.

    A TOML file::

        per_ip_per_minute = 600

        [[keys]]
        id = "shop-web"
        kind = "public"
        sha256 = "…"            # hash_key("pk_…")
        origins = ["https://shop.example.com", "https://*.shop.example.com"]

    Attributes:
        keys: the accepted keys; ids and digests are unique and ``demo`` is reserved.
        demo_keyless_loopback: accept keyless loopback requests to public routes as the
            implicit public key ``demo`` (the local demo only).
        per_key_per_minute: default limit of each key (0: none).
        per_ip_per_minute: limit of each client address, or /64 for IPv6, for requests not
            authenticated by a secret key (0: none).
        burst_seconds: a full bucket holds this many seconds' worth of its rate (at least one
            request), so a client idle for that long may send that much at once.
        trusted_proxy_hops: as ``Settings.trusted_proxy_hops``: reverse proxies that append to
            ``X-Forwarded-For``; 0 uses the socket peer and ignores the header.
        max_tracked_clients: most rate-limit buckets kept in memory per process.
    """

    keys: list[ApiKey]
    demo_keyless_loopback: bool = False
    per_key_per_minute: Annotated[int, Meta(ge=0)] = 6000
    per_ip_per_minute: Annotated[int, Meta(ge=0)] = 600
    burst_seconds: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    trusted_proxy_hops: Annotated[int, Meta(ge=0, le=10)] = 0
    max_tracked_clients: Annotated[int, Meta(ge=1)] = 100_000

    def __post_init__(self) -> None:
        ids: set[str] = set()
        digests: set[str] = set()
        for key in self.keys:
            if key.id == DEMO_KEY_ID:
                raise ValueError(f"key id {DEMO_KEY_ID!r} is reserved for the keyless demo")
            if key.id in ids:
                raise ValueError(f"key id {key.id!r} is used twice")
            if key.sha256 in digests:
                raise ValueError(f"key {key.id!r} has the same sha256 as another key")
            ids.add(key.id)
            digests.add(key.sha256)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SecurityConfig:
        """Read a ``.json`` or ``.toml`` file.

        Raises:
            SecurityConfigError: the file is not valid JSON/TOML or not a valid config; the
                message names the file and the field (``… - at `$.keys[0].origins```).
            OSError: the file cannot be read.
        """
        file = Path(path)
        suffix = file.suffix.lower()
        if suffix not in (".json", ".toml"):
            raise SecurityConfigError(f"{file}: expected a .json or .toml file")
        data = file.read_bytes()
        try:
            if suffix == ".json":
                return msgspec.json.decode(data, type=cls)
            return msgspec.toml.decode(data, type=cls)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise SecurityConfigError(f"{file}: {exc}") from exc


# -- the middleware -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as put in ``scope["state"]["tailor_key"]``; never holds the key itself.

    Attributes:
        id: the key's configured id (``demo`` for the keyless loopback demo).
        kind: ``public`` or ``secret``.
        origin: the request's ``Origin`` when it was checked against a public key, else None.
    """

    id: str
    kind: KeyKind
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class _Key:
    id: str
    kind: KeyKind
    digest: bytes
    origins: OriginRules
    rate_per_minute: int


_Route = Literal["open", "public", "secret"]


class _Refusal(Exception):
    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers


def _missing_key(detail: str) -> _Refusal:
    return _Refusal(
        401, "missing-key", "API key required", detail, [(b"www-authenticate", b"Bearer")]
    )


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
        self._public_exact, self._public_trees = _compile_routes(public_routes)
        self._demo_exact, self._demo_trees = _compile_routes(demo_routes)
        self._limiter = RateLimiter(
            burst_seconds=config.burst_seconds,
            maxsize=config.max_tracked_clients,
            clock=clock,
        )
        self._ip_salt = secrets.token_bytes(32)

    @classmethod
    def factory(
        cls,
        config: SecurityConfig,
        *,
        protected_prefix: str = "/v1/",
        public_routes: Iterable[str] = DEFAULT_PUBLIC_ROUTES,
        demo_routes: Iterable[str] = DEMO_READ_ROUTES,
        clock: Callable[[], float] = time.monotonic,
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
        return tuple(_normalize_path(p) for p in paths)

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
        if _matches(method, path, self._public_exact, self._public_trees):
            return "public"
        return "secret"

    def demo_route(self, method: str, paths: tuple[str, ...]) -> bool:
        """Whether the keyless loopback demo may call a secret route: every candidate path is
        in :data:`DEMO_READ_ROUTES` and none has a dot segment (fail closed)."""
        return all(
            _matches(method, p, self._demo_exact, self._demo_trees)
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
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers") or ():
            name = name.lower()
            if name in _WANTED:
                headers[name] = headers[name] + b"," + value if name in headers else bytes(value)
        origin_header = headers.get(b"origin")
        origin_text = origin_header.decode("latin-1").strip() if origin_header is not None else None
        origin = _canonical_origin(origin_text) if origin_text is not None else None
        forwarded = headers.get(b"x-forwarded-for")
        address = _client_address(
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
        except _Refusal as refusal:
            await _send_problem(send, scope, refusal)
            return
        cors: list[tuple[bytes, bytes]] = []
        if principal.kind == "public" and principal.origin is not None:
            cors = [
                (b"access-control-allow-origin", principal.origin.encode("latin-1")),
                (b"access-control-expose-headers", _EXPOSE),
            ]
        limits: list[tuple[Hashable, int]] = [(("key", principal.id), rate)]
        if principal.kind == "public" and self.config.per_ip_per_minute:
            limits.append((self._ip_bucket(address), self.config.per_ip_per_minute))
        wait = self._limiter.acquire(*limits)
        if wait:
            await _send_problem(send, scope, _rate_limited(wait, cors))
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[STATE_KEY] = principal
        await self.app(scope, receive, _with_cors(send, cors))

    def _authorize(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        method: str,
        paths: tuple[str, ...],
        origin_text: str | None,
        origin: _Origin | None,
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
            self._charge_ip(address)
            raise _missing_key(
                "send an API key as 'Authorization: Bearer <key>', 'X-Tailor-Key: <key>' "
                "or the 'key' query parameter"
            )
        key = self._lookup(raw)
        if key is None:
            self._charge_ip(address)
            raise _Refusal(
                401,
                "unknown-key",
                "Unknown API key",
                "the API key is not valid for this server",
                [(b"www-authenticate", b'Bearer error="invalid_token"')],
            )
        if key.kind == "secret":
            if in_query:
                raise _Refusal(
                    403,
                    "secret-key-in-query",
                    "Secret key in URL",
                    "send secret keys in the Authorization header, never in a URL (URLs are "
                    "logged); consider rotating this key",
                )
            return Principal(id=key.id, kind="secret"), key.rate_per_minute
        if route != "public":
            self._charge_ip(address)
            raise _Refusal(
                403,
                "secret-key-required",
                "Secret key required",
                f"{method} {path} needs a secret key; public keys may only call the public "
                "routes (decide, events, bundle)",
            )
        if origin_text is not None:
            if not key.origins.allows(origin):
                self._charge_ip(address)
                raise _Refusal(
                    403,
                    "origin-not-allowed",
                    "Origin not allowed",
                    f"origin {origin_text[:300]!r} is not allowed for this public key",
                )
        elif method not in ("GET", "HEAD"):
            self._charge_ip(address)
            raise _Refusal(
                403,
                "origin-required",
                "Origin required",
                "a public key on a POST needs the browser's Origin header; servers should "
                "use a secret key",
            )
        return Principal(id=key.id, kind="public", origin=origin_text), key.rate_per_minute

    def _demo_allows(
        self,
        headers: dict[bytes, bytes],
        origin_text: str | None,
        origin: _Origin | None,
        address: str | None,
    ) -> bool:
        if not self.config.demo_keyless_loopback or address is None:
            return False
        ip = _parse_ip(address)
        if ip is None or not ip.is_loopback:
            return False
        host = headers.get(b"host")
        if host is None or not _loopback_host(_host_of_authority(host.decode("latin-1"))):
            return False
        return origin_text is None or (origin is not None and _loopback_host(origin[1]))

    async def _preflight(
        self,
        scope: Scope,
        send: Send,
        paths: tuple[str, ...],
        request_method: bytes,
        origin_text: str,
        origin: _Origin | None,
        headers: dict[bytes, bytes],
        address: str | None,
    ) -> None:
        self._charge_ip(address)
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
            raise _Refusal(403, "origin-not-allowed", "Origin not allowed", why)
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
            ip = _parse_ip(address)
            if isinstance(ip, ipaddress.IPv6Address):
                data = ip.packed[:8]
            else:
                data = (str(ip) if ip is not None else address).encode("utf-8", "surrogateescape")
        else:  # a dotted quad as servers write it, or whatever a proxy sent: hashed as is
            data = address.encode("utf-8", "surrogateescape")
        return "ip", hashlib.blake2b(data, key=self._ip_salt, digest_size=16).digest()

    def _charge_ip(self, address: str | None) -> None:
        """Charge a refused or unauthenticated request to its address; 429 when it is out."""
        if not self.config.per_ip_per_minute:
            return
        wait = self._limiter.acquire((self._ip_bucket(address), self.config.per_ip_per_minute))
        if wait:
            raise _rate_limited(wait, ())


def _compile_routes(
    routes: Iterable[str],
) -> tuple[set[tuple[str, str]], list[tuple[str, str]]]:
    """``(method, path)`` pairs matched exactly and ``(method, tree)`` pairs matched with their
    descendants, from ``"METHOD /path"`` entries (``/*``: and below; ``GET`` adds ``HEAD``)."""
    exact: set[tuple[str, str]] = set()
    trees: list[tuple[str, str]] = []
    for route in routes:
        method, _, path = route.strip().partition(" ")
        method, path = method.upper(), path.strip()
        tree = path.endswith("/*")
        path = _SLASHES.sub("/", "/" + path.removesuffix("/*").strip("/"))
        methods = (method, "HEAD") if method == "GET" else (method,)
        for m in methods:
            if tree:
                trees.append((m, path))
            else:
                exact.add((m, path))
    return exact, trees


def _matches(
    method: str, path: str, exact: set[tuple[str, str]], trees: list[tuple[str, str]]
) -> bool:
    if (method, path) in exact:
        return True
    return any(m == method and (path == tree or path.startswith(tree + "/")) for m, tree in trees)


def _normalize_path(path: str) -> str:
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path if path.startswith("/") else "/" + path


def _rate_limited(wait: int, cors: Sequence[tuple[bytes, bytes]]) -> _Refusal:
    return _Refusal(
        429,
        "rate-limited",
        "Too many requests",
        f"rate limit exceeded; retry in {wait} s",
        [(b"retry-after", str(wait).encode()), *cors],
    )


def _with_cors(send: Send, cors: Sequence[tuple[bytes, bytes]]) -> Send:
    """Wrap ``send``: drop the app's CORS headers, add ``Vary: Origin`` and ours."""

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [  # ASGI response header names are lowercase
                header
                for header in message.get("headers") or ()
                if not header[0].startswith(b"access-control-")
            ]
            headers.append((b"vary", b"Origin"))
            headers.extend(cors)
            message = {**message, "headers": headers}
        await send(message)

    return send_with_cors


async def _send_problem(send: Send, scope: Scope, refusal: _Refusal) -> None:
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + refusal.slug,
        "title": refusal.title,
        "status": refusal.status,
        "detail": refusal.detail,
        "instance": str(scope.get("path", "")),
    }
    try:
        payload = _encoder.encode(body)
    except UnicodeEncodeError:  # a path with lone surrogates
        del body["instance"]
        payload = _encoder.encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
                (b"vary", b"Origin"),
                *refusal.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
