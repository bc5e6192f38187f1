from __future__ import annotations

from typing import Any

import pytest

from sdk import ConditionError
from sdk._conditions import check_condition, evaluate

ATTRS: dict[str, Any] = {
    "lifecycle": "loyal",
    "device": {"type": "mobile", "touch": True},
    "behavior": {"purchases": 3.0, "daysSinceLastPurchase": None},
    "tags": ["a", "b"],
    "country": "GB",
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({}, True),
        ({"lifecycle": "loyal"}, True),
        ({"lifecycle": "new"}, False),
        ({"device.type": {"$in": ["mobile", "tablet"]}}, True),
        ({"device.type": {"$nin": ["mobile"]}}, False),
        ({"behavior.purchases": {"$gte": 3}}, True),
        ({"behavior.purchases": {"$gt": 3}}, False),
        ({"behavior.purchases": {"$lt": 3.5, "$gte": 1}}, True),
        ({"behavior.purchases": {"$lte": "3"}}, False),
        ({"behavior.daysSinceLastPurchase": {"$exists": False}}, True),
        ({"behavior.daysSinceLastPurchase": {"$gte": 10}}, False),
        ({"missing.path": {"$exists": True}}, False),
        ({"missing.path": {"$ne": "x"}}, True),
        ({"country": {"$regex": "^G"}}, True),
        ({"country": {"$not": {"$regex": "^G"}}}, False),
        ({"tags": {"$in": ["b", "z"]}}, True),
        ({"$or": [{"lifecycle": "new"}, {"country": "GB"}]}, True),
        ({"$and": [{"lifecycle": "loyal"}, {"country": "FR"}]}, False),
        ({"$not": {"lifecycle": "new"}}, True),
        ({"device.touch": {"$eq": 1}}, False),
    ],
)
def test_evaluate(condition: dict[str, Any], expected: bool) -> None:
    check_condition(condition)
    assert evaluate(condition, ATTRS) is expected


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ([], "must be an object"),
        ({"$xor": []}, "unknown operator '\\$xor'"),
        ({"a": {"$in": "x"}}, "\\$in takes a list"),
        ({"a": {"$regex": "("}}, "invalid regular expression"),
        ({"a": {"$gte": 1, "$foo": 2}}, "unknown operator '\\$foo' - at \\$.a.\\$foo"),
        ({"$and": [{"a": 1}, 5]}, "at \\$.\\$and\\[1\\]"),
    ],
)
def test_malformed_conditions_fail_with_a_path(condition: Any, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        check_condition(condition)
