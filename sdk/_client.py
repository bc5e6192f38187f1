"""The Python SDK's clients: :class:`Client` (sync, thread-safe) and :class:`AsyncClient`.

Both have one surface (``decide``, ``decide_many``, ``track``, ``record_conversions``,
``push_profiles``, ``flush``, ``forget``, ``close``) and two modes: ``remote`` (a Tailor
server over pooled HTTP) and ``local`` (the server's :class:`~sdk.Decider` in-process, from
a bundle kept fresh by :mod:`sdk._local`). No I/O in constructors; retries, the circuit
breaker, fallbacks and what each answer means are shared in :mod:`sdk._client_core`; the
visit cache is :mod:`sdk._cache`, event delivery :mod:`sdk._events`.

Must not import numpy, onnxruntime, litestar or sklearn at module level.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

from sdk._cache import AsyncCoalescer, Coalescer, VisitCache
from sdk._client_core import (
    BATCH,
    DEFAULT_TIMEOUT,
    ConversionsRecorded,
    Core,
    FallbackArg,
    Mode,
    Surface,
    batch_decisions,
    checked,
    conversion_chunks,
    conversions_recorded,
    decision_decoder,
    decode,
    encoder,
    json_headers,
    no_server,
    profile_chunks,
    profiles_imported,
)
from sdk._events import AsyncEventSender, EventSender
from sdk._resilience import CircuitBreaker, Retry
from sdk.bundle import Bundle, PublicKeySpec
from sdk.errors import APIError, TransportError
from sdk.schema import (
    Conversion,
    CustomerProfile,
    DecideRequest,
    Decision,
    Event,
    EventBatch,
    ProfilesImported,
)

__all__ = ["DEFAULT_TIMEOUT", "AsyncClient", "Client"]


class Client(Surface):
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
        public_keys: local mode: trusted Ed25519 public keys (PEM paths, or the base64 raw
            keys ``tailor bundle keygen`` prints); when given, a bundle must be signed by one
            of them. Default: ``TAILOR_BUNDLE_PUBLIC_KEYS`` (comma-separated) if set; without
            keys an unsigned bundle loads (local development).
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
        public_keys: Sequence[PublicKeySpec] | None = None,
        event_batch_size: int = 100,
        event_interval: float = 1.0,
        event_queue_size: int = 10_000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = Core(
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
            public_keys=public_keys,
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
        hit = self._core.cached(request, self._closed)
        if hit is not None:
            return hit
        return self._coalescer.run(encoder.encode(request), lambda: self._decide(request))

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
                out.extend(core.loading(chunk) if decider is None else decider.decide_many(chunk))
                continue
            try:
                response = self._call("POST", "/v1/decide/batch", encoder.encode(chunk))
                out.extend(batch_decisions(response, len(chunk)))
            except (TransportError, APIError) as exc:
                out.extend(core.unavailable(chunk, exc))
        return out

    def track(self, event: Event) -> bool:
        """Queue a feedback event; never blocks. False when it was dropped (queue full)."""
        if self._core.base_url is None:
            raise no_server()
        return self._events.put(event)

    def record_conversions(self, conversions: Sequence[Conversion]) -> ConversionsRecorded:
        """Confirm purchases from the backend (``POST /v1/conversions``, secret key): the
        revenue reports and retraining count as real. Sent now, 100 a call; each ``orderId``
        counts once, so a retry after an error cannot count an order twice.

        Raises:
            APIError: the server refused a call (401/403 without a secret key, 422 for an
                invalid conversion); earlier calls of a long list were counted.
            TransportError: the server could not be reached.
        """
        if self._core.base_url is None:
            raise no_server()
        recorded = ConversionsRecorded()
        for body in conversion_chunks(conversions):
            response = self._call("POST", "/v1/conversions", body, guarded=False)
            recorded += conversions_recorded(response)
        return recorded

    def push_profiles(self, rows: Sequence[CustomerProfile]) -> ProfilesImported:
        """Push customers' order-history profiles (``POST /v1/profiles/import``, secret key):
        each the base of its user's stored profile, so that a visitor identified as the user
        is decided with it. Sent now, up to 1,000 rows a call; pushing the same rows again
        changes nothing, so a push that failed half-way may simply be repeated.

        Returns:
            The counts of ``written``, ``unchanged``, ``stale`` and ``invalid`` rows and every
            row's outcome, in order.

        Raises:
            APIError: the server refused a call (401/403 without a secret key, 422 for a row
                that violates the schema, 503 with the shared store down); earlier calls of a
                long list were stored.
            TransportError: the server could not be reached.
            TypeError: an item is not a :class:`~sdk.schema.CustomerProfile`.
        """
        if self._core.base_url is None:
            raise no_server()
        pushed = ProfilesImported()
        for body in profile_chunks(rows):
            response = self._call("POST", "/v1/profiles/import", body, guarded=False)
            pushed = profiles_imported(response, pushed)
        return pushed

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Send the queued events now; True when all left within ``timeout`` seconds."""
        return self._events.flush(timeout)

    def forget(self, visitor_id: str) -> None:
        """Erase a visitor: the client's cached decisions, and on the server the profile and
        cached decisions (``DELETE /v1/visitors/{id}``; needs a secret key).

        Raises:
            APIError, TransportError: the server did not confirm the erasure.
        """
        path = self._core.forget_cached(visitor_id)
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
                return core.loading([request])[0]
            return core.keep(request, decider.decide(request))
        try:
            response = self._call("POST", "/v1/decide", encoder.encode(request))
            return core.keep(request, decode(decision_decoder, response))
        except (TransportError, APIError) as exc:
            return core.unavailable([request], exc)[0]

    def _call(
        self, method: str, path: str, body: bytes | None, *, guarded: bool = True
    ) -> httpx.Response:
        """One call with its retries. The breaker (when ``guarded``) records it once, whatever
        ends it: an answer, a transport error, or an exception such as a cancellation."""
        core = self._core
        breaker = core.start_call(self._closed, guarded)
        settled = False
        headers = json_headers(body)
        try:
            for attempt in range(core.retry.attempts):
                try:
                    response = self._http.request(method, path, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    time.sleep(core.after_error(attempt, method, path, exc))
                    continue
                delay = core.after_response(attempt, breaker, response)
                if delay is None:
                    settled = True
                    return checked(response)
                time.sleep(delay)
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
        body = encoder.encode(EventBatch(events=events))
        self._call("POST", "/v1/events", body, guarded=False)


class AsyncClient(Surface):
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
        public_keys: Sequence[PublicKeySpec] | None = None,
        event_batch_size: int = 100,
        event_interval: float = 1.0,
        event_queue_size: int = 10_000,
        transport: httpx.AsyncBaseTransport | None = None,
        bundle_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = Core(
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
            public_keys=public_keys,
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
        hit = self._core.cached(request, self._closed)
        if hit is not None:
            return hit
        return await self._coalescer.run(encoder.encode(request), lambda: self._decide(request))

    async def decide_many(self, requests: Sequence[DecideRequest]) -> list[Decision]:
        """See :meth:`Client.decide_many`."""
        core = self._core
        out: list[Decision] = []
        for start in range(0, len(requests), BATCH):
            chunk = list(requests[start : start + BATCH])
            if core.local is not None:
                decider = await asyncio.to_thread(core.local.decider, core.timeout)
                if decider is None:
                    out.extend(core.loading(chunk))
                else:
                    out.extend(await asyncio.to_thread(decider.decide_many, chunk))
                continue
            try:
                response = await self._call("POST", "/v1/decide/batch", encoder.encode(chunk))
                out.extend(batch_decisions(response, len(chunk)))
            except (TransportError, APIError) as exc:
                out.extend(core.unavailable(chunk, exc))
        return out

    def track(self, event: Event) -> bool:
        """See :meth:`Client.track` (call it from the event loop)."""
        if self._core.base_url is None:
            raise no_server()
        return self._events.put(event)

    async def record_conversions(self, conversions: Sequence[Conversion]) -> ConversionsRecorded:
        """See :meth:`Client.record_conversions`."""
        if self._core.base_url is None:
            raise no_server()
        recorded = ConversionsRecorded()
        for body in conversion_chunks(conversions):
            response = await self._call("POST", "/v1/conversions", body, guarded=False)
            recorded += conversions_recorded(response)
        return recorded

    async def push_profiles(self, rows: Sequence[CustomerProfile]) -> ProfilesImported:
        """See :meth:`Client.push_profiles`."""
        if self._core.base_url is None:
            raise no_server()
        pushed = ProfilesImported()
        for body in profile_chunks(rows):
            response = await self._call("POST", "/v1/profiles/import", body, guarded=False)
            pushed = profiles_imported(response, pushed)
        return pushed

    async def flush(self, timeout: float | None = 5.0) -> bool:
        """See :meth:`Client.flush`."""
        return await self._events.flush(timeout)

    async def forget(self, visitor_id: str) -> None:
        """See :meth:`Client.forget`."""
        path = self._core.forget_cached(visitor_id)
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
                return core.loading([request])[0]
            return core.keep(request, decider.decide(request))
        try:
            response = await self._call("POST", "/v1/decide", encoder.encode(request))
            return core.keep(request, decode(decision_decoder, response))
        except (TransportError, APIError) as exc:
            return core.unavailable([request], exc)[0]

    async def _call(
        self, method: str, path: str, body: bytes | None, *, guarded: bool = True
    ) -> httpx.Response:
        """One call with its retries. The breaker (when ``guarded``) records it once, whatever
        ends it: an answer, a transport error, or an exception such as a cancellation."""
        core = self._core
        breaker = core.start_call(self._closed, guarded)
        settled = False
        headers = json_headers(body)
        try:
            for attempt in range(core.retry.attempts):
                try:
                    response = await self._http.request(method, path, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    await asyncio.sleep(core.after_error(attempt, method, path, exc))
                    continue
                delay = core.after_response(attempt, breaker, response)
                if delay is None:
                    settled = True
                    return checked(response)
                await asyncio.sleep(delay)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if not settled and breaker is not None:
                breaker.failure()

    async def _post_events(self, events: list[Event]) -> None:
        # events do not use the breaker: a background batch must not spend the trial call
        body = encoder.encode(EventBatch(events=events))
        await self._call("POST", "/v1/events", body, guarded=False)


_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
