"""The Python SDK's clients: :class:`Client` (sync, thread-safe) and :class:`AsyncClient`.

Both have one surface: ``decide``, ``decide_many``, ``track``, ``flush``, ``forget`` and
``close``, and two modes:

* ``mode="remote"`` (default): decisions come from a Tailor server over pooled HTTP.
* ``mode="local"``: decisions are made in-process by the same :class:`~sdk.Decider` the server
  runs, from a bundle directory and/or a server's ``/v1/bundle`` (refreshed in the background;
  see :mod:`sdk._local`). Needs the ``local`` extra.

What a caller can rely on:

* **No I/O in constructors.** Connections, bundle loading and background threads start on
  first use; a forked child starts its own.
* **Small timeouts, safe retries.** ``timeout`` (0.5 s) bounds each attempt. Only failures the
  server cannot have acted on are retried (connection not opened, 429, 503), with jittered
  exponential backoff (:class:`~sdk._resilience.Retry`).
* **A circuit breaker** (:class:`~sdk._resilience.CircuitBreaker`): after repeated failures
  calls stop for a few seconds instead of waiting on a dead server.
* **A fallback decision** instead of an exception when no decision can be had (server down,
  timeout, 429/5xx, breaker open, no bundle yet): the bundle's or the caller's default content
  per slot, with a ``fallback.<cause>`` reason (:class:`~sdk._fallback.Fallback`). Errors that
  are the caller's (400, 401, 403, 404, 413, 422) are raised as :class:`~sdk.APIError`.
  ``fallback=False`` raises :class:`~sdk.TransportError` / :class:`~sdk.APIError` instead.
* **Per-visit caching and coalescing.** A visit's decision (visitor + session + consent) is
  re-served from a TTL cache while it covers the slots asked for, and concurrent identical
  ``decide`` calls share one server call (:mod:`sdk._cache`).
* **Non-blocking tracking.** ``track`` queues an event; batches leave in the background and
  are flushed on ``close`` and at exit (:mod:`sdk._events`).

The transport is httpx's: pass ``transport=`` (e.g. ``httpx.MockTransport``) to run without a
network.

Must not import numpy, onnxruntime, litestar or sklearn at module level.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import weakref
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import httpx
import msgspec

from sdk._cache import AsyncCoalescer, Coalescer, VisitCache
from sdk._errors import APIError, CircuitOpenError, TailorError, TransportError
from sdk._events import AsyncEventSender, EventSender
from sdk._fallback import Fallback
from sdk._local import LocalEngine
from sdk._resilience import CircuitBreaker, Retry
from sdk.bundle import Bundle
from sdk.schema import Content, DecideRequest, Decision, Event, EventBatch, Id, SlotDecision

__all__ = ["DEFAULT_TIMEOUT", "AsyncClient", "Client"]

#: Seconds. A decision that takes longer than this is worth less than the page's default.
DEFAULT_TIMEOUT = 0.5
#: Requests per ``POST /v1/decide/batch`` (the server's maximum).
BATCH = 100

_encoder = msgspec.json.Encoder()
_decision = msgspec.json.Decoder(Decision)
_decisions = msgspec.json.Decoder(list[Decision])
_problem = msgspec.json.Decoder(dict[str, Any])
#: API errors that mean the server could not decide now (the caller gets the fallback).
_UNAVAILABLE = frozenset({408, 429, 500, 502, 503, 504})

Mode = Literal["remote", "local"]
FallbackArg = Fallback | Mapping[str, Content | SlotDecision] | bool


class _Core:
    """What both clients share: configuration, cache, breaker, fallback and local engine."""

    def __init__(
        self,
        base_url: str | None,
        *,
        mode: Mode,
        api_key: str | None,
        bundle: str | os.PathLike[str] | Bundle | None,
        timeout: float,
        retry: Retry | None,
        breaker: CircuitBreaker | bool,
        fallback: FallbackArg,
        cache: VisitCache | bool,
        refresh_interval: float,
        bundle_cache_dir: str | os.PathLike[str] | None,
        local_transport: httpx.BaseTransport | None,
    ) -> None:
        if mode not in ("remote", "local"):
            raise ValueError(f"mode must be 'remote' or 'local', not {mode!r}")
        if mode == "remote" and not base_url:
            raise ValueError("remote mode needs base_url (the Tailor server's URL)")
        self.mode = mode
        self.base_url = base_url.rstrip("/") if base_url else None
        self.headers = {"user-agent": "tailor-python", "accept": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.retry = retry if retry is not None else Retry()
        self.breaker = (
            breaker
            if isinstance(breaker, CircuitBreaker)
            else CircuitBreaker()
            if breaker
            else None
        )
        self.cache = cache if isinstance(cache, VisitCache) else VisitCache() if cache else None
        self.local: LocalEngine | None = None
        if mode == "local":
            from sdk._onnx import require_local

            require_local()  # a missing extra fails here, naming it; no I/O
            self.local = LocalEngine(
                bundle=bundle,
                source=self.base_url,
                headers=self.headers,
                refresh_interval=refresh_interval,
                cache_dir=bundle_cache_dir,
                transport=local_transport,
            )
        self._fallback_arg = fallback
        self._fallback: Fallback | None = None

    # -- fallback ----------------------------------------------------------------------------

    def fallback(self, request: DecideRequest, cause: str, error: Exception) -> Decision:
        """The fallback decision, or ``error`` raised when fallbacks are off."""
        if self._fallback_arg is False:
            raise error
        if self._fallback is None:
            self._fallback = self._build_fallback()
        return self._fallback.decision(request, cause, str(error))

    def _build_fallback(self) -> Fallback:
        arg = self._fallback_arg
        if isinstance(arg, Fallback):
            return arg
        own = arg if isinstance(arg, Mapping) else None
        bundle = self.local.bundle if self.local is not None else None
        if bundle is not None:
            return Fallback.from_manifest(bundle.manifest, own)
        return Fallback(own)

    # -- HTTP outcomes -----------------------------------------------------------------------

    def before_call(self, breaker: CircuitBreaker | None) -> None:
        if breaker is not None and not breaker.allow():
            raise CircuitOpenError(
                f"circuit breaker open after repeated failures of {self.base_url}; "
                f"retrying in at most {breaker.reset_after:g} s"
            )

    def retry_status(self, response: httpx.Response, last: bool) -> bool:
        """True when ``response`` should be retried (429/503 before the last attempt)."""
        return response.status_code in self.retry.statuses and not last

    @staticmethod
    def retry_error(exc: httpx.HTTPError, last: bool) -> bool:
        """True when a transport failure should be retried: nothing was sent."""
        safe = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        return safe and not last

    @staticmethod
    def settle(breaker: CircuitBreaker | None, response: httpx.Response) -> None:
        """Record the call's answer in the breaker: 408, 429 and 5xx are failures."""
        if breaker is not None:
            status = response.status_code
            if status in (408, 429) or status >= 500:
                breaker.failure()
            else:
                breaker.success()

    def wait(self, attempt: int, response: httpx.Response | None) -> float:
        after = response.headers.get("retry-after") if response is not None else None
        return self.retry.delay(attempt, after, random.random)


