"""The sync Client in remote mode against httpx.MockTransport: wire format, retries, breaker,
fallbacks, caching, coalescing, batches, events, erasure and lifecycle.

``Server`` and the answer helpers are shared with the AsyncClient tests.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import msgspec
import pytest

from sdk import (
    APIError,
    CircuitBreaker,
    CircuitOpenError,
    Client,
    Decider,
    Fallback,
    Retry,
    TailorError,
    TransportError,
    VisitCache,
)
from sdk.schema import (
    Content,
    DecideRequest,
    Decision,
    Event,
    EventBatch,
    SlotDecision,
    request_decoder,
)
from tests.sdk.test_resilience import FakeClock
from tests.sdk.test_visit_cache import decision_for, visit, wait_until

BASE = "http://tailor.test"
Answer = Callable[[httpx.Request], httpx.Response]

_requests = msgspec.json.Decoder(list[DecideRequest])
_batch = msgspec.json.Decoder(EventBatch)


def json_response(status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=msgspec.json.encode(body),
        headers={"content-type": "application/json", **headers},
    )


def decide(request: httpx.Request) -> httpx.Response:
    """The server's ``/v1/decide``: a fresh decision for the posted request."""
    return json_response(200, decision_for(request_decoder.decode(request.content)))


def route(request: httpx.Request) -> httpx.Response:
    """A healthy server: every endpoint the client uses."""
    path = request.url.path
    if request.method == "POST" and path == "/v1/decide":
        return decide(request)
    if request.method == "POST" and path == "/v1/decide/batch":
        return json_response(200, [decision_for(r) for r in _requests.decode(request.content)])
    if request.method == "POST" and path == "/v1/events":
        return json_response(202, {"accepted": len(_batch.decode(request.content).events)})
    if request.method == "DELETE" and path.startswith("/v1/visitors/"):
        return httpx.Response(204)
    return problem(404)


def problem(status: int, title: str = "refused", **headers: str) -> httpx.Response:
    body = {"type": f"https://tailor.dev/problems/{status}", "title": title, "status": status}
    return httpx.Response(
        status,
        content=msgspec.json.encode({**body, "detail": f"detail of {status}"}),
        headers={"content-type": "application/problem+json", **headers},
    )


def status(code: int, **headers: str) -> Answer:
    return lambda request: problem(code, **headers)


def raises(exc_type: type[httpx.TransportError]) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"simulated {exc_type.__name__}", request=request)

    return answer


