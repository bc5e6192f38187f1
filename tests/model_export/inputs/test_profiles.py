"""Profiles, future labels and profile requests: hand-computed values and the serving path."""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from model_export.inputs.ingest import EVENTS_SCHEMA, TRANSACTIONS_SCHEMA, read_all
from model_export.inputs.profiles import (
    PROFILE_COLUMNS,
    build_profiles,
    future_labels,
    profile_requests,
    visitor_id,
    visitor_ids,
)
from model_export.inputs.synth_shop import ShopExport, generate_shop
from sdk.features import build_features
from sdk.schema import request_decoder

CUTOFF = datetime(2026, 1, 10, tzinfo=UTC)


def day(d: int, hour: int = 0) -> datetime:
    return datetime(2026, 1, d, hour, tzinfo=UTC)


def transactions(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """(customer, order, ts, amount, category, channel) rows as a clean transactions frame."""
    data = [
        {"customer_id": c, "order_id": o, "ts": t, "amount": a, "category": cat, "channel": ch}
        for c, o, t, a, cat, ch in rows
    ]
    return pl.DataFrame(data, schema=TRANSACTIONS_SCHEMA)


def events(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EVENTS_SCHEMA)


@pytest.fixture
def tx() -> pl.DataFrame:
    return transactions(
        [
            ("a", "O1", day(1), 10.0, "home", "web"),
            ("a", "O2", day(5), 20.0, "home", "app"),
            ("a", "O2", day(5), 5.0, "books", "app"),  # a second line of order O2
            ("a", "O4", day(10), 30.0, "home", "web"),  # at the cutoff: future, not history
            ("b", "O5", day(2), 5.0, None, "store"),
            ("b", "O8", day(15), 9.0, None, "store"),  # at cutoff + 5 days: outside the window
            ("c d", "O6", day(3), 7.0, "x", None),
            ("e", "O7", day(12), 4.0, None, "web"),  # only after the cutoff
        ]
    )


@pytest.fixture
def ev() -> pl.DataFrame:
    shop = "https://s.example"
    return events(
        [
            # b's events carry a visitor id and b as the customer id; no session ids: the gap
            # of an hour makes two sessions.
            {"visitor_id": "v1", "customer_id": "b", "type": "pageview", "ts": day(3, 1),
             "url": f"{shop}/c?utm_medium=email", "referrer": "https://mail.example/",
             "category": "Home".lower(), "user_agent": "UA1", "timezone": "Europe/Berlin"},
            {"visitor_id": "v1", "customer_id": "b", "type": "pageview", "ts": day(3, 2),
             "url": f"{shop}/search?q=lamp", "referrer": f"{shop}/c?utm_medium=email"},
            # a's visitor id is the customer id; one session by id.
            {"visitor_id": "a", "type": "impression", "ts": day(4), "session_id": "s1",
             "offer_id": "o", "propensity": 0.5, "user_agent": "UA2"},
            {"visitor_id": "a", "type": "pageview", "ts": day(11), "session_id": "s9",
             "url": f"{shop}/late"},  # after the cutoff: ignored
            # w never bought: a window shopper, one session (same instant).
            {"visitor_id": "w", "type": "pageview", "ts": day(4), "url": f"{shop}/",
             "category": "toys"},
            {"visitor_id": "w", "type": "pageview", "ts": day(4), "url": f"{shop}/p",
             "referrer": f"{shop}/"},
        ]
    )  # fmt: skip


def by_customer(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["customer_id"]: row for row in frame.iter_rows(named=True)}


def test_profiles_match_hand_computed_values(tx: pl.DataFrame, ev: pl.DataFrame) -> None:
    profiles = build_profiles(tx, CUTOFF, events=ev)
    assert profiles.columns == list(PROFILE_COLUMNS)
    assert profiles["customer_id"].to_list() == ["a", "b", "c d", "w"]  # sorted; e is future
    p = by_customer(profiles)
    a = p["a"]
    assert (a["purchases"], a["revenue"], a["aov"]) == (2, 35.0, 17.5)
    assert (a["first_purchase"], a["last_purchase"]) == (day(1), day(5))
    assert (a["recency_days"], a["tenure_days"], a["interpurchase_days"]) == (5.0, 9.0, 4.0)
    assert a["categories"] == ["home", "books"]
    assert a["category_mix"] == [
        {"name": "home", "share": pytest.approx(2 / 3)},
        {"name": "books", "share": pytest.approx(1 / 3)},
    ]
    assert a["channels"] == ["app", "web"]  # 2 app rows vs 1 web row
    assert a["top_category"] == "home" and a["top_channel"] == "app"
    assert a["recent_categories"] == ["home", "home", "books"]  # oldest first (O2 ties)
    assert (a["sessions"], a["page_views"], a["searches"]) == (1, 0, 0)
    assert (a["last_visit"], a["days_since_last_visit"]) == (day(4), 6.0)
    assert a["last_user_agent"] == "UA2" and a["last_url"] is None

    b = p["b"]
    assert (b["purchases"], b["revenue"], b["recency_days"], b["interpurchase_days"]) == (
        1,
        5.0,
        8.0,
        None,
    )
    assert b["categories"] == [] and b["channel_mix"] == [{"name": "store", "share": 1.0}]
    assert (b["sessions"], b["page_views"], b["searches"]) == (2, 2, 1)
    assert b["days_since_last_visit"] == pytest.approx(7 - 2 / 24)
    # The last arrival is the page reached from the e-mail, not the internal search page.
    assert b["last_url"] == "https://s.example/c?utm_medium=email"
    assert b["last_referrer"] == "https://mail.example/"
    assert (b["last_user_agent"], b["last_timezone"]) == ("UA1", "Europe/Berlin")
    assert b["recent_categories"] == ["home"]

    cd = p["c d"]
    assert cd["visitor_id"] == "c_" + hashlib.sha1(b"c d").hexdigest()[:20]
    assert (cd["sessions"], cd["page_views"], cd["last_visit"]) == (0, 0, None)

    w = p["w"]
    assert (w["purchases"], w["revenue"], w["aov"], w["recency_days"]) == (0, 0.0, None, None)
    assert (w["sessions"], w["page_views"], w["recent_categories"]) == (1, 2, ["toys"])
    assert w["last_url"] == "https://s.example/"


def test_without_events_the_web_columns_are_null(tx: pl.DataFrame, ev: pl.DataFrame) -> None:
    profiles = build_profiles(tx, CUTOFF)
    assert profiles["customer_id"].to_list() == ["a", "b", "c d"]
    assert profiles["sessions"].null_count() == 3
    assert profiles["page_views"].null_count() == 3
    buyers = build_profiles(tx, CUTOFF, events=ev, include_visitors=False)
    assert buyers["customer_id"].to_list() == ["a", "b", "c d"]


def test_traits_join_with_a_prefix(tx: pl.DataFrame) -> None:
    traits = pl.DataFrame({"customer_id": ["a", "zz"], "tier": ["gold", "silver"]})
    profiles = build_profiles(tx, CUTOFF, traits=traits)
    assert by_customer(profiles)["a"]["trait_tier"] == "gold"
    assert by_customer(profiles)["b"]["trait_tier"] is None


def test_recent_categories_keep_the_newest_200_oldest_first() -> None:
    views = events(
        [
            {"visitor_id": "v", "type": "pageview", "ts": day(1) + timedelta(minutes=i),
             "category": f"c{i:03d}", "session_id": "s"}
            for i in range(250)
        ]
    )  # fmt: skip
    profiles = build_profiles(transactions([]), CUTOFF, events=views)
    assert profiles["recent_categories"][0].to_list() == [f"c{i:03d}" for i in range(50, 250)]


def test_future_labels_cover_cutoff_to_horizon(tx: pl.DataFrame) -> None:
    labels = future_labels(tx, CUTOFF, horizon_days=5)
    assert labels.rows() == [
        ("a", 1, 30.0, False),  # O4 is exactly at the cutoff: inside the window
        ("b", 0, 0.0, True),  # O8 is exactly at cutoff + horizon: outside
        ("c d", 0, 0.0, True),
    ]  # e bought only after the cutoff: not a customer yet


def test_aware_cutoffs_are_required(tx: pl.DataFrame) -> None:
    naive = datetime(2026, 1, 10)  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        build_profiles(tx, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        future_labels(tx, naive, 30)


# --- visitor ids -------------------------------------------------------------------------------


def test_visitor_ids_are_schema_valid_and_deterministic() -> None:
    ids = ["C1", "a.b:c-d_e", "anna@example.com", "x" * 129, "", "naïve"]
    mapped = visitor_ids(pl.Series(ids)).to_list()
    assert mapped[:2] == ids[:2]
    for raw, vid in zip(ids[2:], mapped[2:], strict=True):
        assert vid == "c_" + hashlib.sha1(raw.encode()).hexdigest()[:20] == visitor_id(raw)
    assert all(re.fullmatch(r"[A-Za-z0-9_.:\-]{1,128}", v) for v in mapped)
    assert visitor_id("x\n") != "x\n"  # a trailing newline is not a valid id


def test_a_visitor_id_collision_is_refused() -> None:
    taken = visitor_id("x y")
    with pytest.raises(ValueError, match="same visitor id"):
        visitor_ids(pl.Series(["x y", taken]))


# --- requests through the serving feature function -----------------------------------------


def test_profile_requests_are_valid_wire_requests(tx: pl.DataFrame, ev: pl.DataFrame) -> None:
    profiles = build_profiles(tx, CUTOFF, events=ev)
    requests = profile_requests(profiles, CUTOFF)
    assert [r.visitor_id for r in requests] == profiles["visitor_id"].to_list()
    for request in requests:  # decoding validates every constraint of the schema
        assert request_decoder.decode(msgspec.json.encode(request)) == request
    b = requests[1]
    assert b.timestamp == CUTOFF and b.consent.personalization
    assert b.behavior.purchases == 1.0 and b.behavior.days_since_last_purchase == 8.0
    assert b.behavior.session_count == 2.0 and b.behavior.searches == 1.0
    assert b.context.page.url == "https://s.example/c?utm_medium=email"
    assert b.context.page.path == "/c" and b.context.timezone == "Europe/Berlin"
    w = requests[3]
    assert w.behavior.purchases == 0.0 and w.behavior.days_since_last_purchase is None


def test_profile_requests_clip_to_the_schema_limits() -> None:
    profiles = build_profiles(
        transactions([("big", "O1", day(1), 5e9, "c" * 100, None)]), CUTOFF
    ).with_columns(pl.lit(3_000_000, pl.Int64).alias("page_views"))
    (request,) = profile_requests(profiles, CUTOFF)
    assert request.behavior.revenue == 1e9
    assert request.behavior.page_views == 1e6
    assert request.behavior.categories_viewed == ["c" * 64]
    request_decoder.decode(msgspec.json.encode(request))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> ShopExport:
    return generate_shop(tmp_path_factory.mktemp("shop"), customers=400, seed=9, fmt="parquet")


def test_serving_features_see_the_profile(shop: ShopExport) -> None:
    results = read_all(shop.config, now=shop.now)
    profiles = build_profiles(
        results["transactions"].frame, shop.cutoff, events=results["events"].frame
    )
    requests = profile_requests(profiles, shop.cutoff)
    checked = 0
    for request, p in zip(requests, profiles.iter_rows(named=True), strict=True):
        row = build_features(request, None, shop.cutoff).as_dict()
        assert row["purchases_log"] == pytest.approx(math.log1p(p["purchases"]))
        assert row["revenue_log"] == pytest.approx(math.log1p(p["revenue"]))
        if p["purchases"] >= 2:
            # build_features derives the mean gap from first/last purchase: same definition.
            assert row["interpurchase_days"] == pytest.approx(min(p["interpurchase_days"], 365))
            assert row["recency_days"] == pytest.approx(min(p["recency_days"], 365))
            checked += 1
    assert checked > 100


def test_future_labels_equal_the_planted_labels(shop: ShopExport) -> None:
    results = read_all(shop.config, now=shop.now)
    labels = future_labels(results["transactions"].frame, shop.cutoff, shop.horizon_days)
    planted = shop.labels.filter(pl.col("churned").is_not_null()).select(
        "customer_id", "purchases_next", "value_next", "churned"
    )
    assert_frame_equal(labels, planted, check_exact=False, abs_tol=1e-6)


def test_profiles_of_many_customers() -> None:
    n = 200_000
    frame = pl.DataFrame(
        {
            "customer_id": (pl.int_range(n, eager=True) % 20_000).cast(pl.String),
            "order_id": pl.int_range(n, eager=True).cast(pl.String),
            "ts": pl.datetime_range(
                datetime(2024, 1, 1, tzinfo=UTC),
                datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=n - 1),
                "1m",
                eager=True,
                time_zone="UTC",
            ),
            "amount": pl.Series([10.0] * n),
            "quantity": pl.Series([None] * n, dtype=pl.Float64),
            "category": pl.Series(["home", "books"] * (n // 2)),
            "channel": pl.Series(["web"] * n),
        }
    )
    profiles = build_profiles(frame, datetime(2025, 1, 1, tzinfo=UTC))
    assert profiles.height == 20_000
    assert profiles["purchases"].to_list() == [10] * 20_000
    assert profiles["category_mix"][0].to_list() == [
        {"name": "home", "share": 1.0}
    ]  # customer "0" is on even rows only
