"""What :class:`sdk.Client` and :class:`sdk.AsyncClient` share: configuration and outcomes.

:class:`Core` holds a client's settings, visit cache, circuit breaker, fallback and local
engine, and decides what each HTTP outcome means (retry after how long, record in the breaker,
fall back or raise), so the sync and async clients only do the I/O. The helpers build request
paths and decode the server's answers.

Must not import numpy, onnxruntime, litestar or sklearn at module level.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
import msgspec

from sdk._cache import VisitCache
from sdk._fallback import Fallback
from sdk._local import LocalEngine
from sdk._resilience import CircuitBreaker, Retry
from sdk.bundle import Bundle, PublicKeySpec
from sdk.errors import (
    APIError,
    CircuitOpenError,
    SecretKeyRequiredError,
    TailorError,
    TransportError,
)
from sdk.schema import (
    PROFILE_BATCH_MAX,
    Content,
    Conversion,
    ConversionBatch,
    CustomerProfile,
    DecideRequest,
    Decision,
    Id,
    ProfilesImported,
    SlotDecision,
)

__all__ = [
    "BATCH",
    "DEFAULT_TIMEOUT",
    "PROFILE_BODY_BYTES",
    "ConversionsRecorded",
    "Core",
    "FallbackArg",
    "Mode",
    "Surface",
    "batch_decisions",
    "checked",
    "conversion_chunks",
    "conversions_recorded",
    "decision_decoder",
    "encoder",
    "json_headers",
    "no_server",
    "profile_chunks",
    "profiles_imported",
    "visitor_path",
]

#: Seconds. A decision that takes longer than this is worth less than the page's default.
DEFAULT_TIMEOUT = 0.5
#: Requests per ``POST /v1/decide/batch`` (the server's maximum).
BATCH = 100

encoder = msgspec.json.Encoder()
decision_decoder = msgspec.json.Decoder(Decision)
_decisions = msgspec.json.Decoder(list[Decision])
_problem = msgspec.json.Decoder(dict[str, Any])
#: API errors that mean the server could not decide now (the caller gets the fallback).
_UNAVAILABLE = frozenset({408, 429, 500, 502, 503, 504})
_JSON = {"content-type": "application/json"}

Mode = Literal["remote", "local"]
FallbackArg = Fallback | Mapping[str, Content | SlotDecision] | bool


class Core:
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
        public_keys: Sequence[PublicKeySpec] | None = None,
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
            if self.base_url and api_key and api_key.startswith("pk_"):
                raise SecretKeyRequiredError(
                    "local mode fetches the bundle from the server with a secret key (sk_...); "
                    "a public key (pk_...) may not read bundles"
                )
            self.local = LocalEngine(
                bundle=bundle,
                source=self.base_url,
                headers=self.headers,
                refresh_interval=refresh_interval,
                cache_dir=bundle_cache_dir,
                transport=local_transport,
                public_keys=public_keys,
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

    # -- HTTP outcomes -------------------------------------------------------------------------

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

    # -- decisions -------------------------------------------------------------------------

    def cached(self, request: DecideRequest, closed: bool) -> Decision | None:
        """The visit's cached decision, if any (raises when the client is closed)."""
        if closed:
            raise TailorError("the client is closed")
        cache = self.cache
        return cache.get(request) if cache is not None else None

    def keep(self, request: DecideRequest, decision: Decision) -> Decision:
        """``decision``, put in the visit cache first (when there is one)."""
        if self.cache is not None:
            self.cache.put(request, decision)
        return decision

    def loading(self, requests: Sequence[DecideRequest]) -> list[Decision]:
        """Fallback decisions while local mode has no bundle yet."""
        error = TransportError("no bundle loaded yet")
        return [self.fallback(r, "bundle_loading", error) for r in requests]

    def unavailable(
        self, requests: Sequence[DecideRequest], exc: TransportError | APIError
    ) -> list[Decision]:
        """Fallback decisions for a failed server call; a caller's error (400, 401, 403, 404,
        413, 422) is raised instead."""
        if isinstance(exc, APIError) and exc.status not in _UNAVAILABLE:
            raise exc
        return [self.fallback(r, _cause(exc), exc) for r in requests]

    def forget_cached(self, visitor_id: str) -> str:
        """Drop the visitor's cached decisions; the path that erases it on the server."""
        path = visitor_path(visitor_id)
        if self.cache is not None:
            self.cache.forget(visitor_id)
        return path

    # -- one call with its retries -------------------------------------------------------------

    def start_call(self, closed: bool, guarded: bool) -> CircuitBreaker | None:
        """The breaker that records the call (None when not ``guarded``); raises when the
        client is closed or the breaker is open."""
        if closed:
            raise TailorError("the client is closed")
        breaker = self.breaker if guarded else None
        self.before_call(breaker)
        return breaker

    def after_error(self, attempt: int, method: str, path: str, exc: httpx.HTTPError) -> float:
        """Seconds to wait before retrying an attempt that failed in transport.

        Raises:
            TransportError: the failure may not be retried (something may have been sent, or
                it was the last attempt).
        """
        if self.retry_error(exc, attempt == self.retry.attempts - 1):
            return self.wait(attempt, None)
        raise _transport_error(method, path, exc) from exc

    def after_response(
        self, attempt: int, breaker: CircuitBreaker | None, response: httpx.Response
    ) -> float | None:
        """Seconds to wait before retrying ``response`` (429/503 before the last attempt), or
        None when it is the call's answer (then recorded in ``breaker``)."""
        if self.retry_status(response, attempt == self.retry.attempts - 1):
            return self.wait(attempt, response)
        self.settle(breaker, response)
        return None