def _transport_error(method: str, path: str, exc: httpx.HTTPError) -> TransportError:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return TransportError(f"{method} {path} {kind}: {type(exc).__name__}: {exc}")


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise APIError(response.status_code, _problem_of(response))
    return response


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        problem = _problem.decode(response.content)
    except msgspec.DecodeError:
        problem = {"title": response.reason_phrase or "error", "detail": response.text[:200]}
    return problem


def _decode(decoder: msgspec.json.Decoder[Any], response: httpx.Response) -> Any:
    """The answer decoded; one that does not decode is the server's (or a proxy's) fault,
    reported as a 502 problem, which gets the caller a fallback."""
    try:
        return decoder.decode(response.content)
    except msgspec.DecodeError as exc:
        raise APIError(502, {"title": "invalid answer from server", "detail": str(exc)}) from exc


def _batch(response: httpx.Response, sent: int) -> list[Decision]:
    decisions: list[Decision] = _decode(_decisions, response)
    if len(decisions) != sent:
        raise APIError(
            502,
            {
                "title": "invalid answer from server",
                "detail": f"{len(decisions)} decisions for {sent} requests",
            },
        )
    return decisions


def _visitor_path(visitor_id: str) -> str:
    """``/v1/visitors/{id}`` for a valid schema id (never another path)."""
    try:
        valid = msgspec.convert(visitor_id, Id)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid visitor id {visitor_id!r}: {exc}") from exc
    if valid in (".", ".."):
        raise ValueError(f"invalid visitor id {visitor_id!r}")
    return f"/v1/visitors/{valid}"


