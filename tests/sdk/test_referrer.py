"""Referrer classification: the shared vectors, the rules table and robustness on any input."""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sdk import referrer as referrer_module
from sdk.referrer import REFERRER_CLASSES, Referrer, classify_referrer
from sdk.schema import Campaign, Page

VECTORS = Path(__file__).resolve().parents[1] / "contract" / "vectors" / "referrers.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]
SITE = "https://shop.example.com/"


def classify(url: str | None = SITE, referrer: str | None = None, **campaign: str) -> Referrer:
    return classify_referrer(Page(url=url, referrer=referrer), Campaign(**campaign))


def test_vector_file_shape() -> None:
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert doc["version"] == 1
    assert len(CASES) >= 30
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    assert {c["expected"]["class"] for c in CASES} == set(REFERRER_CLASSES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors(case: dict[str, Any]) -> None:
    page = msgspec.convert(case["page"], Page)
    campaign = msgspec.convert(case.get("campaign", {}), Campaign)
    result = classify_referrer(page, campaign)
    expected = case["expected"]
    assert {
        "class": result.cls,
        "source": result.source,
        "searchTerms": result.search_terms,
        "clickId": result.click_id,
    } == expected


def test_class_order_is_the_feature_encoding() -> None:
    assert REFERRER_CLASSES == (
        "direct",
        "internal",
        "search",
        "social",
        "email",
        "paid",
        "referral",
    )


def test_rules_table_is_valid_data() -> None:
    raw = json.loads(resources.files("sdk").joinpath("data", "referrers.json").read_bytes())
    assert raw["version"] == 1
    hosts = raw["hosts"]
    assert len({h["host"] for h in hosts}) == len(hosts)
    for entry in hosts:
        assert entry["class"] in REFERRER_CLASSES
        assert entry["host"] == entry["host"].lower().strip(".")
        assert entry["source"] == entry["source"].lower()
    for rule in raw["clickIds"].values():
        assert rule["class"] in REFERRER_CLASSES
    assert set(raw["mediums"]) <= set(REFERRER_CLASSES)
    # Decoded through typed Structs: a typo in a key fails loudly.
    assert referrer_module._table() is referrer_module._table()


def test_fbclid_is_not_paid_but_gclid_is() -> None:
    assert classify(SITE + "?fbclid=abc").cls == "social"
    assert classify(SITE + "?gclid=abc").cls == "paid"
    assert classify(SITE + "?gclid=abc&fbclid=def").click_id == "gclid"


def test_exact_hosts_match_on_label_boundaries() -> None:
    assert classify(referrer="https://evilfacebook.com/") == Referrer(
        "referral", "evilfacebook.com", None, None
    )
    assert classify(referrer="https://facebook.com.evil.net/").cls == "referral"
    assert classify(referrer="https://touch.facebook.com/").source == "facebook"


def test_mail_subdomain_wins_over_the_search_engine() -> None:
    assert classify(referrer="https://mail.google.com/").cls == "email"
    assert classify(referrer="https://www.google.com/").cls == "search"
    assert classify(referrer="https://mail.yahoo.com/").cls == "email"
    assert classify(referrer="https://uk.search.yahoo.com/search?p=sofa").search_terms == "sofa"


def test_utm_source_is_lowercased_and_url_fallback_is_per_field() -> None:
    result = classify(SITE + "?utm_source=NewsLetter&utm_term=big%20sale", medium="email")
    assert result == Referrer("email", "newsletter", "big sale", None)


def test_search_terms_are_capped() -> None:
    result = classify(referrer="https://www.bing.com/search?q=" + "a" * 1000)
    assert result.search_terms == "a" * 256


def test_undecodable_percent_escapes_do_not_raise() -> None:
    result = classify(referrer="https://www.bing.com/search?q=%E9t%E9")
    assert result.cls == "search"
    assert result.search_terms is not None
    assert "\ufffd" in result.search_terms


def test_referrer_is_immutable() -> None:
    result = classify()
    with pytest.raises(AttributeError):
        result.cls = "paid"  # type: ignore[misc]


def test_never_raises_on_random_input() -> None:
    rng = random.Random(20260615)
    alphabet = "abc:/?#[]@!$&'()*+,;=%.-_~ \t\x00é日\ud7ff" + "0123456789ABCDEF"
    pieces = ["http://", "https://", "//", "[", "]", "%", "%E9", "?q=", "&gclid=", "www.", ":99999"]
    seen: set[str] = set()
    for _ in range(3000):
        parts = [
            rng.choice(pieces) if rng.random() < 0.3 else rng.choice(alphabet)
            for _ in range(rng.randint(0, 40))
        ]
        text = "".join(parts)
        result = classify_referrer(
            Page(url=text, referrer=text[::-1], search=text), Campaign(medium=text[:10])
        )
        seen.add(result.cls)
        assert result.cls in REFERRER_CLASSES
        assert result.source is None or result.source.strip() == result.source != ""
    assert len(seen) >= 2
