"""The report routes (server/reports.py) on the real app: decisions and events go in through
``/v1/decide`` and ``/v1/events``, and the reports count exactly what the decisions said.

The app serves ``policy_bundle_dir`` (a holdout, three experiments, exploration). Its event
log is written by the app itself and read back from disk, so every check waits for the log's
flush (1 s) and the report cache (``MIN_AGE``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from server.reports import Design, ReportService
from server.security import SecurityConfig, SecurityMiddleware
from tests.conftest import TEST_PUBLIC_KEY, app_client
from tests.sdk.analysis.records import decision, write_log
from tests.server.test_openapi import _validator

PROBLEM = "application/problem+json"
SLOTS = ["hero", "banner", "recommendation"]
HOLDOUT = "holdout"


# --- traffic (shared with tests/js/test_reports_dashboard.py) ----------------------------------


@dataclass
class ArmTotals:
    visitors: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    orders: int = 0
    revenue: float = 0.0


@dataclass
class Traffic:
    """What was sent, and what each experiment's arms must therefore show."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    #: log lines written: one per decision and one per accepted event
    lines: int = 0
    #: experiment -> arm -> totals
    expected: dict[str, dict[str, ArmTotals]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(ArmTotals))
    )

    def visitors(self, experiment: str) -> dict[str, int]:
        return {arm: t.visitors for arm, t in self.expected[experiment].items()}


def post_traffic(
    client: httpx.Client, visitors: int, prefix: str, *, trusted: bool = True
) -> Traffic:
    """One decision per visitor, an impression per slot, a click on the hero of every fourth
    visitor and a purchase (10 + i % 7) by every fifth, through the real endpoints, as the tag
    sends them (the decision's visitor, event ids, the visitor token). ``trusted``: the client
    holds a secret key; a public key's purchase values are reported, but not as revenue."""
    traffic = Traffic()
    for i in range(visitors):
        visitor = f"{prefix}-{i}"
        body = {
            "visitorId": visitor,
            "sessionId": f"s-{visitor}",
            "consent": {"personalization": True, "storage": True},
            "context": {"page": {"path": "/", "url": "https://shop.example.com/"}},
            "behavior": {"pageViews": i % 9, "sessionCount": 1 + i % 4, "cartItems": i % 3},
            "slots": SLOTS,
        }
        r = client.post("/v1/decide", json=body)
        assert r.status_code == 200, r.text
        decision = r.json()
        visitor = decision["visitorId"]  # a public key's new visitor gets an id minted
        traffic.decisions.append(decision)
        events: list[dict[str, Any]] = [
            {
                "type": "impression",
                "visitorId": visitor,
                "decisionId": decision["decisionId"],
                "slot": slot,
            }
            for slot in decision["slots"]
        ]
        clicked = i % 4 == 0
        if clicked:
            events.append(
                {
                    "type": "click",
                    "visitorId": visitor,
                    "decisionId": decision["decisionId"],
                    "slot": "hero",
                }
            )
        value = float(10 + i % 7) if i % 5 == 0 else None
        if value is not None:
            events.append(
                {
                    "type": "conversion",
                    "visitorId": visitor,
                    "decisionId": decision["decisionId"],
                    "value": value,
                    "currency": "EUR",
                }
            )
        for n, event in enumerate(events):
            event["eventId"] = f"{visitor}-{n}"
        batch = {"events": events, "consent": {"personalization": True, "storage": True}}
        if decision.get("visitorToken"):
            batch["visitorToken"] = decision["visitorToken"]
        r = client.post("/v1/events", json=batch)
        assert r.status_code == 202 and r.json()["accepted"] == len(events), r.text
        traffic.lines += 1 + len(events)
        for exp, arm in (decision.get("experiment") or {}).items():
            totals = traffic.expected[exp][arm]
            decided = [
                slot
                for slot, chosen in decision["slots"].items()
                if exp == HOLDOUT or (chosen.get("arm") or "").startswith(exp + ":")
            ]
            totals.visitors += 1
            totals.impressions += len(decided)
            totals.clicks += clicked and "hero" in decided
            totals.conversions += value is not None
            totals.orders += value is not None
            totals.revenue += (value or 0.0) if trusted else 0.0
    return traffic


