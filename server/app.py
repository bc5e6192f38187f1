"""The Litestar application factory and its lifespan.

``create_app(settings)`` builds the app; the lifespan loads and verifies the bundle once per
worker process and stores the decider and geo resolver on ``app.state``. Handlers reach them
through dependency injection. A bundle that fails verification leaves the app alive but not
ready (``/readyz`` answers 503 and ``/v1/decide`` answers 503 problem+json).

Must not import model_export.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar

from sdk import BundleError, Decider, load_bundle
from sdk._geo import GeoHeaderGroup, GeoResolver
from server.problems import exception_handlers
from server.routes import route_handlers
from server.settings import Settings
from server.state import Engine

__all__ = ["create_app"]

log = logging.getLogger("tailor.server")


def create_app(settings: Settings | None = None) -> Litestar:
    """Create the decision server app.

    Args:
        settings: the configuration; read from ``TAILOR_*`` environment variables when None.
    """
    settings = settings if settings is not None else Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = Engine(settings=settings)
        engine.geo = GeoResolver(
            header_names=(
                tuple(GeoHeaderGroup(h.lower()) for h in settings.geo_headers)
                if settings.geo_headers is not None
                else None
            ),
            mmdb_path=settings.mmdb_path,
        )
        try:
            bundle = load_bundle(settings.bundle_path)
        except BundleError as exc:
            engine.error = str(exc)
            log.error("bundle refused, not ready: %s", exc)
        else:
            engine.decider = Decider(bundle)
            log.info("serving bundle %s from %s", bundle.version, bundle.path)
        static = Path(settings.static_dir)
        engine.load_static(static)
        app.state.engine = engine
        try:
            yield
        finally:
            engine.geo.close()

    return Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        debug=False,
    )
