"""The policy layer end to end: a real server on a bundle with a holdout, experiments and
exploration decides exactly like the SDK's local mode, and its decision log carries the
exposures, candidates, propensities and feature rows that reports and offline evaluation read;
replaying a logged decision gives it back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from sdk import Client, Decider, load_bundle
from sdk.features import FeatureRow
from sdk.schema import Behavior, Campaign, Consent, Context, DecideRequest, Page, Signals
from server.security import hash_key
from tests.conftest import LiveServer, keyed_server
from tests.contract.test_sdk_live import _comparable, _fresh_requests, _log_lines, _wait_for

SECRET = "sk_policy_live_0123456789abcdefghijkl"


@pytest.fixture(scope="module")
def server(
    policy_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("policy-live")
    keys = {
        "per_key_per_minute": 0,
        "per_ip_per_minute": 0,
        "keys": [{"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)}],
    }
    with keyed_server(policy_bundle_dir, root, keys) as live:
        yield live


def test_server_and_local_mode_make_the_same_policy_choices(
    server: LiveServer, policy_bundle_dir: Path
) -> None:
    requests = _fresh_requests(150, seed=401) + _fresh_requests(150, seed=402)
    explored = 0
    arms: set[str] = set()
    with (
        Client(server.url, api_key=SECRET, timeout=5, cache=False) as remote,
        Client(mode="local", bundle=policy_bundle_dir, cache=False) as local,
    ):
        for request in requests:
            got, want = remote.decide(request), local.decide(request)
            assert _comparable(got) == _comparable(want)
            explored += sum(s.reason.startswith("exploring") for s in got.slots.values())
            arms.update(f"{k}:{v}" for k, v in (got.experiment or {}).items())
    assert explored > 0  # the comparison covered explored slots
    assert {"holdout:holdout", "hero_test:generic", "hero_test:guide"} <= arms


def test_the_decision_log_holds_exposures_and_replays(
    server: LiveServer, policy_bundle_dir: Path
) -> None:
    requests = [
        r for r in _fresh_requests(120, seed=403) if r.consent.personalization and r.consent.storage
    ]
    with Client(server.url, api_key=SECRET, timeout=5, cache=False) as remote:
        decisions = {d.decision_id: d for d in (remote.decide(r) for r in requests)}

    def logged() -> list[dict[str, object]]:
        return [
            line
            for line in _log_lines(server)
            if line.get("kind") == "decision" and line.get("decisionId") in decisions
        ]

    _wait_for(lambda: len(logged()) == len(decisions), "every decision in the log")
    decider = Decider(load_bundle(policy_bundle_dir))
    for line in logged():
        d = decisions[str(line["decisionId"])]
        assert line["experiment"] == d.experiment  # the exposure record
        for slot_id, slot in line["slots"].items():  # type: ignore[attr-defined]
            sd = d.slots[slot_id]
            assert slot["propensity"] == sd.propensity
            assert slot.get("arm") == sd.arm  # absent fields are omitted
            expected = {c.variant_id: c.probability for c in sd.candidates or []} or None
            assert slot.get("candidates") == expected
        # replay: the logged row and context give the same decision back
        optional = dict.fromkeys(["os", "browser", "referrerSource", "searchTerms", "country"])
        signals = msgspec.convert({**optional, **line["signals"]}, Signals)  # type: ignore[dict-item]
        row = FeatureRow(
            values=tuple(  # a missing value (NaN) is logged as null
                float("nan") if v is None else v
                for v in line["features"]  # type: ignore[attr-defined]
            ),
            signals=signals,
            behavior=msgspec.convert(line["behavior"] or {}, Behavior),
            version=str(line["featureSet"]),
        )
        replayed_request = DecideRequest(
            visitor_id=str(line["visitorId"]),
            session_id=line["sessionId"],  # type: ignore[arg-type]
            consent=msgspec.convert(line["consent"], Consent),
            context=Context(
                page=Page(path=line.get("path")),  # type: ignore[arg-type]
                campaign=msgspec.convert(line.get("campaign") or {}, Campaign),
            ),
            slots=list(d.slots),
        )
        again = decider.replay([replayed_request], [row])[0]
        assert again.experiment == d.experiment
        assert {k: s.variant_id for k, s in again.slots.items()} == {
            k: s.variant_id for k, s in d.slots.items()
        }
        assert again.persona == d.persona
