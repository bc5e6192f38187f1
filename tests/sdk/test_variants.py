"""The slot-variant step on its own: targeting, offer variants, arms, holdout, exploration."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sdk._policy import EXPLORE_SEED, Assignment, Exploration
from sdk._variants import Variants, slot_decision
from sdk.hashing import prefix_state
from sdk.manifest import ArmDef, Manifest, SlotDef, manifest_decoder
from sdk.schema import RankedOffer, Reason

MANIFEST = (
    Path(__file__).resolve().parents[1] / "fixtures" / "recorded" / "bundle" / "manifest.json"
)
NO_EXPLORING = Exploration(epsilon=0.0, visit="v|s", state=None)


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return manifest_decoder.decode(MANIFEST.read_bytes())


@pytest.fixture
def variants(manifest: Manifest) -> Variants:
    return Variants(manifest)


def _slot(manifest: Manifest, slot_id: str) -> SlotDef:
    return next(s for s in manifest.slots if s.id == slot_id)


def _ranked(*ids: str) -> list[RankedOffer]:
    return [
        RankedOffer(id=offer, name=offer, score=1.0 - i / 10, rank=i)
        for i, offer in enumerate(ids, 1)
    ]


def _exploring(epsilon: float, visit: str) -> Exploration:
    return Exploration(epsilon=epsilon, visit=visit, state=prefix_state(EXPLORE_SEED, visit + "|"))


def test_slot_decision_copies_the_content_with_propensity_one(manifest: Manifest) -> None:
    variant = _slot(manifest, "hero").variants[1]
    made = slot_decision(variant, "because")
    assert (made.variant_id, made.offer_id, made.reason) == (variant.id, variant.offer, "because")
    assert made.propensity == 1.0 and made.candidates is None
    assert made.content.html == variant.content.html and made.content.type == "html"


def test_slot_decisions_are_built_once_per_variant_and_reason(
    variants: Variants, manifest: Manifest
) -> None:
    variant = _slot(manifest, "hero").variants[0]
    assert variants.slot(variant, "a") is variants.slot(variant, "a")
    assert variants.slot(variant, "a") is not variants.slot(variant, "b")


def test_the_best_ranked_offer_with_a_variant_decides(
    variants: Variants, manifest: Manifest
) -> None:
    hero = _slot(manifest, "hero")
    # welcome_10 has no recommendation variant, new_arrivals does
    chosen = variants.choose(hero, _ranked("coupon_15", "new_arrivals"), {}, NO_EXPLORING)
    assert (chosen.variant_id, chosen.reason) == ("hero_coupon", "offer coupon_15 ranked 1")
    reco = _slot(manifest, "recommendation")
    chosen = variants.choose(reco, _ranked("welcome_10", "new_arrivals"), {}, NO_EXPLORING)
    assert (chosen.variant_id, chosen.reason) == ("reco_new", "offer new_arrivals ranked 2")
    none = variants.choose(reco, _ranked("welcome_10"), {}, NO_EXPLORING)
    assert (none.variant_id, none.reason) == ("reco_default", "default variant")
    assert none.propensity == 1.0 and none.candidates is None


def test_a_targeting_rule_wins_over_offers(variants: Variants, manifest: Manifest) -> None:
    banner = _slot(manifest, "banner")
    email = {"referrer": {"class": "email"}}
    chosen = variants.choose(banner, _ranked("coupon_15"), email, _exploring(0.5, "v|s"))
    assert (chosen.variant_id, chosen.reason) == (
        "banner_email",
        "targeting rule of banner_email matched",
    )
    assert chosen.propensity == 1.0  # targeting is never explored
    other = variants.choose(
        banner, _ranked("coupon_15"), {"referrer": {"class": "direct"}}, NO_EXPLORING
    )
    assert other.variant_id == "banner_coupon"


def test_offer_variant_conditions_are_respected(manifest: Manifest) -> None:
    hero = _slot(manifest, "hero")
    guarded = [
        msgspec.structs.replace(v, when={"device.type": "mobile"}) if v.id == "hero_coupon" else v
        for v in hero.variants
    ]
    slots = [
        msgspec.structs.replace(s, variants=guarded) if s.id == "hero" else s
        for s in manifest.slots
    ]
    variants = Variants(msgspec.structs.replace(manifest, slots=slots))
    hero = next(s for s in slots if s.id == "hero")
    ranked = _ranked("coupon_15", "new_arrivals")
    desktop = variants.choose(hero, ranked, {"device": {"type": "desktop"}}, NO_EXPLORING)
    assert (desktop.variant_id, desktop.reason) == ("hero_new", "offer new_arrivals ranked 2")
    mobile = variants.choose(hero, ranked, {"device": {"type": "mobile"}}, NO_EXPLORING)
    assert mobile.variant_id == "hero_coupon"


def test_exploration_logs_every_candidate_with_its_probability(
    variants: Variants, manifest: Manifest
) -> None:
    hero = _slot(manifest, "hero")
    ranked = _ranked("new_arrivals", "coupon_15")
    shown: dict[str, int] = {}
    for i in range(2000):
        chosen = variants.choose(hero, ranked, {}, _exploring(0.3, f"visitor{i}|s"))
        assert chosen.candidates is not None
        # the eligible variants and the default, in catalogue order
        assert [c.variant_id for c in chosen.candidates] == [
            "hero_default",
            "hero_coupon",
            "hero_new",
        ]
        probabilities = {c.variant_id: c.probability for c in chosen.candidates}
        assert probabilities == {"hero_default": 0.1, "hero_coupon": 0.1, "hero_new": 0.8}
        assert chosen.propensity == probabilities[chosen.variant_id]
        if chosen.variant_id != "hero_new":
            assert chosen.reason == "exploring (epsilon 0.3) among 3 candidates"
        shown[chosen.variant_id] = shown.get(chosen.variant_id, 0) + 1
    assert 0.76 < shown["hero_new"] / 2000 < 0.84
    assert shown["hero_default"] > 120 and shown["hero_coupon"] > 120


def test_exploration_is_deterministic_per_visit_and_slot(
    variants: Variants, manifest: Manifest
) -> None:
    hero = _slot(manifest, "hero")
    ranked = _ranked("new_arrivals", "coupon_15")
    picks = [variants.choose(hero, ranked, {}, _exploring(0.9, f"v{i}|s")) for i in range(50)]
    again = [variants.choose(hero, ranked, {}, _exploring(0.9, f"v{i}|s")) for i in range(50)]
    assert picks == again
    assert len({p.variant_id for p in picks}) == 3


@pytest.mark.parametrize(
    ("arm", "expected"),
    [
        (ArmDef(key="generic", policy="default"), "hero_default"),
        (ArmDef(key="guide", policy="variants", variants={"hero": "hero_guide"}), "hero_guide"),
        (ArmDef(key="model", policy="model"), None),
        (ArmDef(key="other", policy="variants", variants={"banner": "banner_app"}), None),
        (ArmDef(key="typo", policy="variants", variants={"hero": "no_such_variant"}), None),
    ],
)
def test_arms_fix_a_variant_or_leave_it_to_the_model(
    variants: Variants, manifest: Manifest, arm: ArmDef, expected: str | None
) -> None:
    fixed = variants.arm_variant(_slot(manifest, "hero"), "exp", arm)
    if expected is None:
        assert fixed is None
    else:
        assert fixed is not None
        assert (fixed.variant_id, fixed.reason) == (expected, f"experiment exp, arm {arm.key}")


def test_decide_applies_holdout_arms_and_reports_unknown_slots(variants: Variants) -> None:
    ranked = _ranked("coupon_15")
    reasons: list[Reason] = []
    held = variants.decide(
        ["hero", "nope", "banner"], Assignment(holdout=True), ranked, {}, NO_EXPLORING, reasons
    )
    assert list(held) == ["hero", "banner"]
    assert {s.variant_id for s in held.values()} == {"hero_default", "banner_default"}
    assert all(s.reason == "global holdout" for s in held.values())
    assert [(r.code, r.message) for r in reasons] == [
        ("slot.unknown", "slot 'nope' is not in the catalogue")
    ]

    arm = ArmDef(key="generic", policy="default")
    model_arm = ArmDef(key="b", policy="model")
    plan = Assignment(slots={"hero": ("hero_test", arm), "banner": ("banner_test", model_arm)})
    slots = variants.decide(["hero", "banner"], plan, ranked, {}, NO_EXPLORING, [])
    assert (slots["hero"].variant_id, slots["hero"].arm) == ("hero_default", "hero_test:generic")
    assert (slots["banner"].variant_id, slots["banner"].arm) == ("banner_coupon", "banner_test:b")
    plain = variants.decide(["banner"], Assignment(), ranked, {}, NO_EXPLORING, [])
    assert plain["banner"].arm is None
    assert variants.ids == ["hero", "banner", "recommendation"]
