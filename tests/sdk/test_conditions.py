from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk import ConditionError, evaluate_condition
from sdk.conditions import MAX_DEPTH, check_condition, compile_condition, evaluate

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


# --- the shared vectors -----------------------------------------------------------------------

VECTORS = Path(__file__).resolve().parents[1] / "contract" / "vectors" / "conditions.json"
DOC: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = DOC["cases"]
OPERATORS = [
    *("$eq", "$ne", "$gt", "$gte", "$lt", "$lte"),
    *("$veq", "$vne", "$vgt", "$vgte", "$vlt", "$vlte"),
    *("$in", "$nin", "$all", "$elemMatch", "$size", "$exists", "$type", "$regex", "$not"),
    *("$and", "$or", "$nor"),
]


def test_vector_file_shape() -> None:
    assert DOC["version"] == 1
    assert len(CASES) >= 120
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert set(case) == {"name", "condition", "attributes", "expected"}
        assert isinstance(case["expected"], bool)
    text = VECTORS.read_text(encoding="utf-8")
    for op in OPERATORS:
        assert f'"{op}"' in text, f"no vector uses {op}"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors(case: dict[str, Any]) -> None:
    assert evaluate_condition(case["attributes"], case["condition"]) is case["expected"]
    if case["name"].startswith("malformed:"):
        with pytest.raises(ConditionError):
            check_condition(case["condition"])
        assert case["expected"] is False
    else:
        check_condition(case["condition"])
        if isinstance(case["attributes"], dict):
            assert evaluate(case["condition"], case["attributes"]) is case["expected"]
            compiled = compile_condition(case["condition"])
            assert compiled(case["attributes"]) is case["expected"]