def wait_for_report(
    get: Callable[[str], httpx.Response], lines: int, timeout: float = 15.0
) -> dict[str, Any]:
    """The experiment list once the reports read ``lines`` log lines: the log is flushed every
    second, and a decision may reach the disk a flush before the events that follow it."""
    deadline = time.monotonic() + timeout
    while True:
        r = get("/v1/reports/experiments")
        if r.status_code == 200 and r.json()["lines"] == lines:
            body: dict[str, Any] = r.json()
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"the reports did not read {lines} lines: {r.text[:500]}")
        time.sleep(0.2)


# --- fixtures ------------------------------------------------------------------------------------

N_VISITORS = 120


@pytest.fixture(scope="module")
def served(policy_bundle_dir: Path) -> Iterator[tuple[TestClient[Any], Traffic]]:
    """The real app (keys, one trusted proxy hop so tests can appear to come from loopback)
    after 120 visitors' decisions and events."""
    with app_client(bundle_path=str(policy_bundle_dir), trusted_proxy_hops=1) as client:
        traffic = post_traffic(client, N_VISITORS, "api")
        wait_for_report(client.get, traffic.lines)
        yield client, traffic


def _arms(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["arm"]: a for a in group["arms"]}


# --- the numbers ---------------------------------------------------------------------------------


def test_the_list_counts_every_experiment(served: tuple[TestClient[Any], Traffic]) -> None:
    client, traffic = served
    r = client.get("/v1/reports/experiments")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["malformedLines"] == 0 and body["files"] >= 1
    assert body["lines"] == traffic.lines
    listed = {e["experiment"]: e for e in body["experiments"]}
    assert body["experiments"][0]["experiment"] == HOLDOUT
    assert set(listed) == {HOLDOUT, "hero_test", "banner_prospects", "banner_others"}
    for exp, summary in listed.items():
        seen = {a["arm"]: a["visitors"] for a in summary["arms"] if a["visitors"]}
        assert seen == traffic.visitors(exp), exp
        assert summary["contaminated"] == 0 and not summary["srmMismatch"]
    assert listed["hero_test"]["control"] == "control"
    assert [a["arm"] for a in listed["hero_test"]["arms"]] == ["control", "generic", "guide"]
    assert listed[HOLDOUT]["visitors"] == N_VISITORS


@pytest.mark.parametrize("experiment", [HOLDOUT, "hero_test", "banner_others"])
def test_the_report_counts_what_was_sent(
    served: tuple[TestClient[Any], Traffic], experiment: str
) -> None:
    client, traffic = served
    r = client.get(f"/v1/reports/experiments/{experiment}")
    assert r.status_code == 200
    report = r.json()
    assert report["confidence"] == 0.95
    arms = _arms(report["overall"])
    for arm, want in traffic.expected[experiment].items():
        got = arms[arm]
        assert (
            got["visitors"],
            got["impressions"],
            got["clicks"],
            got["conversions"],
            got["orders"],
        ) == (want.visitors, want.impressions, want.clicks, want.conversions, want.orders), arm
        assert got["revenue"] == pytest.approx(want.revenue)
    # the segments partition the visitors
    for arm in arms:
        assert sum(_arms(g)[arm]["visitors"] for g in report["segments"]) == arms[arm]["visitors"]
    assert [c["arm"] for c in report["overall"]["comparisons"]] == report["arms"][1:]
    assert all(not c["enoughData"] for c in report["overall"]["comparisons"])  # 120 visitors
    assert "NaN" not in r.text


def test_confidence_and_time_window(served: tuple[TestClient[Any], Traffic]) -> None:
    client, _ = served
    wide = client.get("/v1/reports/experiments/holdout", params={"confidence": 0.99}).json()
    narrow = client.get("/v1/reports/experiments/holdout", params={"confidence": 0.8}).json()
    assert wide["confidence"] == 0.99
    w = wide["overall"]["arms"][1]["conversionRateCi"]
    n = narrow["overall"]["arms"][1]["conversionRateCi"]
    assert w["low"] < n["low"] < n["high"] < w["high"]
    future = client.get(
        "/v1/reports/experiments/holdout", params={"start": "2099-01-01T00:00:00Z"}
    ).json()
    assert future["visitors"] == 0 and future["warnings"][0] == "no visitors exposed yet"


