"""What the log may hold under each consent (sdk.consent.log_policy) and how URLs and paths are
stripped before they are logged (sdk.logs.logged_url, logged_path)."""

from __future__ import annotations

import pytest

from sdk.consent import LogPermissions, event_log_policy, log_policy
from sdk.logs import anonymous_id, is_anonymous, logged_path, logged_url
from sdk.schema import Consent

BOTH = Consent(personalization=True, storage=True)
PERSONAL = Consent(personalization=True)
STORAGE = Consent(storage=True)
NONE = Consent()


@pytest.mark.parametrize(
    ("consent", "gpc", "expected"),
    [
        (BOTH, False, LogPermissions(record=True, ids=True, behavior=True, context=True)),
        (STORAGE, False, LogPermissions(record=True, ids=True, behavior=False, context=True)),
        (PERSONAL, False, LogPermissions(record=True, ids=False, behavior=False, context=False)),
        (NONE, False, LogPermissions(record=False, ids=False, behavior=False, context=False)),
        (BOTH, True, LogPermissions(record=False, ids=False, behavior=False, context=False)),
    ],
)
def test_log_policy(consent: Consent, gpc: bool, expected: LogPermissions) -> None:
    assert log_policy(consent, refused_by_gpc=gpc) == expected
    assert event_log_policy(consent, refused_by_gpc=gpc, stored=True) == expected


def test_unknown_event_consent_logs_ids_only_for_stored_visitors() -> None:
    assert event_log_policy(None, refused_by_gpc=False, stored=True).ids
    unknown = event_log_policy(None, refused_by_gpc=False, stored=False)
    assert unknown.record and not unknown.ids and not unknown.context
    assert not event_log_policy(None, refused_by_gpc=True, stored=True).record


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://shop.example.com/a?token=SECRET123&email=bob@example.com#top",
            "https://shop.example.com/a",
        ),
        (
            "https://u:pw@shop.example.com/a?utm_source=news&utm_term=flu+symptoms&GCLID=x1",
            "https://shop.example.com/a?utm_source=news&GCLID=x1",
        ),
        ("https://www.google.com/search?q=bob+example", "https://www.google.com/search"),
        ("/c/shoes?utm%5Fmedium=email&sort=price", "/c/shoes?utm%5Fmedium=email"),
        ("http://[::1", None),  # does not parse
        ("", None),
        (None, None),
    ],
)
def test_logged_url_keeps_only_campaign_keys(url: str | None, expected: str | None) -> None:
    assert logged_url(url) == expected


def test_logged_path_has_no_query() -> None:
    assert logged_path("/account/orders?token=SECRET123#x") == "/account/orders"
    assert logged_path("") is None and logged_path("?a=1") is None


def test_anonymous_ids_are_per_decision() -> None:
    assert anonymous_id("d1") == anonymous_id("d1") != anonymous_id("d2")
    assert anonymous_id(None) != anonymous_id(None)
    assert is_anonymous(anonymous_id("d1")) and not is_anonymous("visitor-1")
