"""Prometheus metrics, a request-timing ASGI middleware and ``Server-Timing`` for the server.

:class:`Metrics` owns one ``CollectorRegistry`` per instance (never prometheus_client's global
one, so tests can build many apps in one process) holding every metric of the server: HTTP
latency and counts per route template, decisions by segment/persona/lifecycle and slot/variant,
fallbacks, the served bundle, feedback events and the flicker timings the tag reports.
:class:`MetricsMiddleware` wraps the whole Litestar ASGI handler, so unknown routes (404) and
wrong methods (405) are timed too, and adds a ``Server-Timing`` header built from the durations
handlers record in the request's :class:`ServerTiming`. ``GET /metrics`` is
:data:`metrics_handler`.

Label cardinality is bounded: routes are path templates (``/v1/visitors/{visitor_id}``, never
the raw path; an unmatched path is ``other``); segment, persona, lifecycle, slot and variant
values come from the bundle's catalogue, and every label keeps at most ``label_limit`` distinct
values per process anyway, later ones collapse to ``other``. No label ever holds an id, a URL or
an error message.

Several workers: start every worker with ``PROMETHEUS_MULTIPROC_DIR`` pointing at an empty,
private, writable directory (wipe it before the server starts; prometheus_client reads the
variable when it is first imported, so set it in the environment, not in code). Each worker then
writes its values to memory-mapped files there and ``/metrics``, whichever worker answers,
aggregates all of them with ``MultiProcessCollector``: counters and histograms are summed, the
bundle gauges take the maximum over workers. Files of exited workers stay (their counts are
still right to sum); uvicorn has no child-exit hook to call ``mark_process_dead``. Without the
variable each process reports only itself. Build one :class:`Metrics` per worker process.

Must not import model_export.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final, Literal

from litestar import Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from sdk.schema import Decision, Event

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

#: Prometheus text exposition format 0.0.4, which every scraper reads.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
#: Server-side latency buckets in seconds: a decision takes ~0.2 ms in process, so the
#: buckets start well below a millisecond and stop at one second.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
#: Browser-side buckets in seconds, around the tag's default 600 ms anti-flicker timeout.
TAG_TIMING_BUCKETS: Final = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5, 2.5, 5.0)
#: Longest browser timing accepted; larger (or negative, NaN) values are dropped as garbage.
MAX_TAG_SECONDS: Final = 600.0

TagTiming = Literal["time_to_decision", "slots_hidden", "timeout"]
#: Event ``properties`` the tag may send (any event type) and the timing kind each feeds:
#: numbers are milliseconds; ``timedOut`` is a boolean.
TAG_TIMING_PROPERTIES: Final[Mapping[str, TagTiming]] = {
    "timeToDecisionMs": "time_to_decision",
    "slotsHiddenMs": "slots_hidden",
    "timedOut": "timeout",
}

_OTHER: Final = "other"
_NONE: Final = "none"
_TIMING_KEY: Final = "tailor.server_timing"
_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token, used with fullmatch


_HttpChildren = tuple[Histogram, Counter, Counter | None]


def multiprocess_dir_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``PROMETHEUS_MULTIPROC_DIR`` of ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    return env.get("PROMETHEUS_MULTIPROC_DIR") or None


def _multiprocess_values() -> bool:
    """Whether prometheus_client writes values to mmap files (decided when it was imported)."""
    return values.ValueClass is not values.MutexValue


class _Bounded:
    """Keeps at most ``limit`` distinct values of one label; later new values become ``other``.

    Shared by the event loop and worker threads, so the set sits behind a lock.
    """

    __slots__ = ("_lock", "_seen", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = value[:64]
        if value in self._seen:
            return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                return _OTHER
            self._seen.add(value)
            return value


def _age_family(name: str, loaded_at: float | None, now: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        name, "Seconds since the bundle being served was loaded (newest worker)."
    )
    if loaded_at is not None:
        family.add_metric([], max(now - loaded_at, 0.0))
    return family


class _BundleAge(Collector):
    """``<ns>_bundle_age_seconds`` of this process, computed at scrape time."""

    def __init__(
        self, name: str, loaded_at: Callable[[], float | None], clock: Callable[[], float]
    ):
        self._name = name
        self._loaded_at = loaded_at
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        yield _age_family(self._name, self._loaded_at(), self._clock())


class _Aggregated(Collector):
    """All workers' metrics from a multiprocess directory, plus the bundle age derived from the
    newest worker's load time."""

    def __init__(self, path: str, namespace: str, clock: Callable[[], float]) -> None:
        self._files = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]
        self._namespace = namespace
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        families = list(self._files.collect())  # type: ignore[no-untyped-call]
        stamp = f"{self._namespace}_bundle_loaded_timestamp_seconds"
        stamps = [s.value for f in families if f.name == stamp for s in f.samples]
        yield from families
        yield _age_family(
            f"{self._namespace}_bundle_age_seconds", max(stamps) if stamps else None, self._clock()
        )


