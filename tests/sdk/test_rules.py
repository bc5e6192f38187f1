"""The rules step on its own: lifecycle stages, offer eligibility, suppression and reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from sdk._rules import CONSENT_LIFECYCLE, Rules, decision_attributes, lifecycle_facts
from sdk.features import FEATURE_SET_VERSION, build_features
from sdk.manifest import LifecycleDef, LifecycleRule, Manifest, manifest_decoder
from sdk.schema import Behavior, Campaign, Context, DecideRequest, Lifecycle, Page

MANIFEST = (
    Path(__file__).resolve().parents[1] / "fixtures" / "recorded" / "bundle" / "manifest.json"
)
NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
#: offer_classes order of the recorded bundle
CLASSES = [
    "app_download",
    "buying_guide",
    "clearance_sale",
    "coupon_15",
    "loyalty_points",
    "new_arrivals",
    "welcome_10",
    "winback_20",
]


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return manifest_decoder.decode(MANIFEST.read_bytes())


@pytest.fixture(scope="module")
def rules(manifest: Manifest) -> Rules:
    return Rules(manifest)


def _request(user_agent: str = "", path: str = "/", medium: str | None = None) -> DecideRequest:
    return DecideRequest(
        visitor_id="v1",
        context=Context(
            page=Page(url=f"https://shop.example{path}", path=path),
            campaign=Campaign(medium=medium, source="news" if medium else None),
            user_agent=user_agent,
        ),
    )


def _attributes(lifecycle: str, device: str = "desktop") -> dict[str, object]:
    return {"lifecycle": lifecycle, "device": {"type": device}}


def test_manifest_offer_classes_are_the_ones_these_tests_assume(manifest: Manifest) -> None:
    assert manifest.offer_classes == CLASSES


@pytest.mark.parametrize(
    ("behavior", "stage", "rule"),
    [
        ({"purchases": 1.0, "daysSinceLastPurchase": 200.0}, "dormant", "lifecycle.rules[0]"),
        ({"purchases": 1.0, "daysSinceLastPurchase": 90.0}, "at_risk", "lifecycle.rules[1]"),
        ({"purchases": 6.0, "daysSinceLastPurchase": 40.0}, "loyal", "lifecycle.rules[2]"),
        ({"purchases": 3.0, "daysSinceLastPurchase": 10.0}, "loyal", "lifecycle.rules[2]"),
        ({"purchases": 3.0, "daysSinceLastPurchase": 45.0}, "repeat", "lifecycle.rules[3]"),
        ({"purchases": 1.0, "daysSinceLastPurchase": 5.0}, "new", "lifecycle.rules[4]"),
        ({}, "prospect", "lifecycle.default"),
    ],
)
def test_the_first_matching_lifecycle_rule_names_the_stage(
    rules: Rules, behavior: dict[str, float], stage: str, rule: str
) -> None:
    facts = lifecycle_facts(msgspec.convert(behavior, Behavior))
    assert rules.lifecycle(facts) == Lifecycle(stage=stage, rule=rule)


def test_rule_order_decides_between_overlapping_rules(manifest: Manifest) -> None:
    overlapping = LifecycleDef(
        rules=[
            LifecycleRule(stage="first", when={"purchases": {"$gte": 1}}),
            LifecycleRule(stage="second", when={"purchases": {"$gte": 1}}),
        ],
        default="none",
    )
    rules = Rules(msgspec.structs.replace(manifest, lifecycle=overlapping))
    assert rules.lifecycle({"purchases": 2.0}).stage == "first"
    assert rules.lifecycle({"purchases": 0.0}) == Lifecycle(stage="none", rule="lifecycle.default")


def test_lifecycle_facts_fill_missing_counters() -> None:
    facts = lifecycle_facts(Behavior())
    assert facts == {
        "purchases": 0.0,
        "revenue": 0.0,
        "sessionCount": 1.0,  # a visit is at least one session
        "pageViews": 0.0,
        "daysSinceLastPurchase": None,
        "daysSinceLastVisit": None,
        "cartItems": 0.0,
    }
    assert lifecycle_facts(Behavior(session_count=0.0))["sessionCount"] == 0.0


def test_offers_rank_by_score_then_id_with_rounded_scores(rules: Rules) -> None:
    probas = [0.1, 0.3, 0.3, 0.05, 0.05, 0.1234567891, 0.2, 0.01]
    ranked = rules.rank(probas, _attributes("prospect"), frozenset())
    # prospect on a desktop: app_download, coupon_15, loyalty_points, winback_20 are ineligible
    assert [o.id for o in ranked] == [
        "buying_guide",
        "clearance_sale",
        "welcome_10",
        "new_arrivals",
    ]
    assert [o.rank for o in ranked] == [1, 2, 3, 4]
    assert ranked[3].score == 0.123457
    assert ranked[0].name == "Buying guides and comparisons"


def test_eligibility_reads_device_and_lifecycle(rules: Rules) -> None:
    probas = [0.9, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.4]
    mobile = [o.id for o in rules.rank(probas, _attributes("at_risk", "mobile"), frozenset())]
    assert mobile[:3] == ["app_download", "coupon_15", "winback_20"]
    desktop = [o.id for o in rules.rank(probas, _attributes("at_risk"), frozenset())]
    assert "app_download" not in desktop and desktop[:2] == ["coupon_15", "winback_20"]


def test_suppressed_offers_are_never_ranked(rules: Rules) -> None:
    probas = [0.0, 0.9, 0.8, 0.0, 0.0, 0.7, 0.0, 0.0]
    ranked = rules.rank(probas, _attributes("prospect"), frozenset({"buying_guide"}))
    assert [o.id for o in ranked][:2] == ["clearance_sale", "new_arrivals"]
    assert ranked[0].rank == 1


def test_offer_reasons_name_suppressions_sorted_then_the_top_offer(rules: Rules) -> None:
    probas = [0.0, 0.9, 0.8, 0.0, 0.0, 0.7, 0.0, 0.0]
    suppressed = frozenset({"winback_20", "buying_guide"})
    ranked = rules.rank(probas, _attributes("prospect"), suppressed)
    reasons = rules.offer_reasons(ranked, suppressed)
    assert [r.code for r in reasons] == ["offer.suppressed", "offer.top"]
    assert reasons[0].message.endswith(": buying_guide, winback_20")
    assert reasons[1].message == (
        f"clearance_sale ranks first of {len(ranked)} eligible offers (score 0.800)"
    )
    assert rules.offer_reasons([], frozenset()) == []


def test_lifecycle_reason_and_the_consent_lifecycle() -> None:
    reason = Rules.lifecycle_reason(Lifecycle(stage="loyal", rule="lifecycle.rules[2]"))
    assert (reason.code, reason.message) == (
        "lifecycle.rule",
        "lifecycle loyal by lifecycle.rules[2]",
    )
    assert Lifecycle(stage="unknown", rule="consent") == CONSENT_LIFECYCLE


def test_decision_attributes_expose_what_conditions_read() -> None:
    request = _request(
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
        path="/sale",
        medium="email",
    )
    row = build_features(request, None, NOW, FEATURE_SET_VERSION)
    facts = {"purchases": 2.0}
    attributes = decision_attributes(request, row, "researchers", "repeat", facts)
    assert attributes["persona"] == "researchers"
    assert attributes["lifecycle"] == "repeat"
    assert attributes["behavior"] is facts
    assert attributes["page"] == {"path": "/sale"}
    assert attributes["campaign"] == {"source": "news", "medium": "email", "name": None}
    assert attributes["device"]["type"] == row.signals.device_type == "mobile"  # type: ignore[index]
    assert attributes["referrer"] == {
        "class": row.signals.referrer_class,
        "source": row.signals.referrer_source,
    }
    assert list(attributes) == [
        "persona",
        "lifecycle",
        "device",
        "referrer",
        "country",
        "page",
        "campaign",
        "behavior",
        "localHour",
        "localWeekday",
    ]
    # without facts, the row's behaviour gives them
    again = decision_attributes(request, row, None, "prospect")
    assert again["behavior"] == lifecycle_facts(row.behavior)
