"""The decision and event log as a real server process writes it, read back with the SDK's typed
reader (:func:`sdk.logs.read_log`): every decision answered is logged under its id with what it
answered, events refer to their decisions, behaviour is logged only with personalization
consent, and every line is a valid record.

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

from sdk.consent import REFUSED
from sdk.logs import (
    DecisionRecord,
    ErasureRecord,
    EventRecord,
    LogReader,
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
    keys = {
        "per_key_per_minute": 0,
        "per_ip_per_minute": 0,
        "keys": [{"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)}],
    }
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


def test_every_line_is_a_known_record(logged: Logged) -> None:
    assert logged.reader.files, "the server wrote no log file"
    assert logged.reader.lines == len(logged.records) > 0
    assert logged.reader.malformed == 0
    assert logged.reader.skipped == {}


def test_counts_of_kinds_match_what_was_sent(logged: Logged) -> None:
    kinds = Counter(type(r).__name__ for r in logged.records)
    assert kinds == {
        "DecisionRecord": len(logged.decisions),
        "EventRecord": sum(logged.events_sent.values()),
        "ErasureRecord": 1,
    }
    types = Counter(r.type for r in logged.records if isinstance(r, EventRecord))
    assert types == logged.events_sent


def test_decision_records_are_the_answers(logged: Logged) -> None:
    records = _decision_records(logged)
    assert records.keys() == logged.decisions.keys()
    for decision_id, answer in logged.decisions.items():
        record = records[decision_id]
        assert record.model_version == answer["modelVersion"]
        assert record.visitor_id == answer["visitorId"]
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


def test_behavior_is_logged_only_with_personalization_consent(logged: Logged) -> None:
    records = _decision_records(logged)
    with_consent = without = 0
    for decision_id, record in records.items():
        sent = Consent(**logged.sent_consent[decision_id])
        if decision_id in logged.gpc:
            assert record.consent == REFUSED  # Sec-GPC refuses whatever the body says
        else:
            assert record.consent == sent
        if record.consent.personalization:
            with_consent += 1
            assert record.behavior is not None and record.behavior["pageViews"] >= 2
        else:
            without += 1
            assert record.behavior is None
            assert record.personalized is False
    assert with_consent > 0 and without > 0
    assert any(logged.sent_consent[d]["personalization"] for d in logged.gpc)


def test_events_refer_to_their_decisions(logged: Logged) -> None:
    records = _decision_records(logged)
    events = [r for r in logged.records if isinstance(r, EventRecord)]
    assert {e.decision_id for e in events} == records.keys()
    for event in events:
        assert event.decision_id is not None
        decision = records[event.decision_id]
        assert event.visitor_id == decision.visitor_id
        assert event.timezone == "Europe/Paris"  # copied from the decision
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
