"""Sensitive categories and pages never reach a stored profile or the log (issue 15), against a
real server process on 127.0.0.1 serving a bundle whose catalogue marks ``pharmacy`` and
``health`` (and the ``/pharmacy`` and ``/health`` paths) as sensitive.

A public-key visitor with full consent browses a pharmacy page with a sensitive category in
its behaviour, then sends a pageview event carrying a sensitive category and URL. The
visitor's own data (``POST /v1/me``) and the secret-key profile hold none of it, the
non-sensitive category is kept, and the log directory, read back after the server stopped,
holds no trace of either the categories or the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk import load_bundle
from sdk.logs import read_log
from server.security import hash_key
from tests.conftest import FIXED_NOW, keyed_server

SECRET = "sk_sensitive_0123456789abcdefghijklmnop"
PUBLIC = "pk_sensitive_0123456789abcdefghijklmnop"
ORIGIN = "https://shop.example.com"
SENSITIVE_PAGE = "https://shop.example.com/pharmacy/pregnancy-tests?utm_source=news"


@pytest.fixture(scope="module")
def outcome(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sensitivity = load_bundle(bundle_dir).manifest.sensitive
    assert {"pharmacy", "health"} <= set(sensitivity.categories)  # the demo catalogue's set
    root = tmp_path_factory.mktemp("sensitive")
    keys = {
        "per_key_per_minute": 0,
        "per_ip_per_minute": 0,
        "keys": [
            {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
            {"id": "site", "kind": "public", "sha256": hash_key(PUBLIC), "origins": [ORIGIN]},
        ],
    }
    out: dict[str, Any] = {}
    with keyed_server(bundle_dir, root, keys) as server:
        log_dir = server.log.parent / f"events-{server.url.rsplit(':', 1)[1]}"
        site = {"origin": ORIGIN, "content-type": "text/plain"}
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {
                "visitorId": "tab-1",
                "sessionId": "s-1",
                "consent": {"personalization": True, "storage": True},
                "context": {
                    "page": {
                        "url": SENSITIVE_PAGE,
                        "path": "/pharmacy/pregnancy-tests",
                        "title": "Pregnancy tests",
                    },
                },
                "behavior": {"categoriesViewed": ["pharmacy", "shoes", "Health"]},
                "slots": ["hero"],
                "timestamp": FIXED_NOW.isoformat(),
            }
            answer = http.post(f"/v1/decide?key={PUBLIC}", content=json.dumps(body), headers=site)
            assert answer.status_code == 200, answer.text
            decision = answer.json()
            visitor, token = decision["visitorId"], decision["visitorToken"]
            batch = {
                "visitorToken": token,
                "consent": {"personalization": True, "storage": True},
                "events": [
                    {
                        "type": "pageview",
                        "visitorId": visitor,
                        "sessionId": "s-1",
                        "decisionId": decision["decisionId"],
                        "eventId": "e-1",
                        "properties": {"category": "health", "url": SENSITIVE_PAGE},
                    }
                ],
            }
            answer = http.post(f"/v1/events?key={PUBLIC}", content=json.dumps(batch), headers=site)
            assert answer.status_code == 202, answer.text
            mine = http.post(
                f"/v1/me?key={PUBLIC}", content=json.dumps({"visitorToken": token}), headers=site
            )
            assert mine.status_code == 200, mine.text
            out["me"] = mine.json()
            stored = http.get(
                f"/v1/visitors/{visitor}", headers={"authorization": f"Bearer {SECRET}"}
            )
            assert stored.status_code == 200, stored.text
            out["stored"] = stored.json()
    reader = read_log(log_dir)
    out["records"] = list(reader)
    out["raw"] = b"".join(p.read_bytes() for p in reader.files)
    return out


def test_the_stored_profile_keeps_only_the_other_categories(outcome: dict[str, Any]) -> None:
    for profile in (outcome["me"]["profile"], outcome["stored"]):
        categories = [c.lower() for c in profile["behavior"]["categoriesViewed"]]
        assert categories == ["shoes"]


def test_the_log_holds_neither_the_categories_nor_the_page(outcome: dict[str, Any]) -> None:
    assert len(outcome["records"]) >= 2  # the decision and the event were logged
    raw = outcome["raw"].lower()
    for leak in (b"pharmacy", b"health", b"pregnancy"):
        assert leak not in raw, leak
    assert b'"categoriesviewed":["shoes"]' in raw  # the other category is still logged
