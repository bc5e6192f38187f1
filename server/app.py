"""The Litestar application factory and its lifespan.

``create_app(settings)`` builds the app; the lifespan loads and verifies the bundle once per
worker process and stores the decider, geo resolver and stores on ``app.state``. With
``TAILOR_STATE=redis`` it opens the worker's Redis connection, subscribes to the invalidation
channel (:class:`server.stores.redis.InvalidationListener`) and replays spooled profile
updates when Redis answers again. Handlers reach them
through dependency injection. A bundle that fails verification leaves the app alive but not
ready (``/readyz`` answers 503 and ``/v1/decide`` answers 503 problem+json). When trusted
bundle public keys are configured, a bundle refused at start stops the process instead.

Must not import model_export.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
from litestar import Litestar
from litestar.datastructures import State

from sdk.geo import GeoResolver, edge_header_groups
from server.batcher import DecideBatcher
from server.bus import ReloadBus
from server.conversions import route_handlers as conversion_handlers
from server.decisions import DecisionCache
from server.events import replay_batches
from server.events import route_handlers as event_handlers
from server.identity import Identity
from server.observability import Metrics, MetricsMiddleware, metrics_handler
from server.openapi import openapi_config
from server.problems import exception_handlers
from server.profiles import route_handlers as profile_handlers
from server.reloader import BundleHolder
from server.reports import ReportService
from server.reports import route_handlers as report_handlers
from server.routes import BATCH_BODY_FACTOR, route_handlers
from server.security import RateLimiter, SecurityMiddleware
from server.security.ratelimit import SharedRateLimiter
from server.settings import Settings
from server.state import Engine
from server.stores import MemoryEventGuard, MemoryProfileStore
from server.stores.batch_spool import BatchSpool
from server.stores.redis import RedisProfileStore
from server.stores.redis_conn import RedisState
from server.stores.redis_guard import RedisEventGuard
from server.stores.redis_invalidation import InvalidationListener
from server.stores.spool import ProfileSpool
from server.stream import open_event_log
from server.visitors import route_handlers as visitor_handlers

__all__ = ["create_app"]

log = logging.getLogger("tailor.server")


async def _watch(engine: Engine, interval: float) -> None:
    """Poll the bundle path; a changed bundle is verified off the event loop, then swapped."""
    while True:
        await anyio.sleep(interval)
        await anyio.to_thread.run_sync(engine.holder.check)


def _settle_heap(young: int) -> None:
    """Move everything loaded at startup (modules, the bundle, onnxruntime sessions, the app)
    out of the collector's sight, and collect the young generation every ``young``
    allocations (``Settings.gc_young_threshold``, 10,000; CPython's default is 700). A decision
    allocates a few hundred short-lived containers that reference counting frees anyway;
    collecting every 700 allocations promotes in-flight objects to older generations, whose
    collections then take tens of milliseconds.

    Collections then scan only what requests create; with the caches holding untracked
    objects (encoded decisions, ``gc=False`` profile records), full collections stay short
    and rare, which is what keeps the decide p99 flat under load (``benchmarks/README.md``).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)


def _open_state(engine: Engine, settings: Settings) -> None:
    """The profile store of ``Settings.state_backend()``: this process's memory, or Redis
    (one connection per worker, with the spool of updates it could not take)."""
    backend = settings.state_backend()
    if backend != "redis" or settings.redis_url is None:
        engine.profiles = MemoryProfileStore(
            max_visitors=settings.max_visitors,
            ttl_seconds=settings.profile_ttl_days * 86_400,
            backend=backend,
        )
        return
    engine.redis = RedisState(
        settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout
    )
    engine.profiles = RedisProfileStore(
        engine.redis,
        ttl_seconds=settings.profile_ttl_days * 86_400,
        pin_seconds=engine.decision_cache.ttl,
    )
    engine.spool = ProfileSpool(settings.spool_dir, int(settings.spool_max_mib * 1024 * 1024))


async def _replay_spool(engine: Engine, interval: float = 1.0) -> None:
    """Apply spooled profile updates once the shared store answers again (each worker tries;
    a spool file is claimed by one)."""
    while True:
        await anyio.sleep(interval)
        redis, spool, store = engine.redis, engine.spool, engine.profiles
        if redis is None or spool is None or store is None or redis.breaker.state == "open":
            continue
        if spool.pending_bytes():
            replayed = await spool.replay_into(store)
            if replayed:
                log.info("replayed %d spooled profile updates", replayed)


async def _reloaded(engine: Engine, forced: bool) -> None:
    """Another replica asked for a reload (``forced``), or the reload channel came back."""
    await anyio.to_thread.run_sync(lambda: engine.holder.check(force=forced))


