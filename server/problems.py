"""RFC 9457 problem details: every error the server returns is ``application/problem+json``.

Domain errors from ``sdk`` carry no HTTP status; this module maps them, Litestar's HTTP
exceptions, and anything unexpected (500, without internals) to problem documents.

Must not import model_export.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

__all__ = [
    "PROBLEM_TYPE_BASE",
    "Problem",
    "exception_handlers",
    "problem_response",
    "without_paths",
]

PROBLEM_TYPE_BASE = "https://tailor.dev/problems/"
MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("tailor.server")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][^/\\\s'\"`,;:()]+)+[/\\]?")


def without_paths(text: str) -> str:
    """``text`` with every filesystem path cut to its last component (``/srv/b/x.onnx`` ->
    ``x.onnx``), for public answers; the server log keeps the whole path."""
    return _PATH.sub(lambda m: m.group().rstrip("/\\").rsplit("/", 1)[-1].rsplit("\\", 1)[-1], text)


class Problem(Exception):
    """Raise from a handler to answer with a problem document; keyword arguments are extra
    members of the document, and ``headers`` (set after construction) response headers."""

    def __init__(self, status: int, slug: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] | None = None


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _on_problem(request: Request[Any, Any, Any], exc: Problem) -> Response[dict[str, Any]]:
    return problem_response(
        exc.status, exc.slug, exc.title, exc.detail, request.url.path, exc.headers, **exc.extra
    )


_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    408: ("body-timeout", "Request timeout"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


def _on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    slug, title = _SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if exc.detail and exc.detail != title else title
    return problem_response(
        exc.status_code, slug, title, str(detail), request.url.path, headers=exc.headers
    )


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        500,
        "internal",
        "Internal server error",
        "the server failed to handle this request; it has been logged",
        request.url.path,
    )


exception_handlers: dict[Any, Any] = {
    Problem: _on_problem,
    HTTPException: _on_http,
    Exception: _on_unexpected,
}
