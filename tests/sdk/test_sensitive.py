"""Sensitive categories and paths: matching, scrubbing, the rule check and the manifest fields."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sdk._decider import BTYD_ONLY_SCORES, PREDICTIVE_SCORES
from sdk.logs import FULL_LOG, decision_record, event_record
from sdk.manifest import (
    PUBLIC_SCORES,
    ContentDef,
    ExperimentDef,
    LifecycleDef,
    LifecycleRule,
    Manifest,
    OfferDef,
    SensitiveDef,
    SlotDef,
    VariantDef,
    manifest_decoder,
)
from sdk.schema import Behavior, Context, DecideRequest, Decision, Event, Page
from sdk.sensitive import NO_SENSITIVITY, Sensitivity, normal_path

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded" / "bundle"

SENS = Sensitivity.from_def(
    SensitiveDef(categories=["Pharmacy", " health "], paths=["/health", "/pharmacy/"])
)


# --- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "sensitive"),
    [
        ("/health", True),
        ("/health/", True),
        ("/health/vitamins/x", True),
        ("/HEALTH/Vitamins", True),
        ("/healthy-snacks", False),
        ("/healthcare", False),
        ("/shoes/health", False),
        ("/health.html", True),
        ("/health;jsessionid=1", True),
        ("/pharmacy", True),  # configured as "/pharmacy/": the prefix itself is covered too
        ("/pharmacy-deals", False),
        ("https://shop.example/health?utm_source=x#top", True),
        ("https://shop.example/shoes?next=/health", False),  # the query is not the path
        ("/shoes?next=/health", False),
        ("https://other.example/Pharmacy/otc", True),  # any host: a path is a path
        ("/%68ealth/x", True),  # percent-encoded
        ("/a/../health", True),
        ("//health", True),
        ("/shoes//health", False),
        ("health/x", True),  # no leading slash: read from the root
        ("\\health\\x", True),
        ("/", False),
        ("", False),
        (None, False),
        (42, False),
    ],
)
def test_paths_match_by_whole_segments_ignoring_case(value: Any, sensitive: bool) -> None:
    assert SENS.is_sensitive_path(value) is sensitive


@pytest.mark.parametrize(
    ("value", "sensitive"),
    [
        ("pharmacy", True),
        ("PHARMACY", True),
        ("  Health ", True),
        ("pharmacy-deals", False),
        ("electronics", False),
        ("", False),
        (None, False),
    ],
)
def test_categories_match_by_name_ignoring_case(value: Any, sensitive: bool) -> None:
    assert SENS.is_sensitive_category(value) is sensitive


def test_normalization_and_the_empty_set() -> None:
    assert SENS.categories == frozenset({"pharmacy", "health"})
    assert SENS.paths == ("/health", "/pharmacy")
    assert normal_path("https://x.example/A//b/./c/?q=1") == "/a/b/c"
    assert not NO_SENSITIVITY and SENS
    assert NO_SENSITIVITY.rule_violations(_source(offers=[_offer(category="health")])) == []
    assert not NO_SENSITIVITY.is_sensitive_path("/health")


# --- scrubbing -----------------------------------------------------------------------------


def _request(**page: Any) -> DecideRequest:
    return DecideRequest(
        visitor_id="v1",
        context=Context(page=Page(**page)),
        behavior=Behavior(page_views=3, categories_viewed=["electronics", "Pharmacy", "home"]),
    )


def test_scrub_request_drops_sensitive_categories_only() -> None:
    req = _request(url="https://shop.example/shoes", path="/shoes")
    out = SENS.scrub_request(req)
    assert out.behavior.categories_viewed == ["electronics", "home"]
    assert out.behavior.page_views == 3
    assert out.context.page is req.context.page


def test_scrub_request_on_a_sensitive_page_keeps_only_attribution() -> None:
    req = _request(
        url="https://user:pw@shop.example/Pharmacy/pregnancy-tests?gclid=abc&q=test&utm_term=t",
        path="/Pharmacy/pregnancy-tests",
        title="Pregnancy tests",
        search="?gclid=abc&q=test&utm_term=t",
        referrer="https://www.google.com/",
    )
    page = SENS.scrub_request(req).context.page
    assert page.url == "https://shop.example/?gclid=abc"
    assert page.path is None and page.title is None
    assert page.search == "?gclid=abc"
    assert page.referrer == "https://www.google.com/"


def test_scrub_request_cuts_a_sensitive_referrer_to_its_site() -> None:
    req = _request(
        url="https://shop.example/shoes",
        path="/shoes",
        referrer="https://shop.example/health/fertility?x=1",
    )
    page = SENS.scrub_request(req).context.page
    assert page.referrer == "https://shop.example/"
    assert page.path == "/shoes" and page.url == "https://shop.example/shoes"
    relative = SENS.scrub_request(_request(referrer="/health/x")).context.page
    assert relative.referrer is None


def test_scrub_returns_the_same_object_when_nothing_is_sensitive() -> None:
    req = DecideRequest(
        visitor_id="v1",
        context=Context(page=Page(url="https://shop.example/shoes", path="/shoes")),
        behavior=Behavior(categories_viewed=["electronics"]),
    )
    assert SENS.scrub_request(req) is req
    bare = _request(path="/health")
    assert NO_SENSITIVITY.scrub_request(bare) is bare
    event = Event(type="click", visitor_id="v1", properties={"url": "https://shop.example/"})
    assert SENS.scrub_event(event) is event
    assert SENS.scrub_behavior(req.behavior) is req.behavior


def test_scrub_event_drops_sensitive_properties() -> None:
    event = Event(
        type="pageview",
        visitor_id="v1",
        properties={
            "category": "Pharmacy",
            "url": "https://shop.example/health/x?utm_source=news",
            "referrer": "https://shop.example/pharmacy",
            "title": "kept",
            "categories": ["home", "health"],
            "section": "pharmacy",  # not a category key, not a path: kept
            "next": "/shoes",
        },
    )
    props = SENS.scrub_event(event).properties
    assert props == {
        "title": "kept",
        "categories": ["home"],
        "section": "pharmacy",
        "next": "/shoes",
    }
    assert SENS.scrub_categories(["HEALTH", "home", "pharmacy"]) == ["home"]


def test_log_records_scrub_when_given_the_sensitivity() -> None:
    req = _request(url="https://shop.example/health/x", path="/health/x")
    decision = msgspec.json.decode(
        (Path(__file__).parents[1] / "fixtures" / "recorded" / "decisions.jsonl")
        .read_bytes()
        .splitlines()[0],
        type=dict[str, Any],
    )["decision"]
    d = msgspec.convert(decision, Decision)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    plain = decision_record(d, req, timestamp=now, behavior=req.behavior, row=None)
    assert plain.path == "/health/x" and plain.behavior is not None
    assert "Pharmacy" in plain.behavior["categoriesViewed"]
    record = decision_record(
        d, req, timestamp=now, behavior=req.behavior, row=None, policy=FULL_LOG, sensitivity=SENS
    )
    assert record.path is None
    assert record.behavior is not None
    assert record.behavior["categoriesViewed"] == ["electronics", "home"]
    event = Event(
        type="pageview",
        visitor_id="v1",
        properties={"category": "health", "url": "https://shop.example/pharmacy/a"},
    )
    assert event_record(event, now).category == "health"
    scrubbed = event_record(event, now, sensitivity=SENS)
    assert scrubbed.category is None and scrubbed.url is None


# --- rules ---------------------------------------------------------------------------------


def _offer(id: str = "deal", category: str | None = None, **eligibility: Any) -> OfferDef:
    return OfferDef(id=id, name=id, category=category, eligibility=eligibility)


def _source(
    offers: list[OfferDef] | None = None,
    when: dict[str, Any] | None = None,
    experiment: dict[str, Any] | None = None,
    lifecycle: dict[str, Any] | None = None,
) -> Any:
    class Source(msgspec.Struct, frozen=True):
        offers: list[OfferDef]
        slots: list[SlotDef]
        lifecycle: LifecycleDef
        experiments: list[ExperimentDef]

    content = ContentDef(type="text", text="x")
    return Source(
        offers=offers or [],
        slots=[
            SlotDef(
                id="hero",
                default="a",
                variants=[
                    VariantDef(id="a", content=content),
                    VariantDef(id="b", content=content, when=when or {}),
                ],
            )
        ],
        lifecycle=LifecycleDef(
            rules=[LifecycleRule(stage="new", when=lifecycle or {"purchases": {"$gte": 1}})],
            default="prospect",
        ),
        experiments=[
            msgspec.convert(
                {"key": "exp", "arms": [{"key": "a"}, {"key": "b"}], "condition": c}, ExperimentDef
            )
            for c in ([experiment] if experiment else [])
        ],
    )


@pytest.mark.parametrize(
    ("when", "why"),
    [
        ({"categoriesViewed": {"$elemMatch": {"$eq": "pharmacy"}}}, "category 'pharmacy'"),
        ({"behavior.categories": {"$in": ["home", "Health"]}}, "category 'Health'"),
        ({"persona": "health"}, "category 'health'"),
        ({"$or": [{"lifecycle": "new"}, {"$not": {"x": {"$ne": "pharmacy"}}}]}, "'pharmacy'"),
        ({"categoriesViewed": {"$regex": "^pharm"}}, "matches sensitive category 'pharmacy'"),
        ({"page.path": "/health/vitamins"}, "path '/health/vitamins'"),
        ({"page.path": {"$in": ["/shoes", "/Pharmacy"]}}, "path '/Pharmacy'"),
        ({"page.url": {"$eq": "https://shop.example/health?a=1"}}, "sensitive path"),
        ({"page.path": {"$regex": "^/health"}}, "can match sensitive path '/health'"),
        ({"page.path": {"$regex": "^/he"}}, "can match sensitive path '/health'"),
        ({"page.path": {"$regex": "^/(shoes|pharm)"}}, "'/pharmacy'"),
        ({"page.path": {"$regex": "sale"}}, "not anchored"),
        ({"page.path": {"$regex": "^/shoes|vitamins"}}, "not anchored"),
        ({"page.path": {"$regex": "^/[a-z]+"}}, "can match"),
        ({"page.path": {"$not": {"$regex": "^/H(e)alth"}}}, "can match"),
        ({"page.path": {"$gte": "/h", "$lt": "/i"}}, "holds for sensitive path '/health'"),
        ({"page.url": {"$regex": "^https://shop\\.example/health"}}, "can match"),
        ({"page.url": {"$regex": "^https://"}}, "can match"),
    ],
)
def test_rules_on_sensitive_categories_or_paths_are_found(when: dict[str, Any], why: str) -> None:
    found = SENS.rule_violations(_source(when=when))
    assert len(found) == 1, found
    assert found[0].startswith("slot 'hero' variant 'b' condition: ")
    assert why in found[0]


@pytest.mark.parametrize(
    "when",
    [
        {"page.path": "/shoes"},
        {"page.path": {"$regex": "^/(shoes|bags)/"}},
        {"page.path": {"$regex": "^/healthy"}},
        {"page.path": {"$regex": "\\A/shoes|^/bags"}},
        {"page.path": {"$regex": "^/sh?oes"}},
        {"page.path": {"$ne": "/"}},
        {"page.url": {"$regex": "^https://shop\\.example/shoes"}},
        {"device.os": {"$regex": "health"}},  # not a path or category attribute
        {"referrer.class": "email", "lifecycle": {"$in": ["new", "repeat"]}},
    ],
)
def test_ordinary_rules_pass(when: dict[str, Any]) -> None:
    assert SENS.rule_violations(_source(when=when)) == []


def test_every_place_rules_live_is_checked_and_named() -> None:
    found = SENS.rule_violations(
        _source(
            offers=[
                _offer("vitamins", category="Health"),
                _offer("coupon", **{"page.path": "/pharmacy"}),
            ],
            experiment={"page.path": {"$regex": "^/health"}},
            lifecycle={"x": "pharmacy"},
        )
    )
    assert len(found) == 4, found
    assert found[0].startswith("lifecycle rule 0 (stage 'new'): x names sensitive category")
    assert found[1].startswith("offer 'vitamins' is in sensitive category 'Health'")
    assert found[2].startswith("offer 'coupon' eligibility: page.path names sensitive path")
    assert found[3].startswith("experiment 'exp' condition: page.path $regex '^/health'")


# --- manifest ------------------------------------------------------------------------------


def test_old_manifests_load_with_an_empty_set_and_no_public_scores() -> None:
    raw = (RECORDED / "manifest.json").read_bytes()
    assert b"sensitive" not in raw and b"publicScores" not in raw
    manifest = manifest_decoder.decode(raw)
    assert manifest.sensitive == SensitiveDef() and manifest.public_scores == []
    assert not Sensitivity.from_manifest(manifest)


def test_manifest_round_trip_keeps_the_new_fields() -> None:
    raw = msgspec.json.decode((RECORDED / "manifest.json").read_bytes())
    raw["sensitive"] = {"categories": ["pharmacy"], "paths": ["/pharmacy/"]}
    raw["publicScores"] = ["rfm", "churnProbability"]
    manifest = msgspec.convert(raw, Manifest)
    again = manifest_decoder.decode(msgspec.json.encode(manifest))
    assert again == manifest
    assert again.sensitive.paths == ["/pharmacy/"] and again.public_scores == [
        "rfm",
        "churnProbability",
    ]


@pytest.mark.parametrize(
    "sensitive",
    [
        {"paths": ["/"]},
        {"paths": ["health"]},
        {"paths": ["/a?b=1"]},
        {"categories": [""]},
        {"x": []},
    ],
)
def test_bad_sensitive_sections_are_refused(sensitive: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(sensitive, SensitiveDef)


def test_public_score_names_are_the_decision_scores_and_rfm() -> None:
    predictive = {score for _, score in PREDICTIVE_SCORES}
    assert set(PUBLIC_SCORES) == {"rfm"} | predictive | set(BTYD_ONLY_SCORES)
    raw = msgspec.json.decode((RECORDED / "manifest.json").read_bytes())
    raw["publicScores"] = ["churn"]
    with pytest.raises(msgspec.ValidationError, match="publicScores"):
        msgspec.convert(raw, Manifest)