def create_app(settings: Settings | None = None) -> Litestar:
    """Create the decision server app.

    Args:
        settings: the configuration; read from ``TAILOR_*`` environment variables when None.

    Raises:
        ValueError: keys and the demo both or neither configured, or keys without a visitor
            token secret (:meth:`server.identity.Identity.from_settings`).
    """
    settings = settings if settings is not None else Settings.from_env()
    security = settings.security_config()
    # the token secrets: refused with keys and none set; the demo makes one
    identity = Identity.from_settings(settings, keys=bool(security.keys))
    metrics = Metrics.from_env()  # one per worker process: uvicorn calls the factory in each
    # the middleware's buckets: per process until the lifespan attaches Redis
    limits = SharedRateLimiter(
        RateLimiter(burst_seconds=security.burst_seconds, maxsize=security.max_tracked_clients)
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = Engine(
            settings=settings,
            holder=BundleHolder(
                settings.bundle_path,
                on_loaded=metrics.bundle_loaded,
                on_refused=metrics.bundle_refused,
                public_keys=settings.bundle_public_keys,
            ),
        )
        engine.metrics = metrics
        engine.batcher = DecideBatcher(settings.decide_batch, metrics.observe_decide_batch)
        engine.decision_cache = DecisionCache(
            max_bytes=int(settings.decision_cache_mib * 1024 * 1024)
        )
        engine.geo = GeoResolver(
            header_names=edge_header_groups(settings.geo_headers),
            mmdb_path=settings.mmdb_path,
        )
        first = await anyio.to_thread.run_sync(engine.holder.check)
        if first.refused is not None and settings.bundle_public_keys is not None:
            # signatures are required: refuse to start rather than wait unready for one
            raise RuntimeError(f"bundle refused at start: {first.refused}")
        _open_state(engine, settings)
        bus: ReloadBus | None = None
        if engine.redis is not None:  # rate limits, the event guard and reloads shared
            engine.guard = RedisEventGuard(engine.redis)
            spool_bytes = int(settings.spool_max_mib * 1024 * 1024)
            engine.batch_spool = BatchSpool(settings.spool_dir, spool_bytes)
            bus = ReloadBus(engine.redis)
        else:
            engine.guard = MemoryEventGuard(max_entries=settings.event_guard_entries)
        app.state.reload_bus = bus  # POST /v1/admin/reload publishes on it
        limits.attach(engine.redis)
        engine.new_profiles.attach(engine.redis)
        # local files, or the Redis stream with a spool (server.stream)
        engine.eventlog = open_event_log(settings, metrics)
        engine.load_static(Path(settings.static_dir))
        app.state.engine = engine
        _settle_heap(settings.gc_young_threshold)
        try:
            async with anyio.create_task_group() as tasks:
                if settings.reload_interval > 0:
                    tasks.start_soon(_watch, engine, settings.reload_interval)
                if engine.redis is not None:
                    listener = InvalidationListener(
                        engine.redis, engine.decision_cache.invalidate, engine.decision_cache.clear
                    )
                    tasks.start_soon(listener.run)
                    tasks.start_soon(_replay_spool, engine)
                    # the engine as the events handler sees it (its profile store is set)
                    tasks.start_soon(replay_batches, app.state.engine, identity)
                if bus is not None:
                    await tasks.start(bus.listen, partial(_reloaded, engine))
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            # outside the cancelled task group, or the await below would be cancelled at once
            # and the last flush interval of the event log lost
            engine.geo.close()
            if engine.redis is not None:
                with anyio.CancelScope(shield=True):
                    await engine.redis.close()
            if engine.eventlog is not None:
                await anyio.to_thread.run_sync(engine.eventlog.close)

    app = Litestar(
        route_handlers=[
            *route_handlers,
            *event_handlers,
            *visitor_handlers,
            *conversion_handlers,
            *profile_handlers,
            *report_handlers,
            metrics_handler,
        ],
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        # the largest any route accepts (a decide batch); each handler's read_body enforces its own
        request_max_body_size=settings.max_body_bytes * BATCH_BODY_FACTOR,
        middleware=[SecurityMiddleware.factory(security, limiter=limits)],
        state=State(
            {
                "metrics": metrics,
                "reports": ReportService(settings.event_log_dir, settings.static_dir),
                "body_timeout": settings.body_timeout,
                "identity": identity,
            }
        ),
        openapi_config=openapi_config(interactive=settings.docs_ui),
        # logging is configured by whoever runs the app (python -m server: every handler
        # redacts keys); Litestar's default config would replace the root handler
        logging_config=None,
        debug=False,
    )
    # around the whole ASGI handler, so 404/405 and refusals of the key check are timed too
    app.asgi_handler = MetricsMiddleware(app.asgi_handler, metrics)
    return app
