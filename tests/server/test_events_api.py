from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient

from sdk import Decider
from sdk.logs import is_anonymous, visitor_hash
from sdk.schema import Consent, DecideRequest
from server.eventlog import EventLog
from server.events import route_handlers
from server.problems import exception_handlers
from server.security import SecurityMiddleware
from server.settings import Settings
from server.stores import MemoryEventGuard, MemoryProfileStore
from tests.conftest import TEST_SECRET_KEY, security_for_tests

LIMIT = 8 * 1024


class FakeDecisionCache:
    def __init__(self) -> None:
        self.invalidated: list[str] = []

    def invalidate(self, visitor_id: str) -> int:
        self.invalidated.append(visitor_id)
        return 0


@dataclass
class FakeEngine:
    """The attributes of server.state.Engine that the event handlers use."""

    eventlog: EventLog
    settings: Settings = field(default_factory=lambda: Settings(max_body_bytes=LIMIT))
    profiles: MemoryProfileStore = field(default_factory=MemoryProfileStore)
    decision_cache: FakeDecisionCache = field(default_factory=FakeDecisionCache)
    guard: MemoryEventGuard = field(default_factory=MemoryEventGuard)
    decider: Decider | None = None


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeEngine]:
    engine = FakeEngine(eventlog=EventLog(tmp_path / "log", flush_interval=3600))
    yield engine
    engine.eventlog.close()


@pytest.fixture
def client(engine: FakeEngine) -> Iterator[TestClient[Litestar]]:
    app = Litestar(
        route_handlers=route_handlers,
        exception_handlers=exception_handlers,
        request_max_body_size=LIMIT,
        state=State({"engine": engine}),
        middleware=[SecurityMiddleware.factory(security_for_tests())],
        openapi_config=None,
    )
    with TestClient(app) as c:
        # a backend's secret key: trusted events (public keys: tests/server/test_event_guard.py)
        c.headers["authorization"] = f"Bearer {TEST_SECRET_KEY}"
        yield c


def consented_visit(engine: FakeEngine, visitor: str = "v1") -> None:
    """What the decide handler does for a visit with storage consent."""
    request = DecideRequest(
        visitor_id=visitor, session_id="s1", consent=Consent(personalization=True, storage=True)
    )
    asyncio.run(engine.profiles.record_visit(visitor, request, now=datetime.now(UTC)))


def logged(engine: FakeEngine) -> list[dict[str, Any]]:
    engine.eventlog.flush()
    return [
        json.loads(line)
        for path in engine.eventlog.files()
        for line in path.read_bytes().splitlines()
    ]


def batch(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(events), "sentAt": "2026-06-15T12:30:00Z"}


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"].startswith("https://tailor.dev/problems/")
    return body


# --- POST /v1/events -----------------------------------------------------------------------


def test_a_text_plain_beacon_is_accepted_and_logged(
    client: TestClient[Litestar], engine: FakeEngine
) -> None:
    body = batch(
        {"type": "impression", "visitorId": "v1", "decisionId": "d1", "slot": "hero"},
        {"type": "click", "visitorId": "v1", "decisionId": "d1", "slot": "hero"},
    )
    r = client.post(
        "/v1/events",
        content=json.dumps(body),
        headers={"content-type": "text/plain;charset=UTF-8"},
    )
    assert r.status_code == 202 and r.json() == {"accepted": 2}
    assert [(x["kind"], x["type"]) for x in logged(engine)] == [
        ("event", "impression"),
        ("event", "click"),
    ]


def test_application_json_is_accepted(client: TestClient[Litestar]) -> None:
    r = client.post("/v1/events", json=batch({"type": "pageview", "visitorId": "v1"}))
    assert r.status_code == 202 and r.json() == {"accepted": 1}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "malformed"),
        (b"", 400, "malformed"),
        (b'{"events": []}', 422, "$.events"),
        (b'{"events": [{"type": "purchase", "visitorId": "v1"}]}', 422, "$.events[0].type"),
        (b'{"events": [{"type": "click", "visitorId": "a b"}]}', 422, "$.events[0].visitorId"),
        (b'{"events": [{"type": "click", "visitorId": "v", "value": -1}]}', 422, "value"),
        (b'{"events": [{"type": "click"}]}', 422, "visitorId"),
    ],
)
def test_bad_batches_are_problems_naming_the_field(
    client: TestClient[Litestar], engine: FakeEngine, body: bytes, status: int, needle: str
) -> None:
    r = client.post("/v1/events", content=body, headers={"content-type": "text/plain"})
    detail = problem(r, status)["detail"]
    assert needle.lower() in (detail + r.json()["type"]).lower()
    assert logged(engine) == []


def test_oversized_batches_are_413(client: TestClient[Litestar]) -> None:
    event = {"type": "click", "visitorId": "v1", "properties": {"pad": "x" * LIMIT}}
    problem(client.post("/v1/events", json=batch(event)), 413)

    def chunks() -> Iterator[bytes]:
        yield b'{"events": [{"type": "click", "visitorId": "v1", "properties": {"pad": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}}]}'

    problem(client.post("/v1/events", content=chunks()), 413)


