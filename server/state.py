"""Per-process server state: the decider, the geo resolver, the stores and the static assets.

One :class:`Engine` lives on ``app.state.engine`` per worker process, created in the lifespan;
with ``TAILOR_STATE=redis`` its stores share every worker's and replica's state through
``Engine.redis``, and :meth:`Engine.state_report` says in ``/readyz`` whether they can.

Must not import model_export.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk import Decider
from sdk.geo import GeoResolver
from server.batcher import DecideBatcher
from server.decisions import DecisionCache
from server.eventlog import EventLog
from server.reloader import BundleHolder
from server.security.ratelimit import RateLimiter, SharedRateLimiter
from server.settings import Settings
from server.stores import EventGuard, MemoryEventGuard, ProfileStore
from server.stores.batch_spool import BatchSpool
from server.stores.redis_conn import RedisState, StateUnavailable
from server.stores.spool import ProfileSpool

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
    new_profiles: SharedRateLimiter = field(
        default_factory=lambda: SharedRateLimiter(RateLimiter(burst_seconds=60.0), name="np")
    )
    #: the shared store's connection (``TAILOR_STATE=redis``), else None
    redis: RedisState | None = None
    #: profile updates waiting for the shared store
    spool: ProfileSpool | None = None
    #: public-key event batches waiting for the shared event guard
    batch_spool: BatchSpool | None = None
    #: the fresh decides of one event-loop turn, decided together
    batcher: DecideBatcher = field(default_factory=DecideBatcher)
    #: decides answered without the shared store, and their writes that failed
    state_read_errors: int = 0
    state_write_errors: int = 0

    async def probe_state(self) -> None:
        """Let a half-open breaker try Redis (a ``PING``), so that an idle worker notices
        Redis is back (``/readyz`` asks before :meth:`state_report`)."""
        redis = self.redis
        if redis is not None and redis.breaker.state == "half-open":
            with contextlib.suppress(StateUnavailable):
                await redis.call(lambda c: c.ping())

    def state_report(self) -> dict[str, Any]:
        """Where visitor state lives and whether it answers, as ``/readyz`` shows it."""
        backend = getattr(self.profiles, "backend", "memory") if self.profiles else "none"
        report: dict[str, Any] = {"backend": backend, "available": True}
        redis = self.redis
        if redis is not None:
            # half-open: failing until a trial call succeeds
            report["available"] = redis.breaker.state == "closed"
            report["breaker"] = redis.breaker.state
            report["lastError"] = redis.last_error
            report["failures"] = redis.failures
            report["calls"] = redis.calls
            report["readCalls"] = redis.read_calls
        report["readErrors"] = self.state_read_errors
        report["writeErrors"] = self.state_write_errors
        if self.spool is not None:
            report["spool"] = {
                "pendingBytes": self.spool.pending_bytes(),
                "spooled": self.spool.spooled,
                "replayed": self.spool.replayed,
                "dropped": self.spool.dropped,
            }
        if self.batch_spool is not None:  # public batches the event guard could not check
            report["batchSpool"] = {
                "pendingBytes": self.batch_spool.pending_bytes(),
                "spooled": self.batch_spool.spooled,
                "replayed": self.batch_spool.replayed,
                "refused": self.batch_spool.refused,
                "dropped": self.batch_spool.dropped,
            }
        return report

    async def allow_new_profile(self, client: tuple[str, bytes]) -> bool:
        """Whether a public-key client (key id, hashed address) may create one more profile
        now: at most ``Settings.new_profiles_per_minute`` a minute (0: no cap)."""
        limit = (client, self.settings.new_profiles_per_minute)
        return await self.new_profiles.acquire(limit) == 0  # in Redis when it is shared

    @property
    def decider(self) -> Decider | None:
        """The serving decider (swapped atomically on reload)."""
        return self.holder.decider

    @property
    def error(self) -> str | None:
        """Why the last bundle was refused, if it was."""
        return self.holder.error

    def load_static(self, directory: Path) -> None:
        """Read the demo page and the built tag (with its myData module) into memory (missing files
        are skipped)."""
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
