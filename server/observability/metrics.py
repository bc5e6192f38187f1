"""Prometheus metrics of the server: :class:`Metrics` (one registry per instance) with HTTP
latency and counts per route template, decisions, fallbacks, the served bundle, feedback events
and the tag's flicker timings, ``GET /metrics`` (:data:`metrics_handler`), and the aggregation
of every worker's values in a ``PROMETHEUS_MULTIPROC_DIR``. Label values are bounded.

Must not import model_export.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Literal

from litestar import Response, get
from litestar.datastructures import State
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from sdk.schema import Decision, Event

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "OTHER",
    "TAG_TIMING_BUCKETS",
    "TAG_TIMING_PROPERTIES",
    "Metrics",
    "TagTiming",
    "metrics_handler",
    "multiprocess_dir_from_env",
    "render_multiprocess",
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

OTHER: Final = "other"
_NONE: Final = "none"
_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")


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
                return OTHER
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
        self.decide_batch_size = Histogram(
            f"{ns}_decide_batch_size",
            "Fresh decides decided together, from one event-loop turn (server.batcher).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
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
        label_method = method if method in _METHODS else OTHER
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

    def observe_decide_batch(self, size: int) -> None:
        """Record one batch of ``size`` fresh decides (``server.batcher``)."""
        self.decide_batch_size.observe(size)

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
        code = reason if _CODE.fullmatch(reason) else OTHER
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
