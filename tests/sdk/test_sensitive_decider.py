"""Sensitive categories and paths in the decider and at bundle load, with the session's bundle
(trained on the demo catalogue, whose ``sensitive`` section marks pharmacy and health)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sdk import BundleFormatError, Decider, SensitiveRuleError, load_bundle
from sdk.bundle import Bundle
from sdk.features import FeatureRow
from sdk.schema import Behavior, DecideRequest, Decision
from tests.conftest import FIXED_NOW

MakeRequest = Callable[..., dict[str, object]]
RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded" / "bundle"


@pytest.fixture(scope="module")
def fixed(bundle: Bundle) -> Decider:
    """A decider whose decision ids are all the same, so whole decisions compare."""
    return Decider(bundle, clock=lambda: FIXED_NOW, new_id=lambda: "d" * 32)


def _decide(decider: Decider, body: dict[str, object], **kw: Any) -> tuple[Decision, FeatureRow]:
    rows: list[FeatureRow] = []
    decision = decider.decide(msgspec.convert(body, DecideRequest), rows=rows, **kw)
    return decision, rows[0]


def test_the_bundle_carries_the_catalogue_sensitive_set(fixed: Decider) -> None:
    s = fixed.sensitivity
    assert {"pharmacy", "health", "pregnancy"} <= s.categories
    assert "/pharmacy" in s.paths
    assert fixed.bundle.manifest.sensitive.categories  # written by training, read back


def test_a_sensitive_category_changes_nothing(fixed: Decider, make_request: MakeRequest) -> None:
    plain = make_request(behavior={"pageViews": 4, "categoriesViewed": ["home", "home"]})
    marked = make_request(
        behavior={"pageViews": 4, "categoriesViewed": ["Pharmacy", "home", "pregnancy", "home"]}
    )
    d1, row1 = _decide(fixed, plain)
    d2, row2 = _decide(fixed, marked)
    assert row2.values == row1.values  # categories_distinct and the shares alike
    assert row2.behavior.categories_viewed == ["home", "home"]
    assert d2 == d1


def test_a_sensitive_category_in_the_stored_profile_changes_nothing(
    fixed: Decider, make_request: MakeRequest
) -> None:
    body = make_request(behavior={"pageViews": 2})
    bought = {"purchases": 2, "revenue": 80, "days_since_last_purchase": 9}
    bought |= {"days_since_first_purchase": 200, "days_since_last_visit": 3}
    clean = Behavior(categories_viewed=["beauty"], **bought)
    marked = Behavior(categories_viewed=["health", "beauty", "PHARMACY"], **bought)
    d1, row1 = _decide(fixed, body, profile=clean)
    d2, row2 = _decide(fixed, body, profile=marked)
    assert row2.values == row1.values and row2.behavior == row1.behavior
    assert d2 == d1


def test_a_sensitive_page_is_decided_without_its_path(
    fixed: Decider, make_request: MakeRequest
) -> None:
    page = {
        "url": "https://shop.example.com/pharmacy/pregnancy-tests?gclid=abc&q=tests",
        "path": "/pharmacy/pregnancy-tests",
        "title": "Pregnancy tests",
    }
    anonymous = {"url": "https://shop.example.com/?gclid=abc"}
    context = make_request()["context"]
    assert isinstance(context, dict)
    d1, row1 = _decide(fixed, make_request(context={**context, "page": anonymous}))
    d2, row2 = _decide(fixed, make_request(context={**context, "page": page}))
    assert row2 == row1
    assert row2.signals.referrer_class == "paid"  # attribution survives the scrub
    assert d2 == d1


def test_decide_many_and_replay_scrub_too(fixed: Decider, make_request: MakeRequest) -> None:
    clean = msgspec.convert(make_request(behavior={"categoriesViewed": ["books"]}), DecideRequest)
    marked = msgspec.convert(
        make_request(behavior={"categoriesViewed": ["books", "health"]}), DecideRequest
    )
    rows: list[FeatureRow] = []
    d_clean, d_marked = fixed.decide_many([clean, marked], rows=rows)
    assert rows[0] == rows[1] and d_clean == d_marked
    # same batch size as above: onnxruntime's float32 sums can differ in the last digit
    assert fixed.replay([clean, marked], rows) == [d_clean, d_clean]


def test_old_bundles_scrub_nothing(make_request: MakeRequest) -> None:
    old = Decider(load_bundle(RECORDED), clock=lambda: FIXED_NOW)
    assert not old.sensitivity
    request = msgspec.convert(
        make_request(behavior={"categoriesViewed": ["pharmacy"]}), DecideRequest
    )
    assert old.sensitivity.scrub_request(request) is request


def _edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_a_bundle_with_a_rule_on_a_sensitive_category_is_refused(bundle_copy: Path) -> None:
    def edit(m: dict[str, Any]) -> None:
        offer = next(o for o in m["offers"] if o["id"] == "coupon_15")
        offer["eligibility"] = {"categoriesViewed": {"$elemMatch": {"$eq": "pregnancy"}}}

    _edit_manifest(bundle_copy, edit)
    with pytest.raises(SensitiveRuleError, match=r"offer 'coupon_15' eligibility.*'pregnancy'"):
        load_bundle(bundle_copy)


def test_a_bundle_with_a_rule_on_a_sensitive_path_is_refused(bundle_copy: Path) -> None:
    def edit(m: dict[str, Any]) -> None:
        m["slots"][0]["variants"][1]["when"] = {"page.path": {"$regex": "^/pharm"}}

    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleFormatError, match=r"slot 'hero' variant .*'/pharmacy'"):
        load_bundle(bundle_copy)


def test_marking_a_category_sensitive_refuses_the_offers_in_it(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m["sensitive"]["categories"].append("electronics"))
    with pytest.raises(SensitiveRuleError, match=r"offer 'new_arrivals' is in sensitive"):
        load_bundle(bundle_copy)
