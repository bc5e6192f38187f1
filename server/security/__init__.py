"""Browser safety for the decision API: API keys, origin rules and CORS, rate limits, and the
ASGI middleware that enforces them under ``/v1/`` (usable around any ASGI app; in Litestar as
``middleware=[SecurityMiddleware.factory(config)]`` so all routes share one set of buckets).

Must not import litestar or model_export.
"""

from __future__ import annotations

from server.security.keys import (
    ApiKey,
    KeyKind,
    SecurityConfig,
    SecurityConfigError,
    generate_key,
    hash_key,
)
from server.security.middleware import STATE_KEY, Principal, SecurityMiddleware
from server.security.origins import OriginRules
from server.security.ratelimit import RateLimiter
from server.security.responses import PROBLEM_TYPE_BASE
from server.security.route_rules import DEFAULT_PUBLIC_ROUTES, DEMO_READ_ROUTES

__all__ = [
    "DEFAULT_PUBLIC_ROUTES",
    "DEMO_READ_ROUTES",
    "PROBLEM_TYPE_BASE",
    "STATE_KEY",
    "ApiKey",
    "KeyKind",
    "OriginRules",
    "Principal",
    "RateLimiter",
    "SecurityConfig",
    "SecurityConfigError",
    "SecurityMiddleware",
    "generate_key",
    "hash_key",
]
