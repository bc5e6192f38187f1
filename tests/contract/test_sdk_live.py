"""The Python SDK against a real server process on 127.0.0.1: local and remote modes agree,
local mode downloads the server's bundle, events reach the event log, forget erases, and a dead
server gets fallbacks fast.

Most tests use a server with a secret key and no rate limits: the keyless demo charges every
loopback request to one per-IP bucket (600 a minute), which hundreds of decisions would drain.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from model_export.inputs.synth import generate
from sdk import APIError, Client, Consent, DecideRequest, Decision, Event
from sdk.logs import visitor_hash
from server.security import hash_key
from tests.conftest import FIXED_NOW, LiveServer, _start_server, keyed_server

SECRET = "sk_sdk_live_0123456789abcdefghijklmnop"


def _comparable(decision: Decision) -> dict[str, object]:
    data: dict[str, object] = msgspec.to_builtins(decision)
    data.pop("decisionId")
    return data


def _fresh_requests(n: int, seed: int) -> list[DecideRequest]:
    """Generated visits at FIXED_NOW under visitor ids no server has seen, so no stored profile
    or suppression can differ between the server and local mode. Consent rotates through
    personalization + storage, personalization only, and neither."""
    run = uuid.uuid4().hex[:12]
    consents = [
        Consent(personalization=True, storage=True),
        Consent(personalization=True, storage=False),
        Consent(personalization=False, storage=False),
    ]
    return [
        msgspec.structs.replace(
            visit.request,
            visitor_id=f"{run}-{visit.request.visitor_id}",
            session_id=f"{run}-{visit.request.session_id}",
            consent=consents[i % 3],
            timestamp=FIXED_NOW,
        )
        for i, visit in enumerate(generate(n, seed=seed))
    ]


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)  # polling a condition, not waiting for a result


def _log_lines(server: LiveServer) -> list[dict[str, object]]:
    """Every record of the server's event log (conftest: ``events-<port>`` beside its log)."""
    port = server.url.rsplit(":", 1)[1]
    lines = []
    for path in sorted((server.log.parent / f"events-{port}").glob("events-*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.endswith(b"}"):  # a line being written is not complete yet
                lines.append(json.loads(line))
    return lines


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server with one secret key and rate limits off."""
    root = tmp_path_factory.mktemp("sdk-live")
    keys = {
        "per_key_per_minute": 0,
        "per_ip_per_minute": 0,
        "keys": [{"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)}],
    }
    with keyed_server(bundle_dir, root, keys) as live:
        yield live


@pytest.fixture
def remote(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, api_key=SECRET, timeout=5, cache=False) as client:
        yield client


def test_local_and_remote_modes_decide_alike(
    remote: Client, bundle_dir: Path, server: LiveServer
) -> None:
    requests = _fresh_requests(90, seed=301) + _fresh_requests(90, seed=302)
    requests += _fresh_requests(90, seed=303)
    with Client(mode="local", bundle=bundle_dir, cache=False) as local:
        for request in requests:
            got, want = remote.decide(request), local.decide(request)
            assert got.model_version != "fallback"
            assert _comparable(got) == _comparable(want)
    assert remote.breaker is not None and remote.breaker.state == "closed"


def test_local_and_remote_batches_decide_alike(remote: Client, bundle_dir: Path) -> None:
    requests = _fresh_requests(120, seed=304) + _fresh_requests(130, seed=305)
    # a chunk of 100 generated visits is ~100 KiB: more than one decide's 64 KiB body limit,
    # well under the 16 x 64 KiB = 1 MiB the batch route allows
    assert 64 * 1024 < len(msgspec.json.encode(requests[:100])) < 1024 * 1024
    with Client(mode="local", bundle=bundle_dir) as local:
        want = [_comparable(d) for d in local.decide_many(requests)]
    got = remote.decide_many(requests)  # 3 calls of POST /v1/decide/batch (100, 100, 50)
    assert len(got) == len(requests)
    assert all(d.model_version != "fallback" for d in got)
    assert [_comparable(d) for d in got] == want


def test_local_mode_downloads_the_servers_bundle(
    remote: Client, server: LiveServer, tmp_path: Path
) -> None:
    info = httpx.get(
        f"{server.url}/v1/bundle", headers={"authorization": f"Bearer {SECRET}"}
    ).json()
    singles, batch = _fresh_requests(60, seed=306), _fresh_requests(60, seed=307)
    with Client(
        server.url,
        mode="local",
        api_key=SECRET,
        bundle_cache_dir=tmp_path / "cache",
        timeout=10,
        cache=False,
    ) as local:
        first = local.decide(singles[0])  # waits for the download
        assert local.local is not None and local.local.bundle is not None
        assert local.local.bundle.digest == info["digest"]
        assert (tmp_path / "cache" / info["digest"] / "manifest.json").is_file()
        assert first.model_version == info["modelVersion"]
        want = [_comparable(local.decide(r)) for r in singles]
        want_many = [_comparable(d) for d in local.decide_many(batch)]
        assert local.local.refresh_failures == 0
    assert [_comparable(remote.decide(r)) for r in singles] == want
    assert [_comparable(d) for d in remote.decide_many(batch)] == want_many


def test_tracked_events_reach_the_event_log_and_close_flushes(server: LiveServer) -> None:
    visitor = f"track-{uuid.uuid4().hex[:12]}"
    # events would wait a minute for companions: only close() can send them in time
    client = Client(server.url, api_key=SECRET, timeout=5, event_interval=60)
    # storage consent: the events are logged under the visitor's id (sdk.consent.log_policy)
    consent = Consent(personalization=True, storage=True)
    decision = client.decide(
        DecideRequest(
            visitor_id=visitor,
            session_id="s1",
            consent=consent,
            slots=["hero"],
            timestamp=FIXED_NOW,
        )
    )
    events = [
        Event(type="impression", visitor_id=visitor, decision_id=decision.decision_id, slot="hero"),
        Event(type="click", visitor_id=visitor, decision_id=decision.decision_id, slot="hero"),
        Event(type="conversion", visitor_id=visitor, value=42.5, currency="EUR"),
    ]
    assert all(client.track(e) for e in events)
    assert client.events.pending() == 3
    client.close()
    assert client.events.sent == 3 and client.events.failed == 0
    assert client.events.pending() == 0

    def logged() -> list[dict[str, object]]:
        return [r for r in _log_lines(server) if r["kind"] == "event" and r["visitorId"] == visitor]

    _wait_for(lambda: len(logged()) == 3, "3 events in the server's event log")
    records = logged()
    assert [r["type"] for r in records] == ["impression", "click", "conversion"]
    assert records[0]["decisionId"] == decision.decision_id
    assert records[0]["variantId"] == decision.slots["hero"].variant_id  # joined by the server
    assert records[2]["value"] == 42.5


def test_forget_erases_the_visitor_on_the_server(server: LiveServer) -> None:
    visitor = f"forget-{uuid.uuid4().hex[:12]}"
    consent = Consent(personalization=True, storage=True)
    request = DecideRequest(
        visitor_id=visitor, session_id="s1", consent=consent, timestamp=FIXED_NOW
    )
    auth = {"authorization": f"Bearer {SECRET}"}
    with Client(server.url, api_key=SECRET, timeout=5) as client:
        decision = client.decide(request)  # storage consent: the server keeps a profile
        assert client.decide(request) is decision
        assert httpx.get(f"{server.url}/v1/visitors/{visitor}", headers=auth).status_code == 200
        client.forget(visitor)
        assert httpx.get(f"{server.url}/v1/visitors/{visitor}", headers=auth).status_code == 404
        assert client.cache is not None and client.cache.get(request) is None
        assert client.decide(request).decision_id != decision.decision_id
        client.forget(visitor)  # idempotent
        with pytest.raises(ValueError, match="invalid visitor id"):
            client.forget("not a valid id")  # refused before anything is sent
    marker = visitor_hash(visitor)
    _wait_for(
        lambda: any(
            r["kind"] == "erasure" and r["visitorHash"] == marker for r in _log_lines(server)
        ),
        "an erasure marker in the event log",
    )


def test_forget_needs_a_secret_key_which_the_keyless_demo_has_not(
    live_server: LiveServer,
) -> None:
    visitor = f"demo-{uuid.uuid4().hex[:12]}"
    request = DecideRequest(visitor_id=visitor, session_id="s1", timestamp=FIXED_NOW)
    with Client(live_server.url, timeout=5) as client:
        client.decide(request)
        with pytest.raises(APIError) as info:
            client.forget(visitor)
        assert info.value.status == 401
        assert str(info.value.problem["type"]).endswith("/missing-key")
        assert client.cache is not None and client.cache.get(request) is None  # dropped anyway


def test_a_dead_server_gets_fast_fallbacks_then_the_breaker_opens(
    bundle_dir: Path, tmp_path: Path
) -> None:
    # demo (opted in): a few calls only
    live = _start_server(bundle_dir, tmp_path / "server.log", {"TAILOR_DEMO": "1"})
    try:
        with Client(live.url, timeout=0.5, cache=False) as client:
            request = DecideRequest(visitor_id="v-dies", session_id="s1", timestamp=FIXED_NOW)
            assert client.decide(request).model_version != "fallback"
            live.process.terminate()
            live.process.wait(timeout=10)
            breaker = client.breaker
            assert breaker is not None
            for _ in range(5):
                start = time.monotonic()
                decision = client.decide(request)
                assert time.monotonic() - start < 0.4
                assert decision.model_version == "fallback"
                assert decision.reasons[0].code.startswith("fallback.")
                if breaker.state == "open":
                    break
            assert breaker.state == "open"
            start = time.monotonic()
            decision = client.decide(request)
            assert time.monotonic() - start < 0.05
            assert decision.reasons[0].code == "fallback.circuit_open"
    finally:
        if live.process.poll() is None:
            live.process.kill()
            live.process.wait(timeout=10)
