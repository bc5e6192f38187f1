"""Strings the condition language parses: version strings and regular expressions.

:func:`version_key` gives the sort key of a version string (the ``$v…`` operators compare
those); :func:`compiled_regex` compiles a ``$regex`` pattern once (a bounded cache).

Must import only the standard library.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Final

__all__ = ["compiled_regex", "version_key"]

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


@lru_cache(maxsize=256)
def compiled_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
