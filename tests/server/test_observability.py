"""Metrics, the timing middleware, /metrics and Server-Timing (server/observability/)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sdk import Decider
from sdk.schema import (
    Consent,
    Content,
    DecideRequest,
    Decision,
    Event,
    Lifecycle,
    PersonaResult,
    RankedOffer,
    Reason,
    SegmentResult,
    Signals,
    SlotDecision,
)
from server.observability import (
    CONTENT_TYPE,
    Metrics,
    MetricsMiddleware,
    ServerTiming,
    Stopwatch,
    metrics_handler,
    render_multiprocess,
    timing_header,
)
from tests.conftest import run_python

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def series(text: str, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples(text) if n == name]


# --- a small app with the middleware around its whole ASGI handler ----------------------------


@get("/v1/visitors/{visitor_id:str}", sync_to_thread=False)
def visitor(visitor_id: FromPath[str]) -> dict[str, str]:
    return {"visitorId": visitor_id}


@post("/v1/decide", status_code=200)
async def decide(request: Request[Any, Any, Any]) -> Response[bytes]:
    timing = ServerTiming.from_scope(request.scope)
    with timing.measure("decode"):
        body = await request.body()
    timing.add("decide", 0.00021)
    return Response(body, media_type="application/json")


def make_app(metrics: Metrics, **middleware: Any) -> Litestar:
    app = Litestar([visitor, decide, metrics_handler], state=State({"metrics": metrics}))
    app.asgi_handler = MetricsMiddleware(app.asgi_handler, metrics, **middleware)
    return app


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(metrics: Metrics) -> Iterator[TestClient[Litestar]]:
    with TestClient(make_app(metrics)) as c:
        yield c


def scrape(client: TestClient[Litestar]) -> str:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPE
    return r.text


# --- exposition --------------------------------------------------------------------------------


def test_render_is_prometheus_text_that_parses(metrics: Metrics) -> None:
    metrics.observe_request("/v1/decide", "POST", 200, 0.0004)
    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["tailor_http_request_duration_seconds"].type == "histogram"
    assert families["tailor_http_requests"].type == "counter"
    assert families["tailor_bundle_info"].type == "gauge"
    text = body.decode()
    labels = {"route": "/v1/decide", "method": "POST", "status_class": "2xx"}
    assert value(text, "tailor_http_request_duration_seconds_bucket", le="0.0005", **labels) == 1
    assert value(text, "tailor_http_request_duration_seconds_bucket", le="0.00025", **labels) == 0


def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.observe_request("/x", "GET", 200, 0.001)
    text = b.render()[0].decode()
    assert series(text, "tailor_http_requests_total") == []


# --- middleware --------------------------------------------------------------------------------


def test_histogram_counts_requests_by_route_template(client: TestClient[Litestar]) -> None:
    for vid in ("a", "b", "c"):
        assert client.get(f"/v1/visitors/{vid}").status_code == 200
    text = scrape(client)
    labels = {"route": "/v1/visitors/{visitor_id}", "method": "GET", "status_class": "2xx"}
    assert value(text, "tailor_http_request_duration_seconds_count", **labels) == 3
    routes = {s["route"] for s in series(text, "tailor_http_requests_total")}
    assert routes == {"/v1/visitors/{visitor_id}"}, "no raw path may become a label"
    client.get("/v1/visitors/d")
    again = scrape(client)
    assert value(again, "tailor_http_request_duration_seconds_count", **labels) == 4
    assert value(again, "tailor_http_requests_total", route="/metrics", method="GET", status="200")


def test_unknown_paths_are_bucketed_as_other(client: TestClient[Litestar]) -> None:
    for path in ("/nope", "/wp-admin/setup.php", "/v1/visitors/a/b/c"):
        assert client.get(path).status_code == 404
    text = scrape(client)
    assert value(text, "tailor_http_requests_total", route="other", method="GET", status="404") == 3
    assert value(text, "tailor_http_errors_total", route="other", status="404") == 3
    assert all("nope" not in s["route"] for s in series(text, "tailor_http_requests_total"))


def test_wrong_method_keeps_the_template_and_odd_methods_are_bucketed(
    client: TestClient[Litestar],
) -> None:
    assert client.post("/v1/visitors/a").status_code == 405
    assert client.request("BREW", "/v1/visitors/a").status_code == 405
    text = scrape(client)
    route = "/v1/visitors/{visitor_id}"
    assert value(text, "tailor_http_requests_total", route=route, method="POST", status="405") == 1
    assert value(text, "tailor_http_requests_total", route=route, method="other", status="405") == 1
    assert value(text, "tailor_http_errors_total", route=route, status="405") == 2


def test_server_timing_header_has_handler_entries_and_total(client: TestClient[Litestar]) -> None:
    r = client.post("/v1/decide", content=b"{}")
    assert r.status_code == 200
    header = r.headers["server-timing"]
    assert re.fullmatch(r"decode;dur=\d+\.\d{3}, decide;dur=0\.210, total;dur=\d+\.\d{3}", header)
    assert client.get("/nope").headers["server-timing"].startswith("total;dur=")


def test_server_timing_can_be_turned_off(metrics: Metrics) -> None:
    with TestClient(make_app(metrics, server_timing=False)) as c:
        r = c.get("/v1/visitors/a")
    assert "server-timing" not in r.headers


# --- Server-Timing helpers ---------------------------------------------------------------------


def test_timing_header_format() -> None:
    pairs = [("decode", 0.0000523), ("decide", 0.00021), ("total", 0.0004)]
    assert timing_header(pairs) == "decode;dur=0.052, decide;dur=0.210, total;dur=0.400"
    assert timing_header([]) == ""
    with pytest.raises(ValueError, match="token"):
        timing_header([("two words", 0.1)])


def test_server_timing_outside_the_middleware_is_detached() -> None:
    timing = ServerTiming.from_scope({})  # type: ignore[arg-type]
    timing.add("onnx", 0.000013)
    with timing.measure("policy"):
        pass
    assert re.fullmatch(
        r"onnx;dur=0\.013, policy;dur=\d+\.\d{3}, total;dur=1\.000", timing.header(0.001)
    )
    with pytest.raises(ValueError, match="token"):
        timing.add("a,b", 0.1)


def test_stopwatch_laps_add_up_to_elapsed() -> None:
    watch = Stopwatch()
    first = watch.lap()
    second = watch.lap()
    assert first >= 0 and second >= 0
    assert watch.elapsed() >= first + second


# --- decisions ---------------------------------------------------------------------------------


def _decision(persona: str | None, segment: int | None, *, offers: bool = True) -> Decision:
    signals = Signals(
        device_type="desktop",
        os=None,
        browser=None,
        touch=False,
        referrer_class="direct",
        referrer_source=None,
        search_terms=None,
        country=None,
        local_hour=12,
        local_weekday=1,
    )
    slot = SlotDecision(
        variant_id="hero-default",
        offer_id=None,
        content=Content(type="text", text="Welcome"),
        propensity=1.0,
        reason="default",
    )
    return Decision(
        decision_id="d1",
        model_version="v1",
        visitor_id="v1",
        session_id=None,
        personalized=persona is not None,
        persona=PersonaResult(id=persona, name=persona, affinities={persona: 1.0})
        if persona
        else None,
        segment=SegmentResult(id=segment, distance=0.5) if segment is not None else None,
        lifecycle=Lifecycle(stage="active" if persona else "unknown", rule="r"),
        offers=[RankedOffer(id="o1", name="O", score=0.9, rank=1)] if offers else [],
        slots={"hero": slot},
        signals=signals,
        reasons=[Reason(code="slot.unknown", message="x")] if not offers else [],
    )


def test_decisions_are_counted_by_segment_persona_lifecycle_and_variant(metrics: Metrics) -> None:
    metrics.observe_decision(_decision("bargain_hunters", 3))
    metrics.observe_decision(_decision("bargain_hunters", 3))
    metrics.observe_decision(_decision("researchers", 5))
    metrics.observe_decision(_decision(None, None, offers=False))
    text = metrics.render()[0].decode()
    name = "tailor_decisions_total"
    assert value(text, name, segment="3", persona="bargain_hunters", lifecycle="active") == 2
    assert value(text, name, segment="5", persona="researchers", lifecycle="active") == 1
    assert value(text, name, segment="none", persona="none", lifecycle="unknown") == 1
    assert value(text, "tailor_slot_variants_total", slot="hero", variant="hero-default") == 4
    assert value(text, "tailor_decisions_not_personalized_total") == 1
    assert value(text, "tailor_decision_fallbacks_total", kind="no_eligible_offer") == 1
    assert value(text, "tailor_decision_fallbacks_total", kind="unknown_slot") == 1


def test_label_values_are_bounded() -> None:
    metrics = Metrics(label_limit=2)
    for persona in ("a", "b", "c", "d"):
        metrics.observe_decision(_decision(persona, 1))
    text = metrics.render()[0].decode()
    personas = {s["persona"] for s in series(text, "tailor_decisions_total")}
    assert personas == {"a", "b", "other"}
    metrics.observe_fallback("not_ready")
    assert value(metrics.render()[0].decode(), "tailor_decision_fallbacks_total", kind="not_ready")


def test_real_decisions_are_counted(
    decider: Decider, make_request: Callable[..., dict[str, object]], metrics: Metrics
) -> None:
    body = msgspec.json.encode(make_request())
    personal = decider.decide(msgspec.json.decode(body, type=DecideRequest))
    anonymous = decider.decide(
        msgspec.structs.replace(msgspec.json.decode(body, type=DecideRequest), consent=Consent())
    )
    metrics.observe_decision(personal)
    metrics.observe_decision(anonymous)
    text = metrics.render()[0].decode()
    assert personal.persona is not None and personal.segment is not None
    assert value(
        text,
        "tailor_decisions_total",
        segment=str(personal.segment.id),
        persona=personal.persona.id,
        lifecycle=personal.lifecycle.stage,
    )
    assert value(text, "tailor_decisions_not_personalized_total") == 1
    variants = series(text, "tailor_slot_variants_total")
    assert {s["slot"] for s in variants} == set(personal.slots)


# --- bundle, events, tag timings ---------------------------------------------------------------


def test_bundle_gauges_and_reload_counters() -> None:
    now = [1000.0]
    metrics = Metrics(clock=lambda: now[0])
    text = metrics.render()[0].decode()
    assert series(text, "tailor_bundle_age_seconds") == []
    metrics.bundle_loaded("v1")
    now[0] = 1030.0
    metrics.bundle_refused("BundleHashError")
    metrics.bundle_loaded("v2")
    now[0] = 1042.5
    text = metrics.render()[0].decode()
    assert value(text, "tailor_bundle_info", model_version="v1") == 0
    assert value(text, "tailor_bundle_info", model_version="v2") == 1
    assert value(text, "tailor_bundle_loaded_timestamp_seconds") == 1030.0
    assert value(text, "tailor_bundle_age_seconds") == 12.5
    assert value(text, "tailor_bundle_loads_total", result="ok") == 2
    assert value(text, "tailor_bundle_loads_total", result="refused") == 1
    assert value(text, "tailor_bundle_refusals_total", reason="BundleHashError") == 1
    metrics.bundle_refused("/var/bundles/v3/manifest.json: sha256 mismatch for model.onnx")
    text = metrics.render()[0].decode()
    assert value(text, "tailor_bundle_refusals_total", reason="other") == 1
    assert value(text, "tailor_bundle_loads_total", result="refused") == 2


def test_events_are_counted_and_feed_tag_timings(metrics: Metrics) -> None:
    events = [
        Event(
            type="pageview",
            visitor_id="v",
            properties={"timeToDecisionMs": 180, "slotsHiddenMs": 175},
        ),
        Event(type="pageview", visitor_id="v", properties={"timedOut": True, "slotsHiddenMs": 600}),
        Event(type="impression", visitor_id="v"),
        Event(type="click", visitor_id="v", properties={"timeToDecisionMs": "soon"}),
        Event(type="click", visitor_id="v", properties={"slotsHiddenMs": -5, "timedOut": "yes"}),
    ]
    metrics.observe_events(events)
    text = metrics.render()[0].decode()
    assert value(text, "tailor_events_total", type="pageview") == 2
    assert value(text, "tailor_events_total", type="impression") == 1
    assert value(text, "tailor_events_total", type="click") == 2
    assert value(text, "tailor_tag_time_to_decision_seconds_count") == 1
    assert value(text, "tailor_tag_time_to_decision_seconds_bucket", le="0.2") == 1
    assert value(text, "tailor_tag_time_to_decision_seconds_bucket", le="0.15") == 0
    assert value(text, "tailor_tag_slots_hidden_seconds_count") == 2
    assert value(text, "tailor_tag_slots_hidden_seconds_sum") == pytest.approx(0.775)
    assert value(text, "tailor_tag_timeouts_total") == 1


@pytest.mark.parametrize("seconds", [-0.001, float("nan"), float("inf"), 601.0, None])
def test_implausible_tag_timings_are_dropped(metrics: Metrics, seconds: float | None) -> None:
    assert metrics.observe_tag_timing("time_to_decision", seconds) is False
    assert metrics.observe_tag_timing("slots_hidden", 0.3) is True
    text = metrics.render()[0].decode()
    assert value(text, "tailor_tag_time_to_decision_seconds_count") == 0


# --- several workers ---------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys

    from litestar import Litestar, get
    from litestar.datastructures import State
    from litestar.params import FromPath
    from litestar.testing import TestClient

    from server.observability import Metrics, MetricsMiddleware, metrics_handler

    @get("/v1/visitors/{visitor_id:str}", sync_to_thread=False)
    def visitor(visitor_id: FromPath[str]) -> dict[str, str]:
        return {"visitorId": visitor_id}

    requests, version = int(sys.argv[1]), sys.argv[2]
    metrics = Metrics.from_env()
    metrics.bundle_loaded(version)
    app = Litestar([visitor, metrics_handler], state=State({"metrics": metrics}))
    app.asgi_handler = MetricsMiddleware(app.asgi_handler, metrics)
    with TestClient(app) as client:
        for i in range(requests):
            assert client.get(f"/v1/visitors/{i}").status_code == 200
        scraped = client.get("/metrics")
    sys.stdout.write(scraped.text)
    """
)


