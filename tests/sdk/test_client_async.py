"""The AsyncClient in remote mode against httpx.MockTransport (sync and async handlers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest

from sdk import (
    APIError,
    AsyncClient,
    CircuitBreaker,
    CircuitOpenError,
    TailorError,
    TransportError,
)
from sdk.schema import Content, Decision, Event, EventBatch, request_decoder
from tests.sdk.test_client_remote import (
    BASE,
    Server,
    decide,
    is_fallback,
    problem,
    raises,
    route,
    sent_events,
    status,
)
from tests.sdk.test_resilience import FakeClock
from tests.sdk.test_visit_cache import visit

_requests = msgspec.json.Decoder(list[Any])


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


def client_for(server: Any, **kwargs: Any) -> AsyncClient:
    return AsyncClient(BASE, transport=httpx.MockTransport(server), **kwargs)


async def _until(condition: Callable[[], bool], rounds: int = 10_000) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


# --- wire format and constructor -----------------------------------------------------------


def test_decide_posts_json_with_the_bearer_key() -> None:
    async def main() -> None:
        server = Server()
        async with client_for(server, api_key="sk_test_secret") as client:
            request = visit(slots=["hero", "banner"])
            decision = await client.decide(request)
        (sent,) = server.requests
        assert (sent.method, str(sent.url)) == ("POST", f"{BASE}/v1/decide")
        assert sent.headers["content-type"] == "application/json"
        assert sent.headers["authorization"] == "Bearer sk_test_secret"
        assert request_decoder.decode(sent.content) == request
        assert isinstance(decision, Decision)
        assert set(decision.slots) == {"hero", "banner"}

    run(main)


def test_async_handler_is_awaited() -> None:
    async def main() -> None:
        async def answer(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0)
            return decide(request)

        async with client_for(answer) as client:
            assert (await client.decide(visit())).model_version == "test-model"

    run(main)


def test_constructor_does_no_io() -> None:
    async def main() -> None:
        server = Server()
        tasks = asyncio.all_tasks()
        client = client_for(server)
        assert server.calls == 0
        assert asyncio.all_tasks() == tasks
        await client.close()
        assert server.calls == 0

    run(main)


def test_constructor_needs_no_running_loop() -> None:
    client = client_for(Server())
    assert client.mode == "remote"
    run(client.close)


@pytest.mark.parametrize("base_url", [None, ""])
def test_remote_mode_needs_a_base_url(base_url: str | None) -> None:
    with pytest.raises(ValueError, match="base_url"):
        AsyncClient(base_url)
    with pytest.raises(ValueError, match="mode"):
        AsyncClient(BASE, mode="edge")  # type: ignore[arg-type]


# --- failures, retries and fallbacks -------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "calls", "cause"),
    [
        ((raises(httpx.ReadTimeout), decide), 1, "timeout"),
        ((raises(httpx.ConnectError),), 2, "unreachable"),
        ((status(503),), 2, "unavailable"),
        ((status(500), decide), 1, "unavailable"),
        ((status(502), decide), 1, "unavailable"),
    ],
    ids=["read-timeout", "connect-error", "503", "500", "502"],
)
def test_failures_fall_back(answers: tuple[Any, ...], calls: int, cause: str) -> None:
    async def main() -> None:
        server = Server(*answers)
        async with client_for(server) as client:
            decision = await client.decide(visit())
        assert server.calls == calls
        assert is_fallback(decision, cause)

    run(main)


@pytest.mark.parametrize(
    "first",
    [raises(httpx.ConnectError), status(503), status(429, **{"retry-after": "0"})],
    ids=["connect-error", "503", "429"],
)
def test_safe_failures_are_retried(first: Any) -> None:
    async def main() -> None:
        server = Server(first, decide)
        async with client_for(server) as client:
            assert (await client.decide(visit())).model_version == "test-model"
        assert server.calls == 2

    run(main)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 413, 422])
def test_caller_errors_raise_api_error(code: int) -> None:
    async def main() -> None:
        server = Server(status(code), decide)
        async with client_for(server) as client:
            with pytest.raises(APIError) as info:
                await client.decide(visit())
        assert info.value.status == code
        assert info.value.problem["title"] == "refused"
        assert server.calls == 1

    run(main)


def test_fallbacks_off_raise() -> None:
    async def main() -> None:
        async with client_for(Server(raises(httpx.ReadTimeout)), fallback=False) as client:
            with pytest.raises(TransportError, match="timed out"):
                await client.decide(visit())
        async with client_for(Server(status(503)), fallback=False) as client:
            with pytest.raises(APIError) as info:
                await client.decide(visit())
            assert info.value.status == 503

    run(main)


def test_fallback_mapping_fills_the_requested_slots() -> None:
    hero = Content(type="text", text="Welcome")

    async def main() -> None:
        server = Server(status(500), decide)
        async with client_for(server, fallback={"hero": hero}) as client:
            decision = await client.decide(visit(slots=["hero", "banner"]))
            assert is_fallback(decision, "unavailable")
            assert list(decision.slots) == ["hero"]
            assert decision.slots["hero"].content == hero
            assert client.cache is not None and len(client.cache) == 0  # not cached
            assert (await client.decide(visit())).model_version == "test-model"
        assert server.calls == 2

    run(main)


def test_malformed_success_body_is_the_servers_fault() -> None:
    async def main() -> None:
        server = Server(lambda r: httpx.Response(200, content=b"<html></html>"))
        async with client_for(server) as client:
            assert is_fallback(await client.decide(visit()), "unavailable")
        async with client_for(server, fallback=False) as client:
            with pytest.raises(APIError) as info:
                await client.decide(visit())
        assert info.value.status == 502

    run(main)


# --- circuit breaker -----------------------------------------------------------------------


def test_breaker_opens_after_five_failures() -> None:
    async def main() -> None:
        server = Server(status(500))
        async with client_for(server) as client:
            for _ in range(5):
                assert is_fallback(await client.decide(visit()), "unavailable")
            assert is_fallback(await client.decide(visit()), "circuit_open")
        assert server.calls == 5
        async with client_for(Server(status(500)), fallback=False) as client:
            for _ in range(5):
                with pytest.raises(APIError):
                    await client.decide(visit())
            with pytest.raises(CircuitOpenError):
                await client.decide(visit())

    run(main)


def test_cancelled_trial_call_does_not_keep_the_breaker_open() -> None:
    # The half-open trial is claimed by allow(); if the caller is cancelled while it runs
    # (asyncio.wait_for, a client disconnect), neither success() nor failure() is recorded.
    # Once that call is over, the breaker must let a later trial through, not stay open.
    clock = FakeClock()

    async def main() -> None:
        hang = asyncio.Event()  # never set
        ended = asyncio.Event()
        seen: list[int] = []

        async def answer(request: httpx.Request) -> httpx.Response:
            seen.append(1)
            if len(seen) == 1:
                return problem(500)
            if len(seen) == 2:
                try:  # the trial hangs until the caller gives up (or a read timeout)
                    await asyncio.wait_for(hang.wait(), 0.5)
                except TimeoutError:
                    raise httpx.ReadTimeout("simulated", request=request) from None
                finally:
                    ended.set()
            return decide(request)

        breaker = CircuitBreaker(failures=1, reset_after=5.0, clock=clock)
        async with client_for(answer, breaker=breaker, cache=False) as client:
            assert is_fallback(await client.decide(visit()), "unavailable")
            clock.advance(5.0)
            trial = asyncio.create_task(client.decide(visit()))
            await _until(lambda: len(seen) == 2)
            trial.cancel()
            with pytest.raises(asyncio.CancelledError):
                await trial
            await asyncio.wait_for(ended.wait(), 5)
            clock.advance(5.0)  # a whole further period later
            decision = await client.decide(visit("another-visitor"))
            assert decision.model_version == "test-model", decision.reasons[0].code

    run(main)


# --- cache and coalescing ------------------------------------------------------------------


def test_same_visit_is_served_from_the_cache() -> None:
    async def main() -> None:
        server = Server()
        async with client_for(server) as client:
            first = await client.decide(visit())
            assert await client.decide(visit()) is first
            assert server.calls == 1
            await client.decide(visit(session="s2"))
            assert server.calls == 2
            await client.decide(visit(slots=["hero", "recommendation"]))
            assert server.calls == 3

    run(main)


def test_concurrent_identical_decides_share_one_call() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        calls: list[int] = []

        async def blocked(request: httpx.Request) -> httpx.Response:
            calls.append(1)
            await gate.wait()
            return decide(request)

        async with client_for(blocked, cache=False) as client:

            async def release() -> None:
                await _until(lambda: client._coalescer.shared == 7)
                gate.set()

            decisions, _ = await asyncio.gather(
                asyncio.gather(*(client.decide(visit()) for _ in range(8))), release()
            )
            assert calls == [1]
            assert all(d == decisions[0] for d in decisions)
            later = await client.decide(visit())
            assert later.decision_id != decisions[0].decision_id
            assert calls == [1, 1]

    run(main)


# --- decide_many ---------------------------------------------------------------------------


def test_decide_many_posts_chunks_of_100() -> None:
    async def main() -> None:
        def second_chunk_down(request: httpx.Request) -> httpx.Response:
            if _requests.decode(request.content)[0]["visitorId"] == "v100":
                return problem(503)
            return route(request)

        server = Server(second_chunk_down)
        async with client_for(server) as client:
            decisions = await client.decide_many([visit(f"v{i}") for i in range(250)])
        sizes = [len(_requests.decode(r.content)) for r in server.requests]
        assert sizes == [100, 100, 100, 50]  # the 503 chunk was retried once
        assert server.paths() == ["/v1/decide/batch"] * 4
        assert [d.visitor_id for d in decisions] == [f"v{i}" for i in range(250)]
        assert all(is_fallback(d, "unavailable") for d in decisions[100:200])
        assert not any(d.model_version == "fallback" for d in decisions[:100] + decisions[200:])

    run(main)


# --- events, forget, close -----------------------------------------------------------------


def test_track_flush_and_close_from_the_loop() -> None:
    async def main() -> None:
        server = Server()
        client = client_for(server, api_key="sk_x", event_batch_size=2, event_interval=60.0)
        tracked = [Event(type="click", visitor_id=f"v{i}") for i in range(3)]
        assert all(client.track(e) for e in tracked)
        assert await client.flush() is True
        assert sent_events(server) == tracked
        posts = [r for r in server.requests if r.url.path == "/v1/events"]
        assert [len(msgspec.json.decode(r.content, type=EventBatch).events) for r in posts] == [
            2,
            1,
        ]
        assert all(r.headers["authorization"] == "Bearer sk_x" for r in posts)
        client.track(Event(type="impression", visitor_id="last"))
        await client.close()  # flushes
        assert sent_events(server)[-1].visitor_id == "last"
        assert client.track(Event(type="impression", visitor_id="late")) is False
        assert client.events.dropped == 1

    run(main)


def test_forget_deletes_the_visitor_and_its_cached_decisions() -> None:
    async def main() -> None:
        server = Server()
        async with client_for(server) as client:
            await client.decide(visit("v1"))
            await client.forget("v1")
            assert server.requests[-1].method == "DELETE"
            assert server.requests[-1].url.path == "/v1/visitors/v1"
            await client.decide(visit("v1"))
            assert server.calls == 3

        def refuse(request: httpx.Request) -> httpx.Response:
            return problem(401) if request.method == "DELETE" else route(request)

        async with client_for(refuse) as client:
            with pytest.raises(APIError) as info:
                await client.forget("v1")
            assert info.value.status == 401

    run(main)


def test_async_with_closes() -> None:
    async def main() -> None:
        server = Server()
        async with client_for(server) as client:
            client.track(Event(type="impression", visitor_id="v1"))
        assert [e.visitor_id for e in sent_events(server)] == ["v1"]
        with pytest.raises(TailorError, match="closed"):
            await client.decide(visit())

    run(main)