def test_kpis(served: tuple[TestClient[Any], Traffic]) -> None:
    client, traffic = served
    r = client.get("/v1/reports/kpis", params={"bucket": "hour"})
    assert r.status_code == 200
    series = r.json()
    assert series["by"] == "segment" and series["bucket"] == "hour"
    impressions = sum(len(d["slots"]) for d in traffic.decisions)
    assert sum(p["impressions"] for p in series["points"]) == impressions
    assert sum(p["clicks"] for p in series["points"]) == N_VISITORS // 4
    assert sum(p["revenue"] for p in series["points"]) == pytest.approx(
        sum(t.revenue for t in traffic.expected[HOLDOUT].values())
    )
    segments = {str(d["segment"]["id"]) for d in traffic.decisions}
    assert set(series["groups"]) == segments
    personas = client.get("/v1/reports/kpis", params={"by": "persona"}).json()
    assert set(personas["groups"]) == {d["persona"]["id"] for d in traffic.decisions}


# --- errors --------------------------------------------------------------------------------------


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["type"] == f"https://tailor.dev/problems/{slug}", body
    return body


def test_unknown_experiment_and_bad_parameters(served: tuple[TestClient[Any], Traffic]) -> None:
    client, _ = served
    body = _problem(client.get("/v1/reports/experiments/nope"), 404, "experiment-not-found")
    assert "'nope'" in body["detail"]
    _problem(client.get("/v1/reports/experiments/holdout?confidence=2"), 400, "bad-request")
    _problem(client.get("/v1/reports/kpis?bucket=week"), 400, "bad-request")
    _problem(client.get("/v1/reports/kpis?start=yesterday"), 400, "bad-request")


def test_no_event_log_is_a_404(policy_bundle_dir: Path) -> None:
    with app_client(bundle_path=str(policy_bundle_dir), event_log_dir=None) as client:
        for path in ("/v1/reports/experiments", "/v1/reports/experiments/x", "/v1/reports/kpis"):
            _problem(client.get(path), 404, "no-event-log")


# --- who may read them ---------------------------------------------------------------------------

LOOPBACK = {"x-forwarded-for": "127.0.0.1", "host": "127.0.0.1:8000"}


def test_reports_need_a_secret_key_even_from_loopback(
    served: tuple[TestClient[Any], Traffic],
) -> None:
    client, _ = served
    path = "/v1/reports/experiments"
    no_key = {"authorization": ""}
    _problem(client.get(path, headers=no_key), 401, "missing-key")  # a remote client
    r = client.get(path, headers={"authorization": f"Bearer {TEST_PUBLIC_KEY}"})
    _problem(r, 403, "secret-key-required")
    # with keys configured there is no demo: loopback (or a proxy rewriting Host) gets nothing
    for route in (path, "/v1/reports/experiments/holdout", "/v1/reports/kpis"):
        _problem(client.get(route, headers={**no_key, **LOOPBACK}), 401, "missing-key")
    # the dashboard page holds no data: open to everyone
    assert client.get("/reports", headers=no_key).status_code == 200


def test_the_loopback_demo_reads_reports_only(policy_bundle_dir: Path) -> None:
    with app_client(bundle_path=str(policy_bundle_dir), demo=True, trusted_proxy_hops=1) as client:
        path = "/v1/reports/experiments"
        # the keyless loopback demo may read every report route, with GET or HEAD only
        for route in (path, "/v1/reports/experiments/holdout", "/v1/reports/kpis"):
            assert client.get(route, headers=LOOPBACK).status_code == 200, route
        r = client.head(path, headers=LOOPBACK)
        assert r.status_code == 405  # let through; Litestar has no HEAD handler for it
        r = client.delete(path, headers=LOOPBACK)
        assert r.status_code == 405  # Litestar's router refuses it before any route middleware
        assert not SecurityMiddleware(_never, SecurityConfig(keys=[])).demo_route("DELETE", (path,))
        # ... not from a remote address, a foreign origin, a foreign Host, or other secret routes
        _problem(client.get(path), 401, "missing-key")
        foreign = {**LOOPBACK, "origin": "https://evil.example"}
        _problem(client.get(path, headers=foreign), 401, "missing-key")
        rebound = {"x-forwarded-for": "127.0.0.1", "host": "evil.example"}
        _problem(client.get(path, headers=rebound), 401, "missing-key")
        _problem(client.get("/v1/visitors/api-1", headers=LOOPBACK), 401, "missing-key")
        r = client.get("/v1/reports/../visitors/api-1", headers=LOOPBACK)
        assert r.status_code in (401, 404)


def test_without_the_demo_loopback_needs_a_key_too(policy_bundle_dir: Path) -> None:
    with app_client(bundle_path=str(policy_bundle_dir), demo=False, trusted_proxy_hops=1) as client:
        no_key = {"authorization": ""}
        r = client.get("/v1/reports/experiments", headers={**no_key, **LOOPBACK})
        _problem(r, 401, "missing-key")
        assert client.get("/v1/reports/experiments").status_code == 200  # secret key


