"""Which routes take which key: ``"METHOD /path"`` rules (a trailing ``/*`` also covers the
path's descendants, ``GET`` covers ``HEAD``) and path normalisation as Litestar's router does.

Must not import litestar or model_export.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "DEFAULT_PUBLIC_ROUTES",
    "DEMO_READ_ROUTES",
    "RouteRules",
    "compile_routes",
    "matches",
    "normalize_path",
]

#: Routes that accept public keys: ``"METHOD /path"``, a trailing ``/*`` also covers the
#: path's descendants, and ``GET`` covers ``HEAD``.
DEFAULT_PUBLIC_ROUTES: tuple[str, ...] = (
    "POST /v1/decide",
    "POST /v1/events",
    # a visitor's own data, proven by their visitor token (server.visitors)
    "POST /v1/me",
    "POST /v1/me/forget",
    # /v1/bundle and its files are secret-only: a browser never needs them (issue 15).
)
#: Secret routes that the keyless loopback demo may call too (same syntax): the reports.
DEMO_READ_ROUTES: tuple[str, ...] = ("GET /v1/reports/*",)
_SLASHES = re.compile("//+")

#: ``(method, path)`` pairs matched exactly, and ``(method, tree)`` pairs matched with their
#: descendants.
RouteRules = tuple[set[tuple[str, str]], list[tuple[str, str]]]


def compile_routes(routes: Iterable[str]) -> RouteRules:
    """``(method, path)`` pairs matched exactly and ``(method, tree)`` pairs matched with their
    descendants, from ``"METHOD /path"`` entries (``/*``: and below; ``GET`` adds ``HEAD``)."""
    exact: set[tuple[str, str]] = set()
    trees: list[tuple[str, str]] = []
    for route in routes:
        method, _, path = route.strip().partition(" ")
        method, path = method.upper(), path.strip()
        tree = path.endswith("/*")
        path = _SLASHES.sub("/", "/" + path.removesuffix("/*").strip("/"))
        methods = (method, "HEAD") if method == "GET" else (method,)
        for m in methods:
            if tree:
                trees.append((m, path))
            else:
                exact.add((m, path))
    return exact, trees


def matches(
    method: str, path: str, exact: set[tuple[str, str]], trees: list[tuple[str, str]]
) -> bool:
    if (method, path) in exact:
        return True
    return any(m == method and (path == tree or path.startswith(tree + "/")) for m, tree in trees)


def normalize_path(path: str) -> str:
    """``path`` with slashes collapsed, no trailing slash, a leading one."""
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path if path.startswith("/") else "/" + path