def _worker(directory: Path, requests: int, version: str) -> str:
    done = run_python(
        ["-c", WORKER, str(requests), version], {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_mode_aggregates_all_workers(tmp_path: Path) -> None:
    route = {"route": "/v1/visitors/{visitor_id}", "method": "GET"}
    first = _worker(tmp_path, 2, "v1")
    assert value(first, "tailor_http_requests_total", status="200", **route) == 2
    second = _worker(tmp_path, 3, "v2")  # its /metrics includes the first worker's requests
    assert value(second, "tailor_http_requests_total", status="200", **route) == 5
    assert (
        value(second, "tailor_http_request_duration_seconds_count", status_class="2xx", **route)
        == 5
    )
    assert value(second, "tailor_bundle_loads_total", result="ok") == 2
    assert value(second, "tailor_bundle_info", model_version="v1") == 1  # the first worker's
    assert value(second, "tailor_bundle_info", model_version="v2") == 1
    assert value(second, "tailor_bundle_age_seconds") is not None
    # any process can read the directory, whatever its own mode
    body, content_type = render_multiprocess(str(tmp_path))
    assert content_type == CONTENT_TYPE
    assert value(body.decode(), "tailor_http_requests_total", status="200", **route) == 5


def test_multiprocess_mode_needs_the_variable_before_import(tmp_path: Path) -> None:
    # this test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR
    with pytest.raises(ValueError, match="before prometheus_client"):
        Metrics(multiprocess_dir=str(tmp_path))
    assert Metrics.from_env({}).multiprocess_dir is None