def render_multiprocess(
    path: str, *, namespace: str = "tailor", clock: Callable[[], float] = time.time
) -> tuple[bytes, str]:
    """The text exposition of every worker that wrote to the multiprocess directory ``path``.

    Only reads files, so any process can call it, whatever its own prometheus_client mode.
    """
    registry = CollectorRegistry()
    registry.register(_Aggregated(path, namespace, clock))
    return generate_latest(registry), CONTENT_TYPE


class Metrics:
    """Every metric of one server process, in a registry of its own.

    Args:
        namespace: prefix of every metric name.
        multiprocess_dir: the ``PROMETHEUS_MULTIPROC_DIR`` of a multi-worker deployment; then
            :meth:`render` aggregates all workers. It must also be set in the environment before
            prometheus_client is imported, else values stay in memory and this raises
            ``ValueError``. ``None``: this process only (see :meth:`from_env`).
        label_limit: most distinct values kept per label before new ones become ``other``.
        clock: wall clock in seconds (bundle load time and age).
    """

    def __init__(
        self,
        *,
        namespace: str = "tailor",
        multiprocess_dir: str | None = None,
        label_limit: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if multiprocess_dir is not None and not _multiprocess_values():
            raise ValueError(
                "multiprocess metrics need PROMETHEUS_MULTIPROC_DIR in the environment before "
                "prometheus_client is first imported"
            )
        if multiprocess_dir is not None and not os.path.isdir(multiprocess_dir):
            raise ValueError(f"PROMETHEUS_MULTIPROC_DIR {multiprocess_dir!r} is not a directory")
        self.namespace = namespace
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self._clock = clock
        self._lock = threading.Lock()
        self._versions: set[str] = set()
        self._loaded_at: float | None = None
        self._http_children: dict[tuple[str, str, int], _HttpChildren] = {}
        # labelled children by raw label values (prometheus_client's labels() takes a lock and
        # builds a tuple per call); bounded, as the label values are
        self._children: dict[tuple[str, ...], Any] = {}
        self._label = {
            name: _Bounded(label_limit)
            for name in (
                "route",
                "segment",
                "persona",
                "lifecycle",
                "slot",
                "variant",
                "fallback",
                "model_version",
                "reason",
            )
        }
        ns, reg = namespace, self.registry
        self.http_latency = Histogram(
            f"{ns}_http_request_duration_seconds",
            "Time from request to the end of the response, by route template, method and "
            "status class.",
            ["route", "method", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.http_requests = Counter(
            f"{ns}_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=reg,
        )
        self.http_errors = Counter(
            f"{ns}_http_errors",
            "HTTP responses with status >= 400, by route template and status code.",
            ["route", "status"],
            registry=reg,
        )
        self.decisions = Counter(
            f"{ns}_decisions",
            "Decisions returned, by segment, persona and lifecycle stage ('none' when not "
            "personalized).",
            ["segment", "persona", "lifecycle"],
            registry=reg,
        )
        self.slot_variants = Counter(
            f"{ns}_slot_variants",
            "Variants chosen, by slot and variant id.",
            ["slot", "variant"],
            registry=reg,
        )
        self.not_personalized = Counter(
            f"{ns}_decisions_not_personalized",
            "Decisions made from page context only (no personalization consent).",
            registry=reg,
        )
        self.fallbacks = Counter(
            f"{ns}_decision_fallbacks",
            "Decisions that fell back: no eligible offer, an unknown slot asked for, or a kind "
            "the server reports (e.g. not_ready).",
            ["kind"],
            registry=reg,
        )
        self.bundle_info = Gauge(
            f"{ns}_bundle_info",
            "1 for the model version being served, 0 for versions served before.",
            ["model_version"],
            multiprocess_mode="max",
            registry=reg,
        )
        self.bundle_loads = Counter(
            f"{ns}_bundle_loads",
            "Bundle loads, the first one included, by result (ok or refused).",
            ["result"],
            registry=reg,
        )
        self.bundle_refusals = Counter(
            f"{ns}_bundle_refusals",
            "Bundles refused, by reason code.",
            ["reason"],
            registry=reg,
        )
        self.bundle_loaded_at = Gauge(
            f"{ns}_bundle_loaded_timestamp_seconds",
            "Unix time the bundle being served was loaded (newest worker).",
            multiprocess_mode="max",
            registry=reg,
        )
        self.events = Counter(
            f"{ns}_events",
            "Feedback events accepted, by type.",
            ["type"],
            registry=reg,
        )
        self.tag_time_to_decision = Histogram(
            f"{ns}_tag_time_to_decision_seconds",
            "Tag-reported time from navigation start to the first decision's arrival.",
            buckets=TAG_TIMING_BUCKETS,
            registry=reg,
        )
        self.tag_slots_hidden = Histogram(
            f"{ns}_tag_slots_hidden_seconds",
            "Tag-reported time the personalized slots stayed hidden (anti-flicker).",
            buckets=TAG_TIMING_BUCKETS,
            registry=reg,
        )
        self.tag_timeouts = Counter(
            f"{ns}_tag_timeouts",
            "Page views where the tag's anti-flicker timeout fired before a decision arrived.",
            registry=reg,
        )
        if multiprocess_dir is None:
            reg.register(_BundleAge(f"{ns}_bundle_age_seconds", self._loaded, clock))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Metrics:
        """Multiprocess metrics when ``PROMETHEUS_MULTIPROC_DIR`` is set, else per process."""
        return cls(multiprocess_dir=multiprocess_dir_from_env(environ), **kwargs)

    def _loaded(self) -> float | None:
        return self._loaded_at

    # --- HTTP -------------------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one HTTP request (called by :class:`MetricsMiddleware`)."""
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children_for(route, method, status)
        latency, requests, errors = children
        latency.observe(seconds)
        requests.inc()
        if errors is not None:
            errors.inc()

    def _http_children_for(self, route: str, method: str, status: int) -> _HttpChildren:
        # the labelled children of one (route, method, status), cached: .labels() is the
        # costly part of an observation; the key space is as bounded as the labels
        label_route = self._label["route"](route)
        label_method = method if method in _METHODS else _OTHER
        code = str(status)
        children: _HttpChildren = (
            self.http_latency.labels(label_route, label_method, f"{status // 100}xx"),
            self.http_requests.labels(label_route, label_method, code),
            self.http_errors.labels(label_route, code) if status >= 400 else None,
        )
        if len(self._http_children) < 4096:  # unknown methods are not bucketed in the key
            self._http_children[(route, method, status)] = children
        return children

    # --- decisions --------------------------------------------------------------------------

    def observe_decision(self, decision: Decision) -> None:
        """Count one decision by segment, persona, lifecycle, chosen variants and fallbacks."""
        segment = str(decision.segment.id) if decision.segment is not None else _NONE
        persona = decision.persona.id if decision.persona is not None else _NONE
        self._child("decision", segment, persona, decision.lifecycle.stage).inc()
        for slot, chosen in decision.slots.items():
            self._child("slot", slot, chosen.variant_id).inc()
        if not decision.personalized:
            self.not_personalized.inc()
        if not decision.offers:
            self.fallbacks.labels("no_eligible_offer").inc()
        if any(r.code == "slot.unknown" for r in decision.reasons):
            self.fallbacks.labels("unknown_slot").inc()

    def _child(self, kind: str, *values: str) -> Any:
        """The labelled child of the decisions (``decision``: segment, persona, lifecycle) or
        slot-variant (``slot``: slot, variant) counter, looked up once per label values."""
        key = (kind, *values)
        child = self._children.get(key)
        if child is None:
            label = self._label
            if kind == "decision":
                segment, persona, stage = values
                child = self.decisions.labels(
                    label["segment"](segment), label["persona"](persona), label["lifecycle"](stage)
                )
            else:
                slot, variant = values
                child = self.slot_variants.labels(label["slot"](slot), label["variant"](variant))
            if len(self._children) < 4096:
                self._children[key] = child
        return child

    def observe_fallback(self, kind: str) -> None:
        """Count a fallback the server decided on (e.g. ``not_ready`` when no bundle is loaded)."""
        self.fallbacks.labels(self._label["fallback"](kind)).inc()

    # --- bundle -----------------------------------------------------------------------------

    def bundle_loaded(self, version: str) -> None:
        """Record that the bundle ``version`` is now served (initial load or reload)."""
        version = self._label["model_version"](version)
        with self._lock:
            for old in self._versions - {version}:
                self.bundle_info.labels(old).set(0)
            self._versions.add(version)
            self.bundle_info.labels(version).set(1)
            self._loaded_at = self._clock()
            self.bundle_loaded_at.set(self._loaded_at)
        self.bundle_loads.labels("ok").inc()

    def bundle_refused(self, reason: str) -> None:
        """Record a refused bundle.

        ``reason`` becomes a label value only when it is a short code (``BundleHashError``,
        ``parity``); a free-text message (``str(exc)``) is counted as ``other``: messages hold
        paths and numbers and would make a new series each time.
        """
        code = reason if _CODE.fullmatch(reason) else _OTHER
        self.bundle_loads.labels("refused").inc()
        self.bundle_refusals.labels(self._label["reason"](code)).inc()

    # --- events and the tag -----------------------------------------------------------------

    def observe_events(self, events: Iterable[Event]) -> None:
        """Count accepted events by type and feed the tag timings found in their properties
        (see :data:`TAG_TIMING_PROPERTIES`)."""
        for event in events:
            self.events.labels(event.type).inc()
            props = event.properties
            if not props:
                continue
            for key, kind in TAG_TIMING_PROPERTIES.items():
                value = props.get(key)
                if kind == "timeout":
                    if value is True:
                        self.observe_tag_timing("timeout")
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    self.observe_tag_timing(kind, value / 1000)

    def observe_tag_timing(self, kind: TagTiming, seconds: float | None = None) -> bool:
        """Record one browser-reported flicker timing.

        Args:
            kind: ``time_to_decision`` (navigation start to the first decision parsed, as
                the tag measures it), ``slots_hidden`` (how long slots stayed hidden) or
                ``timeout`` (the anti-flicker timeout fired; ``seconds`` is not needed).
            seconds: the duration; browser data, so values outside 0..600 s are dropped.

        Returns:
            Whether the value was recorded.
        """
        if kind == "timeout":
            self.tag_timeouts.inc()
            return True
        if seconds is None or not (0.0 <= seconds <= MAX_TAG_SECONDS):  # also drops NaN
            return False
        if kind == "time_to_decision":
            self.tag_time_to_decision.observe(seconds)
        elif kind == "slots_hidden":
            self.tag_slots_hidden.observe(seconds)
        else:
            raise ValueError(f"unknown tag timing kind {kind!r}")
        return True

    # --- exposition -------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type: all workers in multiprocess mode, else
        this process."""
        if self.multiprocess_dir is not None:
            return render_multiprocess(
                self.multiprocess_dir, namespace=self.namespace, clock=self._clock
            )
        return generate_latest(self.registry), CONTENT_TYPE


@get("/metrics", include_in_schema=False, sync_to_thread=True, name="metrics")
def metrics_handler(state: State) -> Response[bytes]:
    """Prometheus scrape endpoint; reads the :class:`Metrics` at ``app.state.metrics``.

    Runs in a thread: in multiprocess mode rendering reads every worker's files.
    """
    metrics: Metrics = state.metrics
    body, content_type = metrics.render()
    # an explicit header: Litestar would append a second charset to a text/* media_type
    return Response(
        body,
        media_type="text/plain",
        headers={"content-type": content_type, "cache-control": "no-store"},
    )


# --- Server-Timing -----------------------------------------------------------------------------


def timing_header(pairs: Iterable[tuple[str, float]]) -> str:
    """A ``Server-Timing`` header value: ``decode;dur=0.05, decide;dur=0.21``.

    Args:
        pairs: (metric name, duration in **seconds**); written as milliseconds, 2 decimals.

    Raises:
        ValueError: a name is not an HTTP token.
    """
    parts = []
    for name, seconds in pairs:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"Server-Timing name {name!r} is not an HTTP token")
        parts.append(f"{name};dur={seconds * 1000:.2f}")
    return ", ".join(parts)


class Stopwatch:
    """``time.perf_counter_ns`` stopwatch: ``elapsed()`` since start, ``lap()`` since last lap."""

    __slots__ = ("_last", "_start")

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter_ns()

    def elapsed(self) -> float:
        """Seconds since the stopwatch started."""
        return (time.perf_counter_ns() - self._start) / 1e9

    def lap(self) -> float:
        """Seconds since the previous lap (or the start)."""
        now = time.perf_counter_ns()
        seconds = (now - self._last) / 1e9
        self._last = now
        return seconds


class _Span:
    __slots__ = ("_name", "_start", "_timing")

    def __init__(self, timing: ServerTiming, name: str) -> None:
        self._timing = timing
        self._name = name
        self._start = 0

    def __enter__(self) -> None:
        self._start = time.perf_counter_ns()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timing.add(self._name, (time.perf_counter_ns() - self._start) / 1e9)


class ServerTiming:
    """Named durations of one request, sent back as ``Server-Timing``.

    :class:`MetricsMiddleware` puts one in the request scope; a handler fetches it with
    :meth:`from_scope` and records into it (``with timing.measure("decode"): ...`` or
    ``timing.add("onnx", seconds)``); the middleware writes the header, ending with ``total``.
    """

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[str, float]] = []

    @staticmethod
    def from_scope(scope: Scope) -> ServerTiming:
        """The request's timing, or a detached one when no middleware installed it."""
        timing = scope.get("state", {}).get(_TIMING_KEY)
        return timing if isinstance(timing, ServerTiming) else ServerTiming()

    def add(self, name: str, seconds: float) -> None:
        """Record ``name`` as taking ``seconds``; ``name`` must be an HTTP token."""
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"Server-Timing name {name!r} is not an HTTP token")
        self.entries.append((name, seconds))

    def measure(self, name: str) -> _Span:
        """Context manager recording the time spent in its block as ``name``."""
        return _Span(self, name)

    def header(self, total: float | None = None) -> str:
        """The header value of the recorded entries, plus ``total`` when given (seconds)."""
        pairs = self.entries if total is None else [*self.entries, ("total", total)]
        return timing_header(pairs)


# --- middleware --------------------------------------------------------------------------------


def _template_pattern(path: str) -> re.Pattern[str]:
    """A regex matching the concrete paths of a Litestar route path like ``/a/{id:str}``."""
    out = []
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("}"):
            out.append(".*" if part[1:-1].endswith(":path") else "[^/]+")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out) + "/?")


