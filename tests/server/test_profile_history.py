"""Pushed order histories (``POST /v1/profiles/import``): the pure rule that keeps a user's
purchase counts from counting anything twice (:func:`server.stores.base.with_history`), each
store's ``push_histories`` (embedded and Redis), and the documented route. Real servers are in
``test_profile_import_live.py``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sdk.schema import Consent, DecideRequest, Event
from server.stores.base import (
    MAX_LIVE,
    History,
    ProfileRecord,
    VisitState,
    VisitWrite,
    merged,
    updated_by_events,
    with_history,
)
from tests.conftest import TEST_PUBLIC_KEY, app_client
from tests.server.test_stores import Clock

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)
DAY = timedelta(days=1)
BASE = History(
    as_of=NOW - 2 * DAY,
    purchases=5,
    revenue=500.0,
    first_purchase=NOW - 300 * DAY,
    last_purchase=NOW - 10 * DAY,
    categories=("shoes",),
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sale(value: float, when: datetime, visitor: str = "v1") -> Event:
    return Event(type="conversion", visitor_id=visitor, value=value, timestamp=when)


def counts(record: ProfileRecord | None) -> tuple[int, float]:
    assert record is not None
    return record.purchases, record.revenue


def test_live_purchases_count_on_top_of_the_history_once() -> None:
    record = with_history(None, BASE, NOW)
    assert counts(record) == (5, 500.0) and record.categories == ("shoes",)
    assert with_history(record, BASE, NOW) == record  # the same push again: no change
    record = updated_by_events(record, [sale(50, NOW - DAY), sale(70, NOW - 3 * DAY)], NOW)
    assert counts(record) == (6, 550.0)  # the older one is in the history
    assert record.last_purchase == NOW - DAY
    assert with_history(record, BASE, NOW) == record
    later = History(as_of=NOW - DAY / 2, purchases=6, revenue=550.0, last_purchase=NOW - DAY)
    record = with_history(record, later, NOW)
    assert counts(record) == (6, 550.0) and record.live == ()
    record = updated_by_events(record, [sale(10, NOW)], NOW)
    assert counts(record) == (7, 560.0) and len(record.live) == 1


def test_a_first_push_drops_the_live_purchases_it_contains() -> None:
    record = updated_by_events(None, [sale(20, NOW - 30 * DAY), sale(30, NOW - DAY)], NOW)
    assert counts(record) == (2, 50.0)
    record = with_history(record, BASE, NOW)  # the one 30 days ago is in the order history
    assert counts(record) == (6, 530.0)
    assert record.first_purchase == BASE.first_purchase and record.last_purchase == NOW - DAY


def test_identifying_a_visitor_keeps_the_history_as_the_base() -> None:
    visitor = updated_by_events(None, [sale(20, NOW - 30 * DAY), sale(30, NOW - DAY)], NOW)
    user = with_history(None, BASE, NOW)
    for person in (merged(user, visitor), merged(visitor, user)):
        assert person is not None and person.history == BASE
        assert counts(person) == (6, 530.0)


def test_more_live_purchases_than_kept_are_folded_into_the_history() -> None:
    record = with_history(None, BASE, NOW)
    sales = [sale(1.0, NOW - DAY + timedelta(minutes=i)) for i in range(MAX_LIVE + 5)]
    record = updated_by_events(record, sales, NOW)
    assert counts(record) == (5 + MAX_LIVE + 5, 500.0 + MAX_LIVE + 5)
    assert len(record.live) == MAX_LIVE and record.history is not None
    assert record.history.purchases == 10


async def test_each_store_writes_keeps_and_ignores_pushes(store: Any, clock: Clock) -> None:
    first = await store.push_histories([("u1", BASE), ("u2", BASE)], now=clock())
    assert [p.status for p in first] == ["written", "written"]
    again = await store.push_histories([("u1", BASE)], now=clock())
    assert [p.status for p in again] == ["unchanged"]
    older = msgspec_replace(BASE, as_of=BASE.as_of - DAY, purchases=1)
    assert [p.status for p in await store.push_histories([("u1", older)], now=clock())] == ["stale"]
    # an unlinked visitor naming the user reads the user's history merged with its own
    consent = Consent(personalization=True, storage=True)
    request = DecideRequest(visitor_id="v9", session_id="s1", user_id="u1", consent=consent)
    (read,) = await store.load_visits([("v9", None)], users=["u1"])
    assert read.record is not None and read.record.purchases == 5
    (plain,) = await store.load_visits([("v9", None)])
    assert plain.record is None
    # the visit links it; a newer push then reaches the visitor and names it
    await store.commit_visits(
        [VisitWrite(visitor_id="v9", request=request, read=VisitState())], now=clock()
    )
    newer = msgspec_replace(BASE, as_of=BASE.as_of + DAY, purchases=8)
    (pushed,) = await store.push_histories([("u1", newer)], now=clock())
    assert pushed.status == "written" and pushed.visitors == ("v9",)
    assert (await store.get("v9")).purchases == 8
    # an erasure of the person erases the history; only a new push brings it back
    assert await store.delete("v9")
    assert await store.get("v9") is None
    (back,) = await store.push_histories([("u1", newer)], now=clock())
    assert back.status == "written" and back.visitors == ()


def msgspec_replace(history: History, **changes: Any) -> History:
    import msgspec

    return msgspec.structs.replace(history, **changes)


def test_the_route_is_documented_secret_only(bundle_dir: Path) -> None:
    with app_client(bundle_path=str(bundle_dir)) as client:
        doc = client.get("/schema/openapi.json").json()
        op = doc["paths"]["/v1/profiles/import"]["post"]
        assert op["operationId"] == "importProfiles"
        assert op["security"] == [{"bearerKey": []}, {"headerKey": []}]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ProfileBatch"}
        assert (
            doc["components"]["schemas"]["ProfileBatch"]["properties"]["profiles"]["maxItems"]
            == 1000
        )
        assert {"400", "401", "403", "413", "415", "422", "503"} <= set(op["responses"])
        row = {"userId": "u1", "asOf": "2026-01-01T00:00:00Z", "purchases": 0, "revenue": 0}
        r = client.post("/v1/profiles/import", json={"profiles": [row] * 1001})
        assert r.status_code == 422 and "$.profiles" in r.json()["detail"]
        r = client.post("/v1/profiles/import", content=b"{nope")
        assert r.status_code == 400
        r = client.post("/v1/profiles/import", json={"profiles": [row]})
        assert r.status_code == 200
        assert r.json()["results"] == [{"userId": "u1", "status": "written", "reason": None}]
        browser = {
            "authorization": f"Bearer {TEST_PUBLIC_KEY}",
            "origin": "https://shop.example.com",
        }
        r = client.post("/v1/profiles/import", json={"profiles": [row]}, headers=browser)
        assert r.status_code == 403
        assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"purchases": 0, "revenue": 5.0}, "no purchases"),
        ({"purchases": 2, "revenue": 5.0}, "required"),
        (
            {
                "purchases": 2,
                "revenue": 5.0,
                "firstPurchaseAt": "2026-01-02T00:00:00Z",
                "lastPurchaseAt": "2026-01-01T00:00:00Z",
            },
            "after lastPurchaseAt",
        ),
        (
            {
                "purchases": 2,
                "revenue": 5.0,
                "firstPurchaseAt": "2026-01-01T00:00:00Z",
                "lastPurchaseAt": "2026-03-01T00:00:00Z",
            },
            "after asOf",
        ),
        ({"purchases": 0, "revenue": 0, "asOf": "2999-01-01T00:00:00Z"}, "future"),
    ],
)
def test_rows_that_contradict_themselves_are_invalid_the_others_stored(
    bundle_dir: Path, row: dict[str, Any], reason: str
) -> None:
    good = {"userId": "ok", "asOf": "2026-02-01T00:00:00Z", "purchases": 0, "revenue": 0}
    bad = {"userId": "bad", "asOf": "2026-02-01T00:00:00Z", **row}
    with app_client(bundle_path=str(bundle_dir)) as client:
        r = client.post("/v1/profiles/import", json={"profiles": [bad, good]})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["written"], answer["invalid"]) == (1, 1)
    assert answer["results"][0]["status"] == "invalid"
    assert reason in answer["results"][0]["reason"]
