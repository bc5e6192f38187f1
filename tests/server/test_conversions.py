"""``POST /v1/conversions`` in process: the documented operation, profiles, bad bodies. The
confirmed conversions of a whole scenario against a real server are in
``test_event_guard_live.py``, the SDK's ``record_conversions`` in
``tests/sdk/test_client_conversions.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_ORIGIN, TEST_PUBLIC_KEY, app_client


def test_the_route_is_documented_secret_only(bundle_dir: Path) -> None:
    with app_client(bundle_path=str(bundle_dir)) as client:
        doc = client.get("/schema/openapi.json").json()
    op = doc["paths"]["/v1/conversions"]["post"]
    assert op["operationId"] == "recordConversions"
    assert op["security"] == [{"bearerKey": []}, {"headerKey": []}]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ConversionBatch"}
    answer = op["responses"]["202"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/ConversionsAccepted"}
    assert doc["components"]["schemas"]["ConversionsAccepted"]["required"] == [
        "accepted",
        "duplicates",
    ]
    assert {"400", "401", "403", "413", "415", "422", "429"} <= set(op["responses"])


def test_a_stored_profile_gets_the_purchase(bundle_dir: Path, tmp_path: Path) -> None:
    with app_client(bundle_path=str(bundle_dir), event_log_dir=str(tmp_path)) as client:
        visit = {
            "visitorId": "buyer",
            "sessionId": "s1",
            "consent": {"personalization": True, "storage": True},
        }
        assert client.post("/v1/decide", json=visit).status_code == 200  # the secret key
        order = {"visitorId": "buyer", "orderId": "A-1", "value": 42.5, "currency": "EUR"}
        r = client.post("/v1/conversions", json={"conversions": [order]})
        assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 0}
        assert r.headers["cache-control"] == "no-store"
        behavior = client.get("/v1/visitors/buyer").json()["behavior"]
        assert (behavior["purchases"], behavior["revenue"]) == (1, 42.5)
        # the same order again, from a retry: skipped, the profile unchanged
        r = client.post("/v1/conversions", json={"conversions": [order]})
        assert r.json() == {"accepted": 0, "duplicates": 1}
        assert client.get("/v1/visitors/buyer").json()["behavior"]["purchases"] == 1
        # a public key may not confirm anything
        browser = {"authorization": f"Bearer {TEST_PUBLIC_KEY}", "origin": TEST_ORIGIN}
        other = {"visitorId": "buyer", "orderId": "A-2", "value": 1.0}
        r = client.post("/v1/conversions", json={"conversions": [other]}, headers=browser)
        assert r.status_code == 403
    [line] = [
        json.loads(x)
        for p in tmp_path.glob("*.jsonl")
        for x in p.read_text().splitlines()
        if '"conversion"' in x
    ]
    assert line["orderId"] == "A-1" and line["trusted"] is True and line["value"] == 42.5
    assert line["visitorId"] == "buyer" and line["currency"] == "EUR"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "malformed"),
        (b'{"conversions": []}', 422, "$.conversions"),
        (b'{"conversions": [{"visitorId": "v", "value": 1}]}', 422, "orderId"),
        (b'{"conversions": [{"visitorId": "v", "orderId": "o", "value": -1}]}', 422, "value"),
        (b'{"conversions": [{"visitorId": "a b", "orderId": "o", "value": 1}]}', 422, "visitorId"),
        (
            b'{"conversions": [{"visitorId": "v", "orderId": "o", "value": 1, "currency": "EU"}]}',
            422,
            "currency",
        ),
    ],
)
def test_bad_bodies_are_problems_naming_the_field(
    bundle_dir: Path, body: bytes, status: int, needle: str
) -> None:
    with app_client(bundle_path=str(bundle_dir)) as client:
        r = client.post(
            "/v1/conversions", content=body, headers={"content-type": "application/json"}
        )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = r.json()
    assert needle.lower() in (problem["detail"] + problem["type"]).lower()
