"""What the security middleware answers itself: refusals as RFC 9457
``application/problem+json``, and the CORS headers of allowed responses.

Must not import litestar or model_export.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import msgspec

__all__ = [
    "PROBLEM_TYPE_BASE",
    "ASGIApp",
    "Message",
    "Receive",
    "Refusal",
    "Scope",
    "Send",
    "missing_key",
    "rate_limited",
    "send_problem",
    "with_cors",
]

# ASGI types as plain dicts; Any so that a framework's TypedDict scopes and events fit.
Scope: TypeAlias = Any
Message: TypeAlias = Any
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

# Kept equal to server.problems.PROBLEM_TYPE_BASE (a test pins it) without importing litestar.
PROBLEM_TYPE_BASE = "https://tailor.dev/problems/"
_encoder = msgspec.json.Encoder()


class Refusal(Exception):
    """A request the middleware refuses: status, problem slug, title, detail, extra headers."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers


def missing_key(detail: str) -> Refusal:
    return Refusal(
        401, "missing-key", "API key required", detail, [(b"www-authenticate", b"Bearer")]
    )


def rate_limited(wait: int, cors: Sequence[tuple[bytes, bytes]]) -> Refusal:
    return Refusal(
        429,
        "rate-limited",
        "Too many requests",
        f"rate limit exceeded; retry in {wait} s",
        [(b"retry-after", str(wait).encode()), *cors],
    )


def with_cors(send: Send, cors: Sequence[tuple[bytes, bytes]]) -> Send:
    """Wrap ``send``: drop the app's CORS headers, add ``Vary: Origin`` and ours."""

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [  # ASGI response header names are lowercase
                header
                for header in message.get("headers") or ()
                if not header[0].startswith(b"access-control-")
            ]
            headers.append((b"vary", b"Origin"))
            headers.extend(cors)
            message = {**message, "headers": headers}
        await send(message)

    return send_with_cors


async def send_problem(send: Send, scope: Scope, refusal: Refusal) -> None:
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + refusal.slug,
        "title": refusal.title,
        "status": refusal.status,
        "detail": refusal.detail,
        "instance": str(scope.get("path", "")),
    }
    try:
        payload = _encoder.encode(body)
    except UnicodeEncodeError:  # a path with lone surrogates
        del body["instance"]
        payload = _encoder.encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
                (b"vary", b"Origin"),
                *refusal.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
