from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from model_export.fit.rows import feature_matrix
from model_export.inputs.synth import generate
from sdk.features import FEATURE_NAMES, FEATURE_SPEC, build_features, merge_behavior
from sdk.schema import Behavior, Campaign, Context, DecideRequest, Page

NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)  # a Monday


def _row(**kw: object) -> dict[str, float]:
    return build_features(DecideRequest(visitor_id="v", **kw), None, NOW).as_dict()  # type: ignore[arg-type]


def test_spec_names_are_unique_and_match_rows() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == len(FEATURE_SPEC)
    assert len(build_features(DecideRequest(visitor_id="v"), None, NOW).values) == len(
        FEATURE_NAMES
    )


def test_same_input_same_row() -> None:
    visit = generate(1, seed=3)[0]
    a = build_features(visit.request, None, visit.now)
    b = build_features(visit.request, None, visit.now)
    assert a.values == b.values or all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a.values, b.values, strict=True)
    )


def test_training_rows_equal_serving_rows() -> None:
    visits = generate(200, seed=5)
    matrix = feature_matrix([v.request for v in visits], [v.now for v in visits])
    for visit, trained in zip(visits, matrix, strict=True):
        served = build_features(visit.request, None, visit.now).values
        for x, y in zip(trained, served, strict=True):
            assert (math.isnan(x) and math.isnan(y)) or x == y


def test_rfm_encoding() -> None:
    row = _row(behavior=Behavior(purchases=4, revenue=200.0, days_since_last_purchase=12))
    assert row["purchases_log"] == pytest.approx(math.log1p(4))
    assert row["revenue_log"] == pytest.approx(math.log1p(200))
    assert row["aov_log"] == pytest.approx(math.log1p(50))
    assert row["recency_days"] == 12


def test_never_purchased_is_capped_recency_and_unknown_is_nan() -> None:
    assert _row()["recency_days"] == 365
    assert math.isnan(_row(behavior=Behavior(purchases=2))["recency_days"])
    assert math.isnan(_row()["days_since_visit"])
    assert _row(behavior=Behavior(days_since_last_visit=9999))["days_since_visit"] == 365


def test_search_and_categories() -> None:
    row = _row(
        behavior=Behavior(
            searches=10,
            searches_without_results=40,
            categories_viewed=["Fashion", "fashion", "books", "unknown-cat"],
        )
    )
    assert row["search_fail_ratio"] == 1.0  # failures are capped at the number of searches
    assert row["cat_fashion"] == pytest.approx(2 / 3)
    assert row["cat_books"] == pytest.approx(1 / 3)
    assert row["categories_distinct"] == 3


def test_local_time_uses_the_visitors_timezone() -> None:
    tokyo = build_features(
        DecideRequest(visitor_id="v", context=Context(timezone="Asia/Tokyo")), None, NOW
    )
    assert tokyo.signals.local_hour == 21
    bogus = build_features(
        DecideRequest(visitor_id="v", context=Context(timezone="Mars/Olympus")), None, NOW
    )
    assert bogus.signals.local_hour == 12  # unknown zones fall back to UTC


def test_request_timestamp_wins_over_now() -> None:
    when = datetime(2026, 6, 20, 3, 0, tzinfo=timezone(timedelta(hours=2)))  # Saturday
    row = build_features(DecideRequest(visitor_id="v", timestamp=when), None, NOW)
    assert row.signals.local_weekday == 5
    assert row.as_dict()["weekend"] == 1.0


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_features(DecideRequest(visitor_id="v"), None, datetime(2026, 1, 1))  # noqa: DTZ001


def test_referrer_and_campaign_reach_the_row() -> None:
    email = _row(context=Context(campaign=Campaign(medium="email", source="newsletter")))
    assert email["ref_email"] == 1.0 and email["has_campaign"] == 1.0
    paid = _row(context=Context(page=Page(url="https://shop.example.com/?gclid=abc")))
    assert paid["ref_paid"] == 1.0 and paid["has_click_id"] == 1.0
    direct = _row()
    assert direct["ref_direct"] == 1.0 and direct["has_campaign"] == 0.0


def test_location_falls_back_to_timezone() -> None:
    row = build_features(
        DecideRequest(visitor_id="v", context=Context(timezone="Europe/Berlin")), None, NOW
    )
    assert row.signals.country == "DE"


def test_merge_prefers_request_values_and_keeps_profile_history() -> None:
    profile = Behavior(purchases=5, revenue=300.0, categories_viewed=["home"])
    merged = merge_behavior(Behavior(page_views=4, categories_viewed=["books"]), profile)
    assert merged.purchases == 5 and merged.page_views == 4
    assert merged.categories_viewed == ["home", "books"]
    assert merge_behavior(Behavior(purchases=1), profile).purchases == 1


def test_older_feature_sets_are_prefixes_computed_identically() -> None:
    visit = generate(1, seed=8)[0]
    v1 = build_features(visit.request, None, visit.now, "1")
    v2 = build_features(visit.request, None, visit.now, "2")
    assert len(v1.values) == 37 and len(v2.values) == 40
    assert v2.values[:37] == v1.values or all(
        (math.isnan(a) and math.isnan(b)) or a == b
        for a, b in zip(v1.values, v2.values[:37], strict=True)
    )
    with pytest.raises(KeyError, match="unknown feature set"):
        build_features(visit.request, None, visit.now, "99")


def test_tenure_and_interpurchase() -> None:
    row = _row(
        behavior=Behavior(purchases=5, days_since_first_purchase=410, days_since_last_purchase=10)
    )
    assert row["tenure_days"] == 410
    assert row["interpurchase_days"] == 100
    assert _row()["tenure_days"] == 0 and _row()["interpurchase_days"] == 365
    assert math.isnan(_row(behavior=Behavior(purchases=3))["interpurchase_days"])
