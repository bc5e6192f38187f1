"""The event guard (:class:`server.stores.MemoryEventGuard`, and the same checks against
:class:`server.stores.redis_guard.RedisEventGuard` on a real redis-server) and the events
handler's rules for public keys, in process: issued decisions, event ids, one conversion per
decision, bounded values, visitor tokens, the ``trusted`` mark in the log. The attacks
themselves are replayed against a real server in ``test_event_guard_live.py``, and across
replicas in ``test_replicas_guard.py``."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sdk.schema import Event
from server.stores import EventGuard, GuardRefusal, MemoryEventGuard
from server.stores.redis_conn import RedisState
from server.stores.redis_guard import RedisEventGuard
from tests.conftest import (
    TEST_ORIGIN,
    TEST_PUBLIC_KEY,
    TEST_SECRET_KEY,
    app_client,
)

DAY = 86_400.0


class Clock:
    """A settable clock (seconds) for the guard's time to live."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def ev(
    kind: str = "click",
    visitor: str = "v1",
    decision: str | None = "d1",
    event_id: str | None = "e1",
    value: float | None = None,
) -> Event:
    return Event(
        type=kind,  # type: ignore[arg-type]
        visitor_id=visitor,
        decision_id=decision,
        event_id=event_id,
        value=value,
    )


def refused(result: GuardRefusal | None, kind: str, at: str) -> None:
    assert result is not None, "the batch should have been refused"
    assert result.kind == kind
    assert result.detail.endswith(f"- at `{at}`"), result.detail


@pytest.fixture
def clock() -> Clock:
    return Clock()


Check = Callable[[list[Event]], Awaitable[GuardRefusal | None]]


@pytest.fixture(params=["memory", "redis"])
def with_guard(
    request: pytest.FixtureRequest, clock: Clock
) -> Callable[[Callable[[EventGuard], Awaitable[None]]], None]:
    """Run an async test body against a guard holding d1 (issued to v1) and d2 (to v2): the
    in-process one, and the Redis one on the session's real redis-server (a fresh prefix)."""

    def run(body: Callable[[EventGuard], Awaitable[None]]) -> None:
        async def main() -> None:
            state: RedisState | None = None
            guard: EventGuard
            if request.param == "memory":
                guard = MemoryEventGuard(max_entries=1000, timer=clock)
            else:
                url = request.getfixturevalue("redis_server").url
                state = RedisState(url, prefix=f"guard-{uuid.uuid4().hex}", timeout=2.0)
                guard = RedisEventGuard(state)
            try:
                await guard.issue("d1", "v1")
                await guard.issue("d2", "v2")
                await body(guard)
            finally:
                if state is not None:
                    await state.close()

        asyncio.run(main())

    return run


Runner = Callable[[Callable[[EventGuard], Awaitable[None]]], None]


def test_both_are_event_guards(with_guard: Runner) -> None:
    async def body(guard: EventGuard) -> None:
        assert await guard.check_and_record([ev()]) is None

    with_guard(body)


def test_an_event_must_name_a_decision_issued_to_its_visitor(with_guard: Runner) -> None:
    async def body(guard: EventGuard) -> None:
        check = guard.check_and_record
        refused(await check([ev(decision=None)]), "forged-event", "$.events[0].decisionId")
        refused(await check([ev(decision="never")]), "forged-event", "$.events[0].decisionId")
        # d2 was issued to v2: v1 cannot use it
        refused(await check([ev(decision="d2")]), "forged-event", "$.events[0].decisionId")
        refused(await check([ev(event_id=None)]), "forged-event", "$.events[0].eventId")
        assert await check([ev(visitor="v2", decision="d2")]) is None

    with_guard(body)


def test_event_ids_are_seen_once_across_and_within_batches(with_guard: Runner) -> None:
    async def body(guard: EventGuard) -> None:
        check = guard.check_and_record
        assert await check([ev(event_id="a"), ev("impression", event_id="b")]) is None
        refused(await check([ev(event_id="b")]), "replayed-event", "$.events[0].eventId")
        refused(
            await check([ev(event_id="c"), ev(event_id="c")]),
            "replayed-event",
            "$.events[1].eventId",
        )

    with_guard(body)


def test_a_refused_batch_records_nothing(with_guard: Runner) -> None:
    async def body(guard: EventGuard) -> None:
        batch = [ev(event_id="ok", kind="conversion"), ev(event_id="bad", decision="never")]
        refused(await guard.check_and_record(batch), "forged-event", "$.events[1].decisionId")
        # neither the good event's id nor its conversion was recorded
        assert await guard.check_and_record([ev(event_id="ok", kind="conversion")]) is None

    with_guard(body)


