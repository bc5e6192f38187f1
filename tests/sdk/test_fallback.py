"""Fallback decisions: the catalogue's defaults, the caller's own, and the decision's fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from sdk import BundleFormatError, Client, Fallback, load_bundle
from sdk.manifest import Manifest
from sdk.schema import (
    Content,
    Context,
    DecideRequest,
    Screen,
    SlotDecision,
    decision_decoder,
)
from tests.sdk.test_client_remote import BASE, Server, status
from tests.sdk.test_visit_cache import visit

HERO = Content(type="text", text="Our own hero")
MONDAY_9AM = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def manifest(bundle_dir: Path) -> Manifest:
    return load_bundle(bundle_dir).manifest


def test_from_manifest_gives_every_slot_its_default_variant(manifest: Manifest) -> None:
    slots = Fallback.from_manifest(manifest).slots
    assert list(slots) == [s.id for s in manifest.slots]
    assert len(slots) >= 3
    for slot in manifest.slots:
        variant = next(v for v in slot.variants if v.id == slot.default)
        chosen = slots[slot.id]
        assert chosen.variant_id == slot.default
        assert chosen.offer_id == variant.offer
        assert chosen.propensity == 1.0
        assert msgspec.to_builtins(chosen.content) == msgspec.to_builtins(variant.content)


def test_from_bundle_equals_from_manifest(bundle_dir: Path, manifest: Manifest) -> None:
    assert Fallback.from_bundle(bundle_dir).slots == Fallback.from_manifest(manifest).slots
    assert Fallback.from_bundle(str(bundle_dir)).slots == Fallback.from_manifest(manifest).slots


def test_callers_slots_override_and_extend_the_catalogue(manifest: Manifest) -> None:
    own = SlotDecision(
        variant_id="house", offer_id=None, content=HERO, propensity=1.0, reason="ours"
    )
    catalogue = Fallback.from_manifest(manifest).slots
    slots = Fallback.from_manifest(manifest, {"hero": HERO, "footer": own}).slots
    assert slots["hero"].variant_id == "default"
    assert slots["hero"].content == HERO
    assert slots["footer"] is own
    assert {k: v for k, v in slots.items() if k not in ("hero", "footer")} == {
        k: v for k, v in catalogue.items() if k != "hero"
    }


def test_content_values_become_default_slot_decisions() -> None:
    slots = Fallback({"hero": HERO}).slots
    assert slots == {
        "hero": SlotDecision(
            variant_id="default",
            offer_id=None,
            content=HERO,
            propensity=1.0,
            reason="fallback default",
        )
    }
    assert Fallback().slots == {}


def test_slots_is_a_copy() -> None:
    fallback = Fallback({"hero": HERO})
    fallback.slots.clear()
    assert list(fallback.slots) == ["hero"]


def test_decision_fields() -> None:
    request = DecideRequest(
        visitor_id="v9",
        session_id="s9",
        slots=["hero"],
        timestamp=MONDAY_9AM,
        context=Context(screen=Screen(touch=True)),
    )
    decision = Fallback({"hero": HERO}).decision(request, "timeout", "POST /v1/decide timed out")
    assert decision.decision_id.startswith("fallback-")
    assert decision.model_version == "fallback"
    assert (decision.visitor_id, decision.session_id) == ("v9", "s9")
    assert decision.personalized is False
    assert (decision.persona, decision.segment, decision.rfm) == (None, None, None)
    assert decision.offers == []
    assert decision.lifecycle.stage == "unknown"
    assert decision.reasons[0].code == "fallback.timeout"
    assert decision.reasons[0].message == "POST /v1/decide timed out"
    assert decision.ttl == 0
    assert decision.slots["hero"].content == HERO
    assert (decision.signals.local_hour, decision.signals.local_weekday) == (9, 0)
    assert decision.signals.touch is True
    again = Fallback({"hero": HERO}).decision(request, "timeout", "")
    assert again.decision_id != decision.decision_id


def test_decision_is_valid_on_the_wire(manifest: Manifest) -> None:
    decision = Fallback.from_manifest(manifest).decision(visit(slots=[]), "unreachable", "x")
    assert decision_decoder.decode(msgspec.json.encode(decision)) == decision


def test_decision_without_timestamp_or_session() -> None:
    decision = Fallback().decision(DecideRequest(visitor_id="v"), "circuit_open", "open")
    assert decision.session_id is None
    assert 0 <= decision.signals.local_hour <= 23
    assert decision.signals.touch is False
    assert decision.reasons[0].code == "fallback.circuit_open"


def test_decision_has_only_the_requested_known_slots(manifest: Manifest) -> None:
    fallback = Fallback.from_manifest(manifest)
    picked = fallback.decision(visit(slots=["banner", "nope", "hero"]), "timeout", "")
    assert list(picked.slots) == ["banner", "hero"]
    everything = fallback.decision(visit(slots=[]), "timeout", "")
    assert list(everything.slots) == [s.id for s in manifest.slots]


def test_missing_manifest_raises(tmp_path: Path) -> None:
    with pytest.raises(BundleFormatError, match=r"no manifest\.json"):
        Fallback.from_bundle(tmp_path)
    with pytest.raises(BundleFormatError):
        Fallback.from_bundle(tmp_path / "does-not-exist")


def test_invalid_manifest_raises(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleFormatError, match=r"invalid manifest\.json"):
        Fallback.from_bundle(tmp_path)


def test_unsupported_format_version_raises(bundle_copy: Path) -> None:
    path = bundle_copy / "manifest.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["formatVersion"] = 999
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(BundleFormatError, match="format version 999"):
        Fallback.from_bundle(bundle_copy)


def test_remote_client_serves_the_bundles_defaults(bundle_dir: Path, manifest: Manifest) -> None:
    server = Server(status(503))
    fallback = Fallback.from_bundle(bundle_dir, {"hero": HERO})
    with Client(BASE, transport=httpx.MockTransport(server), fallback=fallback) as client:
        decision = client.decide(visit(slots=["hero", "banner"]))
    banner = next(s for s in manifest.slots if s.id == "banner")
    assert decision.reasons[0].code == "fallback.unavailable"
    assert decision.slots["hero"].content == HERO
    assert decision.slots["banner"].variant_id == banner.default