def _transport_error(method: str, path: str, exc: httpx.HTTPError) -> TransportError:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return TransportError(f"{method} {path} {kind}: {type(exc).__name__}: {exc}")


def json_headers(body: bytes | None) -> dict[str, str] | None:
    """The headers of a request with ``body`` (None: no body, no content type)."""
    return _JSON if body is not None else None


def checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise APIError(response.status_code, _problem_of(response))
    return response


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        problem = _problem.decode(response.content)
    except msgspec.DecodeError:
        problem = {"title": response.reason_phrase or "error", "detail": response.text[:200]}
    return problem


def decode(decoder: msgspec.json.Decoder[Any], response: httpx.Response) -> Any:
    """The answer decoded; one that does not decode is the server's (or a proxy's) fault,
    reported as a 502 problem, which gets the caller a fallback."""
    try:
        return decoder.decode(response.content)
    except msgspec.DecodeError as exc:
        raise APIError(502, {"title": "invalid answer from server", "detail": str(exc)}) from exc


def batch_decisions(response: httpx.Response, sent: int) -> list[Decision]:
    decisions: list[Decision] = decode(_decisions, response)
    if len(decisions) != sent:
        raise APIError(
            502,
            {
                "title": "invalid answer from server",
                "detail": f"{len(decisions)} decisions for {sent} requests",
            },
        )
    return decisions


class ConversionsRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """What ``record_conversions`` did: conversions the server counted, and those it skipped
    because their order id was counted before (a retry, or a second report of one order)."""

    accepted: int = 0
    duplicates: int = 0

    def __add__(self, other: ConversionsRecorded) -> ConversionsRecorded:
        return ConversionsRecorded(
            accepted=self.accepted + other.accepted,
            duplicates=self.duplicates + other.duplicates,
        )


_recorded = msgspec.json.Decoder(ConversionsRecorded)


def conversion_chunks(conversions: Sequence[Conversion]) -> list[bytes]:
    """The bodies of ``POST /v1/conversions`` for ``conversions``, at most :data:`BATCH` each.

    Raises:
        TypeError: an item is not a :class:`~sdk.schema.Conversion`.
    """
    for item in conversions:
        if not isinstance(item, Conversion):
            raise TypeError(f"record_conversions takes sdk.schema.Conversion, not {item!r}")
    return [
        encoder.encode(ConversionBatch(conversions=list(conversions[i : i + BATCH])))
        for i in range(0, len(conversions), BATCH)
    ]


def conversions_recorded(response: httpx.Response) -> ConversionsRecorded:
    """The server's answer to ``POST /v1/conversions``."""
    recorded: ConversionsRecorded = decode(_recorded, response)
    return recorded


#: Most bytes of one ``POST /v1/profiles/import`` body (the server takes 16 times its
#: ``max_body_bytes``, 1 MiB by default).
PROFILE_BODY_BYTES = 512 * 1024
_imported = msgspec.json.Decoder(ProfilesImported)


def profile_chunks(rows: Sequence[CustomerProfile]) -> list[bytes]:
    """The bodies of ``POST /v1/profiles/import`` for ``rows``: at most
    :data:`~sdk.schema.PROFILE_BATCH_MAX` rows and about :data:`PROFILE_BODY_BYTES` each.

    Raises:
        TypeError: an item is not a :class:`~sdk.schema.CustomerProfile`.
    """
    bodies: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for row in rows:
        if not isinstance(row, CustomerProfile):
            raise TypeError(f"push_profiles takes sdk.schema.CustomerProfile, not {row!r}")
        part = encoder.encode(row)
        if parts and (len(parts) == PROFILE_BATCH_MAX or size + len(part) > PROFILE_BODY_BYTES):
            bodies.append(b'{"profiles":[' + b",".join(parts) + b"]}")
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        bodies.append(b'{"profiles":[' + b",".join(parts) + b"]}")
    return bodies


def profiles_imported(
    response: httpx.Response, before: ProfilesImported | None = None
) -> ProfilesImported:
    """The server's answer to ``POST /v1/profiles/import``, added to ``before`` (earlier
    calls of the same push)."""
    now: ProfilesImported = decode(_imported, response)
    if before is None:
        return now
    return ProfilesImported(
        written=before.written + now.written,
        unchanged=before.unchanged + now.unchanged,
        stale=before.stale + now.stale,
        invalid=before.invalid + now.invalid,
        results=[*before.results, *now.results],
    )


def visitor_path(visitor_id: str) -> str:
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


def no_server() -> TailorError:
    return TailorError("this local client has no server: pass base_url to send events")


class Surface:
    """The read-only properties both clients share."""

    _core: Core

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