def test_a_decision_converts_once(with_guard: Runner) -> None:
    async def body(guard: EventGuard) -> None:
        check = guard.check_and_record
        assert await check([ev("conversion", event_id="c1", value=5.0)]) is None
        again = await check([ev("conversion", event_id="c2", value=5.0)])
        refused(again, "replayed-event", "$.events[0].decisionId")
        assert again is not None and "converts once" in again.detail
        both = [
            ev("conversion", visitor="v2", decision="d2", event_id="c3"),
            ev("conversion", visitor="v2", decision="d2", event_id="c4"),
        ]
        refused(await check(both), "replayed-event", "$.events[1].decisionId")
        # other event types of a converted decision are still fine
        assert await check([ev("click", event_id="c5")]) is None

    with_guard(body)


def test_orders_are_claimed_once(with_guard: Runner) -> None:
    async def body(guard: EventGuard) -> None:
        assert (await guard.claim_orders(["o-1"]))[0] is True
        assert (await guard.claim_orders(["o-1"]))[0] is False
        assert (await guard.claim_orders(["o-2"]))[0] is True
        # one batch: claimed together, a repeat within it is a duplicate
        assert await guard.claim_orders(["o-3", "o-1", "o-3", "o-4"]) == [True, False, False, True]
        assert await guard.claim_orders([]) == []

    with_guard(body)


def test_concurrent_replays_pass_once(with_guard: Runner) -> None:
    async def body(guard: EventGuard) -> None:
        same = [ev("conversion", event_id="same")]
        passed = await asyncio.gather(*(guard.check_and_record(same) for _ in range(8)))
        assert sorted(p is None for p in passed) == [False] * 7 + [True]

    with_guard(body)


def test_decisions_and_event_ids_are_remembered_for_a_day(clock: Clock) -> None:
    async def body() -> None:
        guard = MemoryEventGuard(max_entries=1000, timer=clock)
        await guard.issue("d1", "v1")
        assert await guard.check_and_record([ev(event_id="x")]) is None
        clock.now += DAY - 1
        again = await guard.check_and_record([ev(event_id="x")])
        refused(again, "replayed-event", "$.events[0].eventId")
        clock.now += 2  # the decision (issued at 1000) and the event id are forgotten
        forgotten = await guard.check_and_record([ev(event_id="y")])
        refused(forgotten, "forged-event", "$.events[0].decisionId")

    asyncio.run(body())


def test_orders_are_claimed_once_for_thirty_days(clock: Clock) -> None:
    async def body() -> None:
        guard = MemoryEventGuard(max_entries=1000, timer=clock)
        assert (await guard.claim_orders(["o-1"]))[0] is True
        assert (await guard.claim_orders(["o-1"]))[0] is False
        clock.now += 29 * DAY
        assert (await guard.claim_orders(["o-1"]))[0] is False
        clock.now += 2 * DAY
        assert (await guard.claim_orders(["o-1"]))[0] is True

    asyncio.run(body())


def test_memory_is_bounded_least_recent_dropped(clock: Clock) -> None:
    async def body() -> None:
        guard = MemoryEventGuard(max_entries=3, timer=clock)
        for i in range(10):
            await guard.issue(f"d{i}", f"v{i}")
        assert len(guard) == 3
        refused(
            await guard.check_and_record([ev(visitor="v0", decision="d0")]),
            "forged-event",
            "$.events[0].decisionId",
        )
        assert await guard.check_and_record([ev(visitor="v9", decision="d9")]) is None

    asyncio.run(body())


def test_memory_guard_passes_a_batch_replayed_from_threads_once() -> None:
    guard = MemoryEventGuard(max_entries=1000)
    asyncio.run(guard.issue("d1", "v1"))
    passed: list[bool] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        result = asyncio.run(guard.check_and_record([ev("conversion", event_id="same")]))
        passed.append(result is None)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(passed) == [False] * 7 + [True]


# --- the handler, in process -------------------------------------------------------------------

BROWSER = {
    "authorization": f"Bearer {TEST_PUBLIC_KEY}",
    "origin": TEST_ORIGIN,
    "content-type": "text/plain",
}


