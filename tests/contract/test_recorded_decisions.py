"""The same bundle gives byte-identical decisions across refactors.

``tests/fixtures/recorded`` holds a bundle and the decisions the code made for 400 generated
requests before the restructure of issue 14 (see its README). Both the single and the batch
path must reproduce them byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from sdk import Decider, load_bundle
from sdk.schema import Behavior, DecideRequest

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded"
NOW = datetime.fromisoformat("2026-06-15T12:00:00+00:00")
_encoder = msgspec.json.Encoder()


def _ids() -> Callable[[], str]:
    count = 0

    def new() -> str:
        nonlocal count
        count += 1
        return f"d{count:05d}"

    return new


def _cases() -> list[dict[str, bytes | object]]:
    lines = (RECORDED / "decisions.jsonl").read_bytes().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def recorded_bundle():  # type: ignore[no-untyped-def]
    return load_bundle(RECORDED / "bundle")


#: Wire fields added after the recording, with a default: absent from the recorded lines, so
#: compared only when a decision sets them (a changed value of any other field still fails).
ADDED_LATER = ("visitorToken",)


def _canonical(raw: bytes) -> bytes:
    """Recorded lines were written from decoded JSON: compare in that same form."""
    decoded = msgspec.json.decode(raw)
    for name in ADDED_LATER:
        if decoded.get(name) is None:
            decoded.pop(name, None)
    return _encoder.encode(decoded)


def test_single_decisions_are_byte_identical(recorded_bundle) -> None:  # type: ignore[no-untyped-def]
    cases = _cases()
    assert len(cases) == 400
    decider = Decider(recorded_bundle, clock=lambda: NOW, new_id=_ids())
    differing = []
    for i, case in enumerate(cases):
        request = msgspec.convert(case["request"], DecideRequest)
        profile = msgspec.convert(case["profile"], Behavior) if case["profile"] else None
        decision = decider.decide(
            request,
            profile=profile,
            suppressed=frozenset(case["suppressed"]),  # type: ignore[arg-type]
        )
        if _canonical(_encoder.encode(decision)) != _encoder.encode(case["decision"]):
            differing.append(i)
    assert differing == []
    # the recording exercises every path the rules and the policy have
    reasons = {r["code"] for c in cases for r in c["decision"]["reasons"]}  # type: ignore[index]
    assert {"consent.not_given", "persona.nearest_segment"} <= reasons
    assert any(c["decision"].get("experiment") for c in cases)  # type: ignore[union-attr]


def test_batch_decisions_are_byte_identical(recorded_bundle) -> None:  # type: ignore[no-untyped-def]
    requests = [msgspec.convert(c["request"], DecideRequest) for c in _cases()]
    decider = Decider(recorded_bundle, clock=lambda: NOW, new_id=_ids())
    got = [_canonical(_encoder.encode(d)) for d in decider.decide_many(requests)]
    want = (RECORDED / "decisions_many.jsonl").read_bytes().splitlines()
    assert len(got) == len(want) == 400
    assert [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w] == []
