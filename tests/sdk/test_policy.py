"""The policy layer: holdout, experiment assignment and epsilon-greedy exploration.

Assignment is tested on its own over 100,000 ids (uniformity, stickiness, independence,
namespaces, targeting) and through the Decider on ``policy_bundle_dir``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import msgspec
import pytest
from scipy import stats

from model_export.inputs.synth import generate
from sdk import Decider, load_bundle
from sdk._policy import (
    EXPLORE_SEED,
    HOLDOUT,
    PERSONALIZED,
    Exploration,
    Policy,
    assign,
    epsilon_for,
    explore,
)
from sdk.hashing import prefix_state
from sdk.manifest import (
    ArmDef,
    ExperimentDef,
    ExplorationDef,
    HoldoutDef,
    NamespaceDef,
    manifest_decoder,
)
from sdk.schema import DecideRequest
from tests.conftest import FIXED_NOW, TEST_POLICY

N = 100_000
IDS = [f"visitor-{i}" for i in range(N)]
SLOTS = ["hero", "banner"]


def _exp(key: str, weights: list[float], **kw: object) -> ExperimentDef:
    arms = [ArmDef(key=f"arm{i}", weight=w) for i, w in enumerate(weights)]
    return ExperimentDef(key=key, arms=arms, **kw)  # type: ignore[arg-type]


def _arms(experiments: list[ExperimentDef], vid: str, **attrs: object) -> dict[str, str]:
    return assign(experiments, None, {"visitorId": vid, **attrs}, SLOTS, True).arms


def test_arms_follow_the_weights_uniformly() -> None:
    exp = _exp("split", [1, 1, 2])
    counts = Counter(_arms([exp], v)["split"] for v in IDS)
    observed = [counts["arm0"], counts["arm1"], counts["arm2"]]
    assert stats.chisquare(observed, [N / 4, N / 4, N / 2]).pvalue > 0.001


def test_assignment_is_sticky_and_deterministic() -> None:
    exp = _exp("sticky", [1, 1])
    first = [_arms([exp], v)["sticky"] for v in IDS[:2000]]
    again = [_arms([exp], v)["sticky"] for v in IDS[:2000]]
    assert first == again
    # another seed reshuffles: the arms are not a function of the id alone
    other = [_arms([_exp("other", [1, 1])], v)["other"] for v in IDS[:2000]]
    assert first != other


def test_experiments_are_independent() -> None:
    a, b = _exp("a", [1, 1], slots=["hero"]), _exp("b", [1, 1, 1], slots=["banner"])
    table = Counter((arms["a"], arms["b"]) for arms in (_arms([a, b], v) for v in IDS))
    grid = [[table[(f"arm{i}", f"arm{j}")] for j in range(3)] for i in range(2)]
    assert stats.chi2_contingency(grid).pvalue > 0.001


def test_coverage_leaves_visitors_out() -> None:
    exp = _exp("partial", [1, 1], coverage=0.2)
    inside = sum("partial" in _arms([exp], v) for v in IDS)
    assert stats.binomtest(inside, N, 0.2).pvalue > 0.001


def test_namespaces_make_experiments_mutually_exclusive() -> None:
    left = _exp("left", [1, 1], namespace=NamespaceDef(name="ns", start=0.0, end=0.3))
    right = _exp("right", [1, 1], namespace=NamespaceDef(name="ns", start=0.3, end=1.0))
    both = [_arms([left, right], v) for v in IDS[:20_000]]
    assert not any("left" in a and "right" in a for a in both)
    assert all("left" in a or "right" in a for a in both)  # the ranges cover everyone
    share = sum("left" in a for a in both) / len(both)
    assert 0.28 < share < 0.32


def test_targeting_condition_and_missing_hash_attribute() -> None:
    exp = _exp("target", [1, 1], condition={"lifecycle": {"$in": ["prospect", "new"]}})
    assert "target" in _arms([exp], "v1", lifecycle="prospect")
    assert "target" not in _arms([exp], "v1", lifecycle="loyal")
    by_user = _exp("by_user", [1, 1], hash_attribute="userId")
    assert "by_user" not in _arms([by_user], "v1")  # no user id: not in the test
    assert "by_user" in _arms([by_user], "v1", userId="u1")
    stopped = _exp("stopped", [1, 1], status="stopped")
    assert _arms([stopped], "v1") == {}


def test_first_experiment_owns_a_slot() -> None:
    first = _exp("first", [1, 1], slots=["hero"])
    second = _exp("second", [1, 1])  # all slots
    plan = assign([first, second], None, {"visitorId": "v1"}, SLOTS, True)
    assert plan.slots["hero"][0] == "first"
    assert plan.slots["banner"][0] == "second"
    assert set(plan.arms) == {"first", "second"}


def test_an_experiment_that_decides_no_requested_slot_is_not_an_exposure() -> None:
    hero_only = _exp("hero_only", [1, 1], slots=["hero"])
    assert assign([hero_only], None, {"visitorId": "v1"}, ["banner"], True).arms == {}
    first = _exp("first", [1, 1], slots=["hero"])
    also_hero = _exp("also_hero", [1, 1], slots=["hero"])
    plan = assign([first, also_hero], None, {"visitorId": "v1"}, ["hero"], True)
    assert set(plan.arms) == {"first"}  # the slot was taken: the second saw nothing


def test_holdout_share_and_exclusion() -> None:
    holdout = HoldoutDef(share=0.05)
    exp = _exp("exp", [1, 1])
    plans = [assign([exp], holdout, {"visitorId": v}, SLOTS, True) for v in IDS]
    held = [p for p in plans if p.holdout]
    assert stats.binomtest(len(held), N, 0.05).pvalue > 0.001
    assert all(p.arms == {HOLDOUT: HOLDOUT} and not p.slots for p in held)
    assert all(p.arms[HOLDOUT] == PERSONALIZED and "exp" in p.arms for p in plans if not p.holdout)
    # no consent: no holdout, no experiment
    assert assign([exp], holdout, {"visitorId": "v"}, SLOTS, False).arms == {}


def test_explore_probabilities_and_frequency() -> None:
    candidates = ["a", "b", "c", "d"]
    chosen = Counter()
    for i in range(20_000):
        pick, probs = explore(candidates, "b", 0.2, f"visit-{i}|hero")
        assert abs(sum(p for _, p in probs) - 1.0) < 1e-12
        assert dict(probs)["b"] == pytest.approx(0.8 + 0.05)
        assert dict(probs)["a"] == pytest.approx(0.05)
        chosen[pick] += 1
    # the empirical choice frequencies are the stated probabilities
    observed = [chosen[c] for c in candidates]
    expected = [20_000 * (0.85 if c == "b" else 0.05) for c in candidates]
    assert stats.chisquare(observed, expected).pvalue > 0.001
    # deterministic per key, no exploration with one candidate or epsilon 0
    assert explore(candidates, "b", 0.2, "k") == explore(candidates, "b", 0.2, "k")
    assert explore(["a"], "a", 0.5, "k") == ("a", [("a", 1.0)])
    assert explore(candidates, "c", 0.0, "k")[0] == "c"


def test_epsilon_per_segment() -> None:
    exploration = ExplorationDef(epsilon=0.1, by_segment={"2": 0.3})
    assert epsilon_for(exploration, 2) == 0.3
    assert epsilon_for(exploration, 1) == 0.1
    assert epsilon_for(None, 2) == 0.0


RECORDED_MANIFEST = Path(__file__).resolve().parents[1] / "fixtures" / "recorded" / "bundle"


def test_policy_binds_the_manifests_experiments_with_compiled_targeting() -> None:
    manifest = manifest_decoder.decode((RECORDED_MANIFEST / "manifest.json").read_bytes())
    policy = Policy(manifest)
    seen: Counter[str] = Counter()
    for vid in IDS[:3000]:
        for lifecycle in ("prospect", "loyal"):
            attributes = {"visitorId": vid, "lifecycle": lifecycle}
            bound = policy.assign(attributes, ["hero", "banner"], True)
            plain = assign(
                manifest.experiments, manifest.holdout, attributes, ["hero", "banner"], True
            )
            assert bound == plain
            seen.update(bound.arms.keys())
    # the holdout and every experiment (banner_prospects only for prospects) are reached
    assert set(seen) == {"holdout", "hero_test", "banner_prospects", "banner_others"}
    assert policy.assign({"visitorId": "v"}, ["hero"], False) == assign(
        manifest.experiments, manifest.holdout, {"visitorId": "v"}, ["hero"], False
    )
    reason = policy.holdout_reason()
    assert reason.code == "experiment.holdout"


def test_policy_exploration_of_a_visit() -> None:
    manifest = manifest_decoder.decode((RECORDED_MANIFEST / "manifest.json").read_bytes())
    policy = Policy(manifest)  # epsilon 0.2, segment 0 never explores
    request = DecideRequest(visitor_id="v1", session_id="s1")
    explored = policy.exploration(request, 3, True)
    assert explored == Exploration(
        epsilon=0.2, visit="v1|s1", state=prefix_state(EXPLORE_SEED, "v1|s1|")
    )
    assert policy.exploration(request, 0, True) == Exploration(0.0, "v1|s1", None)
    assert policy.exploration(request, 3, False).epsilon == 0.0  # no consent, no exploring
    no_session = policy.exploration(DecideRequest(visitor_id="v1"), None, True)
    assert (no_session.epsilon, no_session.visit) == (0.2, "v1|")


# --- through the Decider --------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_decider(policy_bundle_dir: Path) -> Decider:
    return Decider(load_bundle(policy_bundle_dir), clock=lambda: FIXED_NOW)


def _requests(n: int, seed: int) -> list[msgspec.Struct]:
    out = []
    for i, visit in enumerate(generate(n, seed=seed)):
        out.append(
            msgspec.structs.replace(
                visit.request, visitor_id=f"p{seed}-{i}", session_id=f"s{i}", timestamp=FIXED_NOW
            )
        )
    return out


def test_decisions_record_arms_and_obey_them(policy_decider: Decider) -> None:
    manifest = policy_decider.bundle.manifest
    defaults = {s.id: s.default for s in manifest.slots}
    decisions = policy_decider.decide_many(_requests(3000, 5))  # type: ignore[arg-type]
    seen: Counter[str] = Counter()
    for d in decisions:
        assert d.experiment is not None and HOLDOUT in d.experiment
        if d.experiment[HOLDOUT] == HOLDOUT:
            seen["holdout"] += 1
            assert set(d.experiment) == {HOLDOUT}
            assert all(
                s.variant_id == defaults[k] and s.propensity == 1.0 for k, s in d.slots.items()
            )
            continue
        arm = d.experiment["hero_test"]
        seen[arm] += 1
        hero = d.slots["hero"]
        assert hero.arm == f"hero_test:{arm}"
        if arm == "generic":
            assert hero.variant_id == defaults["hero"]
        elif arm == "guide":
            assert hero.variant_id == "hero_guide"
        # banner: exactly one of the two namespaced experiments, only prospects in the first
        banner_exps = {"banner_prospects", "banner_others"} & set(d.experiment)
        assert len(banner_exps) <= 1
        if "banner_prospects" in d.experiment:
            assert d.lifecycle.stage == "prospect"
    assert seen["holdout"] > 200 and min(seen["control"], seen["generic"], seen["guide"]) > 700


def test_exploration_through_the_decider(policy_decider: Decider) -> None:
    decisions = policy_decider.decide_many(_requests(3000, 6))  # type: ignore[arg-type]
    explored = 0
    randomized = 0
    for d in decisions:
        for slot_id, s in d.slots.items():
            if s.candidates is None:
                assert s.propensity == 1.0
                continue
            randomized += 1
            probs = {c.variant_id: c.probability for c in s.candidates}
            assert abs(sum(probs.values()) - 1.0) < 1e-5
            assert probs[s.variant_id] == s.propensity
            assert d.segment is not None and d.segment.id != 0  # segment 0 has epsilon 0
            explored += s.reason.startswith("exploring")
            assert slot_id != "hero" or (
                d.experiment and d.experiment.get("hero_test") == "control"
            )
    assert randomized > 500
    assert 0.05 < explored / randomized < 0.25  # epsilon 0.2, minus draws of the greedy one


def test_same_visit_same_choice(policy_decider: Decider) -> None:
    requests = _requests(200, 7)
    a = policy_decider.decide_many(requests)  # type: ignore[arg-type]
    b = policy_decider.decide_many(requests)  # type: ignore[arg-type]
    strip = lambda d: {**msgspec.to_builtins(d), "decisionId": None}  # noqa: E731
    assert [strip(x) for x in a] == [strip(x) for x in b]


def test_test_policy_matches_the_manifest(policy_decider: Decider) -> None:
    m = policy_decider.bundle.manifest
    assert [e.key for e in m.experiments] == [e["key"] for e in TEST_POLICY["experiments"]]
    assert m.holdout is not None and m.holdout.share == TEST_POLICY["holdout"]["share"]
    assert m.model_version.startswith("test-policy-")


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        (
            {
                "key": "x",
                "arms": [
                    {"key": "a"},
                    {"key": "b", "policy": "variants", "variants": {"hero": "no_such_variant"}},
                ],
            },
            "has no variant 'no_such_variant'",
        ),
        (
            {
                "key": "x",
                "condition": {"lifecycle": {"$bogus": 1}},
                "arms": [{"key": "a"}, {"key": "b"}],
            },
            "unknown operator",
        ),
    ],
)
def test_a_bundle_with_a_broken_experiment_is_refused(
    bundle_copy: Path, experiment: dict[str, object], message: str
) -> None:
    import json

    from sdk import BundleFormatError

    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["experiments"] = [experiment]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleFormatError, match=message):
        load_bundle(bundle_copy)
