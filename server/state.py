"""Per-process server state: the decider, the geo resolver and the static assets.

One :class:`Engine` lives on ``app.state.engine`` per worker process, created in the lifespan.

Must not import model_export.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk import Decider
from sdk.geo import GeoResolver
from server.decisions import DecisionCache
from server.eventlog import EventLog
from server.reloader import BundleHolder
from server.security.ratelimit import RateLimiter
from server.settings import Settings
from server.stores import EventGuard, MemoryEventGuard, ProfileStore

__all__ = ["Asset", "Engine"]


@dataclass(frozen=True)
class Asset:
    """A static file held in memory with its strong ETag, and gzipped once at load (served to
    clients that accept it: the tag is about half the bytes on the wire)."""

    body: bytes
    media_type: str
    etag: str
    gzipped: bytes | None = None


@dataclass
class Engine:
    """What handlers need: settings, the bundle holder (its decider is None until a bundle is
    verified), the geo resolver, the per-visit decision cache, the profile store, the event
    log, the event guard (decisions issued to public keys, event ids and orders seen),
    metrics, static assets and the per-client new-profile buckets."""

    settings: Settings
    holder: BundleHolder
    geo: GeoResolver | None = None
    decision_cache: DecisionCache = field(default_factory=DecisionCache)
    profiles: ProfileStore | None = None
    eventlog: EventLog | None = None
    guard: EventGuard = field(default_factory=MemoryEventGuard)
    metrics: Any = None
    assets: dict[str, Asset] = field(default_factory=dict)
    new_profiles: RateLimiter = field(default_factory=lambda: RateLimiter(burst_seconds=60.0))

    def allow_new_profile(self, client: tuple[str, bytes]) -> bool:
        """Whether a public-key client (key id, hashed address) may create one more profile
        now: at most ``Settings.new_profiles_per_minute`` a minute (0: no cap)."""
        return self.new_profiles.acquire((client, self.settings.new_profiles_per_minute)) == 0

    @property
    def decider(self) -> Decider | None:
        """The serving decider (swapped atomically on reload)."""
        return self.holder.decider

    @property
    def error(self) -> str | None:
        """Why the last bundle was refused, if it was."""
        return self.holder.error

    def load_static(self, directory: Path) -> None:
        """Read the demo page and the built tag into memory (missing files are skipped)."""
        types = {
            "demo.html": "text/html; charset=utf-8",
            "tailor.js": "text/javascript; charset=utf-8",
            "tailor.js.map": "application/json",
            "tailor-me.js": "text/javascript; charset=utf-8",
            "tailor-me.js.map": "application/json",
        }
        for name, media_type in types.items():
            path = directory / name
            if path.is_file():
                body = path.read_bytes()
                etag = hashlib.sha256(body).hexdigest()[:16]
                packed = gzip.compress(body, compresslevel=9, mtime=0)
                self.assets[name] = Asset(
                    body=body,
                    media_type=media_type,
                    etag=etag,
                    gzipped=packed if len(packed) < len(body) else None,
                )
