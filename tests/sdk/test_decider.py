from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from model_export.inputs.synth import generate
from sdk import Decider
from sdk.schema import DecideRequest, Decision
from tests.conftest import PLANTED_PERSONAS

MakeRequest = Callable[..., dict[str, object]]


def _decide(decider: Decider, body: dict[str, object]) -> Decision:
    return decider.decide(msgspec.convert(body, DecideRequest))


def test_decision_is_complete(decider: Decider, make_request: MakeRequest) -> None:
    d = _decide(decider, make_request())
    assert d.personalized and d.persona is not None and d.segment is not None
    assert d.model_version == decider.bundle.version
    assert sum(d.persona.affinities.values()) == pytest.approx(1.0, abs=1e-4)
    assert set(d.persona.affinities) == {p.id for p in decider.bundle.manifest.personas}
    assert max(d.persona.affinities, key=d.persona.affinities.__getitem__) == d.persona.id
    assert [o.rank for o in d.offers] == list(range(1, len(d.offers) + 1))
    assert [o.score for o in d.offers] == sorted((o.score for o in d.offers), reverse=True)
    assert set(d.slots) == {"hero", "banner", "recommendation"}
    assert all(0 < s.propensity <= 1 for s in d.slots.values())
    assert len(d.decision_id) == 32 and d.reasons


def test_planted_personas_get_their_persona(decider: Decider) -> None:
    expected = PLANTED_PERSONAS
    visits = generate(300, seed=99)  # unseen visitors
    hits = sum(
        decider.decide(v.request).persona.id == expected[v.persona]  # type: ignore[union-attr]
        for v in visits
    )
    assert hits / len(visits) >= 0.9


def test_eligibility_rules_are_respected(decider: Decider, make_request: MakeRequest) -> None:
    prospect = _decide(decider, make_request(behavior={"purchases": 0}))
    assert prospect.lifecycle.stage == "prospect"
    ids = {o.id for o in prospect.offers}
    assert "winback_20" not in ids and "loyalty_points" not in ids
    desktop_ids = ids
    assert "app_download" not in desktop_ids
    dormant = _decide(
        decider, make_request(behavior={"purchases": 1, "daysSinceLastPurchase": 300})
    )
    assert dormant.lifecycle.stage == "dormant"
    assert "winback_20" in {o.id for o in dormant.offers}
    assert "welcome_10" not in {o.id for o in dormant.offers}


@pytest.mark.parametrize(
    ("behavior", "stage"),
    [
        ({}, "prospect"),
        ({"purchases": 1, "daysSinceLastPurchase": 3}, "new"),
        ({"purchases": 2, "daysSinceLastPurchase": 40}, "repeat"),
        ({"purchases": 3, "daysSinceLastPurchase": 20}, "loyal"),
        ({"purchases": 9, "daysSinceLastPurchase": 45}, "loyal"),
        ({"purchases": 4, "daysSinceLastPurchase": 90}, "at_risk"),
        ({"purchases": 1, "daysSinceLastPurchase": 200}, "dormant"),
    ],
)
def test_lifecycle_rules(
    decider: Decider, make_request: MakeRequest, behavior: dict[str, Any], stage: str
) -> None:
    assert _decide(decider, make_request(behavior=behavior)).lifecycle.stage == stage


def test_no_consent_gives_contextual_decision(decider: Decider, make_request: MakeRequest) -> None:
    d = _decide(
        decider,
        make_request(consent={"personalization": False}, behavior={"purchases": 20}),
    )
    assert not d.personalized and d.persona is None and d.segment is None
    assert d.lifecycle.stage == "unknown"
    assert d.reasons[0].code == "consent.not_given"
    # behaviour was not used: same as sending none at all
    bare = _decide(decider, make_request(consent={"personalization": False}, behavior={}))
    assert [o.id for o in d.offers] == [o.id for o in bare.offers]


def test_email_arrival_changes_the_page(decider: Decider, make_request: MakeRequest) -> None:
    direct = _decide(decider, make_request())
    email = _decide(
        decider,
        make_request(
            context={
                "page": {"url": "https://shop.example.com/?utm_medium=email&utm_source=news"},
                "campaign": {"medium": "email", "source": "news"},
                "timezone": "Europe/London",
            },
            behavior={"purchases": 3, "revenue": 80, "cartItems": 4, "daysSinceLastPurchase": 20},
        ),
    )
    assert email.signals.referrer_class == "email"
    assert email.persona is not None and email.persona.id == "bargain_hunters"
    assert email.slots["banner"].variant_id != direct.slots["banner"].variant_id


def test_unknown_slot_is_reported_not_fatal(decider: Decider, make_request: MakeRequest) -> None:
    d = _decide(decider, make_request(slots=["hero", "sidebar"]))
    assert set(d.slots) == {"hero"}
    assert any(r.code == "slot.unknown" and "sidebar" in r.message for r in d.reasons)


def test_decide_many_equals_decide(decider: Decider) -> None:
    visits = generate(40, seed=123)
    many = decider.decide_many([v.request for v in visits])
    for visit, batched in zip(visits, many, strict=True):
        single = decider.decide(visit.request)
        # batched matrix products may differ from single-row ones in the last float32 bits
        assert [o.id for o in single.offers] == [o.id for o in batched.offers]
        for a, b in zip(single.offers, batched.offers, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-5)
        assert single.persona is not None and batched.persona is not None
        assert single.persona.id == batched.persona.id
        assert single.lifecycle == batched.lifecycle
        assert {k: v.variant_id for k, v in single.slots.items()} == {
            k: v.variant_id for k, v in batched.slots.items()
        }


def test_suppressed_offers_are_never_ranked(decider: Decider, make_request: MakeRequest) -> None:
    request = msgspec.convert(make_request(), DecideRequest)
    first = decider.decide(request)
    top = first.offers[0].id
    again = decider.decide(request, suppressed=frozenset({top}))
    assert top not in {o.id for o in again.offers}
    assert all(s.offer_id != top for s in again.slots.values())
    assert any(r.code == "offer.suppressed" and top in r.message for r in again.reasons)
