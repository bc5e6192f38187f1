"""What both clients share, on its own: retry decisions, breaker records, fallbacks, helpers."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from sdk import APIError, CircuitBreaker, CircuitOpenError, Retry, TailorError, TransportError
from sdk._cache import VisitCache
from sdk._client_core import (
    Core,
    batch_decisions,
    checked,
    json_headers,
    visitor_path,
)
from sdk.schema import Content, DecideRequest

HERO = Content(type="text", text="hello")


def _core(base_url: str | None = "https://decide.example/", **overrides: Any) -> Core:
    args: dict[str, Any] = {
        "mode": "remote",
        "api_key": "sk_test",
        "bundle": None,
        "timeout": 0.5,
        "retry": Retry(attempts=3, base=0.1, cap=1.0),
        "breaker": CircuitBreaker(failures=2, clock=lambda: 0.0),
        "fallback": {"hero": HERO},
        "cache": VisitCache(),
        "refresh_interval": 60.0,
        "bundle_cache_dir": None,
        "local_transport": None,
    }
    args.update(overrides)
    return Core(base_url, **args)


def _request(session: str | None = "s1") -> DecideRequest:
    return DecideRequest(visitor_id="v1", session_id=session, slots=["hero"])


def _response(status: int, body: bytes = b"{}", **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers)


def test_configuration_is_checked_and_normalised() -> None:
    core = _core()
    assert core.base_url == "https://decide.example"
    assert core.headers["authorization"] == "Bearer sk_test"
    with pytest.raises(ValueError, match="mode must be"):
        _core(mode="cloud")
    with pytest.raises(ValueError, match="needs base_url"):
        _core(None)
    bare = _core(api_key=None, breaker=False, cache=False, retry=None)
    assert "authorization" not in bare.headers
    assert bare.breaker is None and bare.cache is None and bare.retry == Retry()


def test_retry_after_a_response_only_for_retry_statuses_before_the_last_attempt() -> None:
    core = _core()
    breaker = core.breaker
    assert breaker is not None
    busy = _response(503, **{"retry-after": "0"})
    assert core.after_response(0, breaker, busy) == 0.0  # Retry-After wins, capped
    assert breaker.state == "closed"  # a retried attempt is not recorded
    assert core.after_response(2, breaker, busy) is None  # last attempt: the answer
    assert core.after_response(0, breaker, _response(500)) is None  # 500 is never retried
    assert breaker.state == "open"  # two failures recorded
    ok = _core()
    assert ok.after_response(0, ok.breaker, _response(200)) is None
    assert ok.breaker is not None and ok.breaker.state == "closed"


def test_retry_after_a_transport_error_only_when_nothing_was_sent() -> None:
    core = _core()
    request = httpx.Request("POST", "https://decide.example/v1/decide")
    refused = httpx.ConnectError("refused", request=request)
    delay = core.after_error(0, "POST", "/v1/decide", refused)
    assert 0.0 <= delay <= 0.1
    with pytest.raises(TransportError, match=r"POST /v1/decide failed: ConnectError"):
        core.after_error(2, "POST", "/v1/decide", refused)  # the last attempt
    read = httpx.ReadTimeout("slow", request=request)
    with pytest.raises(TransportError, match="timed out") as raised:
        core.after_error(0, "POST", "/v1/decide", read)  # the server may have acted
    assert raised.value.__cause__ is read


def test_start_call_refuses_when_closed_or_open() -> None:
    core = _core()
    assert core.start_call(False, True) is core.breaker
    assert core.start_call(False, False) is None
    with pytest.raises(TailorError, match="closed"):
        core.start_call(True, True)
    assert core.breaker is not None
    core.breaker.failure()
    core.breaker.failure()
    with pytest.raises(CircuitOpenError, match="circuit breaker open"):
        core.start_call(False, True)
    assert core.start_call(False, False) is None  # unguarded calls (events) still go


def test_unavailable_falls_back_but_caller_errors_raise() -> None:
    core = _core()
    requests = [_request(), _request("s2")]
    down = core.unavailable(requests, TransportError("POST /v1/decide timed out: ..."))
    assert [d.reasons[0].code for d in down] == ["fallback.timeout", "fallback.timeout"]
    assert [d.slots["hero"].content for d in down] == [HERO, HERO]
    busy = core.unavailable(requests[:1], APIError(429, {"title": "slow down"}))
    assert busy[0].reasons[0].code == "fallback.unavailable"
    with pytest.raises(APIError) as raised:
        core.unavailable(requests, APIError(422, {"title": "invalid"}))
    assert raised.value.status == 422
    strict = _core(fallback=False)
    with pytest.raises(TransportError):
        strict.unavailable(requests, TransportError("failed"))


def test_loading_and_the_visit_cache() -> None:
    core = _core()
    request = _request()
    (loading,) = core.loading([request])
    assert loading.reasons[0].code == "fallback.bundle_loading"
    assert core.cached(request, False) is None
    assert core.keep(request, loading) is loading
    assert core.cached(request, False) is None  # a fallback (ttl 0) is not kept
    decision = msgspec.structs.replace(loading, decision_id="d1", ttl=300)
    assert core.keep(request, decision) is decision
    assert core.cached(request, False) is decision
    with pytest.raises(TailorError, match="closed"):
        core.cached(request, True)
    assert core.forget_cached("v1") == "/v1/visitors/v1"
    assert core.cached(request, False) is None
    uncached = _core(cache=False)
    assert uncached.keep(request, decision) is decision
    assert uncached.cached(request, False) is None


def test_helpers() -> None:
    assert json_headers(b"{}") == {"content-type": "application/json"}
    assert json_headers(None) is None
    with pytest.raises(ValueError, match="invalid visitor id"):
        visitor_path("..")
    with pytest.raises(ValueError, match="invalid visitor id"):
        visitor_path("a/b")
    assert checked(_response(200)).status_code == 200
    with pytest.raises(APIError) as raised:
        checked(_response(404, b'{"title": "not found", "detail": "no such visitor"}'))
    assert str(raised.value) == "404 not found: no such visitor"
    with pytest.raises(APIError, match="1 decisions for 2 requests"):
        batch_decisions(_response(200, b"[" + _decision_json() + b"]"), 2)
    with pytest.raises(APIError, match="invalid answer from server"):
        batch_decisions(_response(200, b"not json"), 1)


def _decision_json() -> bytes:
    (decision,) = _core().loading([_request()])
    return msgspec.json.encode(decision)
