"""Sensitive categories and page paths: the one definition of what they are and how they are
scrubbed from requests, profiles and events before anything reads or stores them.

A catalogue can mark product categories and URL path prefixes as sensitive (health, pregnancy,
religion, financial hardship...); training copies them into the bundle's manifest
(:class:`sdk.manifest.SensitiveDef`). :class:`Sensitivity` is built from it once per bundle.
The decider scrubs every request and stored profile before features, rules and personas; the
server scrubs what it stores and logs with the decider's own object (``decider.sensitivity``),
and the log record builders of :mod:`sdk.logs` scrub when given one; training drops sensitive
categories and paths from the data it learns from; a rule that targets one is refused at
training and at bundle load (:meth:`Sensitivity.rule_violations`).

Matching: a category matches by name, ignoring case and surrounding spaces. A path matches a
prefix by whole segments, ignoring case, after percent-decoding, ``\\`` -> ``/``, collapsing
repeated slashes and resolving ``.``/``..`` segments: ``/health`` covers ``/health``,
``/health/x``, ``/health.html`` and ``/health;x``, not ``/healthy-snacks``. A full URL is
matched by its path, whatever its host; query and fragment are ignored.

Must import only the standard library, msgspec and sdk's schema, manifest, referrer and
condition modules.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

from sdk._sensitive_rules import RuleSource, rule_violations
from sdk.manifest import Manifest, SensitiveDef
from sdk.referrer import campaign_keys
from sdk.schema import Behavior, DecideRequest, Event, Page

__all__ = ["NO_SENSITIVITY", "RuleSource", "Sensitivity", "normal_path"]

_SLASHES = re.compile(r"/{2,}")
#: Characters that end a path segment after a sensitive prefix.
_BOUNDARY = frozenset("/;.")


@lru_cache(maxsize=4096)
def _normal(text: str) -> str | None:
    if "://" in text[:32]:
        try:
            path = urlsplit(text).path
        except ValueError:
            return None
    else:
        path = text.partition("#")[0].partition("?")[0]
    path = unquote(path).replace("\\", "/").casefold()
    if not path.startswith("/"):
        path = "/" + path
    return posixpath.normpath(_SLASHES.sub("/", path))


def normal_path(path_or_url: str | None) -> str | None:
    """The path of a URL or path as sensitive paths are matched: percent-decoded, case-folded,
    ``\\`` read as ``/``, repeated slashes collapsed, dot segments resolved, no trailing slash,
    no query or fragment; a path without a leading slash is read from the root, and one with
    two (``//x``) as a path. None for no text or a URL that does not parse."""
    if not path_or_url or not path_or_url.strip():
        return None
    text = path_or_url.strip()
    return _normal(text) if len(text) <= 1024 else _normal.__wrapped__(text)


def _campaign_query(query: str) -> str:
    """The campaign keys of a query string (:func:`sdk.referrer.campaign_keys`), as
    :func:`sdk.logs.logged_url` keeps them."""
    keep = campaign_keys()
    return "&".join(
        pair for pair in query.split("&") if unquote(pair.partition("=")[0]).lower() in keep
    )


@lru_cache(maxsize=4096)
def _under(paths: tuple[str, ...], text: str) -> bool:
    """Whether path or URL ``text`` is under one of the normalized ``paths``."""
    path = normal_path(text)
    if path is not None:
        for prefix in paths:
            if path.startswith(prefix) and (
                len(path) == len(prefix) or path[len(prefix)] in _BOUNDARY
            ):
                return True
    # "//host/path" is a path to a browser's location and a URL to urlsplit: either counts
    return text.lstrip().startswith("//") and _under(paths, "http:" + text.strip())


def _origin_url(url: str, keep_query: bool) -> str | None:
    """``url`` reduced to its scheme and host (no user info) plus, with ``keep_query``, the
    campaign keys of its query; None when nothing stays."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    query = _campaign_query(parts.query) if keep_query else ""
    host = parts.netloc.rpartition("@")[2]
    if not host and not query:
        return None
    return urlunsplit((parts.scheme, host, "/", query, ""))


def _looks_like_path(value: str) -> bool:
    return value.startswith("/") or "://" in value[:32]


@dataclass(frozen=True, slots=True)
class Sensitivity:
    """A bundle's sensitive categories and path prefixes, and the scrubbing they imply.

    Build it with :meth:`from_def` or :meth:`from_manifest` (the decider does, as
    ``decider.sensitivity``). Every ``scrub_*`` method returns its argument itself when there
    is nothing to scrub, so an empty set costs one test on the hot path.

    Attributes:
        categories: the sensitive category names, case-folded.
        paths: the sensitive path prefixes, normalized by :func:`normal_path`.
    """

    categories: frozenset[str] = frozenset()
    paths: tuple[str, ...] = ()

    @classmethod
    def from_def(cls, sensitive: SensitiveDef) -> Sensitivity:
        """The sensitivity a manifest's or catalogue's ``sensitive`` section describes."""
        categories = frozenset(c.strip().casefold() for c in sensitive.categories if c.strip())
        paths = tuple(dict.fromkeys(p for p in map(normal_path, sensitive.paths) if p and p != "/"))
        return cls(categories=categories, paths=paths)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Sensitivity:
        """The sensitivity of a bundle (empty for bundles made before it existed)."""
        return cls.from_def(manifest.sensitive)

    def __bool__(self) -> bool:
        return bool(self.categories or self.paths)

    # --- matching --------------------------------------------------------------------------

    def is_sensitive_category(self, name: object) -> bool:
        """Whether ``name`` is a sensitive category (ignoring case and surrounding spaces)."""
        categories = self.categories
        if not categories or not isinstance(name, str):
            return False
        return name in categories or name.strip().casefold() in categories

    def is_sensitive_path(self, path_or_url: object) -> bool:
        """Whether a page path or URL (any host) is under a sensitive prefix, by whole
        segments (see the module docstring)."""
        if not self.paths or not isinstance(path_or_url, str) or not path_or_url:
            return False
        if len(path_or_url) > 1024:  # not worth a cache entry
            return _under.__wrapped__(self.paths, path_or_url)
        return _under(self.paths, path_or_url)

    # --- scrubbing -------------------------------------------------------------------------

    def scrub_categories(self, categories: Iterable[str]) -> list[str]:
        """``categories`` without the sensitive ones, in order."""
        return [c for c in categories if not self.is_sensitive_category(c)]

    def scrub_behavior(self, behavior: Behavior) -> Behavior:
        """``behavior`` without sensitive ``categories_viewed`` (the same object if none)."""
        if not self.categories or not behavior.categories_viewed:
            return behavior
        is_sensitive = self.is_sensitive_category
        if not any(is_sensitive(c) for c in behavior.categories_viewed):
            return behavior
        kept = self.scrub_categories(behavior.categories_viewed)
        if len(kept) == len(behavior.categories_viewed):
            return behavior
        return msgspec.structs.replace(behavior, categories_viewed=kept)

    def scrub_page(self, page: Page) -> Page:
        """``page`` as a sensitive page may be seen (the same object if it is not sensitive).

        On a sensitive page (its path or URL is under a sensitive prefix) the path, title and
        search go, and the URL keeps only its scheme, host and campaign keys (``utm_*`` but
        ``utm_term``, click ids), so the visit's attribution (paid, email...) is unchanged. A
        referrer whose path is sensitive, on any site, keeps only its scheme and host: the
        referrer class and source are unchanged, the page it names is gone.
        """
        if not self.paths:
            return page
        changes: dict[str, Any] = {}
        if self.is_sensitive_path(page.path) or self.is_sensitive_path(page.url):
            search = _campaign_query((page.search or "").removeprefix("?"))
            changes = {
                "url": _origin_url(page.url, keep_query=True) if page.url else None,
                "path": None,
                "title": None,
                "search": "?" + search if search else None,
            }
        if self.is_sensitive_path(page.referrer):
            assert page.referrer is not None
            changes["referrer"] = _origin_url(page.referrer, keep_query=False)
        return msgspec.structs.replace(page, **changes) if changes else page

    def scrub_request(self, request: DecideRequest) -> DecideRequest:
        """``request`` without sensitive categories viewed and, on a sensitive page, without
        its path, title, search and the URL's path and query (see :meth:`scrub_page`).
        Returns ``request`` itself when nothing is sensitive."""
        if not self:
            return request
        behavior = self.scrub_behavior(request.behavior)
        page = self.scrub_page(request.context.page)
        if behavior is request.behavior and page is request.context.page:
            return request
        context = request.context
        if page is not context.page:
            context = msgspec.structs.replace(context, page=page)
        return msgspec.structs.replace(request, behavior=behavior, context=context)

    def scrub_event(self, event: Event) -> Event:
        """``event`` without sensitive properties: a sensitive category under a key naming a
        category (``category``, ``categories``...: strings, or lists of them filtered), and any
        property whose value is a path or URL under a sensitive prefix (``url``,
        ``referrer``...). Returns ``event`` itself when nothing is sensitive."""
        if not self or not event.properties:
            return event
        props: dict[str, Any] = {}
        changed = False
        for key, value in event.properties.items():
            kept = self._scrub_property(key, value)
            if kept is not value:
                changed = True
                if kept is None:
                    continue
            props[key] = kept
        return msgspec.structs.replace(event, properties=props) if changed else event

    def _scrub_property(self, key: str, value: Any) -> Any:
        """``value`` itself when it may stay, None when it goes, else a filtered list."""
        category_key = "categor" in key.casefold()
        if isinstance(value, str):
            if category_key and self.is_sensitive_category(value):
                return None
            if _looks_like_path(value) and self.is_sensitive_path(value):
                return None
            return value
        if isinstance(value, list) and any(isinstance(v, str) for v in value):
            kept = [
                v
                for v in value
                if not (
                    isinstance(v, str)
                    and (
                        (category_key and self.is_sensitive_category(v))
                        or (_looks_like_path(v) and self.is_sensitive_path(v))
                    )
                )
            ]
            return value if len(kept) == len(value) else kept
        return value

    # --- rules -----------------------------------------------------------------------------

    def rule_violations(self, source: RuleSource) -> list[str]:
        """Every rule of a manifest or catalogue that targets a sensitive category or path,
        one message each naming the rule (empty when there is none).

        Checked: lifecycle rules, offer eligibility and an offer's own category, slot variant
        conditions, experiment conditions. A condition is refused when any of its values names
        a sensitive category or is a sensitive path or URL, when a ``$regex`` on a category
        attribute finds a sensitive category name, when a ``$regex`` on a path or URL
        attribute could match a sensitive path (it must be anchored with ``^`` and start with
        literal text no sensitive path starts with), or when a string comparison
        (``$gt``...) on a path attribute holds for a sensitive path.
        """
        if not self:
            return []
        return rule_violations(self, source)


#: The empty sensitivity: nothing is scrubbed, no rule is refused.
NO_SENSITIVITY = Sensitivity()
