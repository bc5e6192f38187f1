"""Typed settings of the decision server.

Settings are a Struct passed to :func:`server.app.create_app`; environment variables
(``TAILOR_*``) are read only by :meth:`Settings.from_env`, when no settings are passed.
Unknown fields are errors, so a typo in a config fails at start-up.

Must not import model_export.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from server.security import SecurityConfig

__all__ = ["Settings"]

_STATIC = Path(__file__).resolve().parent / "static"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Configuration of one server process.

    Attributes:
        bundle_path: directory of the model bundle to serve.
        mmdb_path: optional MaxMind City/Country database for geo lookups by client IP.
        geo_headers: trusted edge headers carrying the visitor's country (first present wins);
            None uses the defaults of ``sdk.geo``. Trust them only behind a CDN that sets them.
        max_body_bytes: largest request body accepted; larger ones get 413.
        static_dir: where the demo page and the built tag live.
        demo: the local demo: serve the demo page at ``/`` and accept keyless requests from
            loopback (127.0.0.0/8, ::1) with a loopback Host. Without ``demo``, keys are required.
        security: API keys (public keys with their allowed origins, secret keys), rate limits;
            read from ``TAILOR_KEYS_FILE`` (JSON or TOML) by :meth:`from_env`.
        trusted_proxy_hops: how many reverse proxies in front of the server append to
            ``X-Forwarded-For``; 0 (default) uses the socket's peer address and ignores the header.
        reload_interval: seconds between checks of the bundle path for a new bundle (0: off).
        event_log_dir: where decisions and events are appended as JSON Lines (None: no log).
        max_visitors: visitor profiles kept in memory per process (least recent dropped).
        gc_young_threshold: allocations between young-generation garbage collections in a
            worker (CPython's default is 700; see ``server.app._settle_heap``).
        decision_cache_mib: memory for the per-visit decision cache per process, in MiB of
            encoded decisions (about 3 KiB each; least recent dropped).
        profile_ttl_days: a profile not seen for this long is forgotten.
    """

    bundle_path: str = "var/bundles/demo"
    mmdb_path: str | None = None
    geo_headers: list[str] | None = None
    max_body_bytes: Annotated[int, Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    static_dir: str = str(_STATIC)
    demo: bool = True
    trusted_proxy_hops: Annotated[int, Meta(ge=0, le=10)] = 0
    reload_interval: Annotated[float, Meta(ge=0, le=3600)] = 2.0
    security: SecurityConfig | None = None
    event_log_dir: str | None = "var/events"
    max_visitors: Annotated[int, Meta(ge=1)] = 100_000
    decision_cache_mib: Annotated[float, Meta(gt=0, le=65536)] = 64.0
    gc_young_threshold: Annotated[int, Meta(ge=100, le=10_000_000)] = 10_000
    profile_ttl_days: Annotated[float, Meta(gt=0, le=3650)] = 30.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from ``TAILOR_*`` environment variables."""
        env = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        if "TAILOR_BUNDLE" in env:
            values["bundle_path"] = env["TAILOR_BUNDLE"]
        if env.get("TAILOR_MMDB"):
            values["mmdb_path"] = env["TAILOR_MMDB"]
        if env.get("TAILOR_GEO_HEADERS"):
            values["geo_headers"] = [h.strip() for h in env["TAILOR_GEO_HEADERS"].split(",")]
        if env.get("TAILOR_MAX_BODY_BYTES"):
            values["max_body_bytes"] = int(env["TAILOR_MAX_BODY_BYTES"])
        if env.get("TAILOR_TRUSTED_PROXY_HOPS"):
            values["trusted_proxy_hops"] = int(env["TAILOR_TRUSTED_PROXY_HOPS"])
        if env.get("TAILOR_RELOAD_INTERVAL"):
            values["reload_interval"] = float(env["TAILOR_RELOAD_INTERVAL"])
        if "TAILOR_EVENT_LOG_DIR" in env:
            values["event_log_dir"] = env["TAILOR_EVENT_LOG_DIR"] or None
        if env.get("TAILOR_MAX_VISITORS"):
            values["max_visitors"] = int(env["TAILOR_MAX_VISITORS"])
        if env.get("TAILOR_DECISION_CACHE_MIB"):
            values["decision_cache_mib"] = float(env["TAILOR_DECISION_CACHE_MIB"])
        if env.get("TAILOR_GC_YOUNG"):
            values["gc_young_threshold"] = int(env["TAILOR_GC_YOUNG"])
        if env.get("TAILOR_DEMO"):
            values["demo"] = env["TAILOR_DEMO"].lower() in ("1", "true", "yes")
        settings = msgspec.convert(values, cls)
        if env.get("TAILOR_KEYS_FILE"):
            security = SecurityConfig.from_file(env["TAILOR_KEYS_FILE"])
            settings = msgspec.structs.replace(settings, security=security)
        return settings

    def security_config(self) -> SecurityConfig:
        """The effective security configuration.

        Raises:
            ValueError: neither keys nor the loopback demo are configured: any configuration
                other than the local demo requires keys.
        """
        security = self.security or SecurityConfig(keys=[])
        if self.demo:
            security = msgspec.structs.replace(security, demo_keyless_loopback=True)
        elif not security.keys:
            raise ValueError(
                "no API keys configured: set TAILOR_KEYS_FILE (or Settings.security), or run "
                "the local demo (TAILOR_DEMO=1), which accepts keyless requests from loopback"
            )
        return msgspec.structs.replace(security, trusted_proxy_hops=self.trusted_proxy_hops)
