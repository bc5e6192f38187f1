"""Reading and decoding JSON request bodies: media types, size limits, msgspec decoding.

Bodies are JSON sent as ``application/json`` or ``text/plain`` (the tag's CORS-simple POSTs
and ``sendBeacon``); errors are problems that name the field. A body must arrive within the
body timeout (``app.state.body_timeout``, from ``Settings.body_timeout``), else 408 and the
connection is closed; a body nested too deeply to decode is a 400, not a crash. Shared by every
handler that decodes its own body.

Must not import model_export.
"""

from __future__ import annotations

from typing import Any, TypeVar

import anyio
import msgspec
from litestar import Request
from litestar.exceptions import ClientException

from server.problems import Problem

__all__ = ["DEFAULT_BODY_TIMEOUT", "JSON_TYPES", "decode_body", "read_body"]

T = TypeVar("T")
JSON_TYPES = ("application/json", "text/plain")
_JSON_TYPES = JSON_TYPES
#: Seconds to wait for a whole body when the app states no ``body_timeout``.
DEFAULT_BODY_TIMEOUT = 10.0


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
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media and not (media in _JSON_TYPES or media.endswith("+json")):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send JSON as application/json or text/plain, not {media}",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    if timeout is None:
        timeout = float(request.app.state.get("body_timeout", DEFAULT_BODY_TIMEOUT))
    try:
        with anyio.fail_after(timeout):
            body = await request.body()
    except TimeoutError as exc:
        late = Problem(
            408,
            "body-timeout",
            "Request body timeout",
            f"the body did not arrive within {timeout:g} seconds",
        )
        late.headers = {"connection": "close"}  # uvicorn closes the connection after it
        raise late from exc
    except ClientException as exc:
        if exc.status_code == 413:
            raise _too_large(limit) from exc
        raise
    if len(body) > limit:
        raise _too_large(limit)
    return body


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