def _cause(exc: Exception) -> str:
    if isinstance(exc, CircuitOpenError):
        return "circuit_open"
    if isinstance(exc, TransportError):
        return "timeout" if "timed out" in str(exc) else "unreachable"
    return "unavailable"


def _no_server() -> TailorError:
    return TailorError("this local client has no server: pass base_url to send events")


class _Surface:
    """The read-only properties both clients share."""

    _core: _Core

    @property
    def mode(self) -> Mode:
        """``"remote"`` or ``"local"``."""
        return self._core.mode

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The circuit breaker (None when off)."""
        return self._core.breaker

    @property
    def cache(self) -> VisitCache | None:
        """The per-visit decision cache (None when off)."""
        return self._core.cache

    @property
    def local(self) -> LocalEngine | None:
        """Local mode's engine (its bundle, refresh counters and last error)."""
        return self._core.local


class Client(_Surface):
    """Synchronous, thread-safe Tailor client (remote or local mode).

    Args:
        base_url: the server, e.g. ``https://decisions.example.com``. Required in remote mode;
            in local mode, the server to refresh the bundle from and to send events to.
        mode: ``"remote"`` or ``"local"``.
        api_key: a secret key (``sk_…``), sent as ``Authorization: Bearer``.
        bundle: local mode: a bundle directory (or loaded :class:`~sdk.Bundle`) to start with.
        timeout: seconds per HTTP attempt (connect + read).
        retry: the retry policy (default: one retry of safe failures).
        breaker: True for the default circuit breaker (5 failures open it for 5 s), your own
            :class:`CircuitBreaker`, or False to turn it off.
        fallback: True (the bundle's defaults in local mode, none otherwise), a mapping of
            slot id to default :class:`~sdk.schema.Content`, a :class:`Fallback`, or False to
            raise instead.
        cache: True for the default per-visit decision cache (10,000 visits for 300 s), your
            own :class:`VisitCache`, or False to turn it off.
        refresh_interval: local mode: seconds between bundle checks with the server.
        bundle_cache_dir: local mode: where downloaded bundles are kept.
        event_batch_size: events per batch sent by ``track`` (at most 100).
        event_interval: seconds an event waits for companions before it is sent.
        event_queue_size: events queued at most; more are dropped and counted.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        mode: Mode = "remote",
        api_key: str | None = None,
        bundle: str | os.PathLike[str] | Bundle | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        breaker: CircuitBreaker | bool = True,
        fallback: FallbackArg = True,
        cache: VisitCache | bool = True,
        refresh_interval: float = 60.0,
        bundle_cache_dir: str | os.PathLike[str] | None = None,
        event_batch_size: int = 100,
        event_interval: float = 1.0,
        event_queue_size: int = 10_000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = _Core(
            base_url,
            mode=mode,
            api_key=api_key,
            bundle=bundle,
            timeout=timeout,
            retry=retry,
            breaker=breaker,
            fallback=fallback,
            cache=cache,
            refresh_interval=refresh_interval,
            bundle_cache_dir=bundle_cache_dir,
            local_transport=transport,
        )
        self._http_args: dict[str, Any] = {
            "base_url": self._core.base_url or "http://localhost",
            "headers": self._core.headers,
            "timeout": timeout,
            "transport": transport,
        }
        self._http = httpx.Client(**self._http_args)
        self._coalescer: Coalescer[Decision] = Coalescer()
        self._closed = False
        _clients.add(self)
        self._events = EventSender(
            self._post_events,
            batch_size=event_batch_size,
            interval=event_interval,
            max_queue=event_queue_size,
        )

    # -- public surface ----------------------------------------------------------------------

    @property
    def events(self) -> EventSender:
        """The event queue: ``sent``, ``dropped`` and ``failed`` counters, ``pending()``."""
        return self._events

    def decide(self, request: DecideRequest) -> Decision:
        """Decide one visit: from the visit cache, the in-process bundle or the server.

        Returns the fallback decision (reason ``fallback.<cause>``) when none can be had.

        Raises:
            APIError: the server refused the request (400, 401, 403, 404, 413, 422).
            TransportError: fallbacks are off and the server cannot be reached.
            BundleError: local mode's starting bundle is refused.
        """
        if self._closed:
            raise TailorError("the client is closed")
        cache = self._core.cache
        if cache is not None:
            hit = cache.get(request)
            if hit is not None:
                return hit
        return self._coalescer.run(_encoder.encode(request), lambda: self._decide(request))

    def decide_many(self, requests: Sequence[DecideRequest]) -> list[Decision]:
        """Decide many visits (batch jobs): one batched model run per 100 requests, no cache.

        A chunk that cannot be decided gets fallback decisions (see :meth:`decide`).
        """
        core = self._core
        out: list[Decision] = []
        for start in range(0, len(requests), BATCH):
            chunk = list(requests[start : start + BATCH])
            if core.local is not None:
                decider = core.local.decider(wait=core.timeout)
                if decider is None:
                    error = TransportError("no bundle loaded yet")
                    out.extend(core.fallback(r, "bundle_loading", error) for r in chunk)
                else:
                    out.extend(decider.decide_many(chunk))
                continue
            try:
                response = self._call("POST", "/v1/decide/batch", _encoder.encode(chunk))
                out.extend(_batch(response, len(chunk)))
            except (TransportError, APIError) as exc:
                if isinstance(exc, APIError) and exc.status not in _UNAVAILABLE:
                    raise
                out.extend(core.fallback(r, _cause(exc), exc) for r in chunk)
        return out

    def track(self, event: Event) -> bool:
        """Queue a feedback event; never blocks. False when it was dropped (queue full)."""
        if self._core.base_url is None:
            raise _no_server()
        return self._events.put(event)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Send the queued events now; True when all left within ``timeout`` seconds."""
        return self._events.flush(timeout)

    def forget(self, visitor_id: str) -> None:
        """Erase a visitor: the client's cached decisions, and on the server the profile and
        cached decisions (``DELETE /v1/visitors/{id}``; needs a secret key).

        Raises:
            APIError, TransportError: the server did not confirm the erasure.
        """
        path = _visitor_path(visitor_id)
        if self._core.cache is not None:
            self._core.cache.forget(visitor_id)
        if self._core.base_url is not None:
            self._call("DELETE", path, None)

    def close(self) -> None:
        """Flush events (up to 5 s), stop background work, close connections."""
        self._events.close()
        self._closed = True
        if self._core.local is not None:
            self._core.local.close()
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _decide(self, request: DecideRequest) -> Decision:
        core = self._core
        if core.local is not None:
            decider = core.local.decider(wait=core.timeout)
            if decider is None:
                return core.fallback(
                    request, "bundle_loading", TransportError("no bundle loaded yet")
                )
            decision = decider.decide(request)
        else:
            try:
                response = self._call("POST", "/v1/decide", _encoder.encode(request))
                decision = _decode(_decision, response)
            except (TransportError, APIError) as exc:
                if isinstance(exc, APIError) and exc.status not in _UNAVAILABLE:
                    raise
                return core.fallback(request, _cause(exc), exc)
        if core.cache is not None:
            core.cache.put(request, decision)
        return decision

    def _call(
        self, method: str, path: str, body: bytes | None, *, guarded: bool = True
    ) -> httpx.Response:
        """One call with its retries. The breaker (when ``guarded``) records it once, whatever
        ends it: an answer, a transport error, or an exception such as a cancellation."""
        if self._closed:
            raise TailorError("the client is closed")
        core = self._core
        breaker = core.breaker if guarded else None
        core.before_call(breaker)
        settled = False
        headers = {"content-type": "application/json"} if body is not None else None
        try:
            for attempt in range(core.retry.attempts):
                last = attempt == core.retry.attempts - 1
                try:
                    response = self._http.request(method, path, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    if core.retry_error(exc, last):
                        time.sleep(core.wait(attempt, None))
                        continue
                    raise _transport_error(method, path, exc) from exc
                if core.retry_status(response, last):
                    time.sleep(core.wait(attempt, response))
                    continue
                core.settle(breaker, response)
                settled = True
                return _check(response)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if not settled and breaker is not None:
                breaker.failure()

    def _after_fork_in_child(self) -> None:
        # The parent's in-flight calls, breaker state and pooled sockets are not the child's.
        self._coalescer.reset()
        if self._core.breaker is not None:
            self._core.breaker.reset()
        self._http = httpx.Client(**self._http_args)  # the parent's pool is left to the parent

    def _post_events(self, events: list[Event]) -> None:
        # events do not use the breaker: a background batch must not spend the trial call
        body = _encoder.encode(EventBatch(events=events))
        self._call("POST", "/v1/events", body, guarded=False)


class AsyncClient(_Surface):
    """The asyncio twin of :class:`Client`: same arguments, same methods, awaited.

    ``track`` is a plain method (it only queues) and must be called from the event loop; the
    events leave from a task of that loop. ``close`` (or ``async with``) flushes them: unlike
    the sync client there is no flush at interpreter exit, since the loop is gone by then.
    Local mode decides on the loop (a decision takes a fraction of a millisecond);
    ``decide_many`` runs in a worker thread.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        mode: Mode = "remote",
        api_key: str | None = None,
        bundle: str | os.PathLike[str] | Bundle | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        breaker: CircuitBreaker | bool = True,
        fallback: FallbackArg = True,
        cache: VisitCache | bool = True,
        refresh_interval: float = 60.0,
        bundle_cache_dir: str | os.PathLike[str] | None = None,
        event_batch_size: int = 100,
        event_interval: float = 1.0,
        event_queue_size: int = 10_000,
        transport: httpx.AsyncBaseTransport | None = None,
        bundle_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = _Core(
            base_url,
            mode=mode,
            api_key=api_key,
            bundle=bundle,
            timeout=timeout,
            retry=retry,
            breaker=breaker,
            fallback=fallback,
            cache=cache,
            refresh_interval=refresh_interval,
            bundle_cache_dir=bundle_cache_dir,
            local_transport=bundle_transport,
        )
        self._http = httpx.AsyncClient(
            base_url=self._core.base_url or "http://localhost",
            headers=self._core.headers,
            timeout=timeout,
            transport=transport,
        )
        self._coalescer: AsyncCoalescer[Decision] = AsyncCoalescer()
        self._closed = False
        self._events = AsyncEventSender(
            self._post_events,
            batch_size=event_batch_size,
            interval=event_interval,
            max_queue=event_queue_size,
        )

    @property
    def events(self) -> AsyncEventSender:
        """The event queue: ``sent``, ``dropped`` and ``failed`` counters, ``pending()``."""
        return self._events

    async def decide(self, request: DecideRequest) -> Decision:
        """See :meth:`Client.decide`."""
        if self._closed:
            raise TailorError("the client is closed")
        cache = self._core.cache
        if cache is not None:
            hit = cache.get(request)
            if hit is not None:
                return hit
        return await self._coalescer.run(_encoder.encode(request), lambda: self._decide(request))

    async def decide_many(self, requests: Sequence[DecideRequest]) -> list[Decision]:
        """See :meth:`Client.decide_many`."""
        core = self._core
        out: list[Decision] = []
        for start in range(0, len(requests), BATCH):
            chunk = list(requests[start : start + BATCH])
            if core.local is not None:
                decider = await asyncio.to_thread(core.local.decider, core.timeout)
                if decider is None:
                    error = TransportError("no bundle loaded yet")
                    out.extend(core.fallback(r, "bundle_loading", error) for r in chunk)
                else:
                    out.extend(await asyncio.to_thread(decider.decide_many, chunk))
                continue
            try:
                response = await self._call("POST", "/v1/decide/batch", _encoder.encode(chunk))
                out.extend(_batch(response, len(chunk)))
            except (TransportError, APIError) as exc:
                if isinstance(exc, APIError) and exc.status not in _UNAVAILABLE:
                    raise
                out.extend(core.fallback(r, _cause(exc), exc) for r in chunk)
        return out

    def track(self, event: Event) -> bool:
        """See :meth:`Client.track` (call it from the event loop)."""
        if self._core.base_url is None:
            raise _no_server()
        return self._events.put(event)

    async def flush(self, timeout: float | None = 5.0) -> bool:
        """See :meth:`Client.flush`."""
        return await self._events.flush(timeout)

    async def forget(self, visitor_id: str) -> None:
        """See :meth:`Client.forget`."""
        path = _visitor_path(visitor_id)
        if self._core.cache is not None:
            self._core.cache.forget(visitor_id)
        if self._core.base_url is not None:
            await self._call("DELETE", path, None)

    async def close(self) -> None:
        """Flush events (up to 5 s), stop background work, close connections."""
        await self._events.close()
        self._closed = True
        if self._core.local is not None:
            await asyncio.to_thread(self._core.local.close)
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _decide(self, request: DecideRequest) -> Decision:
        core = self._core
        if core.local is not None:
            decider = core.local.decider()
            if decider is None:
                decider = await asyncio.to_thread(core.local.decider, core.timeout)
            if decider is None:
                return core.fallback(
                    request, "bundle_loading", TransportError("no bundle loaded yet")
                )
            decision = decider.decide(request)
        else:
            try:
                response = await self._call("POST", "/v1/decide", _encoder.encode(request))
                decision = _decode(_decision, response)
            except (TransportError, APIError) as exc:
                if isinstance(exc, APIError) and exc.status not in _UNAVAILABLE:
                    raise
                return core.fallback(request, _cause(exc), exc)
        if core.cache is not None:
            core.cache.put(request, decision)
        return decision

    async def _call(
        self, method: str, path: str, body: bytes | None, *, guarded: bool = True
    ) -> httpx.Response:
        """One call with its retries. The breaker (when ``guarded``) records it once, whatever
        ends it: an answer, a transport error, or an exception such as a cancellation."""
        if self._closed:
            raise TailorError("the client is closed")
        core = self._core
        breaker = core.breaker if guarded else None
        core.before_call(breaker)
        settled = False
        headers = {"content-type": "application/json"} if body is not None else None
        try:
            for attempt in range(core.retry.attempts):
                last = attempt == core.retry.attempts - 1
                try:
                    response = await self._http.request(method, path, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    if core.retry_error(exc, last):
                        await asyncio.sleep(core.wait(attempt, None))
                        continue
                    raise _transport_error(method, path, exc) from exc
                if core.retry_status(response, last):
                    await asyncio.sleep(core.wait(attempt, response))
                    continue
                core.settle(breaker, response)
                settled = True
                return _check(response)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if not settled and breaker is not None:
                breaker.failure()

    async def _post_events(self, events: list[Event]) -> None:
        # events do not use the breaker: a background batch must not spend the trial call
        body = _encoder.encode(EventBatch(events=events))
        await self._call("POST", "/v1/events", body, guarded=False)


_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
