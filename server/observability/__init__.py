"""Observability of the server: Prometheus metrics, the request-timing middleware and
``Server-Timing``.

Must not import model_export.
"""

from __future__ import annotations

from server.observability.metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    TAG_TIMING_BUCKETS,
    TAG_TIMING_PROPERTIES,
    Metrics,
    TagTiming,
    metrics_handler,
    multiprocess_dir_from_env,
    render_multiprocess,
)
from server.observability.middleware import MetricsMiddleware
from server.observability.timing import ServerTiming, Stopwatch, timing_header

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "TAG_TIMING_BUCKETS",
    "TAG_TIMING_PROPERTIES",
    "Metrics",
    "MetricsMiddleware",
    "ServerTiming",
    "Stopwatch",
    "TagTiming",
    "metrics_handler",
    "multiprocess_dir_from_env",
    "render_multiprocess",
    "timing_header",
]
