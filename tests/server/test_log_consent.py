"""Consent governs the log (issue 15, finding 3), against a real server process on 127.0.0.1.

Decides with ``Sec-GPC: 1``, with no consent, with personalization only and with full
consent, then events carrying a URL with a secret token and an e-mail address and a search
referrer, under each consent. The log directory is then read back (typed, with
:func:`sdk.logs.read_log`, and as raw bytes): nothing of a refusal is logged, nothing that
links a record to a visitor without storage consent, and no query string but campaign keys
ever.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk.logs import DecisionRecord, EventRecord, LogRecord, anonymous_id, read_log
from tests.conftest import FIXED_NOW, keyed_server
from tests.contract.test_log_contract import backend_keys

SECRET = "sk_log_consent_0123456789abcdefghijklmnop"
PAGE = "https://shop.example.com/account/orders?token=SECRET123&email=bob@example.com"
CAMPAIGN = "&utm_source=news&gclid=abc123#section"
SEARCH = "https://www.google.com/search?q=bob+example+pregnancy+test"
#: name -> (body consent or None for none sent, Sec-GPC header sent)
VISITS: dict[str, tuple[dict[str, bool] | None, bool]] = {
    "gpc": ({"personalization": True, "storage": True}, True),
    "none": (None, False),
    "refused": ({"personalization": False, "storage": False}, False),
    "personal": ({"personalization": True, "storage": False}, False),
    "full": ({"personalization": True, "storage": True}, False),
}


@dataclass
class Logged:
    decisions: dict[str, str]  # visit name -> decision id
    records: list[LogRecord]
    raw: bytes  # every log file's bytes


def _decide_body(name: str, consent: dict[str, bool] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "visitorId": f"{name}-visitor",
        "sessionId": f"{name}-session",
        "userId": f"{name}-user",
        "context": {
            "page": {"url": PAGE + CAMPAIGN, "path": "/account/orders", "referrer": SEARCH},
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/125.0",
            "timezone": "Pacific/Chatham",
        },
        "behavior": {"pageViews": 3, "purchases": 2, "revenue": 180.0},
        "slots": ["hero"],
        "timestamp": FIXED_NOW.isoformat(),
    }
    if consent is not None:
        body["consent"] = consent
    return body


def _event_batch(name: str, decision_id: str, consent: dict[str, bool] | None) -> dict[str, Any]:
    base = {"visitorId": f"{name}-visitor", "sessionId": f"{name}-session"}
    props = {"url": PAGE + CAMPAIGN, "referrer": SEARCH, "timezone": "Pacific/Chatham"}
    events = [
        {**base, "type": "pageview", "decisionId": decision_id, "properties": props},
        {**base, "type": "conversion", "decisionId": decision_id, "value": 12.5},
        {**base, "type": "pageview", "properties": props},  # no decision
    ]
    return {"events": events} | ({"consent": consent} if consent is not None else {})


@pytest.fixture(scope="module")
def logged(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    root = tmp_path_factory.mktemp("log-consent")
    keys = backend_keys(SECRET)
    decisions: dict[str, str] = {}
    with keyed_server(bundle_dir, root, keys) as server:
        log_dir = server.log.parent / f"events-{server.url.rsplit(':', 1)[1]}"
        auth = {"authorization": f"Bearer {SECRET}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=10) as http:
            for name, (consent, gpc) in VISITS.items():
                headers = {"sec-gpc": "1"} if gpc else {}
                answer = http.post("/v1/decide", json=_decide_body(name, consent), headers=headers)
                assert answer.status_code == 200, answer.text
                decisions[name] = answer.json()["decisionId"]
            for name, (consent, gpc) in VISITS.items():
                headers = {"sec-gpc": "1"} if gpc else {}
                batch = _event_batch(name, decisions[name], consent)
                answer = http.post("/v1/events", json=batch, headers=headers)
                assert answer.status_code == 202, answer.text
    # the server has stopped: everything it buffered is on disk
    reader = read_log(log_dir)
    records = list(reader)
    assert reader.files and reader.skipped == {}
    raw = b"".join(path.read_bytes() for path in reader.files)
    return Logged(decisions, records, raw)


def _of(logged: Logged, name: str) -> list[LogRecord]:
    decision_id = logged.decisions[name]
    return [
        r
        for r in logged.records
        if isinstance(r, DecisionRecord | EventRecord)
        and (r.decision_id == decision_id or r.visitor_id == f"{name}-visitor")
    ]


def test_no_secret_from_a_url_is_ever_logged(logged: Logged) -> None:
    for leak in (b"SECRET123", b"token=", b"bob@", b"bob%40", b"pregnancy", b"q=", b"#section"):
        assert leak not in logged.raw, leak


@pytest.mark.parametrize("name", ["gpc", "refused"])
def test_a_refusal_logs_nothing(logged: Logged, name: str) -> None:
    assert _of(logged, name) == []
    assert name.encode() + b"-" not in logged.raw  # no visitor, session or user id


def test_no_consent_logs_no_decision_and_its_events_anonymously(logged: Logged) -> None:
    """A decide without consent is a refusal; events of unknown consent from a visitor with
    no stored profile are logged, but as nobody's."""
    records = _of(logged, "none")
    assert [type(r).__name__ for r in records] == ["EventRecord", "EventRecord"]
    assert all(r.visitor_id == anonymous_id(logged.decisions["none"]) for r in records)
    assert b"none-" not in logged.raw


