"""``Server-Timing``: the named durations of one request (:class:`ServerTiming`, kept in the
request scope by :class:`~server.observability.middleware.MetricsMiddleware`), the header value
they make, and a stopwatch.

Must not import model_export.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Final

from litestar.types import Scope

__all__ = ["TIMING_KEY", "ServerTiming", "Stopwatch", "timing_header"]

#: Where :class:`ServerTiming` is kept in ``scope["state"]``.
TIMING_KEY: Final = "tailor.server_timing"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token, used with fullmatch


def timing_header(pairs: Iterable[tuple[str, float]]) -> str:
    """A ``Server-Timing`` header value: ``decode;dur=0.052, decide;dur=0.210``.

    Args:
        pairs: (metric name, duration in **seconds**); written as milliseconds with 3
            decimals (a microsecond: the stages of a decision take tens of them).

    Raises:
        ValueError: a name is not an HTTP token.
    """
    parts = []
    for name, seconds in pairs:
        _check(name)
        parts.append(f"{name};dur={seconds * 1000:.3f}")
    return ", ".join(parts)


#: Names already checked (a handful of stage names, checked once each rather than per request).
_CHECKED: set[str] = set()


def _check(name: str) -> None:
    if name in _CHECKED:
        return
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"Server-Timing name {name!r} is not an HTTP token")
    if len(_CHECKED) < 256:
        _CHECKED.add(name)


class Stopwatch:
    """``time.perf_counter_ns`` stopwatch: ``elapsed()`` since start, ``lap()`` since last lap."""

    __slots__ = ("_last", "_start")

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter_ns()

    def elapsed(self) -> float:
        """Seconds since the stopwatch started."""
        return (time.perf_counter_ns() - self._start) / 1e9

    def lap(self) -> float:
        """Seconds since the previous lap (or the start)."""
        now = time.perf_counter_ns()
        seconds = (now - self._last) / 1e9
        self._last = now
        return seconds


class _Span:
    __slots__ = ("_name", "_start", "_timing")

    def __init__(self, timing: ServerTiming, name: str) -> None:
        self._timing = timing
        self._name = name
        self._start = 0

    def __enter__(self) -> None:
        self._start = time.perf_counter_ns()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timing.add(self._name, (time.perf_counter_ns() - self._start) / 1e9)


class ServerTiming:
    """Named durations of one request, sent back as ``Server-Timing``.

    :class:`MetricsMiddleware` puts one in the request scope; a handler fetches it with
    :meth:`from_scope` and records into it (``with timing.measure("decode"): ...`` or
    ``timing.add("onnx", seconds)``); the middleware writes the header, ending with ``total``.
    """

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[str, float]] = []

    @staticmethod
    def from_scope(scope: Scope) -> ServerTiming:
        """The request's timing, or a detached one when no middleware installed it."""
        timing = scope.get("state", {}).get(TIMING_KEY)
        return timing if isinstance(timing, ServerTiming) else ServerTiming()

    def add(self, name: str, seconds: float) -> None:
        """Record ``name`` as taking ``seconds``; ``name`` must be an HTTP token."""
        _check(name)
        self.entries.append((name, seconds))

    def measure(self, name: str) -> _Span:
        """Context manager recording the time spent in its block as ``name``."""
        return _Span(self, name)

    def header(self, total: float | None = None) -> str:
        """The header value of the recorded entries, plus ``total`` when given (seconds)."""
        pairs = self.entries if total is None else [*self.entries, ("total", total)]
        return timing_header(pairs)
