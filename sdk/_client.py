"""HTTP client for the decision server, returning the same Structs as the in-process decider.

The transport is httpx's; tests and callers can inject any ``httpx.BaseTransport`` (for
example ``httpx.MockTransport``) to run without a network. Construction does no I/O.

Must not import numpy, onnxruntime, litestar or sklearn.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx
import msgspec

from sdk._errors import APIError, TransportError
from sdk.schema import DecideRequest, Decision

__all__ = ["DEFAULT_TIMEOUT", "Client"]

#: Seconds. A decision that takes longer than this is worth less than the page's default.
DEFAULT_TIMEOUT = 0.5

_encoder = msgspec.json.Encoder()
_decision = msgspec.json.Decoder(Decision)
_problem = msgspec.json.Decoder(dict[str, Any])


class Client:
    """Synchronous client of a Tailor decision server.

    Args:
        base_url: the server's URL, e.g. ``http://127.0.0.1:8000``.
        api_key: a secret key sent as ``Authorization: Bearer``; None for a keyless demo server.
        timeout: seconds for connect + read.
        transport: an httpx transport to use instead of the network.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"user-agent": "tailor-python", "accept": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def decide(self, request: DecideRequest) -> Decision:
        """Ask the server for a decision.

        Raises:
            TransportError: the server could not be reached or did not answer in time.
            APIError: the server answered with a problem (4xx/5xx).
        """
        try:
            response = self._http.post(
                "/v1/decide",
                content=_encoder.encode(request),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"POST /v1/decide failed: {exc}") from exc
        if response.status_code != 200:
            raise APIError(response.status_code, _problem_of(response))
        try:
            return _decision.decode(response.content)
        except msgspec.DecodeError as exc:
            raise APIError(
                response.status_code,
                {"title": "invalid decision from server", "detail": str(exc)},
            ) from exc

    def close(self) -> None:
        """Close pooled connections."""
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


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        problem = _problem.decode(response.content)
    except msgspec.DecodeError:
        problem = {"title": response.reason_phrase or "error", "detail": response.text[:200]}
    return problem
