"""Origin rules of public keys: parsing a browser's ``Origin`` and the configured patterns
(``scheme://host[:port]``, ``scheme://*.domain[:port]`` for every subdomain of ``domain``, or
``"*"``), compared case-insensitively with default ports dropped.

Must not import litestar or model_export.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["Origin", "OriginRules", "canonical_origin"]

#: ``(scheme, host, port, canonical text)`` of an origin; port ``""`` when the default.
Origin: TypeAlias = tuple[str, str, str, str]

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PATTERN_RE = re.compile(rf"(https?)://(\*\.)?({_LABEL}(?:\.{_LABEL})*)(?::([0-9]{{1,5}}))?")
_ORIGIN_RE = re.compile(
    rf"(https?)://({_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::([0-9]{{1,5}}))?"
)
_DEFAULT_PORT = {"http": "80", "https": "443"}


def _origin_string(scheme: str, host: str, port: str) -> str:
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def canonical_origin(value: str) -> Origin | None:
    """``(scheme, host, port, canonical text)`` of a presented ``Origin``, or None.

    The port is ``""`` when it is the scheme's default, as browsers serialise it.
    """
    # a real origin is short; the bound also keeps the cache small under junk
    return _parse_origin(value) if len(value) <= 300 else None


@functools.lru_cache(maxsize=4096)  # browsers repeat a handful of origins; thread-safe
def _parse_origin(value: str) -> Origin | None:
    match = _ORIGIN_RE.fullmatch(value.strip().lower())
    if match is None:
        return None
    scheme, host, port = match.group(1), match.group(2), match.group(3) or ""
    if port == _DEFAULT_PORT[scheme]:
        port = ""
    return scheme, host, port, _origin_string(scheme, host, port)


@dataclass(frozen=True, slots=True)
class OriginRules:
    """Compiled origin patterns (see the module docstring for the grammar)."""

    any_origin: bool = False
    exact: frozenset[str] = frozenset()
    #: ``(scheme, ".domain", port)`` for each ``scheme://*.domain[:port]`` pattern
    wildcards: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def compile(cls, patterns: Iterable[str]) -> OriginRules:
        """Compile patterns; a ValueError names the first invalid one and how to write it."""
        any_origin = False
        exact: set[str] = set()
        wildcards: list[tuple[str, str, str]] = []
        for pattern in patterns:
            if pattern == "*":
                any_origin = True
                continue
            text = pattern.strip().lower()
            match = _PATTERN_RE.fullmatch(text)
            if match is None:
                raise ValueError(_pattern_advice(pattern))
            scheme, star, host, port = match.groups()
            port = port or ""
            if port and not 0 < int(port) < 65536:
                raise ValueError(f"origin pattern {pattern!r}: port out of range")
            if port == _DEFAULT_PORT[scheme]:
                port = ""
            if star:
                if "." not in host:
                    raise ValueError(
                        f"origin pattern {pattern!r} is too broad: a wildcard needs a domain "
                        "of at least two labels, e.g. 'https://*.example.com'"
                    )
                wildcards.append((scheme, "." + host, port))
            else:
                exact.add(_origin_string(scheme, host, port))
        return cls(any_origin=any_origin, exact=frozenset(exact), wildcards=tuple(wildcards))

    @classmethod
    def union(cls, rules: Iterable[OriginRules]) -> OriginRules:
        """Rules allowing what any of ``rules`` allows."""
        rules = list(rules)
        return cls(
            any_origin=any(r.any_origin for r in rules),
            exact=frozenset().union(*(r.exact for r in rules)),
            wildcards=tuple(w for r in rules for w in r.wildcards),
        )

    def allows(self, origin: Origin | None) -> bool:
        """Whether a canonical origin (from :func:`canonical_origin`) is allowed."""
        if origin is None:
            return False
        if self.any_origin or origin[3] in self.exact:
            return True
        scheme, host, port, _ = origin
        for w_scheme, suffix, w_port in self.wildcards:
            if scheme == w_scheme and port == w_port and host.endswith(suffix):
                return True
        return False


def _pattern_advice(pattern: str) -> str:
    text = pattern.strip().lower()
    head = f"origin pattern {pattern!r}"
    if "://" not in text:
        return f"{head} needs a scheme: write 'https://{text.rstrip('/')}'"
    scheme, _, rest = text.partition("://")
    if scheme not in _DEFAULT_PORT:
        return f"{head}: only http and https origins exist for browsers"
    if "/" in rest:
        return f"{head}: an origin has no path, write '{scheme}://{rest.split('/')[0]}'"
    return (
        f"{head} is not 'scheme://host[:port]', 'scheme://*.domain[:port]' or '*' "
        "(hosts in ASCII/punycode; IPv6 literals are not supported)"
    )
