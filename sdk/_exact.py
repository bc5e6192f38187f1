"""Exact shortcuts for two standard-library calls every decision makes many times.

:func:`round6` is ``round(x, 6)`` (and :func:`round4` ``round(x, 4)``), bit for bit (sign of
zero, NaN and infinities included), without the decimal conversion the built-in does each time
(a correctly rounded ``dtoa`` to a string, then ``strtod`` back): a decision rounds its persona
affinities, segment distance, offer scores and RFM score, about seventeen numbers.
:class:`IdPool` hands out random version-4 UUIDs as 32 hex digits from one ``os.urandom`` read
per 256 ids.

Why :func:`round6` is exact: for ``|x * 1e6| < 1e9`` the product ``y`` is within 1.2e-7 of the
true ``x * 10**6`` (one rounding, relative error at most 2**-53), so when the fraction of ``y``
is more than 1e-6 away from one half, the integer ``k`` nearest to the true product is certain;
``k / 1e6`` (exact integers, one correctly rounded division) is then the double nearest to
``k * 10**-6``, which is what ``round`` returns. Near a half, for large or non-finite values,
the built-in answers. ``tests/sdk/test_exact.py`` pins both against ``round`` on millions of
values and on the edge cases.

Must import only the standard library.
"""

from __future__ import annotations

import os
import threading
from math import copysign, floor

__all__ = ["IdPool", "round4", "round6"]

#: How far from one half the fraction of ``x * 1e6`` must be for the shortcut (see above).
_MARGIN = 1e-6


def _rounded(x: float, scale: float, digits: int) -> float:
    """``round(x, digits)`` with ``scale = 10.0 ** digits`` (at most 1e6; see above)."""
    y = x * scale
    if -1e9 < y < 1e9:
        k = floor(y)
        f = y - k
        if f < 0.5 - _MARGIN:
            return k / scale if k else copysign(0.0, x)
        if f > 0.5 + _MARGIN:
            k += 1
            return k / scale if k else copysign(0.0, x)
    return round(x, digits)


def round6(x: float) -> float:
    """``round(x, 6)``, the same float bit for bit, computed without a decimal string when the
    rounding direction is certain (see the module docstring)."""
    return _rounded(x, 1e6, 6)


def round4(x: float) -> float:
    """``round(x, 4)`` bit for bit, as :func:`round6` (the same argument holds for 10**4)."""
    return _rounded(x, 1e4, 4)


class IdPool:
    """Random version-4 UUIDs (RFC 9562) as 32 lowercase hex digits, like ``uuid.uuid4().hex``.

    Reads ``os.urandom`` once per ``batch`` ids and formats them all at once; thread-safe, and a
    forked child (a server worker) starts a fresh pool instead of repeating its parent's ids.

    Args:
        batch: ids per ``os.urandom`` read.
    """

    def __init__(self, batch: int = 256) -> None:
        self._batch = batch
        self._lock = threading.Lock()
        self._hex = ""
        self._next = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._hex = ""
        self._next = 0
        self._lock = threading.Lock()

    def _refill(self) -> None:
        raw = bytearray(os.urandom(16 * self._batch))
        for start in range(0, len(raw), 16):
            raw[start + 6] = (raw[start + 6] & 0x0F) | 0x40  # version 4
            raw[start + 8] = (raw[start + 8] & 0x3F) | 0x80  # RFC 9562 variant
        self._hex = raw.hex()
        self._next = 0

    def __call__(self) -> str:
        """The next id (never one this process, or its parent before a fork, gave)."""
        with self._lock:
            start = self._next
            if start >= len(self._hex):
                self._refill()
                start = 0
            self._next = start + 32
            return self._hex[start : start + 32]