# --- new operators at bundle load time --------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        {"tags": {"$all": ["a", {"$regex": "^b"}]}},
        {"items": {"$elemMatch": {"sku": "a", "qty": {"$gte": 2}}}},
        {"scores": {"$elemMatch": {"$gt": 1, "$lt": 9}}},
        {"tags": {"$size": {"$gte": 1}}, "n": {"$type": "number"}},
        {"$nor": [{"a": 1}], "app.version": {"$vgte": "v2.1.0-rc.1+build.7"}},
    ],
)
def test_check_condition_accepts_the_new_operators(condition: dict[str, Any]) -> None:
    check_condition(condition)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"a": {"$size": "1"}}, "\\$size takes a number or an operator object - at \\$.a.\\$size"),
        ({"a": {"$vgt": "one"}}, "version string .* - at \\$.a.\\$vgt"),
        ({"a": {"$all": [{"$gt": 1}, {"$nope": 1}]}}, "at \\$.a.\\$all\\[1\\].\\$nope"),
        ({"a": {"$elemMatch": {"b": {"$type": "int"}}}}, "at \\$.a.\\$elemMatch.b.\\$type"),
        ({"$nor": [{"a": {"$exists": "yes"}}]}, "at \\$.\\$nor\\[0\\].a.\\$exists"),
        ({"a": {"$gt": 1, "b": 1}}, "mixes operators and plain keys - at \\$.a"),
    ],
)
def test_new_operators_fail_with_a_path(condition: Any, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        check_condition(condition, "$")


def test_depth_limit_names_the_path() -> None:
    condition: dict[str, Any] = {"a": 1}
    for _ in range(MAX_DEPTH):
        condition = {"$not": condition}
    with pytest.raises(ConditionError, match=r"nested deeper than 64 levels - at \$\.when\.\$not"):
        check_condition(condition, "$.when")


# --- never raises -----------------------------------------------------------------------------


class _Weird:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing me")

    __hash__ = object.__hash__


class _BrokenMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("broken")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("broken")

    def __len__(self) -> int:
        return 1

    def __contains__(self, key: object) -> bool:
        raise RuntimeError("broken")


@pytest.mark.parametrize(
    ("attributes", "condition"),
    [
        ({"a": 1}, {1: 1}),
        ({"a": 1}, {"a": {"$in": {1, 2}}}),
        ({"a": 1}, {"a": _Weird()}),
        ({"a": _Weird()}, {"a": 1}),
        ({"a": _Weird()}, {"a": {"$in": [1, "x", None]}}),
        (_BrokenMapping(), {"a": 1}),
        ({"a": 1}, _BrokenMapping()),
        ({"a": 1}, {"a": {"$eq": float("nan")}}),
        ({"a": float("nan")}, {"a": {"$gte": float("nan")}}),
        ({"a": "x" * 100_000}, {"a": {"$regex": "(" * 300 + ")" * 300}}),
        ({"a": 1}, {"a": {"$regex": "(" * 10_000 + ")" * 10_000}}),
        ({"v": "1." + "9" * 10_000}, {"v": {"$vgt": "1." + "9" * 9_999}}),
        ({"items": ["9" * 5000]}, {"items." + "9" * 5000: 1}),
        (None, {}),
        ("attributes", {"a": 1}),
    ],
)
def test_odd_inputs_give_a_bool(attributes: Any, condition: Any) -> None:
    assert isinstance(evaluate_condition(attributes, condition), bool)


def test_odd_inputs_answers() -> None:
    assert evaluate_condition({"a": float("nan")}, {"a": {"$eq": float("nan")}}) is False
    assert evaluate_condition({"v": "1." + "9" * 10_000}, {"v": {"$vgt": "1." + "9" * 9_999}})
    assert evaluate_condition({"a": (1, 2)}, {"a": {"$size": 2, "$all": [2]}})  # tuples are arrays
    assert evaluate_condition({"a": 1}, {"$not": {"a": _Weird()}}) is False


def test_recursion_far_beyond_the_limit_is_false_not_an_error() -> None:
    condition: dict[str, Any] = {"a": 1}
    for _ in range(sys.getrecursionlimit() * 3):
        condition = {"$not": condition}
    deep_list: Any = 1
    for _ in range(sys.getrecursionlimit() * 3):
        deep_list = [deep_list]
    assert evaluate_condition({"a": 1}, condition) is False
    assert evaluate_condition({"a": deep_list}, {"a": {"$in": [deep_list]}}) is False
    deep_attrs: Any = {"a": 1}
    for _ in range(sys.getrecursionlimit() * 3):
        deep_attrs = {"a": deep_attrs}
    assert evaluate_condition(deep_attrs, {"a": {"$exists": True}}) is True
    assert evaluate_condition(deep_attrs, {"a": {"a": 2}}) is False  # compares two levels only


def test_huge_inputs_are_answered_quickly() -> None:
    values = [f"id-{i}" for i in range(200_000)]
    options = [f"opt-{i}" for i in range(200_000)]
    attrs = {"tags": values}
    start = time.perf_counter()
    assert evaluate_condition(attrs, {"tags": {"$in": options}}) is False
    assert evaluate_condition(attrs, {"tags": {"$in": [*options, "id-199999"]}}) is True
    assert evaluate_condition(attrs, {"tags": {"$all": values[::-1000]}}) is True
    assert evaluate_condition(attrs, {"tags": {"$nin": options}}) is True
    assert time.perf_counter() - start < 5.0


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.sampled_from(["1.0", "v2.1.0-rc.1", "1.0.0+b", "a", "^a", "(", "number", "array"])
)
_KEYS = st.sampled_from(["a", "b", "tags", "v", "$x", "items", ""])
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=16,
)
_PATHS = st.sampled_from(["a", "b", "a.b", "tags", "items.0", "items.0.a", "v", "$bad"])
_FIELD_SPECS = st.recursive(
    _JSON,
    lambda inner: st.dictionaries(
        st.sampled_from([*OPERATORS, "$foo"]), inner | st.lists(inner, max_size=3), max_size=3
    ),
    max_leaves=10,
)
_CONDITIONS = st.recursive(
    st.dictionaries(_PATHS, _FIELD_SPECS, max_size=3),
    lambda inner: (
        st.dictionaries(st.sampled_from(["$and", "$or", "$nor"]), st.lists(inner, max_size=3))
        | st.builds(lambda c: {"$not": c}, inner)
        | st.builds(lambda p, c: {p: {"$elemMatch": c}}, _PATHS, inner)
    ),
    max_leaves=10,
)
_ATTRIBUTES = st.dictionaries(
    st.sampled_from(["a", "b", "tags", "items", "v"]), _JSON | st.lists(_JSON, max_size=3)
)


@settings(max_examples=400, deadline=None)
@given(_ATTRIBUTES, _CONDITIONS)
def test_random_conditions_never_raise_and_agree_with_evaluate(
    attributes: dict[str, Any], condition: dict[str, Any]
) -> None:
    result = evaluate_condition(attributes, condition)
    assert isinstance(result, bool)
    try:
        check_condition(condition)
    except ConditionError:
        assert result is False
        assert evaluate_condition(attributes, {"$not": condition}) is False
        return
    assert evaluate(condition, attributes) is result
    assert compile_condition(condition)(attributes) is result
    assert evaluate_condition(attributes, {"$not": condition}) is not result
    assert evaluate_condition(attributes, {"$nor": [condition]}) is not result
    assert evaluate_condition(attributes, {"$and": [condition, {}]}) is result


@settings(max_examples=300, deadline=None)
@given(_JSON, _JSON)
def test_any_json_never_raises(attributes: Any, condition: Any) -> None:
    assert isinstance(evaluate_condition(attributes, condition), bool)
    assert isinstance(evaluate_condition({"a": attributes}, {"a": condition}), bool)