async def _never(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


def test_route_classes() -> None:
    mw = SecurityMiddleware(_never, SecurityConfig(keys=[]))
    assert mw.route_class("GET", "/v1/reports/experiments") == "secret"
    assert mw.route_class("GET", "/v1/reports/kpis") == "secret"
    assert mw.route_class("GET", "/reports") == "open"
    assert mw.demo_route("GET", ("/v1/reports/experiments/x",))
    assert mw.demo_route("HEAD", ("/v1/reports/kpis",))
    assert not mw.demo_route("DELETE", ("/v1/reports/kpis",))
    assert not mw.demo_route("GET", ("/v1/reportsx",))
    assert not mw.demo_route("GET", ("/v1/reports/../admin/reload",))
    assert not mw.demo_route("GET", ("/v1/visitors/v",))


# --- the dashboard page and the document --------------------------------------------------------


def test_dashboard_page_has_a_strict_policy(served: tuple[TestClient[Any], Traffic]) -> None:
    client, _ = served
    r = client.get("/reports")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    for tag in ("script", "style"):
        (content,) = re.findall(rf"<{tag}>(.*?)</{tag}>".encode(), r.content, re.S)
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp
    assert b"innerHTML" not in r.content and b"http://" not in r.content.replace(
        b"http://www.w3.org/2000/svg", b""
    )
    again = client.get("/reports", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304


def test_openapi_documents_the_routes(served: tuple[TestClient[Any], Traffic]) -> None:
    client, _ = served
    doc = client.get("/schema/openapi.json").json()
    secret = [{"bearerKey": []}, {"headerKey": []}]
    for path, op_id, schema in (
        ("/v1/reports/experiments", "listExperiments", "ExperimentList"),
        ("/v1/reports/experiments/{key}", "getExperimentReport", "ExperimentReport"),
        ("/v1/reports/kpis", "getKpis", "KpiSeries"),
    ):
        op = doc["paths"][path]["get"]
        assert op["operationId"] == op_id and op["tags"] == ["reports"]
        assert op["security"] == secret
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{schema}"}
        assert "404" in op["responses"] and "401" in op["responses"]
        assert schema in doc["components"]["schemas"]
    params = {p["name"] for p in doc["paths"]["/v1/reports/kpis"]["get"]["parameters"]}
    assert params == {"by", "bucket", "start", "end"}
    assert "/reports" not in doc["paths"]
    # the answers conform to the documented schemas
    for path, schema in (
        ("/v1/reports/experiments", "ExperimentList"),
        ("/v1/reports/experiments/hero_test", "ExperimentReport"),
        ("/v1/reports/experiments/holdout?confidence=0.9", "ExperimentReport"),
        ("/v1/reports/kpis?by=lifecycle&bucket=hour", "KpiSeries"),
    ):
        _validator(doc, schema).validate(client.get(path).json())


# --- the cache -----------------------------------------------------------------------------------


def test_results_are_cached_by_file_stamp_and_age(tmp_path: Path) -> None:
    now = [100.0]
    service = ReportService(str(tmp_path), tmp_path, min_age=2.0, clock=lambda: now[0])
    design = Design(weights={}, controls={}, digest=None)
    write_log(tmp_path / "events-1.jsonl", [decision("v1", "d1", {"x": "a"})])
    first = service.experiments(design)
    assert Counter(r.experiment for r in first.reports) == {"x": 1}
    assert service.experiments(design) is first  # same files: cached
    write_log(tmp_path / "events-2.jsonl", [decision("v2", "d2", {"x": "a"})])
    assert service.experiments(design) is first  # changed, but younger than min_age
    now[0] += 2.5
    second = service.experiments(design)
    assert second is not first and second.reports[0].visitors == 2
    assert service.experiments(design, confidence=0.9) is not second  # another query


def test_a_log_directory_not_created_yet_gives_empty_reports(tmp_path: Path) -> None:
    service = ReportService(str(tmp_path / "not-yet"), tmp_path)
    design = Design(weights={"x": {"a": 1.0, "b": 1.0}}, controls={}, digest=None)
    experiments = service.experiments(design)
    assert (experiments.files, experiments.lines, experiments.malformed) == (0, 0, 0)
    assert [(r.experiment, r.visitors) for r in experiments.reports] == [("x", 0)]
    assert service.kpis("segment", "day").points == []