def _decide(client: Any, visitor: str = "v1") -> dict[str, Any]:
    body = {
        "visitorId": visitor,
        "sessionId": "s1",
        "consent": {"personalization": True, "storage": True},
        "slots": ["hero"],
    }
    r = client.post("/v1/decide", content=json.dumps(body), headers=BROWSER)
    assert r.status_code == 200, r.text
    decision: dict[str, Any] = r.json()
    return decision


def _lines(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def test_browser_values_are_bounded_by_the_setting(bundle_dir: Path, tmp_path: Path) -> None:
    with app_client(
        bundle_path=str(bundle_dir), browser_max_conversion_value=50.0, event_log_dir=str(tmp_path)
    ) as client:
        d = _decide(client)
        event = {
            "type": "conversion",
            "visitorId": d["visitorId"],
            "decisionId": d["decisionId"],
            "eventId": "e-1",
            "value": 50.5,
        }
        r = client.post("/v1/events", content=json.dumps({"events": [event]}), headers=BROWSER)
        assert r.status_code == 422 and r.headers["content-type"].startswith(
            "application/problem+json"
        )
        problem = r.json()
        assert problem["type"].endswith("/value-too-large")
        assert "/v1/conversions" in problem["detail"]
        assert problem["detail"].endswith("- at `$.events[0].value`")
        # refused whole and not recorded: the same event id with a smaller value passes
        event["value"] = 50.0
        ok = client.post("/v1/events", content=json.dumps({"events": [event]}), headers=BROWSER)
        assert ok.status_code == 202, ok.text
        # a secret key (the site's backend) is not bounded
        backend = {"authorization": f"Bearer {TEST_SECRET_KEY}"}
        big = {"type": "conversion", "visitorId": "v-backend", "value": 5000.0}
        assert client.post("/v1/events", json={"events": [big]}, headers=backend).status_code == 202
    conversions = [r for r in _lines(tmp_path) if r.get("type") == "conversion"]
    assert [(r["value"], r.get("trusted", False)) for r in conversions] == [
        (50.0, False),
        (5000.0, True),
    ]


def test_a_valid_visitor_token_lets_events_change_the_profile(
    bundle_dir: Path, tmp_path: Path
) -> None:
    with app_client(bundle_path=str(bundle_dir), event_log_dir=str(tmp_path)) as client:
        d = _decide(client)
        visitor, token = d["visitorId"], d["visitorToken"]
        assert token

        def convert(event_id: str, batch_token: str | None, decision: dict[str, Any]) -> None:
            body: dict[str, Any] = {
                "events": [
                    {
                        "type": "conversion",
                        "visitorId": decision["visitorId"],
                        "decisionId": decision["decisionId"],
                        "eventId": event_id,
                        "value": 20.0,
                    }
                ]
            }
            if batch_token is not None:
                body["visitorToken"] = batch_token
            r = client.post("/v1/events", content=json.dumps(body), headers=BROWSER)
            assert r.status_code == 202, r.text

        def purchases() -> float:
            r = client.get(f"/v1/visitors/{visitor}")  # the secret key
            assert r.status_code == 200, r.text
            return float(r.json()["behavior"]["purchases"])

        convert("no-token", None, d)  # accepted and logged, but changes nothing stored
        assert purchases() == 0
        second = _decide_with(client, visitor, token)
        assert second["visitorId"] == visitor
        convert("with-token", token, second)
        assert purchases() == 1


def _decide_with(client: Any, visitor: str, token: str) -> dict[str, Any]:
    body = {
        "visitorId": visitor,
        "visitorToken": token,
        "sessionId": "s2",
        "consent": {"personalization": True, "storage": True},
        "slots": ["hero"],
    }
    r = client.post("/v1/decide", content=json.dumps(body), headers=BROWSER)
    assert r.status_code == 200, r.text
    decision: dict[str, Any] = r.json()
    return decision


def test_the_settings_come_from_the_environment() -> None:
    from server.settings import Settings

    default = Settings()
    assert (default.browser_max_conversion_value, default.event_guard_entries) == (10_000, 200_000)
    s = Settings.from_env(
        {"TAILOR_BROWSER_MAX_CONVERSION_VALUE": "250.5", "TAILOR_EVENT_GUARD_ENTRIES": "5000"}
    )
    assert (s.browser_max_conversion_value, s.event_guard_entries) == (250.5, 5000)
    with pytest.raises(Exception, match="event_guard_entries"):
        Settings.from_env({"TAILOR_EVENT_GUARD_ENTRIES": "10"})
