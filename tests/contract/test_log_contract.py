"""The decision and event log as a real server process writes it, read back with the SDK's typed
reader (:func:`sdk.logs.read_log`): every decision answered under some consent is logged under
its id with what it answered (a refusal is not logged at all), events refer to their decisions,
ids and page only with storage consent, behaviour only with personalization and storage
consent (:func:`sdk.consent.log_policy`), and every line is a valid record.

One server on 127.0.0.1 with the policy bundle (experiments, holdout, exploration) and a secret
key; it is stopped (which writes what is buffered) before the log is read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk.consent import REFUSED, LogPermissions, log_policy
from sdk.logs import (
    DecisionRecord,
    ErasureRecord,
    EventRecord,
    LogReader,
    anonymous_id,
    read_log,
    visitor_hash,
)
from sdk.schema import Consent
from server.security import hash_key
from tests.conftest import FIXED_NOW, keyed_server

SECRET = "sk_log_contract_0123456789abcdefghijklmnop"
CONSENTS = [
    {"personalization": True, "storage": True},
    {"personalization": True, "storage": False},
    {"personalization": False, "storage": False},
]
SLOTS = ["hero", "banner", "recommendation"]


@dataclass
class Logged:
    """What was sent and answered, and the log read back after the server stopped."""

    decisions: dict[str, dict[str, Any]]  # decision id -> the answer
    sent_consent: dict[str, dict[str, bool]]  # decision id -> the consent in the body
    gpc: set[str]  # decision ids of requests sent with Sec-GPC: 1
    events_sent: Counter[str]  # event type -> how many were sent
    erased: str  # the visitor erased with DELETE /v1/visitors/{id}
    reader: LogReader
    records: list[DecisionRecord | EventRecord | ErasureRecord]


def backend_keys(secret: str) -> dict[str, Any]:
    """The security config of a server with one secret key and no rate limits."""
    return {
        "per_key_per_minute": 0,
        "per_ip_per_minute": 0,
        "keys": [{"id": "backend", "kind": "secret", "sha256": hash_key(secret)}],
    }


def _body(i: int, consent: dict[str, bool]) -> dict[str, Any]:
    return {
        "visitorId": f"log-v{i}",
        "sessionId": f"log-s{i}",
        "consent": consent,
        "context": {
            "page": {"url": f"https://shop.example.com/c/{i}", "path": f"/c/{i}"},
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
            "timezone": "Europe/Paris",
            "campaign": {"source": "news", "medium": "email"},
        },
        "behavior": {"pageViews": 2 + i % 4, "sessionCount": 1 + i % 3, "cartItems": i % 2},
        "slots": SLOTS,
        "timestamp": FIXED_NOW.isoformat(),
    }


def _events(decision: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """An impression of every slot (variant left to the log to fill in), a click on the
    first, and a conversion every third decision."""
    base = {"visitorId": decision["visitorId"], "decisionId": decision["decisionId"]}
    events = [{**base, "type": "impression", "slot": slot} for slot in decision["slots"]]
    first = next(iter(decision["slots"]))
    events.append({**base, "type": "click", "slot": first})
    if n % 3 == 0:
        events.append({**base, "type": "conversion", "value": 42.5, "currency": "EUR"})
    return events


@pytest.fixture(scope="module")
def logged(policy_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    root = tmp_path_factory.mktemp("log-contract")
    keys = backend_keys(SECRET)
    decisions: dict[str, dict[str, Any]] = {}
    sent_consent: dict[str, dict[str, bool]] = {}
    gpc: set[str] = set()
    events_sent: Counter[str] = Counter()
    with keyed_server(policy_bundle_dir, root, keys) as server:
        log_dir = server.log.parent / f"events-{server.url.rsplit(':', 1)[1]}"
        auth = {"authorization": f"Bearer {SECRET}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=10) as http:
            for i in range(30):  # single decides, consent rotating
                body = _body(i, CONSENTS[i % 3])
                headers = {"sec-gpc": "1"} if i % 10 == 9 else {}
                answer = http.post("/v1/decide", json=body, headers=headers)
                assert answer.status_code == 200, answer.text
                decision = answer.json()
                decisions[decision["decisionId"]] = decision
                sent_consent[decision["decisionId"]] = body["consent"]
                if headers:
                    gpc.add(decision["decisionId"])
            batch = [_body(i, CONSENTS[i % 3]) for i in range(30, 42)]
            answer = http.post("/v1/decide/batch", json=batch)
            assert answer.status_code == 200, answer.text
            for body, decision in zip(batch, answer.json(), strict=True):
                decisions[decision["decisionId"]] = decision
                sent_consent[decision["decisionId"]] = body["consent"]
            for n, decision in enumerate(decisions.values()):
                events = _events(decision, n)
                answer = http.post("/v1/events", json={"events": events})
                assert answer.status_code == 202 and answer.json() == {"accepted": len(events)}
                events_sent.update(e["type"] for e in events)
            erased = "log-v0"
            assert http.delete(f"/v1/visitors/{erased}").status_code == 204
    # the server has stopped: everything it buffered is on disk
    reader = read_log(log_dir)
    records = list(reader)
    return Logged(decisions, sent_consent, gpc, events_sent, erased, reader, records)


def _decision_records(logged: Logged) -> dict[str, DecisionRecord]:
    return {r.decision_id: r for r in logged.records if isinstance(r, DecisionRecord)}


def _policy(logged: Logged, decision_id: str) -> LogPermissions:
    """What the log may hold of a decision, by the consent it was sent with."""
    refused = decision_id in logged.gpc
    return log_policy(Consent(**logged.sent_consent[decision_id]), refused_by_gpc=refused)


def _recorded(logged: Logged) -> set[str]:
    return {d for d in logged.decisions if _policy(logged, d).record}


def test_every_line_is_a_known_record(logged: Logged) -> None:
    assert logged.reader.files, "the server wrote no log file"
    assert logged.reader.lines == len(logged.records) > 0
    assert logged.reader.malformed == 0
    assert logged.reader.skipped == {}


def test_counts_of_kinds_match_what_was_sent(logged: Logged) -> None:
    kinds = Counter(type(r).__name__ for r in logged.records)
    assert 0 < len(_recorded(logged)) < len(logged.decisions)
    assert kinds == {
        "DecisionRecord": len(_recorded(logged)),
        "EventRecord": sum(logged.events_sent.values()),
        "ErasureRecord": 1,
    }
    types = Counter(r.type for r in logged.records if isinstance(r, EventRecord))
    assert types == logged.events_sent


def test_decision_records_are_the_answers(logged: Logged) -> None:
    records = _decision_records(logged)
    assert records.keys() == _recorded(logged)
    for decision_id, record in records.items():
        answer = logged.decisions[decision_id]
        assert record.model_version == answer["modelVersion"]
        if _policy(logged, decision_id).ids:
            assert record.visitor_id == answer["visitorId"]
            assert record.session_id == answer["sessionId"]
            assert record.path == answer["visitorId"].replace("log-v", "/c/")
            assert record.timezone == "Europe/Paris"
        else:  # personalization without storage: nothing that links the visit to anyone
            assert record.visitor_id == anonymous_id(decision_id)
            assert record.session_id is None and record.user_id is None
            assert record.path is None and record.timezone is None
            assert record.signals.country is None and record.signals.os is None
        assert record.personalized == answer["personalized"]
        assert record.experiment == answer.get("experiment")
        assert [o.id for o in record.offers] == [o["id"] for o in answer["offers"]]
        assert record.slots.keys() == answer["slots"].keys()
        for name, slot in answer["slots"].items():
            logged_slot = record.slots[name]
            assert logged_slot.variant_id == slot["variantId"]
            assert logged_slot.offer_id == slot.get("offerId")
            assert logged_slot.propensity == pytest.approx(slot["propensity"])
            assert logged_slot.arm == slot.get("arm")
        assert record.features is not None and record.feature_set is not None
        assert record.campaign == {"source": "news", "medium": "email"}
    assert any(r.experiment for r in records.values()), "no exposure logged"


def test_behavior_is_logged_only_with_personalization_and_storage(logged: Logged) -> None:
    records = _decision_records(logged)
    with_consent = without = 0
    for decision_id, record in records.items():
        sent = Consent(**logged.sent_consent[decision_id])
        assert decision_id not in logged.gpc  # Sec-GPC refuses whatever the body says
        assert record.consent == sent != REFUSED
        if record.consent.personalization and record.consent.storage:
            with_consent += 1
            assert record.behavior is not None and record.behavior["pageViews"] >= 2
        else:
            without += 1
            assert record.behavior is None
    assert with_consent > 0 and without > 0
    assert any(logged.sent_consent[d]["personalization"] for d in logged.gpc)


def test_events_refer_to_their_decisions(logged: Logged) -> None:
    """Events are sent without consent: they are logged with ids when the visitor has a stored
    profile (a decide with storage consent), otherwise anonymously."""
    records = _decision_records(logged)
    events = [r for r in logged.records if isinstance(r, EventRecord)]
    assert {e.decision_id for e in events} == logged.decisions.keys()
    for event in events:
        assert event.decision_id is not None
        if event.decision_id not in records:  # a refused decision: its events are anonymous
            assert event.visitor_id == anonymous_id(event.decision_id)
            assert event.session_id is None and event.timezone is None
            continue
        decision = records[event.decision_id]
        assert event.visitor_id == decision.visitor_id
        stored = _policy(logged, event.decision_id).ids
        assert event.timezone == ("Europe/Paris" if stored else None)  # from the decision
        if event.slot is None:
            continue
        chosen = decision.slots[event.slot]
        assert event.variant_id == chosen.variant_id  # filled in from the decision
        assert event.offer_id == chosen.offer_id
        expected = chosen.propensity if chosen.propensity > 0 else None
        assert event.propensity == expected


def test_erasure_marker_holds_only_the_visitor_hash(logged: Logged) -> None:
    markers = [r for r in logged.records if isinstance(r, ErasureRecord)]
    assert [m.visitor_hash for m in markers] == [visitor_hash(logged.erased)]
