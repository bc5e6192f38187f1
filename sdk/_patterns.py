"""Strings the condition language parses: version strings and regular expressions.

:func:`version_key` gives the sort key of a version string (the ``$v…`` operators compare
those); :func:`compiled_regex` compiles a ``$regex`` pattern once (a bounded cache) with RE2,
a linear-time engine (``google-re2``, in the ``local`` extra), never with Python's backtracking
``re``.

Must import only the standard library, sdk.errors and (lazily) ``re2``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Final, Protocol

from sdk.errors import ConditionError, MissingExtraError

__all__ = ["Regex", "RegexError", "compiled_regex", "version_key"]


class Regex(Protocol):
    """What conditions need of a compiled pattern."""

    def search(self, text: str) -> object | None: ...


class RegexError(ConditionError):
    """Raised when RE2 cannot compile a ``$regex`` pattern (e.g. a backreference)."""


_VERSION: Final = re.compile(
    r"[vV]?(?P<core>[0-9]+(?:\.[0-9]+)*)"
    r"(?:-(?P<pre>[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*))?"
    r"(?:\+[0-9A-Za-z.-]*)?"
)
_ZERO: Final = (0, "")


def _number_part(digits: str) -> tuple[int, str]:
    stripped = digits.lstrip("0")
    return (len(stripped), stripped)


def version_key(text: Any) -> tuple[Any, ...] | None:
    """The sort key of a version string, or None when ``text`` is not one.

    The rule: an optional leading ``v``/``V`` is dropped, and so is build metadata (``+`` and
    what follows: ASCII letters, digits, ``.`` and ``-``). What remains is a *core* of one or more
    ``.``-separated runs of ASCII digits, then optionally ``-`` and a *pre-release* of ASCII
    alphanumeric identifiers separated by ``.`` or ``-``. Nothing else is a version (no spaces).

    Cores compare part by part as numbers of any size (so ``1.10 > 1.9`` and ``01 == 1``), a
    missing part counting as 0 (``1.2 == 1.2.0``). With equal cores, a version with a pre-release
    sorts before the one without (``1.0.0-rc.1 < 1.0.0``); pre-releases compare identifier by
    identifier: numeric ones as numbers and below alphanumeric ones, alphanumeric ones by ASCII,
    and a shorter list that is a prefix of a longer one sorts first (``1.0-a < 1.0-a.1``).

    Args:
        text: the value to read; anything but a ``str`` is not a version.
    """
    if not isinstance(text, str):
        return None
    match = _VERSION.fullmatch(text)
    if match is None:
        return None
    core = [_number_part(p) for p in match["core"].split(".")]
    while core and core[-1] == _ZERO:
        core.pop()
    pre = match["pre"]
    if pre is None:
        return (tuple(core), 1, ())
    identifiers = tuple(
        (0, *_number_part(p)) if p.isdigit() else (1, 0, p) for p in re.split(r"[.-]", pre)
    )
    return (tuple(core), 0, identifiers)


@lru_cache(maxsize=1)
def _re2() -> tuple[Any, Any]:
    try:
        import re2
    except ImportError as exc:
        raise MissingExtraError("google-re2 (for $regex conditions)", "local") from exc
    options = re2.Options()
    options.log_errors = False  # errors are raised, not also printed
    return re2, options


@lru_cache(maxsize=256)
def compiled_regex(pattern: str) -> Regex:
    """``pattern`` compiled by RE2 (matching takes time linear in the input).

    Raises:
        RegexError: RE2 cannot compile it (RE2 syntax has no backreferences or lookaround).
        MissingExtraError: ``google-re2`` is not installed (the ``local`` extra).
    """
    re2, options = _re2()
    try:
        compiled: Regex = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(f"RE2 cannot compile {pattern!r}: {reason}") from exc
    return compiled
