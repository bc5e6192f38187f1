"""Feedback events that cannot be forged or replayed, and confirmed conversions, against a real
keyed server on 127.0.0.1 (issue 15, finding 2: forged events rewrote another visitor's
profile, with revenue 1,000,002,840 and a suppressed offer, and the forged revenue reached the
KPI report).

One server with a public key (an allowed origin) and a secret key plays a whole scenario: a
victim who decides and converts, an attacker who forges, replays and inflates events with the
public key, and the site's backend confirming orders and sending events with the secret key.
The server is stopped (which writes what is buffered) before the log is read with
:func:`sdk.logs.read_log`, so what it holds is final.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk.analysis.reports import kpis_over_time
from sdk.logs import EventRecord, LogRecord, read_log
from server.security import hash_key
from tests.conftest import keyed_server

PUBLIC = "pk_guard_test_abcdefghijklmnopqrstuvwxyz"
SECRET = "sk_guard_test_abcdefghijklmnopqrstuvwxyz"
ORIGIN = "https://shop.example.com"
BROWSER = {
    "authorization": f"Bearer {PUBLIC}",
    "origin": ORIGIN,
    "content-type": "text/plain;charset=UTF-8",
}
BACKEND = {"authorization": f"Bearer {SECRET}"}
KEYS: dict[str, Any] = {
    "per_key_per_minute": 0,
    "per_ip_per_minute": 0,
    "keys": [
        {"id": "site", "kind": "public", "sha256": hash_key(PUBLIC), "origins": [ORIGIN]},
        {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
    ],
}
CONSENT = {"personalization": True, "storage": True}


@dataclass
class Scenario:
    """What was sent and answered, and the log read back after the server stopped."""

    http: httpx.Client
    answers: dict[str, httpx.Response] = field(default_factory=dict)
    victim: str = ""
    victim_before: dict[str, Any] = field(default_factory=dict)
    victim_after: dict[str, Any] = field(default_factory=dict)
    records: list[LogRecord] = field(default_factory=list)

    def send(self, name: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        response = self.http.post(path, content=json.dumps(body), headers=headers)
        self.answers[name] = response
        return response

    def decide(self, name: str, visitor: str) -> dict[str, Any]:
        body = {"visitorId": visitor, "sessionId": f"s-{name}", "consent": CONSENT}
        answer = self.send(name, "/v1/decide", {**body, "slots": ["hero"]}, BROWSER)
        assert answer.status_code == 200, answer.text
        decision: dict[str, Any] = answer.json()
        return decision

    def events(self, name: str, events: list[dict[str, Any]], token: str | None = None) -> int:
        body: dict[str, Any] = {"events": events, "consent": CONSENT}
        if token is not None:
            body["visitorToken"] = token
        return self.send(name, "/v1/events", body, BROWSER).status_code

    def profile(self, visitor: str) -> dict[str, Any]:
        answer = self.http.get(f"/v1/visitors/{visitor}", headers=BACKEND)
        assert answer.status_code == 200, answer.text
        profile: dict[str, Any] = answer.json()
        return profile


def ev(kind: str, decision: dict[str, Any] | None, event_id: str | None, **more: Any) -> Any:
    """An event of the visitor of ``decision`` (or of ``more["visitorId"]``)."""
    out: dict[str, Any] = {"type": kind}
    if decision is not None:
        out |= {"visitorId": decision["visitorId"], "decisionId": decision["decisionId"]}
    if event_id is not None:
        out["eventId"] = event_id
    return out | more


def _play(s: Scenario) -> None:
    victim = s.decide("victim-decide", "crm-customer-4711")
    s.victim, token = victim["visitorId"], victim["visitorToken"]
    assert s.events("victim-converts", [ev("conversion", victim, "v-conv", value=30.0)], token)
    s.victim_before = s.profile(s.victim)
    attacker = s.decide("attacker-decide", "attacker")
    on_victim = {"visitorId": s.victim}

    # forged: a decision never issued, one issued to the attacker, none; no event id
    s.events(
        "never-issued",
        [ev("not_interested", None, "f1", decisionId="d-never", offerId="forged-1", **on_victim)],
        attacker["visitorToken"],
    )
    s.events(
        "issued-to-another",
        [
            ev(
                "conversion",
                None,
                "f2",
                decisionId=attacker["decisionId"],
                value=9000.0,
                offerId="forged-2",
                **on_victim,
            )
        ],
    )
    s.events("no-decision", [ev("not_interested", None, "f3", offerId="forged-3", **on_victim)])
    s.events("no-event-id", [ev("click", victim, None, offerId="forged-4")])
    s.events(
        "mixed",
        [
            ev("click", attacker, "mixed-ok", offerId="mixed-ok"),
            ev("not_interested", None, "f5", decisionId="d-never", offerId="forged-5", **on_victim),
        ],
    )
    # the victim's decision id leaked, but not their token: accepted, stored nothing
    s.events("leaked-decision", [ev("not_interested", victim, "leak", offerId="leaked-offer")])

    # replays
    s.events("first", [ev("click", attacker, "a-click")])
    s.events("replayed", [ev("click", attacker, "a-click")])
    s.events("converts", [ev("conversion", attacker, "a-conv-1", value=10.0)])
    s.events("converts-again", [ev("conversion", attacker, "a-conv-2", value=10.0)])

    # inflated values
    other = s.decide("attacker-decide-2", "attacker")
    s.events("billion", [ev("conversion", other, "big-1", value=1_000_002_840.0)])
    s.events("over-the-limit", [ev("conversion", other, "big-2", value=20_000.0)])

    # the public key may not confirm conversions
    order = {"visitorId": s.victim, "orderId": "o-forged", "value": 500.0}
    s.send("public-confirms", "/v1/conversions", {"conversions": [order]}, BROWSER)

    # the site's backend: confirmed conversions, counted once per order
    confirmed = [
        {"visitorId": s.victim, "orderId": "o-1", "value": 120.0, "currency": "EUR"},
        {
            "visitorId": s.victim,
            "orderId": "o-2",
            "value": 80.0,
            "decisionId": victim["decisionId"],
        },
        {"visitorId": "never-seen-visitor", "orderId": "o-3", "value": 5.0},
        {"visitorId": s.victim, "orderId": "o-1", "value": 120.0},  # twice in one batch
    ]
    s.send("confirm", "/v1/conversions", {"conversions": confirmed}, BACKEND)
    s.send("confirm-again", "/v1/conversions", {"conversions": confirmed[:1]}, BACKEND)
    bad = [{"visitorId": s.victim, "orderId": "o-4", "value": -1}]
    s.send("confirm-bad", "/v1/conversions", {"conversions": bad}, BACKEND)
    # and events sent freely: no decision, no event id, any value
    backend_event = {"type": "conversion", "visitorId": s.victim, "value": 15_000.0}
    s.send("backend-events", "/v1/events", {"events": [backend_event]}, BACKEND)
    s.victim_after = s.profile(s.victim)


@pytest.fixture(scope="module")
def scenario(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("guard")
    with (
        keyed_server(bundle_dir, root, KEYS) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        s = Scenario(http=http)
        _play(s)
        log_dir = Path(server.log.parent / f"events-{server.url.rsplit(':', 1)[1]}")
    s.records = list(read_log(log_dir))  # the server has stopped: everything is written
    yield s


def _problem(s: Scenario, name: str, status: int, slug: str) -> str:
    answer = s.answers[name]
    assert answer.status_code == status, (name, answer.text)
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["type"].endswith("/" + slug), body
    detail: str = body["detail"]
    return detail


def _events(s: Scenario) -> list[EventRecord]:
    return [r for r in s.records if isinstance(r, EventRecord)]


def test_nothing_is_a_server_error(scenario: Scenario) -> None:
    assert all(a.status_code < 500 for a in scenario.answers.values()), {
        n: a.status_code for n, a in scenario.answers.items() if a.status_code >= 500
    }


def test_forged_events_are_refused_whole(scenario: Scenario) -> None:
    at_decision = "- at `$.events[0].decisionId`"
    assert _problem(scenario, "never-issued", 403, "forged-event").endswith(at_decision)
    assert _problem(scenario, "issued-to-another", 403, "forged-event").endswith(at_decision)
    assert _problem(scenario, "no-decision", 403, "forged-event").endswith(at_decision)
    assert _problem(scenario, "no-event-id", 403, "forged-event").endswith(
        "- at `$.events[0].eventId`"
    )
    assert _problem(scenario, "mixed", 403, "forged-event").endswith(
        "- at `$.events[1].decisionId`"
    )


def test_forged_events_change_no_profile_and_reach_no_log(scenario: Scenario) -> None:
    before, after = scenario.victim_before, scenario.victim_after
    assert before["suppressedOffers"] == [] and after["suppressedOffers"] == []
    assert before["behavior"]["purchases"] == 1 and before["behavior"]["revenue"] == 30.0
    offers = {r.offer_id for r in _events(scenario)}
    assert not {o for o in offers if o and o.startswith("forged")}
    # the good event of the refused mixed batch was not logged either
    assert "mixed-ok" not in offers
    assert not {r.event_id for r in _events(scenario)} & {"f1", "f2", "f3", "f5", "mixed-ok"}


def test_a_leaked_decision_id_without_the_token_is_logged_but_stores_nothing(
    scenario: Scenario,
) -> None:
    assert scenario.answers["leaked-decision"].status_code == 202
    assert "leaked-offer" not in scenario.victim_after["suppressedOffers"]
    [leaked] = [r for r in _events(scenario) if r.event_id == "leak"]
    assert leaked.offer_id == "leaked-offer" and not leaked.trusted


def test_replays_are_refused(scenario: Scenario) -> None:
    assert scenario.answers["first"].status_code == 202
    assert _problem(scenario, "replayed", 409, "replayed-event").endswith(
        "- at `$.events[0].eventId`"
    )
    assert scenario.answers["converts"].status_code == 202
    detail = _problem(scenario, "converts-again", 409, "replayed-event")
    assert "converts once" in detail
    assert [r.event_id for r in _events(scenario) if r.event_id in ("a-click", "a-conv-2")] == [
        "a-click"
    ]


def test_inflated_browser_values_are_refused_and_reach_no_report(scenario: Scenario) -> None:
    assert scenario.answers["billion"].status_code == 422  # above any Money value
    detail = _problem(scenario, "over-the-limit", 422, "value-too-large")
    assert "/v1/conversions" in detail and detail.endswith("- at `$.events[0].value`")
    values = {r.value for r in _events(scenario)}
    assert 1_000_002_840.0 not in values and 20_000.0 not in values
    kpis = kpis_over_time(scenario.records)
    # revenue is what the backend confirmed (o-1, o-2, o-3) or sent with its key, never what
    # a browser claimed; the browsers' accepted conversions (30 + 10) are kept apart
    assert sum(p.revenue for p in kpis.points) == pytest.approx(120 + 80 + 5 + 15_000)
    assert sum(p.unconfirmed_revenue for p in kpis.points) == pytest.approx(30 + 10)
    assert kpis.notes and "confirmed conversions only" in kpis.notes[0]


def test_confirmed_conversions_are_trusted_and_counted_once(scenario: Scenario) -> None:
    assert _problem(scenario, "public-confirms", 403, "secret-key-required")
    first, again = scenario.answers["confirm"], scenario.answers["confirm-again"]
    assert first.status_code == 202 and first.json() == {"accepted": 3, "duplicates": 1}
    assert again.status_code == 202 and again.json() == {"accepted": 0, "duplicates": 1}
    assert "`$.conversions[0].value`" in _problem(scenario, "confirm-bad", 422, "invalid-request")
    behavior = scenario.victim_after["behavior"]
    # 1 browser conversion (30) + o-1 (120) + o-2 (80) + the backend's event (15,000)
    assert behavior["purchases"] == 4 and behavior["revenue"] == pytest.approx(15_230.0)
    confirmed = [r for r in _events(scenario) if r.order_id is not None]
    assert sorted((r.order_id, r.value, r.trusted) for r in confirmed) == [
        ("o-1", 120.0, True),
        ("o-2", 80.0, True),
    ]
    [o2] = [r for r in confirmed if r.order_id == "o-2"]
    assert o2.decision_id is not None and o2.visitor_id == scenario.victim
    # the visitor without a profile (no consent seen): logged anonymously, still trusted
    [anonymous] = [r for r in _events(scenario) if r.value == 5.0]
    assert anonymous.visitor_id.startswith("anon-") and anonymous.trusted
    assert anonymous.order_id is None


def test_the_secret_key_sends_events_freely_as_trusted(scenario: Scenario) -> None:
    assert scenario.answers["backend-events"].status_code == 202
    [event] = [r for r in _events(scenario) if r.value == 15_000.0]
    assert event.trusted and event.event_id is None and event.decision_id is None
    browser = [r for r in _events(scenario) if r.type == "conversion" and r.order_id is None]
    assert {(r.value, r.trusted) for r in browser} == {
        (30.0, False),
        (10.0, False),
        (15_000.0, True),
        (5.0, True),
    }
