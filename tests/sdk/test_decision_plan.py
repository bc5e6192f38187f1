"""The decision plan (issue 18): what rules, targeting and policy decide, memoised on the values
each condition reads, gives the same decisions byte for byte as the reference path that
evaluates every condition every time (``Decider(plan=False)``), over thousands of generated
visits with every kind of consent, suppression, slot list and stored arm, on bundles whose
conditions read strings, numbers, booleans, objects and missing paths."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_export.bundle.lifecycle import PolicyConfig, with_policy
from model_export.inputs.synth import generate
from sdk import Decider, load_bundle
from sdk._plan import Memo
from sdk.conditions import (
    check_condition,
    compile_condition,
    condition_paths,
    evaluate,
    numeric_thresholds,
)
from sdk.schema import Behavior, Consent, DecideRequest
from tests.conftest import TEST_POLICY
from tests.contract.test_recorded_decisions import NOW as RECORDED_NOW
from tests.contract.test_recorded_decisions import RECORDED, _canonical, _cases, _ids

VECTORS = Path(__file__).resolve().parents[1] / "contract" / "vectors" / "conditions.json"
NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
_encode = msgspec.json.Encoder().encode

#: A policy whose targeting reads every kind of value: a boolean, a number, an object (no
#: memo key: computed directly), a path that is often missing, and sticky arms.
WIDE_POLICY: dict[str, Any] = {
    "holdout": {"share": 0.05},
    "exploration": {"epsilon": 0.3, "bySegment": {"1": 0.0, "2": 0.6}},
    "experiments": [
        {
            "key": "touch_hero",
            "slots": ["hero"],
            "condition": {"device.touch": True, "localHour": {"$gte": 6, "$lt": 22}},
            "sticky": True,
            "arms": [{"key": "control"}, {"key": "generic", "policy": "default"}],
        },
        {
            "key": "behaviour_banner",
            "slots": ["banner"],
            "condition": {"$or": [{"behavior": {"$exists": True}}, {"campaign.source": "x"}]},
            "arms": [{"key": "a"}, {"key": "b", "weight": 2}],
            "coverage": 0.7,
        },
        {
            "key": "campaign_reco",
            "condition": {"$not": {"campaign.medium": {"$in": ["email", "cpc"]}}},
            "arms": [{"key": "a"}, {"key": "b"}],
        },
    ],
}


def _pair(path: Path) -> tuple[Decider, Decider]:
    bundle = load_bundle(path)
    plan = Decider(bundle, clock=lambda: NOW, new_id=_ids())
    reference = Decider(bundle, clock=lambda: NOW, new_id=_ids(), plan=False)
    return plan, reference


def _visits(n: int, seed: int, slots: list[str]) -> list[dict[str, Any]]:
    """Generated visits, each with a consent, a slot list, suppressed offers and stored arms
    drawn at random (distinct visitors: the memos see fresh traffic, not a pool)."""
    rng = random.Random(seed)
    out = []
    for v in generate(n, seed=seed):
        request: DecideRequest = v.request
        consent = Consent(personalization=rng.random() > 0.15, storage=rng.random() > 0.3)
        wanted = rng.choice([None, slots[:1], slots[::-1], [*slots, "nowhere"]])
        request = msgspec.structs.replace(request, consent=consent, slots=wanted)
        suppressed = frozenset(rng.sample(["coupon_15", "welcome_10", "new_arrivals"], 1))
        stored = rng.choice([None, {"touch_hero:1": "generic"}, {"touch_hero:1": "gone"}])
        out.append(
            {
                "request": request,
                "suppressed": suppressed if rng.random() < 0.2 else frozenset(),
                "sticky": stored,
            }
        )
    return out


@pytest.fixture(scope="module")
def wide_bundle_dir(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "wide"
    with_policy(bundle_dir, out, msgspec.convert(WIDE_POLICY, PolicyConfig), "wide-policy")
    return out


@pytest.fixture(scope="module")
def narrow_bundle_dir(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "narrow"
    with_policy(bundle_dir, out, msgspec.convert(TEST_POLICY, PolicyConfig), "test-policy")
    return out


@pytest.mark.parametrize("which", ["plain", "narrow", "wide"])
def test_the_plan_decides_as_the_reference_byte_for_byte(  # type: ignore[no-untyped-def]
    which: str, bundle_dir, narrow_bundle_dir, wide_bundle_dir
) -> None:
    path = {"plain": bundle_dir, "narrow": narrow_bundle_dir, "wide": wide_bundle_dir}[which]
    plan, reference = _pair(path)
    slots = plan._variants.ids
    visits = _visits(3000, seed=len(which), slots=slots)
    differing = []
    for i, v in enumerate(visits):
        mine = plan.decide(v["request"], suppressed=v["suppressed"], sticky=v["sticky"])
        theirs = reference.decide(v["request"], suppressed=v["suppressed"], sticky=v["sticky"])
        if _encode(mine) != _encode(theirs):
            differing.append(i)
    assert differing == []
    # the batch path too, with the same inputs
    chunk = visits[:512]
    args = {
        "suppressed": [v["suppressed"] for v in chunk],
        "sticky": [v["sticky"] for v in chunk],
    }
    mine_many = plan.decide_many([v["request"] for v in chunk], **args)
    theirs_many = reference.decide_many([v["request"] for v in chunk], **args)
    assert [_encode(d) for d in mine_many] == [_encode(d) for d in theirs_many]
    # the memos were used on this distinct-visitor traffic, and the reference kept none
    stats = plan.plan_stats()
    assert stats["eligibility"]["hits"] > 2000 and stats["slot targeting"]["rate"] > 0.9
    assert all(s["hits"] == 0 and s["size"] == 0 for s in reference.plan_stats().values())
    if which == "wide":
        exposed = {k for d in mine_many for k in (d.experiment or {})}
        assert {"touch_hero", "behaviour_banner", "campaign_reco", "holdout"} <= exposed
        # the behaviour experiment reads an object: never a key, always evaluated directly
        behaviour = stats["experiment behaviour_banner"]
        assert behaviour["size"] == 0 and behaviour["hits"] == 0


def test_the_recorded_decisions_hold_on_the_reference_path_too() -> None:
    """The plan reproduces the recorded decisions (``tests/contract``); so does the reference
    path, so both are what the code decided before the plan existed."""
    bundle = load_bundle(RECORDED / "bundle")
    reference = Decider(bundle, clock=lambda: RECORDED_NOW, new_id=_ids(), plan=False)
    cases = _cases()
    for case in cases:
        request = msgspec.convert(case["request"], DecideRequest)
        profile = msgspec.convert(case["profile"], Behavior) if case["profile"] else None
        suppressed = frozenset(case["suppressed"])  # type: ignore[arg-type]
        decision = reference.decide(request, profile=profile, suppressed=suppressed)
        assert _canonical(_encode(decision)) == _encode(case["decision"])


def _vectors() -> list[dict[str, Any]]:
    cases = json.loads(VECTORS.read_text())["cases"]
    # the decider's attributes are always an object (evaluate_condition's total form answers
    # false for anything else)
    return [
        c for c in cases
        if not c["name"].startswith("malformed") and isinstance(c["attributes"], dict)
    ]  # fmt: skip


def test_a_memoised_condition_equals_the_condition_on_every_vector() -> None:
    """Each condition of the language's vectors, memoised, is evaluated on the attributes of
    every vector (twice, so answers come from the memo filled by other values): the memo never
    confuses ``true`` with ``1``, ``null`` with missing, or an array with its elements."""
    cases = _vectors()
    assert len(cases) > 100
    attributes = [c["attributes"] for c in cases]
    for case in cases:
        condition = case["condition"]
        memo = Memo(
            "vector",
            condition_paths(condition),
            compile_condition(condition),
            thresholds=numeric_thresholds([condition]),
        )
        for _ in range(2):
            for attrs in attributes:
                assert memo(attrs) == evaluate(condition, attrs), (case["name"], attrs)
        got = memo(case["attributes"])
        assert got is case["expected"], case["name"]


def test_numeric_thresholds_are_the_numbers_a_path_is_only_compared_with() -> None:
    conditions = [
        {"purchases": {"$gte": 1}, "days": {"$lte": 30, "$gt": 7}},
        {"$or": [{"purchases": {"$gte": 5}}, {"purchases": 0}]},
        {"days": {"$lt": 90}, "name": "x", "flag": {"$exists": True}},
        {"mixed": 3},
        {"mixed": {"$in": [1, 2]}},  # read otherwise too: not only compared with numbers
        {"boolish": True},
    ]
    for c in conditions:
        check_condition(c)
    assert numeric_thresholds(conditions) == {
        "purchases": (0, 1, 5),
        "days": (7, 30, 90),
    }
    # on the lifecycle rules of a bundle, days since the last purchase has a few kinds
    memo: Memo[bool] = Memo(
        "days",
        ["days"],
        compile_condition(conditions[0]),
        thresholds=numeric_thresholds(conditions),
    )
    for day in range(200):
        memo({"purchases": 2, "days": day + 0.5})
    assert memo.stats()["size"] <= 4 and memo.stats()["hits"] >= 196


def test_condition_paths_are_the_keys_a_condition_reads() -> None:
    condition = {
        "$and": [{"a.b": 1}, {"$or": [{"c": {"$gt": 2}}, {"$nor": [{"d": "x"}]}]}],
        "$not": {"e": {"$elemMatch": {"inner": 1}}},
        "a.b": {"$ne": 3},
    }
    check_condition(condition)
    assert condition_paths(condition) == ("a.b", "c", "d", "e")
    assert condition_paths({}) == ()


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, 2.5, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["a", "b", ""]), st.lists(st.sampled_from(["a", 1, True]), max_size=2),
)  # fmt: skip
_attributes = st.dictionaries(st.sampled_from(["x", "y"]), _values, max_size=2)


CONDITIONS: list[dict[str, Any]] = [
    {"x": True},
    {"x": 1, "y": {"$exists": False}},
    {"x": {"$in": ["a", 1]}},
    {"$or": [{"x": {"$gte": 1}}, {"y": None}]},
    {"x": {"$type": "number"}},
    {"y": {"$size": 1}},
    # only numbers compared: keyed by position among the thresholds
    {"x": {"$gte": 1, "$lt": 2.5}, "y": {"$ne": 0}},
    {"$or": [{"x": -0.0}, {"x": {"$gt": 2}}], "$nor": [{"y": {"$lte": -3}}]},
    {"$not": {"x": {"$eq": 1.0}}},
]


@settings(max_examples=400, deadline=None)
@given(st.lists(_attributes, min_size=1, max_size=12), st.sampled_from(range(len(CONDITIONS))))
def test_a_memo_answers_as_its_function_whatever_the_values(
    seen: list[dict[str, Any]], which: int
) -> None:
    condition = CONDITIONS[which]
    cuts = numeric_thresholds([condition])
    memo = Memo(
        "prop", condition_paths(condition), compile_condition(condition), limit=4, thresholds=cuts
    )
    for attrs in seen + seen[::-1]:
        assert memo(attrs) == evaluate(condition, attrs)
    assert memo.stats()["size"] <= 4


def test_a_memo_is_bounded_counts_and_can_be_switched_off() -> None:
    calls: list[Any] = []

    def fn(a: Any) -> Any:
        calls.append(a)
        return a.get("k")

    memo: Memo[Any] = Memo("count", ["k"], fn, limit=3)
    for k in [1, 2, 1, 2, 3, 4, 1]:
        memo({"k": k})
    stats = memo.stats()
    assert (stats["hits"], stats["misses"]) == (2, 5) and stats["size"] <= 3
    assert memo({"k": True}) is True and memo({"k": 1}) == 1  # typed keys
    memo.reset()
    assert memo.stats() == {"hits": 0, "misses": 0, "rate": 0.0, "size": 0}
    off: Memo[Any] = Memo("off", ["k"], fn, limit=0)
    before = len(calls)
    for _ in range(5):
        off({"k": 1})
    assert len(calls) == before + 5 and off.stats()["size"] == 0
