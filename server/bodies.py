"""Reading and decoding JSON request bodies: media types, size limits, msgspec decoding.

Bodies are JSON sent as ``application/json`` or ``text/plain`` (the tag's CORS-simple POSTs
and ``sendBeacon``); errors are problems that name the field. A body must arrive within the
body timeout (``app.state.body_timeout``, from ``Settings.body_timeout``), else 408 and the
connection is closed; a body nested too deeply to decode is a 400, not a crash. Shared by every
handler that decodes its own body.

Must not import model_export.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec
from litestar import Request

from server.problems import Problem

__all__ = ["DEFAULT_BODY_TIMEOUT", "JSON_TYPES", "decode_body", "read_body"]

T = TypeVar("T")
JSON_TYPES = ("application/json", "text/plain")
_JSON_TYPES = JSON_TYPES
#: Seconds to wait for a whole body when the app states no ``body_timeout``.
DEFAULT_BODY_TIMEOUT = 10.0


def _content_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """``Content-Type`` and ``Content-Length`` straight from the ASGI scope's headers (names
    are lower-case there), without building the framework's header mapping."""
    content_type = length = None
    for name, value in headers:
        if name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-length" and length is None:
            length = value.decode("latin-1").strip()
    return content_type, length


def _too_large(limit: int) -> Problem:
    return Problem(413, "body-too-large", "Request body too large", f"the limit is {limit} bytes")


async def read_body(
    request: Request[Any, Any, Any], limit: int, timeout: float | None = None
) -> bytes:
    """The body of a JSON request sent as JSON or ``text/plain``, at most ``limit`` bytes,
    read within ``timeout`` seconds (default: ``app.state.body_timeout``).

    Raises:
        Problem: 415 for another media type, 413 for a larger body (chunked ones included),
            408 (with ``Connection: close``) for a body not received in time.
    """
    content_type, length = _content_headers(request.scope.get("headers") or ())
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media and not (media in _JSON_TYPES or media.endswith("+json")):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send JSON as application/json or text/plain, not {media}",
        )
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    if timeout is None:
        timeout = float(request.app.state.get("body_timeout", DEFAULT_BODY_TIMEOUT))
    try:
        async with asyncio.timeout(timeout):  # the stdlib's: a third of anyio.fail_after's cost
            body = await _receive(request, limit)
    except TimeoutError as exc:
        late = Problem(
            408,
            "body-timeout",
            "Request body timeout",
            f"the body did not arrive within {timeout:g} seconds",
        )
        late.headers = {"connection": "close"}  # uvicorn closes the connection after it
        raise late from exc
    return body


async def _receive(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The body straight from the ASGI messages (the handler reads it once), refused as soon
    as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise Problem(
                400, "client-disconnected", "Client disconnected", "the body did not arrive"
            )
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_body(body: bytes, decoder: msgspec.json.Decoder[T], what: str) -> T:
    """Decode ``body``; a problem names the field (422) or says the JSON is malformed or too
    deeply nested (400)."""
    try:
        return decoder.decode(body)
    except RecursionError as exc:
        raise Problem(
            400, "malformed-json", "Malformed JSON", "the JSON is nested too deeply"
        ) from exc
    except msgspec.ValidationError as exc:
        raise Problem(422, "invalid-request", f"Invalid {what}", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Problem(400, "malformed-json", "Malformed JSON", str(exc)) from exc
