"""Experiment reports over HTTP (``/v1/reports/experiments``, ``/v1/reports/kpis``) and the
reports dashboard (``GET /reports``), computed by :mod:`sdk.analysis.reports` from the event log
files on disk, in a worker thread, cached per query (see ``docs/server.md``).

Must not import model_export.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from sdk.analysis.reports import (
    ExperimentList,
    ExperimentReport,
    KpiSeries,
    design_of,
    experiment_reports,
    kpis_over_time,
    summarize,
)
from sdk.logs import read_log
from server.openapi import REPORT_DOCS, REPORT_KPIS_DOCS, REPORT_LIST_DOCS
from server.problems import Problem

__all__ = ["MIN_AGE", "Design", "ReportService", "route_handlers"]

#: Seconds a computed report is served even if the log files changed meanwhile.
MIN_AGE = 2.0
#: Computed results kept per process (one per distinct query).
MAX_CACHED = 16
PAGE = "reports.html"

_encoder = msgspec.json.Encoder()
_T = TypeVar("_T")
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.S)

Confidence = Annotated[
    float,
    QueryParameter(
        ge=0.5, le=0.999, description="Two-sided confidence level of every interval and test"
    ),
]
Start = Annotated[
    datetime | None,
    QueryParameter(description="Ignore records before this time (RFC 3339; no offset: UTC)"),
]
End = Annotated[datetime | None, QueryParameter(description="Ignore records at or after this time")]
By = Annotated[
    Literal["segment", "persona", "lifecycle"],
    QueryParameter(description="The decision field that groups visitors"),
]
Bucket = Annotated[Literal["day", "hour"], QueryParameter(description="UTC day or hour")]


@dataclass(frozen=True)
class _Entry:
    stamp: tuple[tuple[str, int, int], ...]
    at: float
    value: Any


@dataclass(frozen=True)
class _Page:
    body: bytes
    etag: str
    csp: str


@dataclass(frozen=True)
class Design:
    """What the reports need of the serving bundle: arm weights and controls, and the digest
    of the manifest they came from (part of the cache key)."""

    weights: dict[str, dict[str, float]]
    controls: dict[str, str]
    digest: str | None


@dataclass(frozen=True)
class _Experiments:
    reports: list[ExperimentReport]
    files: int
    lines: int
    malformed: int


def _content_security_policy(body: bytes) -> str:
    """Allow exactly the page's inline scripts and styles (by hash) and same-origin fetches."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for tag, content in _INLINE.findall(body):
        digest = b64encode(hashlib.sha256(content).digest()).decode()
        hashes[tag].append(f"'sha256-{digest}'")
    scripts = " ".join(hashes[b"script"]) or "'none'"
    styles = " ".join(hashes[b"style"]) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class ReportService:
    """The reports of one server process: reads the log directory, caches the results.

    Args:
        log_dir: the event log directory (``Settings.event_log_dir``); None: no reports.
        static_dir: where ``reports.html`` lives.
        min_age: seconds a result is reused although the log changed.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        log_dir: str | None,
        static_dir: str | Path,
        *,
        min_age: float = MIN_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.static_dir = Path(static_dir)
        self.min_age = min_age
        self._clock = clock
        self._lock = threading.Lock()  # one computation at a time; guards the cache
        self._cache: dict[Hashable, _Entry] = {}
        self._page: _Page | None = None

    def _directory(self) -> Path:
        if self.log_dir is None:
            raise Problem(
                404,
                "no-event-log",
                "No event log",
                "this server keeps no event log (TAILOR_EVENT_LOG_DIR is empty), so it has no "
                "reports; run `tailor report --log DIR` where the log is",
            )
        return self.log_dir

    def _stamp(self, directory: Path) -> tuple[tuple[str, int, int], ...]:
        found = []
        try:
            entries = list(directory.iterdir())
        except FileNotFoundError:
            return ()
        for path in entries:
            if path.suffix != ".jsonl" or path.name.startswith("."):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            found.append((path.name, st.st_size, st.st_mtime_ns))
        return tuple(sorted(found))

    def _cached(self, key: Hashable, compute: Callable[[Path], _T]) -> _T:
        directory = self._directory()
        with self._lock:
            stamp = self._stamp(directory)
            now = self._clock()
            entry = self._cache.get(key)
            if entry is not None and (entry.stamp == stamp or now - entry.at < self.min_age):
                value: _T = entry.value
                return value
            value = compute(directory)
            self._cache[key] = _Entry(stamp, now, value)
            if len(self._cache) > MAX_CACHED:
                oldest = min(self._cache, key=lambda k: self._cache[k].at)
                del self._cache[oldest]
            return value

    def experiments(
        self,
        design: Design,
        confidence: float = 0.95,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> _Experiments:
        """Every experiment's report (blocking: call it from a worker thread)."""

        def compute(directory: Path) -> _Experiments:
            reader = read_log(directory, missing_ok=True)
            reports = experiment_reports(
                reader,
                weights=design.weights,
                controls=design.controls,
                confidence=confidence,
                start=start,
                end=end,
            )
            return _Experiments(reports, len(reader.files), reader.lines, reader.malformed)

        key = ("experiments", design.digest, confidence, start, end)
        return self._cached(key, compute)

    def kpis(
        self,
        by: Literal["segment", "persona", "lifecycle"],
        bucket: Literal["day", "hour"],
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> KpiSeries:
        """KPIs over time (blocking: call it from a worker thread)."""

        def compute(directory: Path) -> KpiSeries:
            records = read_log(directory, missing_ok=True)
            return kpis_over_time(records, by=by, bucket=bucket, start=start, end=end)

        return self._cached(("kpis", by, bucket, start, end), compute)

    def page(self) -> _Page:
        """The dashboard page with its ETag and CSP (blocking on the first call)."""
        if self._page is None:
            try:
                body = (self.static_dir / PAGE).read_bytes()
            except FileNotFoundError:
                raise Problem(404, "not-found", "Not found", f"{PAGE} is missing") from None
            self._page = _Page(
                body=body,
                etag=hashlib.sha256(body).hexdigest()[:16],
                csp=_content_security_policy(body),
            )
        return self._page


# --- handlers -------------------------------------------------------------------------------


def _service(state: State) -> ReportService:
    service: ReportService = state.reports
    return service


def _design(state: State) -> Design:
    engine = getattr(state, "engine", None)
    decider = engine.decider if engine is not None else None
    if decider is None:
        return Design(weights={}, controls={}, digest=None)
    bundle = decider.bundle
    weights, controls = design_of(bundle.manifest)
    return Design(weights=weights, controls=controls, digest=bundle.digest)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _json(body: object) -> Response[bytes]:
    return Response(
        _encoder.encode(body),
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


@get("/v1/reports/experiments", **REPORT_LIST_DOCS)
async def list_experiments(state: State) -> Response[bytes]:
    """Every experiment with its visitors per arm (the holdout is experiment ``holdout``)."""
    service, design = _service(state), _design(state)
    found = await anyio.to_thread.run_sync(service.experiments, design)
    return _json(
        ExperimentList(
            experiments=[summarize(r) for r in found.reports],
            files=found.files,
            lines=found.lines,
            malformed_lines=found.malformed,
            generated_at=datetime.now(UTC),
        )
    )


@get("/v1/reports/experiments/{key:str}", **REPORT_DOCS)
async def experiment_report(
    key: FromPath[str],
    state: State,
    confidence: Confidence = 0.95,
    start: Start = None,
    end: End = None,
) -> Response[bytes]:
    """One experiment: every arm overall and per segment, against the control."""
    service, design = _service(state), _design(state)
    found = await anyio.to_thread.run_sync(
        service.experiments, design, confidence, _utc(start), _utc(end)
    )
    for report in found.reports:
        if report.experiment == key:
            return _json(report)
    raise Problem(
        404,
        "experiment-not-found",
        "Experiment not found",
        f"no experiment {key[:100]!r} in the event log or the serving bundle",
    )


@get("/v1/reports/kpis", **REPORT_KPIS_DOCS)
async def kpis(
    state: State,
    by: By = "segment",
    bucket: Bucket = "day",
    start: Start = None,
    end: End = None,
) -> Response[bytes]:
    """Visitors, CTR, conversion rate and revenue per visitor per time bucket and group."""
    service = _service(state)
    series = await anyio.to_thread.run_sync(service.kpis, by, bucket, _utc(start), _utc(end))
    return _json(series)


@get("/reports", include_in_schema=False)
async def dashboard(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """The reports dashboard (static; its data comes from the routes above)."""
    page = await anyio.to_thread.run_sync(_service(state).page)
    etag = f'"{page.etag}"'
    headers = {
        "etag": etag,
        "cache-control": "no-cache",
        "content-security-policy": page.csp,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(page.body, media_type="text/html; charset=utf-8", headers=headers)


route_handlers = [list_experiments, experiment_report, kpis, dashboard]