def test_other_media_types_are_415(client: TestClient[Litestar]) -> None:
    r = client.post(
        "/v1/events", content=b"a=b", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    problem(r, 415)


def test_global_privacy_control_drops_the_batch(
    client: TestClient[Litestar], engine: FakeEngine
) -> None:
    consented_visit(engine)
    r = client.post(
        "/v1/events",
        json=batch({"type": "not_interested", "visitorId": "v1", "offerId": "offer-a"}),
        headers={"Sec-GPC": "1"},
    )
    assert r.status_code == 202 and r.json() == {"accepted": 0}
    assert logged(engine) == [] and asyncio.run(engine.profiles.suppressed("v1")) == frozenset()


def test_events_never_create_a_profile(client: TestClient[Litestar], engine: FakeEngine) -> None:
    r = client.post("/v1/events", json=batch({"type": "conversion", "visitorId": "anon"}))
    assert r.status_code == 202 and r.json() == {"accepted": 1}
    assert asyncio.run(engine.profiles.get("anon")) is None
    # logged all the same, as nobody's: no consent seen, no stored profile
    [record] = logged(engine)
    assert is_anonymous(record["visitorId"]) and record["visitorId"] != "anon"


def test_not_interested_suppresses_the_offer_and_drops_cached_decisions(
    client: TestClient[Litestar], engine: FakeEngine
) -> None:
    consented_visit(engine)
    client.post("/v1/events", json=batch({"type": "impression", "visitorId": "v1"}))
    assert engine.decision_cache.invalidated == []  # an impression keeps the visit stable
    r = client.post(
        "/v1/events",
        json=batch({"type": "not_interested", "visitorId": "v1", "offerId": "offer-a"}),
    )
    assert r.status_code == 202
    assert asyncio.run(engine.profiles.suppressed("v1")) == frozenset({"offer-a"})
    assert engine.decision_cache.invalidated == ["v1"]
    assert client.get("/v1/visitors/v1").json()["suppressedOffers"] == ["offer-a"]


def test_events_are_read_by_the_next_decision(
    client: TestClient[Litestar], engine: FakeEngine
) -> None:
    consented_visit(engine, "v1")
    consented_visit(engine, "v2")
    client.post(
        "/v1/events",
        json=batch(
            {"type": "conversion", "visitorId": "v1", "value": 25.0},
            {"type": "conversion", "visitorId": "v2", "value": 5.0},
            {"type": "conversion", "visitorId": "v1", "value": 10.0},
        ),
    )
    v1, v2 = asyncio.run(engine.profiles.get("v1")), asyncio.run(engine.profiles.get("v2"))
    assert v1 is not None and v1.purchases == 2 and v1.revenue == 35.0
    assert v2 is not None and v2.purchases == 1
    assert sorted(engine.decision_cache.invalidated) == ["v1", "v2"]


# --- /v1/visitors/{id} ---------------------------------------------------------------------


def test_get_visitor_returns_everything_stored(
    client: TestClient[Litestar], engine: FakeEngine
) -> None:
    consented_visit(engine)
    r = client.get("/v1/visitors/v1")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["visitorId"] == "v1" and body["sessionId"] == "s1"
    assert body["behavior"]["sessionCount"] == 1 and body["behavior"]["pageViews"] == 1
    assert body["suppressedOffers"] == [] and body["dismissedOffers"] == {}
    assert body["firstSeen"].endswith("Z") and body["lastSeen"].endswith("Z")


def test_unknown_visitor_is_404(client: TestClient[Litestar]) -> None:
    problem(client.get("/v1/visitors/nobody"), 404)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_invalid_visitor_ids_are_400(client: TestClient[Litestar], method: str) -> None:
    for bad in ("a%20b", "x" * 129, "%C3%A9t%C3%A9"):
        detail = problem(client.request(method, f"/v1/visitors/{bad}"), 400)["detail"]
        assert "visitorId" in detail


def test_delete_erases_the_visitor_and_marks_the_log(
    client: TestClient[Litestar], engine: FakeEngine
) -> None:
    consented_visit(engine)
    client.post(
        "/v1/events", json=batch({"type": "not_interested", "visitorId": "v1", "offerId": "o"})
    )
    engine.decision_cache.invalidated.clear()
    r = client.delete("/v1/visitors/v1")
    assert r.status_code == 204 and r.content == b""
    assert (
        asyncio.run(engine.profiles.get("v1")) is None
        and asyncio.run(engine.profiles.suppressed("v1")) == frozenset()
    )
    assert engine.decision_cache.invalidated == ["v1"]
    problem(client.get("/v1/visitors/v1"), 404)
    marker = logged(engine)[-1]
    assert marker["kind"] == "erasure" and marker["visitorHash"] == visitor_hash("v1")
    assert "v1" not in json.dumps(marker)
    assert client.delete("/v1/visitors/v1").status_code == 204  # idempotent
