"""Sticky experiment assignments (issue 16): the policy keeps a visitor's stored arm of a
sticky experiment while the experiment runs and the arm exists, whatever the weights,
coverage, targeting or namespace say now; a new bucket version re-randomises; the decider
takes the stored arms as an input and says which to store.

Before: an arm was only ``hash_unit(seed, visitorId)`` against the current weights, so a
weight or coverage change moved visitors who had already been exposed.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from model_export.bundle.policy import PolicyConfig, with_policy
from model_export.inputs.catalogue import Catalogue, load_catalogue
from sdk import Decider, load_bundle
from sdk._policy import assign, bucket_seed, sticky_fields
from sdk.manifest import ArmDef, ExperimentDef, NamespaceDef
from sdk.schema import Consent, DecideRequest
from tests.conftest import FIXED_NOW

IDS = [f"visitor-{i}" for i in range(2000)]
SLOTS = ["hero", "banner"]


def _exp(weights: list[float], **kw: object) -> ExperimentDef:
    arms = [ArmDef(key=f"arm{i}", weight=w) for i, w in enumerate(weights)]
    return ExperimentDef(key="split", arms=arms, **kw)  # type: ignore[arg-type]


def _arm(exp: ExperimentDef, vid: str, stored: dict[str, str] | None = None) -> str | None:
    out = assign([exp], None, {"visitorId": vid}, SLOTS, True, sticky=stored)
    return out.arms.get("split")


def test_a_stored_arm_beats_weights_coverage_targeting_and_namespace() -> None:
    stored = {"split:1": "arm1"}
    for exp in (
        _exp([1, 0], sticky=True),  # the hash can only give arm0
        _exp([1, 1], sticky=True, coverage=0.0),  # nobody new is let in
        _exp([1, 1], sticky=True, condition={"segment": 99}),  # targeting no longer matches
        _exp([1, 1], sticky=True, namespace=NamespaceDef(name="n", start=0.0, end=0.0)),
    ):
        assert all(_arm(exp, v, stored) == "arm1" for v in IDS[:200])
        # without a stored arm the same experiment assigns by hash as before
        assert all(_arm(exp, v) in (None, "arm0") for v in IDS[:200])


def test_the_slot_rule_still_decides_exposure() -> None:
    exp = _exp([1, 0], sticky=True, slots=["elsewhere"])
    assert _arm(exp, "v1", {"split:1": "arm1"}) is None  # it decides no slot of the visit


def test_stored_arms_are_ignored_when_not_sticky_gone_or_stopped() -> None:
    arm1 = {"split:1": "arm1"}
    assert all(_arm(_exp([1, 0]), v, arm1) == "arm0" for v in IDS[:200])  # not sticky
    gone = {"split:1": "arm7"}  # removed from the experiment since
    assert all(_arm(_exp([1, 0], sticky=True), v, gone) == "arm0" for v in IDS[:200])
    stopped = _exp([1, 1], sticky=True, status="stopped")
    assert all(_arm(stopped, v, arm1) is None for v in IDS[:200])


def test_a_new_bucket_version_rerandomises() -> None:
    v1 = _exp([1, 1], sticky=True)
    v2 = _exp([1, 1], sticky=True, bucket_version=2)
    assert (v1.sticky_key, v2.sticky_key) == ("split:1", "split:2")
    assert (bucket_seed(v1), bucket_seed(v2)) == ("split", "split/v2")
    first = {v: _arm(v1, v) for v in IDS}
    # the arms stored under version 1 are forgotten, and the draw itself is a new one
    again = {v: _arm(v2, v, {"split:1": str(first[v])}) for v in IDS}
    moved = sum(first[v] != again[v] for v in IDS)
    assert 800 < moved < 1200  # about half of two even arms
    kept = {v: _arm(v2, v, {"split:2": "arm0"}) for v in IDS}
    assert set(kept.values()) == {"arm0"}  # and version 2's own stored arms are kept


def test_version_one_assigns_exactly_as_before() -> None:
    for vid in IDS[:500]:
        assert _arm(_exp([1, 2, 1], sticky=True), vid) == _arm(_exp([1, 2, 1]), vid)


def test_sticky_fields_names_new_exposures_of_sticky_experiments_only() -> None:
    sticky = _exp([1, 1], sticky=True, bucket_version=3)
    plain = msgspec.structs.replace(_exp([1, 1]), key="plain")
    arms = {"split": "arm1", "plain": "arm0", "holdout": "personalized"}
    assert sticky_fields([sticky, plain], arms, {}) == {"split:3": "arm1"}
    assert sticky_fields([sticky, plain], arms, {"split:3": "arm1"}) == {}
    assert sticky_fields([sticky, plain], arms, {"split:3": "arm0"}) == {"split:3": "arm1"}
    assert sticky_fields([sticky, plain], None, {}) == {}


def test_bucket_version_must_be_positive() -> None:
    with pytest.raises(msgspec.ValidationError, match="bucketVersion"):
        msgspec.convert(
            {"key": "x", "arms": [{"key": "a"}, {"key": "b"}], "bucketVersion": 0},
            ExperimentDef,
        )


def test_the_catalogue_carries_sticky_experiments() -> None:
    raw = msgspec.json.decode(msgspec.json.encode(msgspec.to_builtins(load_catalogue())))
    raw["experiments"] = [
        {"key": "hero_sticky", "slots": ["hero"], "sticky": True, "bucketVersion": 2}
        | {"arms": [{"key": "a"}, {"key": "b"}]}
    ]
    catalogue = msgspec.convert(raw, Catalogue)
    exp = catalogue.experiments[0]
    assert exp.sticky and exp.bucket_version == 2


# --- through a bundle and the Decider ------------------------------------------------------

STICKY_POLICY = {
    "experiments": [
        {
            "key": "hero_sticky",
            "slots": ["hero"],
            "sticky": True,
            "arms": [
                {"key": "generic", "policy": "default"},
                {"key": "guide", "policy": "variants", "variants": {"hero": "hero_guide"}},
            ],
        },
        {"key": "banner_plain", "slots": ["banner"], "arms": [{"key": "a"}, {"key": "b"}]},
    ]
}


@pytest.fixture(scope="module")
def sticky_decider(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Decider:
    out = tmp_path_factory.mktemp("bundles") / "sticky"
    manifest = with_policy(
        bundle_dir, out, msgspec.convert(STICKY_POLICY, PolicyConfig), "test-sticky"
    )
    assert [(e.key, e.sticky, e.bucket_version) for e in manifest.experiments] == [
        ("hero_sticky", True, 1),
        ("banner_plain", False, 1),
    ]
    return Decider(load_bundle(out), clock=lambda: FIXED_NOW)


def _request(i: int) -> DecideRequest:
    return msgspec.convert(
        {
            "visitorId": f"d{i}",
            "sessionId": "s1",
            "consent": {"personalization": True, "storage": True},
            "context": {"page": {"url": "https://shop.example.com/", "path": "/"}},
            "slots": ["hero", "banner"],
        },
        DecideRequest,
    )


def test_the_decider_honours_stored_arms_and_says_what_to_store(
    sticky_decider: Decider, bundle_dir: Path
) -> None:
    assert sticky_decider.sticky
    assert not Decider(load_bundle(bundle_dir), clock=lambda: FIXED_NOW).sticky
    requests = [_request(i) for i in range(200)]
    fresh = sticky_decider.decide_many(requests)
    for decision in fresh:
        assert decision.experiment is not None
        arm = decision.experiment["hero_sticky"]
        assert sticky_decider.sticky_fields(decision, {}) == {"hero_sticky:1": arm}
        assert sticky_decider.sticky_fields(decision, {"hero_sticky:1": arm}) == {}
    # every visitor given the other arm as stored keeps it, in both the single and batch path
    flipped = [
        {
            "hero_sticky:1": "guide"
            if d.experiment and d.experiment["hero_sticky"] == "generic"
            else "generic"
        }
        for d in fresh
    ]
    batch = sticky_decider.decide_many(requests, sticky=flipped)
    for decision, stored in zip(batch, flipped, strict=True):
        assert decision.experiment is not None
        assert decision.experiment["hero_sticky"] == stored["hero_sticky:1"]
        hero = decision.slots["hero"]
        assert hero.arm == f"hero_sticky:{stored['hero_sticky:1']}"
        if stored["hero_sticky:1"] == "guide":
            assert hero.variant_id == "hero_guide"
    single = sticky_decider.decide(requests[0], sticky=flipped[0])
    assert single.experiment is not None
    assert single.experiment["hero_sticky"] == flipped[0]["hero_sticky:1"]
    # the non-sticky experiment ignores anything stored for it
    plain = sticky_decider.decide_many(requests, sticky=[{"banner_plain:1": "b"}] * 200)
    assert [d.experiment for d in plain] == [d.experiment for d in fresh]


def test_without_personalization_consent_nothing_is_assigned(sticky_decider: Decider) -> None:
    request = msgspec.structs.replace(_request(1), consent=Consent())
    decision = sticky_decider.decide(request, sticky={"hero_sticky:1": "guide"})
    assert decision.experiment is None
    assert sticky_decider.sticky_fields(decision, {}) == {}
