from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from sdk.schema import DecideRequest, EventBatch, json_schema, request_decoder

ROOT = Path(__file__).resolve().parents[2]


def test_committed_json_schema_is_current() -> None:
    committed = json.loads((ROOT / "sdk" / "data" / "schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), (
        "sdk/data/schema.json is stale: run `make schema`"
    )


def test_wire_names_are_camel_case() -> None:
    props = json_schema()["$defs"]["DecideRequest"]["properties"]
    assert {"visitorId", "sessionId", "userId", "consent", "context", "behavior"} <= set(props)
    behavior = json_schema()["$defs"]["Behavior"]["properties"]
    assert "searchesWithoutResults" in behavior and "daysSinceLastPurchase" in behavior


def test_unknown_fields_are_ignored_for_schema_evolution() -> None:
    req = request_decoder.decode(b'{"visitorId": "v1", "futureField": {"x": 1}}')
    assert req.visitor_id == "v1"


def test_browser_numbers_may_be_float_or_null() -> None:
    req = request_decoder.decode(
        b'{"visitorId": "v1", "behavior": {"pageViews": 3.0, "cartValue": null, "purchases": 2}}'
    )
    assert req.behavior.page_views == 3.0
    assert req.behavior.cart_value is None
    assert req.behavior.purchases == 2.0


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"visitorId": 5}', "$.visitorId"),
        (b'{"visitorId": ""}', "$.visitorId"),
        (b'{"visitorId": "a b"}', "$.visitorId"),
        (b'{"visitorId": "v", "behavior": {"pageViews": -1}}', "$.behavior.pageViews"),
        (b'{"visitorId": "v", "behavior": {"revenue": 1e300}}', "$.behavior.revenue"),
        (b'{"visitorId": "v", "context": {"page": {"url": 7}}}', "$.context.page.url"),
        (b'{"visitorId": "v", "slots": ["ok", "not ok!"]}', "$.slots[1]"),
        (b'{"visitorId": "v", "consent": {"personalization": "yes"}}', "$.consent"),
    ],
)
def test_invalid_requests_name_the_field(body: bytes, where: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        request_decoder.decode(body)
    assert where in str(info.value)


def test_unknown_event_type_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="events"):
        msgspec.json.decode(b'{"events": [{"type": "hover", "visitorId": "v"}]}', type=EventBatch)


def test_round_trip_keeps_every_field() -> None:
    raw = (
        b'{"visitorId":"v1","sessionId":"s1","consent":{"personalization":true},'
        b'"context":{"campaign":{"medium":"email"},"screen":{"width":390.0,"touch":true}},'
        b'"behavior":{"categoriesViewed":["fashion"]},"slots":["hero"]}'
    )
    req = request_decoder.decode(raw)
    again = msgspec.json.decode(msgspec.json.encode(req), type=DecideRequest)
    assert again == req
    assert again.context.campaign.medium == "email"
