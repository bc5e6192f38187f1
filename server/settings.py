"""Typed settings of the decision server.

Settings are a Struct passed to :func:`server.app.create_app`; environment variables
(``TAILOR_*``) are read only by :meth:`Settings.from_env`, when no settings are passed.
Unknown fields are errors, so a typo in a config fails at start-up.

Must not import model_export.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from server.security import SecurityConfig

__all__ = ["Settings", "StateBackend"]

_STATIC = Path(__file__).resolve().parent / "static"


#: Numeric settings read from the environment: (variable, field, type).
_NUMBERS: tuple[tuple[str, str, type[int] | type[float]], ...] = (
    ("TAILOR_NEW_PROFILES_PER_MINUTE", "new_profiles_per_minute", int),
    ("TAILOR_DECIDE_BATCH", "decide_batch", int),
    ("TAILOR_HEADER_TIMEOUT", "header_timeout", float),
    ("TAILOR_BODY_TIMEOUT", "body_timeout", float),
    ("TAILOR_KEEP_ALIVE_TIMEOUT", "keep_alive_timeout", float),
    ("TAILOR_MAX_HEADER_BYTES", "max_header_bytes", int),
    ("TAILOR_LIMIT_CONCURRENCY", "limit_concurrency", int),
    ("TAILOR_BROWSER_MAX_CONVERSION_VALUE", "browser_max_conversion_value", float),
    ("TAILOR_EVENT_GUARD_ENTRIES", "event_guard_entries", int),
    ("TAILOR_VISITOR_TOKEN_DAYS", "visitor_token_days", float),
    ("TAILOR_REDIS_TIMEOUT", "redis_timeout", float),
    ("TAILOR_SPOOL_MAX_MIB", "spool_max_mib", float),
    ("TAILOR_STREAM_MAXLEN", "stream_maxlen", int),
    ("TAILOR_LOG_MAX_BYTES", "log_max_bytes", int),
    ("TAILOR_LOG_MAX_AGE_DAYS", "log_max_age_days", float),
)


def _number(env: dict[str, str], name: str, kind: type[int] | type[float]) -> int | float:
    """The number in the environment variable ``name``, or a ValueError naming it."""
    try:
        return kind(env[name])
    except ValueError:
        raise ValueError(f"{name} must be a number, got {env[name]!r}") from None


#: Text settings read from the environment as they are: (variable, field).
_TEXTS: tuple[tuple[str, str], ...] = (
    ("TAILOR_REDIS_URL", "redis_url"),
    ("TAILOR_REDIS_PREFIX", "redis_prefix"),
    ("TAILOR_STATE", "state"),
    ("TAILOR_SPOOL_DIR", "spool_dir"),
    ("TAILOR_EVENT_SINK", "event_sink"),
)
#: The environment variable of each field (for error messages).
_VARIABLES = {
    **{field: name for name, field, _ in _NUMBERS},
    **{field: name for name, field in _TEXTS},
    "max_body_bytes": "TAILOR_MAX_BODY_BYTES",
    "trusted_proxy_hops": "TAILOR_TRUSTED_PROXY_HOPS",
    "reload_interval": "TAILOR_RELOAD_INTERVAL",
    "max_visitors": "TAILOR_MAX_VISITORS",
    "decision_cache_mib": "TAILOR_DECISION_CACHE_MIB",
    "gc_young_threshold": "TAILOR_GC_YOUNG",
}
#: Fields holding secrets: never shown by ``repr``.
_SECRET_FIELDS = frozenset({"token_secrets", "user_token_secrets", "redis_url"})
#: Where visitor state lives: one process, Redis, or each worker its own (opted into).
StateBackend = Literal["memory", "redis", "per-worker"]


def _listed(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Configuration of one server process.

    Attributes:
        bundle_path: directory of the model bundle to serve.
        bundle_public_keys: trusted Ed25519 public keys (PEM file paths, or the base64 raw key
            ``tailor bundle keygen`` prints); when set, a bundle must carry a valid signature
            by one of them (``TAILOR_BUNDLE_PUBLIC_KEYS``, comma-separated). None: unsigned
            bundles load (local development); production servers should set it.
        mmdb_path: optional MaxMind City/Country database for geo lookups by client IP.
        geo_headers: trusted edge headers carrying the visitor's country (first present wins),
            e.g. ``["cf-ipcountry"]``; none by default, since any client can send them. List them
            only behind a CDN that sets them and strips the client's own.
        max_body_bytes: largest request body accepted; larger ones get 413.
        static_dir: where the demo page and the built tag live.
        demo: the local demo, off unless enabled (``--demo``, ``TAILOR_DEMO=1``; ``make run``):
            serve the demo page at ``/`` and accept keyless requests from loopback
            (127.0.0.0/8, ::1) with a loopback Host. Never together with keys (refused at
            start-up); without ``demo``, keys are required.
        security: API keys (public keys with their allowed origins, secret keys), rate limits;
            read from ``TAILOR_KEYS_FILE`` (JSON or TOML) by :meth:`from_env`.
        trusted_proxy_hops: how many reverse proxies in front of the server append to
            ``X-Forwarded-For``; 0 (default) uses the socket's peer address and ignores the header.
        reload_interval: seconds between checks of the bundle path for a new bundle (0: off).
        event_log_dir: where decisions and events are appended as JSON Lines (None: no log).
        max_visitors: visitor profiles kept in memory per process (least recent dropped).
        gc_young_threshold: allocations between young-generation garbage collections in a
            worker (CPython's default is 700; see ``server.app._settle_heap``).
        decide_batch: the most fresh decides of one event-loop turn decided back to back, the
            code warm for all but the first (``server.batcher``); 1 decides each request alone.
        decision_cache_mib: memory for the per-visit decision cache per process, in MiB of
            encoded decisions (about 3 KiB each; least recent dropped).
        profile_ttl_days: a profile not seen for this long is forgotten.
        new_profiles_per_minute: most new profiles one public-key client (key + address) may
            create a minute; past it, its new visitors get contextual decisions and nothing is
            stored, so one client cannot evict other visitors' profiles (0: no cap).
        header_timeout: seconds a connection has to send a request's line and headers.
        body_timeout: seconds a handler waits for a request body (408 after).
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
        max_header_bytes: largest request line + headers (also uvicorn's
            ``h11_max_incomplete_event_size``).
        limit_concurrency: connections + tasks a worker serves at once before answering 503.
        docs_ui: serve the interactive API docs (Scalar, Swagger UI) beside
            ``/schema/openapi.json``; off by default, since their scripts load from a CDN without
            integrity hashes (``TAILOR_DOCS_UI=1``).
        browser_max_conversion_value: the largest event ``value`` a public key (a browser)
            may report; larger ones are refused (422), confirmed conversions
            (``POST /v1/conversions``, secret key) carry real order values
            (``TAILOR_BROWSER_MAX_CONVERSION_VALUE``).
        event_guard_entries: entries of each table of the event guard per process (decisions
            issued to public keys, event ids seen, converted decisions, confirmed order ids;
            least recent dropped), about 300 bytes each (``TAILOR_EVENT_GUARD_ENTRIES``).
        token_secrets: secrets signing the visitor tokens the server issues to public-key
            visitors with storage consent (``TAILOR_TOKEN_SECRETS``, comma-separated): each is
            used as its UTF-8 text, at least 32 bytes (``secrets.token_urlsafe(32)`` makes
            one); the first signs, all verify, so a new one is put first and an old one removed
            once its tokens have been renewed. Required with API keys; the demo makes one.
        token_secret_file: a file of more token secrets, one a line (``#`` comments), after
            ``token_secrets`` (``TAILOR_TOKEN_SECRET_FILE``).
        visitor_token_days: the oldest visitor token accepted; tokens are renewed in the next
            decision once a day old, so this is how long a visitor may stay away
            (``TAILOR_VISITOR_TOKEN_DAYS``).
        user_token_secrets: secrets shared with the site's backend, which signs user ids with
            ``sdk.tokens.user_token`` (``TAILOR_USER_TOKEN_SECRETS``, comma-separated); without
            them a user id from a public key is always dropped.
        redis_url: the shared state store, ``redis://[user:password@]host:port/db``,
            ``rediss://`` (TLS) or ``unix://`` (``TAILOR_REDIS_URL``); never shown by ``repr``.
        redis_prefix: the first part of every key, so several sites share one Redis
            (``TAILOR_REDIS_PREFIX``).
        redis_timeout: seconds one call to Redis may take before the request goes on without
            it (``TAILOR_REDIS_TIMEOUT``; a circuit breaker then skips Redis for 2 s).
        state: where visitor state lives (``TAILOR_STATE``): ``memory`` (one process),
            ``redis`` (every worker and replica shares it; the default when ``redis_url`` is
            set) or ``per-worker`` (each worker its own memory: several workers without read-
            your-writes across them, and an erasure reaches one worker only). None: chosen
            from ``redis_url``.
        spool_dir: where profile updates that Redis could not take wait to be replayed
            (``TAILOR_SPOOL_DIR``).
        spool_max_mib: most MiB of spooled profile updates; past it they are dropped and
            counted (``TAILOR_SPOOL_MAX_MIB``).
        event_sink: where the event log goes (``TAILOR_EVENT_SINK``): ``files`` (each worker's
            JSON Lines files in ``event_log_dir``), ``stream`` (the Redis stream that
            ``python -m server.sink`` writes to files; spooled in ``<spool_dir>/events`` while
            Redis is away) or ``auto``: the stream with a ``redis_url`` and files without.
        stream_maxlen: the event stream is trimmed to about this many entries
            (``TAILOR_STREAM_MAXLEN``; entries no sink has read by then are lost).
        log_max_bytes: most bytes of log files in one directory (the event log, the event
            spool, the sink's); the oldest closed files are deleted past it, checked when a
            file is opened (``TAILOR_LOG_MAX_BYTES``; 0: no cap).
        log_max_age_days: closed log files not written for this long are deleted
            (``TAILOR_LOG_MAX_AGE_DAYS``; 0: kept until the size cap).
    """

    bundle_path: str = "var/bundles/demo"
    bundle_public_keys: list[str] | None = None
    mmdb_path: str | None = None
    geo_headers: list[str] = []
    max_body_bytes: Annotated[int, Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    static_dir: str = str(_STATIC)
    demo: bool = False
    trusted_proxy_hops: Annotated[int, Meta(ge=0, le=10)] = 0
    reload_interval: Annotated[float, Meta(ge=0, le=3600)] = 2.0
    security: SecurityConfig | None = None
    event_log_dir: str | None = "var/events"
    max_visitors: Annotated[int, Meta(ge=1)] = 100_000
    decision_cache_mib: Annotated[float, Meta(gt=0, le=65536)] = 64.0
    gc_young_threshold: Annotated[int, Meta(ge=100, le=10_000_000)] = 10_000
    decide_batch: Annotated[int, Meta(ge=1, le=256)] = 32
    profile_ttl_days: Annotated[float, Meta(gt=0, le=3650)] = 30.0
    new_profiles_per_minute: Annotated[int, Meta(ge=0)] = 60
    header_timeout: Annotated[float, Meta(gt=0, le=300)] = 10.0
    body_timeout: Annotated[float, Meta(gt=0, le=300)] = 10.0
    keep_alive_timeout: Annotated[float, Meta(gt=0, le=300)] = 5.0
    max_header_bytes: Annotated[int, Meta(ge=4096, le=1024 * 1024)] = 64 * 1024
    limit_concurrency: Annotated[int, Meta(ge=1)] = 1000
    docs_ui: bool = False
    browser_max_conversion_value: Annotated[float, Meta(ge=0, le=1_000_000_000)] = 10_000.0
    event_guard_entries: Annotated[int, Meta(ge=1000)] = 200_000
    token_secrets: list[str] = []
    token_secret_file: str | None = None
    visitor_token_days: Annotated[float, Meta(gt=0, le=3650)] = 395.0
    user_token_secrets: list[str] = []
    redis_url: str | None = None
    redis_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "tailor"
    redis_timeout: Annotated[float, Meta(gt=0, le=10)] = 0.05
    state: StateBackend | None = None
    spool_dir: str = "var/spool"
    spool_max_mib: Annotated[float, Meta(gt=0, le=65536)] = 64.0
    event_sink: Literal["auto", "files", "stream"] = "auto"
    stream_maxlen: Annotated[int, Meta(ge=1000)] = 1_000_000
    log_max_bytes: Annotated[int, Meta(ge=0)] = 10 * 1024**3
    log_max_age_days: Annotated[float, Meta(ge=0, le=36500)] = 0.0

    def __repr__(self) -> str:  # the token secrets stay out of logs and tracebacks
        shown = (
            f"{name}={'[...]' if name in _SECRET_FIELDS else repr(getattr(self, name))}"
            for name in self.__struct_fields__
        )
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from ``TAILOR_*`` environment variables."""
        env = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        if "TAILOR_BUNDLE" in env:
            values["bundle_path"] = env["TAILOR_BUNDLE"]
        if env.get("TAILOR_BUNDLE_PUBLIC_KEYS", "").strip():
            keys = env["TAILOR_BUNDLE_PUBLIC_KEYS"].split(",")
            values["bundle_public_keys"] = [k.strip() for k in keys if k.strip()]
        if env.get("TAILOR_MMDB"):
            values["mmdb_path"] = env["TAILOR_MMDB"]
        if env.get("TAILOR_GEO_HEADERS"):
            values["geo_headers"] = [h.strip() for h in env["TAILOR_GEO_HEADERS"].split(",")]
        if env.get("TAILOR_MAX_BODY_BYTES"):
            values["max_body_bytes"] = _number(env, "TAILOR_MAX_BODY_BYTES", int)
        if env.get("TAILOR_TRUSTED_PROXY_HOPS"):
            values["trusted_proxy_hops"] = _number(env, "TAILOR_TRUSTED_PROXY_HOPS", int)
        if env.get("TAILOR_RELOAD_INTERVAL"):
            values["reload_interval"] = _number(env, "TAILOR_RELOAD_INTERVAL", float)
        if "TAILOR_EVENT_LOG_DIR" in env:
            values["event_log_dir"] = env["TAILOR_EVENT_LOG_DIR"] or None
        if env.get("TAILOR_MAX_VISITORS"):
            values["max_visitors"] = _number(env, "TAILOR_MAX_VISITORS", int)
        if env.get("TAILOR_DECISION_CACHE_MIB"):
            values["decision_cache_mib"] = _number(env, "TAILOR_DECISION_CACHE_MIB", float)
        if env.get("TAILOR_GC_YOUNG"):
            values["gc_young_threshold"] = _number(env, "TAILOR_GC_YOUNG", int)
        for name, field, kind in _NUMBERS:
            if env.get(name):
                values[field] = _number(env, name, kind)
        for name, field in _TEXTS:
            if env.get(name, "").strip():
                values[field] = env[name].strip()
        if env.get("TAILOR_DOCS_UI"):
            values["docs_ui"] = env["TAILOR_DOCS_UI"].lower() in ("1", "true", "yes")
        if env.get("TAILOR_TOKEN_SECRETS"):
            values["token_secrets"] = _listed(env["TAILOR_TOKEN_SECRETS"])
        if env.get("TAILOR_TOKEN_SECRET_FILE"):
            values["token_secret_file"] = env["TAILOR_TOKEN_SECRET_FILE"]
        if env.get("TAILOR_USER_TOKEN_SECRETS"):
            values["user_token_secrets"] = _listed(env["TAILOR_USER_TOKEN_SECRETS"])
        if env.get("TAILOR_DEMO"):
            values["demo"] = env["TAILOR_DEMO"].lower() in ("1", "true", "yes")
        try:
            settings = msgspec.convert(values, cls)
        except msgspec.ValidationError as exc:  # name the variable, not the field
            at = re.search(r"`\$\.(\w+)", str(exc))
            variable = _VARIABLES.get(at.group(1), at.group(1)) if at else "a setting"
            raise msgspec.ValidationError(f"{variable}: {exc}") from None
        if env.get("TAILOR_KEYS_FILE"):
            security = SecurityConfig.from_file(env["TAILOR_KEYS_FILE"])
            settings = msgspec.structs.replace(settings, security=security)
        return settings

    def state_backend(self) -> StateBackend:
        """Where visitor state lives: ``state`` when set, else ``redis`` with a ``redis_url``
        and ``memory`` without.

        Raises:
            ValueError: ``state`` is ``redis`` without a ``redis_url``, or the URL is not a
                Redis URL (the message never repeats a password).
        """
        if self.redis_url is not None:
            from server.stores.redis_conn import check_redis_url

            check_redis_url(self.redis_url)
        if self.state is None:
            return "redis" if self.redis_url else "memory"
        if self.state == "redis" and not self.redis_url:
            raise ValueError("TAILOR_STATE=redis needs TAILOR_REDIS_URL (redis://host:port/0)")
        return self.state

    def security_config(self) -> SecurityConfig:
        """The effective security configuration.

        Raises:
            ValueError: neither keys nor the loopback demo are configured (any configuration
                other than the local demo requires keys), or both are.
        """
        security = self.security or SecurityConfig(keys=[])
        if self.demo and security.keys:
            raise ValueError(
                "demo mode (TAILOR_DEMO=1 / --demo) cannot run with API keys configured: keyless "
                "loopback requests would bypass the keys; unset TAILOR_DEMO or TAILOR_KEYS_FILE"
            )
        if self.demo:
            security = msgspec.structs.replace(security, demo_keyless_loopback=True)
        elif not security.keys:
            raise ValueError(
                "no API keys configured: set TAILOR_KEYS_FILE (or Settings.security), or run "
                "the local demo (TAILOR_DEMO=1), which accepts keyless requests from loopback"
            )
        return msgspec.structs.replace(security, trusted_proxy_hops=self.trusted_proxy_hops)