class Server:
    """A MockTransport handler that records requests and answers with ``answers`` in order
    (the last one repeats)."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = answers or (route,)
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return answer(request)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.url.path for r in self.requests if method in (None, r.method)]


@pytest.fixture
def client_for() -> Iterator[Callable[..., Client]]:
    """``client_for(server, **kwargs)``: a remote Client on a MockTransport, closed after."""
    made: list[Client] = []

    def make(server: Server, **kwargs: Any) -> Client:
        client = Client(BASE, transport=httpx.MockTransport(server), **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def is_fallback(decision: Decision, cause: str) -> bool:
    return decision.model_version == "fallback" and decision.reasons[0].code == f"fallback.{cause}"


# --- wire format ---------------------------------------------------------------------------


def test_decide_posts_json_with_the_bearer_key(client_for: Callable[..., Client]) -> None:
    server = Server()
    client = client_for(server, api_key="sk_test_secret")
    request = visit(slots=["hero", "banner"])
    decision = client.decide(request)
    (sent,) = server.requests
    assert (sent.method, str(sent.url)) == ("POST", f"{BASE}/v1/decide")
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["authorization"] == "Bearer sk_test_secret"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["user-agent"] == "tailor-python"
    assert b'"visitorId":"v1"' in sent.content  # camelCase on the wire
    assert request_decoder.decode(sent.content) == request
    assert isinstance(decision, Decision)
    assert set(decision.slots) == {"hero", "banner"}


def test_no_api_key_sends_no_authorization(client_for: Callable[..., Client]) -> None:
    server = Server()
    client_for(server).decide(visit())
    assert "authorization" not in server.requests[0].headers


def test_base_url_path_prefix_is_kept() -> None:
    server = Server(decide)
    with Client(f"{BASE}/tailor/", transport=httpx.MockTransport(server)) as client:
        client.decide(visit())
    assert str(server.requests[0].url) == f"{BASE}/tailor/v1/decide"


def test_each_attempt_is_bounded_by_the_timeout(client_for: Callable[..., Client]) -> None:
    server = Server()
    client_for(server, timeout=0.25).decide(visit())
    assert server.requests[0].extensions["timeout"] == {
        "connect": 0.25,
        "read": 0.25,
        "write": 0.25,
        "pool": 0.25,
    }


def test_a_real_decision_round_trips(
    client_for: Callable[..., Client],
    decider: Decider,
    make_request: Callable[..., dict[str, object]],
) -> None:
    request = request_decoder.decode(msgspec.json.encode(make_request()))
    served = decider.decide(request)
    server = Server(lambda r: json_response(200, served))
    assert client_for(server).decide(request) == served


def test_constructor_does_no_io() -> None:
    server = Server()
    before = {t for t in threading.enumerate() if t.name.startswith("tailor")}
    client = Client(BASE, api_key="sk_x", transport=httpx.MockTransport(server))
    assert server.calls == 0
    assert {t for t in threading.enumerate() if t.name.startswith("tailor")} == before
    client.close()
    assert server.calls == 0


# --- failures, retries and fallbacks -------------------------------------------------------


def test_read_timeout_falls_back_without_retry(client_for: Callable[..., Client]) -> None:
    server = Server(raises(httpx.ReadTimeout), decide)
    decision = client_for(server).decide(visit())
    assert server.calls == 1  # the server may have acted on it: not sent twice
    assert is_fallback(decision, "timeout")
    assert "timed out" in decision.reasons[0].message


def test_read_timeout_raises_when_fallbacks_are_off(client_for: Callable[..., Client]) -> None:
    server = Server(raises(httpx.ReadTimeout))
    with pytest.raises(TransportError, match="POST /v1/decide timed out") as info:
        client_for(server, fallback=False).decide(visit())
    assert not isinstance(info.value, CircuitOpenError)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert server.calls == 1


def test_connect_error_is_retried_once_then_falls_back(client_for: Callable[..., Client]) -> None:
    server = Server(raises(httpx.ConnectError))
    decision = client_for(server).decide(visit())
    assert server.calls == 2  # Retry() default: 2 attempts
    assert is_fallback(decision, "unreachable")


def test_connect_error_then_success(client_for: Callable[..., Client]) -> None:
    server = Server(raises(httpx.ConnectError), decide)
    decision = client_for(server).decide(visit())
    assert server.calls == 2
    assert decision.model_version == "test-model"


def test_connect_timeout_is_retried_and_reported_as_timeout(
    client_for: Callable[..., Client],
) -> None:
    server = Server(raises(httpx.ConnectTimeout))
    decision = client_for(server).decide(visit())
    assert server.calls == 2
    assert is_fallback(decision, "timeout")


def test_retry_attempts_are_configurable(client_for: Callable[..., Client]) -> None:
    server = Server(raises(httpx.ConnectError))
    client = client_for(server, retry=Retry(attempts=4, base=0.0))
    assert is_fallback(client.decide(visit()), "unreachable")
    assert server.calls == 4
    server = Server(raises(httpx.ConnectError), decide)
    assert is_fallback(client_for(server, retry=Retry(attempts=1)).decide(visit()), "unreachable")
    assert server.calls == 1


def test_connect_error_raises_when_fallbacks_are_off(client_for: Callable[..., Client]) -> None:
    server = Server(raises(httpx.ConnectError))
    with pytest.raises(TransportError, match="POST /v1/decide failed: ConnectError"):
        client_for(server, fallback=False).decide(visit())
    assert server.calls == 2


def test_503_then_200_is_retried(client_for: Callable[..., Client]) -> None:
    server = Server(status(503), decide)
    decision = client_for(server).decide(visit())
    assert server.calls == 2
    assert decision.model_version == "test-model"


def test_429_with_retry_after_zero_is_retried(client_for: Callable[..., Client]) -> None:
    server = Server(status(429, **{"retry-after": "0"}), decide)
    assert client_for(server).decide(visit()).model_version == "test-model"
    assert server.calls == 2


def test_503_twice_falls_back(client_for: Callable[..., Client]) -> None:
    server = Server(status(503))
    decision = client_for(server).decide(visit())
    assert server.calls == 2
    assert is_fallback(decision, "unavailable")
    assert decision.reasons[0].message == "503 refused: detail of 503"


@pytest.mark.parametrize("code", [408, 500, 502, 504])
def test_server_errors_fall_back_without_retry(
    client_for: Callable[..., Client], code: int
) -> None:
    server = Server(status(code), decide)
    decision = client_for(server).decide(visit())
    assert server.calls == 1
    assert is_fallback(decision, "unavailable")


def test_server_error_raises_api_error_when_fallbacks_are_off(
    client_for: Callable[..., Client],
) -> None:
    server = Server(status(503))
    with pytest.raises(APIError) as info:
        client_for(server, fallback=False).decide(visit())
    assert info.value.status == 503
    assert server.calls == 2


@pytest.mark.parametrize("code", [400, 401, 403, 404, 413, 422])
def test_caller_errors_raise_api_error_without_retry_or_fallback(
    client_for: Callable[..., Client], code: int
) -> None:
    server = Server(status(code), decide)
    client = client_for(server)
    with pytest.raises(APIError) as info:
        client.decide(visit())
    assert server.calls == 1
    assert info.value.status == code
    assert info.value.problem == {
        "type": f"https://tailor.dev/problems/{code}",
        "title": "refused",
        "status": code,
        "detail": f"detail of {code}",
    }
    assert str(info.value) == f"{code} refused: detail of {code}"
    assert client.breaker is not None and client.breaker.state == "closed"


def test_problem_without_json_body_gets_a_title(client_for: Callable[..., Client]) -> None:
    server = Server(lambda r: httpx.Response(401, text="<html>go away</html>"))
    with pytest.raises(APIError) as info:
        client_for(server).decide(visit())
    assert info.value.problem == {"title": "Unauthorized", "detail": "<html>go away</html>"}


@pytest.mark.parametrize("body", [b"<html>captive portal</html>", b'{"decisionId": "x"}', b"[]"])
def test_malformed_success_body_is_the_servers_fault(
    client_for: Callable[..., Client], body: bytes
) -> None:
    # A 200 that is not a decision (a captive portal, a misrouted base URL): a fallback, and
    # with fallbacks off an APIError with status 502, never the caller's 200.
    server = Server(lambda r: httpx.Response(200, content=body))
    assert is_fallback(client_for(server).decide(visit()), "unavailable")
    with pytest.raises(APIError) as info:
        client_for(server, fallback=False).decide(visit())
    assert info.value.status == 502
    assert info.value.problem["title"] == "invalid answer from server"
    assert server.calls == 2


# --- fallback content ----------------------------------------------------------------------

HERO = Content(type="text", text="Welcome")
BANNER = Content(type="image", image_url="https://cdn.example.com/b.png", alt="Sale")


def test_fallback_mapping_fills_the_requested_slots(client_for: Callable[..., Client]) -> None:
    server = Server(status(500))
    client = client_for(server, fallback={"hero": HERO, "banner": BANNER})
    decision = client.decide(visit(slots=["hero", "recommendation"]))
    assert is_fallback(decision, "unavailable")
    assert list(decision.slots) == ["hero"]
    assert decision.slots["hero"].variant_id == "default"
    assert decision.slots["hero"].content == HERO
    everything = client.decide(visit(slots=[]))
    assert set(everything.slots) == {"hero", "banner"}
    assert everything.slots["banner"].content == BANNER


def test_fallback_object_and_slot_decisions_are_used(client_for: Callable[..., Client]) -> None:
    own = SlotDecision(
        variant_id="house", offer_id="o1", content=HERO, propensity=1.0, reason="ours"
    )
    server = Server(status(500))
    decision = client_for(server, fallback=Fallback({"hero": own})).decide(visit())
    assert decision.slots == {"hero": own}


def test_default_remote_fallback_has_no_slots(client_for: Callable[..., Client]) -> None:
    decision = client_for(Server(status(500))).decide(visit(slots=["hero"]))
    assert decision.slots == {}
    assert decision.visitor_id == "v1"
    assert decision.session_id == "s1"
    assert decision.ttl == 0
    assert not decision.personalized


def test_fallback_decisions_are_not_cached(client_for: Callable[..., Client]) -> None:
    server = Server(status(500), decide)
    client = client_for(server)
    assert is_fallback(client.decide(visit()), "unavailable")
    assert client.cache is not None and len(client.cache) == 0
    assert client.decide(visit()).model_version == "test-model"
    assert server.calls == 2


# --- circuit breaker -----------------------------------------------------------------------


def test_breaker_opens_after_five_failures(client_for: Callable[..., Client]) -> None:
    server = Server(status(500))
    client = client_for(server)
    for _ in range(5):
        assert is_fallback(client.decide(visit()), "unavailable")
    assert server.calls == 5
    assert client.breaker is not None and client.breaker.state == "open"
    decision = client.decide(visit())
    assert server.calls == 5  # refused without calling the server
    assert is_fallback(decision, "circuit_open")
    assert "circuit breaker open" in decision.reasons[0].message


def test_open_breaker_raises_circuit_open_when_fallbacks_are_off(
    client_for: Callable[..., Client],
) -> None:
    server = Server(status(500))
    client = client_for(server, fallback=False)
    for _ in range(5):
        with pytest.raises(APIError):
            client.decide(visit())
    with pytest.raises(CircuitOpenError, match="retrying in at most 5 s"):
        client.decide(visit())
    assert server.calls == 5


def test_breaker_half_open_trial_closes_it(client_for: Callable[..., Client]) -> None:
    clock = FakeClock()
    server = Server(status(500), status(500), decide)
    client = client_for(
        server, breaker=CircuitBreaker(failures=2, reset_after=5.0, clock=clock), cache=False
    )
    client.decide(visit())
    client.decide(visit())
    assert is_fallback(client.decide(visit()), "circuit_open")
    clock.advance(5.0)
    assert client.decide(visit()).model_version == "test-model"  # the trial
    assert client.breaker is not None and client.breaker.state == "closed"
    assert server.calls == 3


def test_breaker_off_always_calls(client_for: Callable[..., Client]) -> None:
    server = Server(status(500))
    client = client_for(server, breaker=False)
    for _ in range(8):
        client.decide(visit())
    assert server.calls == 8
    assert client.breaker is None


# --- visit cache ---------------------------------------------------------------------------


def test_same_visit_is_served_from_the_cache(client_for: Callable[..., Client]) -> None:
    server = Server()
    client = client_for(server)
    first = client.decide(visit())
    assert client.decide(visit(url="https://shop.example.com/next")) is first
    assert server.calls == 1
    assert client.decide(visit(session="s2")) is not first  # another visit
    assert server.calls == 2
    assert client.decide(visit(slots=["hero", "banner"])) is not first  # not covered
    assert server.calls == 3
    assert client.decide(visit(session=None)) is not None  # never cached
    assert client.decide(visit(session=None)) is not None
    assert server.calls == 5


def test_cache_off_always_calls(client_for: Callable[..., Client]) -> None:
    server = Server()
    client = client_for(server, cache=False)
    client.decide(visit())
    client.decide(visit())
    assert server.calls == 2
    assert client.cache is None


def test_own_visit_cache_is_used(client_for: Callable[..., Client]) -> None:
    # An empty VisitCache is falsy (it has __len__): `cache or None` must not drop it.
    mine = VisitCache(maxsize=10, ttl=60.0)
    server = Server()
    client = client_for(server, cache=mine)
    assert client.cache is mine
    first = client.decide(visit())
    assert client.decide(visit()) is first
    assert server.calls == 1
    assert len(mine) == 1


# --- coalescing ----------------------------------------------------------------------------


def test_concurrent_identical_decides_share_one_call(client_for: Callable[..., Client]) -> None:
    release = threading.Event()

    def blocked(request: httpx.Request) -> httpx.Response:
        assert release.wait(10)
        return decide(request)

    server = Server(blocked)
    client = client_for(server, cache=False)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(client.decide, visit()) for _ in range(8)]
        wait_until(lambda: client._coalescer.shared == 7)
        release.set()
        decisions = [f.result(timeout=10) for f in futures]
    assert server.calls == 1
    assert all(d == decisions[0] for d in decisions)
    assert client.decide(visit()).decision_id != decisions[0].decision_id  # a new call later


def test_forked_child_does_not_wait_for_a_call_in_flight_in_the_parent(
    client_for: Callable[..., Client],
) -> None:
    parent = os.getpid()
    inside = threading.Event()
    release = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        if os.getpid() == parent:
            inside.set()
            assert release.wait(10)
        return decide(request)

    client = client_for(Server(answer), cache=False)
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(client.decide, visit())
        assert inside.wait(5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 99
            try:
                got: list[Decision] = []
                worker = threading.Thread(
                    target=lambda: got.append(client.decide(visit())), daemon=True
                )
                worker.start()
                worker.join(2.0)
                code = 0 if got and got[0].model_version == "test-model" else 3
            finally:
                os._exit(code)
        release.set()
        assert in_flight.result(timeout=10).model_version == "test-model"
    _, status_ = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status_) == 0, "the child waited on the parent's call"


# --- decide_many ---------------------------------------------------------------------------


def test_decide_many_posts_chunks_of_100(client_for: Callable[..., Client]) -> None:
    server = Server()
    client = client_for(server)
    requests = [visit(f"v{i}", f"s{i}") for i in range(250)]
    decisions = client.decide_many(requests)
    assert server.paths() == ["/v1/decide/batch"] * 3
    chunks = [_requests.decode(r.content) for r in server.requests]
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert [r for c in chunks for r in c] == requests
    assert all(r.headers["content-type"] == "application/json" for r in server.requests)
    assert [d.visitor_id for d in decisions] == [f"v{i}" for i in range(250)]
    assert client.cache is not None and len(client.cache) == 0  # batch jobs skip the cache


def test_decide_many_of_nothing_calls_nothing(client_for: Callable[..., Client]) -> None:
    server = Server()
    assert client_for(server).decide_many([]) == []
    assert server.calls == 0


def test_decide_many_chunk_that_fails_gets_fallbacks(client_for: Callable[..., Client]) -> None:
    def second_chunk_down(request: httpx.Request) -> httpx.Response:
        if _requests.decode(request.content)[0].visitor_id == "v100":
            return problem(503)
        return route(request)

    server = Server(second_chunk_down)
    decisions = client_for(server).decide_many([visit(f"v{i}") for i in range(250)])
    assert server.calls == 4  # the 503 chunk was retried once
    assert [d.visitor_id for d in decisions] == [f"v{i}" for i in range(250)]
    assert all(is_fallback(d, "unavailable") for d in decisions[100:200])
    assert not any(d.model_version == "fallback" for d in decisions[:100] + decisions[200:])


def test_decide_many_caller_error_raises(client_for: Callable[..., Client]) -> None:
    server = Server(status(422))
    with pytest.raises(APIError) as info:
        client_for(server).decide_many([visit()])
    assert info.value.status == 422


# --- events --------------------------------------------------------------------------------


def sent_events(server: Server) -> list[Event]:
    return [
        e
        for r in server.requests
        if r.url.path == "/v1/events"
        for e in _batch.decode(r.content).events
    ]


def test_track_sends_event_batches(client_for: Callable[..., Client]) -> None:
    server = Server()
    client = client_for(server, api_key="sk_x", event_batch_size=2)
    tracked = [Event(type="click", visitor_id=f"v{i}", slot="hero") for i in range(5)]
    assert all(client.track(e) for e in tracked)
    assert client.flush() is True
    assert sent_events(server) == tracked
    posts = [r for r in server.requests if r.url.path == "/v1/events"]
    assert [len(_batch.decode(r.content).events) for r in posts] == [2, 2, 1]
    assert all(r.method == "POST" for r in posts)
    assert all(r.headers["authorization"] == "Bearer sk_x" for r in posts)
    assert all(r.headers["content-type"] == "application/json" for r in posts)
    assert client.events.sent == 5


def test_close_flushes_events() -> None:
    server = Server()
    client = Client(BASE, transport=httpx.MockTransport(server), event_interval=60.0)
    client.track(Event(type="impression", visitor_id="v1"))
    assert server.calls == 0
    client.close()
    assert [e.visitor_id for e in sent_events(server)] == ["v1"]


def test_refused_event_batch_is_counted_as_failed(client_for: Callable[..., Client]) -> None:
    server = Server(status(400))
    client = client_for(server)
    client.track(Event(type="impression", visitor_id="v1"))
    assert client.flush() is True
    assert (client.events.sent, client.events.failed) == (0, 1)


def test_track_on_a_local_client_without_server_raises(bundle_dir: Path) -> None:
    with Client(mode="local", bundle=bundle_dir) as client:
        with pytest.raises(TailorError, match="no server"):
            client.track(Event(type="impression", visitor_id="v1"))
        assert client.flush() is True


# --- forget --------------------------------------------------------------------------------


def test_forget_deletes_the_visitor_and_its_cached_decisions(
    client_for: Callable[..., Client],
) -> None:
    server = Server()
    client = client_for(server, api_key="sk_x")
    client.decide(visit("v1"))
    client.decide(visit("v2"))
    client.forget("v1")
    delete = server.requests[-1]
    assert (delete.method, delete.url.path) == ("DELETE", "/v1/visitors/v1")
    assert delete.headers["authorization"] == "Bearer sk_x"
    assert delete.content == b""
    client.decide(visit("v2"))
    assert server.calls == 3  # v2 still cached
    client.decide(visit("v1"))
    assert server.calls == 4  # v1 forgotten: asked again


@pytest.mark.parametrize("code", [401, 404])
def test_forget_raises_when_the_server_refuses(
    client_for: Callable[..., Client], code: int
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return problem(code) if request.method == "DELETE" else route(request)

    server = Server(answer)
    client = client_for(server)
    client.decide(visit("v1"))
    with pytest.raises(APIError) as info:
        client.forget("v1")
    assert info.value.status == code
    assert client.cache is not None and len(client.cache) == 0  # dropped locally anyway


def test_forget_raises_when_the_server_is_down(client_for: Callable[..., Client]) -> None:
    server = Server(raises(httpx.ConnectError))
    with pytest.raises(TransportError):
        client_for(server).forget("v1")
    assert server.calls == 2


@pytest.mark.parametrize("visitor", ["a#b", "a?b", "a/b", ".."])
def test_forget_targets_exactly_the_visitor_given(
    client_for: Callable[..., Client], visitor: str
) -> None:
    # Either refuse an id the schema would refuse, or send it as one encoded path segment;
    # never erase another resource ("a#b" must not become DELETE /v1/visitors/a).
    server = Server()
    try:
        client_for(server).forget(visitor)
    except (ValueError, TailorError):
        assert server.calls == 0, "refused only after sending a request elsewhere"
        return
    (delete,) = server.requests
    segments = delete.url.raw_path.decode("ascii").split("?")[0].split("/")
    assert segments[:3] == ["", "v1", "visitors"]
    assert [unquote(s) for s in segments[3:]] == [visitor]
    assert delete.url.query == b""


# --- configuration and lifecycle -----------------------------------------------------------


@pytest.mark.parametrize("base_url", [None, ""])
def test_remote_mode_needs_a_base_url(base_url: str | None) -> None:
    with pytest.raises(ValueError, match="base_url"):
        Client(base_url)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        Client(BASE, mode="edge")  # type: ignore[arg-type]


def test_context_manager_closes() -> None:
    server = Server()
    with Client(BASE, transport=httpx.MockTransport(server)) as client:
        cached = client.decide(visit())
        client.track(Event(type="impression", visitor_id="v1"))
    assert [e.visitor_id for e in sent_events(server)] == ["v1"]  # flushed on exit
    assert client.track(Event(type="impression", visitor_id="v2")) is False
    assert client.events.dropped == 1
    with pytest.raises(TailorError, match="closed"):  # not even from the cache
        client.decide(visit())
    assert cached.visitor_id == "v1"
    calls = server.calls
    with pytest.raises(TailorError, match="closed"):
        client.decide(visit(session="s2"))
    assert server.calls == calls