class MetricsMiddleware:
    """ASGI middleware timing every HTTP request and adding ``Server-Timing``.

    Install it around the app's whole ASGI handler so 404/405 answers are counted too (route
    middleware never sees them): ``app.asgi_handler = MetricsMiddleware(app.asgi_handler,
    metrics)``. It also works as ordinary Litestar middleware
    (``DefineMiddleware(MetricsMiddleware, metrics=metrics)``), then for routed requests only.

    The route label is Litestar's ``path_template`` once routing ran; otherwise the raw path is
    matched against the app's route templates (a 405 still gets its template) and anything else
    is ``other``. Overhead is about 5 µs a request.

    Args:
        app: the ASGI app to wrap.
        metrics: where to record.
        server_timing: add the ``Server-Timing`` response header.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, *, server_timing: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.server_timing = server_timing
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    def _route(self, scope: Scope) -> str:
        template = scope.get("path_template")
        if template:
            return template
        app = scope.get("litestar_app")
        if app is None:
            return _OTHER
        if self._templates is None:
            self._templates = [
                (_template_pattern(route.path), route.path_format or "/") for route in app.routes
            ]
        path = scope.get("path", "")
        for pattern, fmt in self._templates:
            if pattern.fullmatch(path):
                return fmt
        return _OTHER

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        start = time.perf_counter_ns()
        timing = ServerTiming()
        # a per-request copy (as ASGI servers make), so the timing never leaks across requests
        scope["state"] = {**scope.get("state", {}), _TIMING_KEY: timing}
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.server_timing:
                    total = (time.perf_counter_ns() - start) / 1e9
                    value = timing.header(total).encode("latin-1")
                    message["headers"] = [*message.get("headers", ()), (b"server-timing", value)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = (time.perf_counter_ns() - start) / 1e9
            self.metrics.observe_request(self._route(scope), method, status, seconds)