def test_personalization_without_storage_logs_nothing_identifying(logged: Logged) -> None:
    records = _of(logged, "personal")
    decision_id = logged.decisions["personal"]
    kinds = sorted(type(r).__name__ for r in records)
    assert kinds == ["DecisionRecord", "EventRecord", "EventRecord"]
    for record in records:
        assert record.visitor_id == anonymous_id(decision_id)  # one exposure, unlinkable
        assert record.session_id is None and record.user_id is None
        assert record.timezone is None
    decision = next(r for r in records if isinstance(r, DecisionRecord))
    assert decision.path is None and decision.behavior is None
    assert decision.signals.country is None and decision.signals.browser is None
    assert decision.signals.device_type == "desktop"
    assert decision.slots["hero"].propensity > 0 and decision.features is not None
    for event in records:
        if isinstance(event, EventRecord):
            assert event.url is None and event.referrer is None
    assert b"personal-" not in logged.raw
    assert b"Pacific/Chatham" in logged.raw  # only the full-consent records hold it


def test_the_event_without_a_decision_gets_a_fresh_stand_in(logged: Logged) -> None:
    anonymous = [
        r
        for r in logged.records
        if isinstance(r, EventRecord) and r.decision_id is None and r.visitor_id.startswith("anon-")
    ]
    assert len(anonymous) == 2  # the personalization-only and the no-consent visitor's
    assert len({r.visitor_id for r in anonymous}) == 2
    assert not {r.visitor_id for r in anonymous} & {
        anonymous_id(d) for d in logged.decisions.values()
    }


def test_full_consent_logs_as_before_without_query_strings(logged: Logged) -> None:
    records = _of(logged, "full")
    assert len(records) == 4  # the decision and its three events
    for record in records:
        assert record.visitor_id == "full-visitor" and record.session_id == "full-session"
        assert record.timezone == "Pacific/Chatham"
    decision = next(r for r in records if isinstance(r, DecisionRecord))
    assert decision.user_id == "full-user"
    assert decision.path == "/account/orders"
    assert decision.behavior is not None and decision.behavior["purchases"] == 2
    pageviews = [r for r in records if isinstance(r, EventRecord) and r.type == "pageview"]
    for event in pageviews:
        assert event.url == "https://shop.example.com/account/orders?utm_source=news&gclid=abc123"
        assert event.referrer == "https://www.google.com/search"
    lines = [line for line in logged.raw.splitlines() if b"/account/orders" in line]
    assert lines and all(b'"visitorId":"full-visitor"' in line for line in lines)
