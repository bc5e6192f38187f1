"""Referrer enrichment: where the visit came from, as one of :data:`REFERRER_CLASSES`.

:func:`classify_referrer` reads the page URL (click ids, ``utm_*`` parameters), the campaign
the tag reported and ``document.referrer``; :func:`campaign_from_query` reads ``utm_*``
parameters by the browser tag's rule. The known hosts, click ids and mediums are data
(``sdk/data/referrers.json``, shared with the tag), loaded once. Pure; never raises.

Must import nothing but the standard library, msgspec and :mod:`sdk.schema`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec

from sdk.schema import Campaign, Page

__all__ = [
    "REFERRER_CLASSES",
    "Referrer",
    "campaign_from_query",
    "campaign_keys",
    "classify_referrer",
]

#: Every referrer class, in feature-encoding order: never reorder, only append.
REFERRER_CLASSES = ("direct", "internal", "search", "social", "email", "paid", "referral")

_MAX_TERMS_LENGTH = 256
_MAX_UTM_LENGTH = 256
_UTM_FIELDS = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}
_NO_CAMPAIGN = Campaign()
_MEDIUM_ORDER = ("paid", "email", "social", "search", "referral")
_NOT_ALNUM = re.compile(r"[^0-9a-z]")
_HOST = re.compile(r"^[0-9a-z_:.\-]+$")

_Class = Literal["internal", "search", "social", "email", "paid", "referral"]


@dataclass(frozen=True, slots=True)
class Referrer:
    """Where the visit came from.

    Attributes:
        cls: One of :data:`REFERRER_CLASSES`.
        source: A short lowercase name (``"google"``, ``"facebook"``, ``"news.example.org"``,
            the campaign's ``utm_source``) or ``None``.
        search_terms: The decoded search query, when known.
        click_id: The click-id parameter found in the page URL (e.g. ``"gclid"``), if any.
    """

    cls: str
    source: str | None
    search_terms: str | None
    click_id: str | None


# --- the rules table -------------------------------------------------------------------------


class _ClickIdRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cls: _Class = msgspec.field(name="class")
    source: str


class _MediumRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exact: frozenset[str]
    prefixes: tuple[str, ...] = ()


class _HostRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    host: str
    cls: _Class = msgspec.field(name="class")
    source: str
    params: tuple[str, ...] = ()
    any_tld: bool = False


class _Rules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    version: Literal[1]
    click_ids: dict[str, _ClickIdRule]
    mediums: dict[str, _MediumRule]
    second_level_domains: frozenset[str]
    hosts: tuple[_HostRule, ...]
    comment: str = ""


@dataclass(frozen=True, slots=True)
class _Table:
    click_ids: tuple[tuple[str, _ClickIdRule], ...]
    mediums: tuple[tuple[str, _MediumRule], ...]
    exact_hosts: dict[str, _HostRule]
    any_tld_hosts: dict[str, _HostRule]
    second_level_domains: frozenset[str]


@functools.cache
def _table() -> _Table:
    raw = resources.files("sdk").joinpath("data", "referrers.json").read_bytes()
    rules = msgspec.json.decode(raw, type=_Rules)
    return _Table(
        click_ids=tuple((name.lower(), rule) for name, rule in rules.click_ids.items()),
        mediums=tuple((cls, rules.mediums[cls]) for cls in _MEDIUM_ORDER if cls in rules.mediums),
        exact_hosts={r.host: r for r in rules.hosts if not r.any_tld},
        any_tld_hosts={r.host: r for r in rules.hosts if r.any_tld},
        second_level_domains=rules.second_level_domains,
    )


def _lookup_host(host: str, table: _Table) -> _HostRule | None:
    """The rule for ``host``: the longest matching exact suffix, else an ``anyTld`` base name."""
    labels = host.split(".")
    for i in range(len(labels)):
        rule = table.exact_hosts.get(".".join(labels[i:]))
        if rule is not None:
            return rule
    for i, label in enumerate(labels):
        rule = table.any_tld_hosts.get(label)
        if rule is not None and _is_tld_tail(labels[i + 1 :], table.second_level_domains):
            return rule
    return None


def _is_tld_tail(tail: list[str], slds: frozenset[str]) -> bool:
    """``com``, ``de``, ``co.uk``, ``com.au``: one label, or a generic SLD plus a country code."""
    if len(tail) == 1:
        return bool(tail[0])
    return len(tail) == 2 and tail[0] in slds and len(tail[1]) == 2


# --- URL helpers, none of which raise --------------------------------------------------------


def _host(url: str | None) -> tuple[str, str] | None:
    """The host and query string of ``url``, if it has an http(s) or android-app host.

    The host is lowercased, without ``www.`` or a trailing dot, and in its ASCII (punycode)
    form as browsers' ``URL`` reports it. A URL without a scheme is read as ``//`` + url.
    """
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc:
            parts = urlsplit("//" + url)
        if parts.scheme not in ("", "http", "https", "android-app"):
            return None
        host = (parts.hostname or "").rstrip(".")
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        return None
    host = host.removeprefix("www.")
    return (host, parts.query) if _HOST.match(host) else None


def _page_search(page: Page) -> str:
    """The page's query string as ``location.search`` has it: from the URL, else ``page.search``."""
    query = ""
    if page.url:
        try:
            query = urlsplit(page.url).query
        except ValueError:
            query = ""
    return "?" + query if query else page.search or ""


def _query(search: str) -> dict[str, str]:
    """The parameters of ``search``, keys lowercased, first non-empty value of each."""
    params: dict[str, str] = {}
    try:
        pairs = parse_qsl(search.removeprefix("?"), max_num_fields=200)
    except ValueError:
        return params
    for key, value in pairs:
        params.setdefault(key.lower(), value)
    return params


def campaign_from_query(query: str) -> Campaign | None:
    """The ``utm_*`` parameters of a query string, by the rule of the tag's ``parseUtm``.

    As WHATWG ``URLSearchParams`` reads it: one leading ``?`` is dropped, pairs are split on
    ``&`` and then on the first ``=``, ``+`` is a space, names and values are percent-decoded as
    UTF-8 (invalid UTF-8 becomes U+FFFD, a malformed escape stays text). Names are
    case-sensitive and the first of repeated parameters wins, even when empty. Values are cut
    to 256 code points; empty ones are left out; whitespace is kept.

    Args:
        query: A query string such as ``location.search``, with or without its ``?``.

    Returns:
        The campaign (``utm_campaign`` is its ``name``), or ``None`` when no ``utm_*``
        parameter has a value. Never raises.
    """
    found: dict[str, str] = {}
    for pair in query.removeprefix("?").split("&"):
        name, _, value = pair.partition("=")
        field = _UTM_FIELDS.get(unquote(name.replace("+", " ")))
        if field is not None and field not in found:
            found[field] = unquote(value.replace("+", " "))[:_MAX_UTM_LENGTH]
    values = {field: value for field, value in found.items() if value}
    return Campaign(**values) if values else None


def campaign_keys() -> frozenset[str]:
    """The query parameters that name a campaign: ``utm_source``, ``utm_medium``,
    ``utm_campaign``, ``utm_content`` and the known click ids (lowercase). ``utm_term`` is not
    one: it holds search terms."""
    utm = (name for name in _UTM_FIELDS if name != "utm_term")
    return frozenset((*utm, *(name for name, _ in _table().click_ids)))


def _search_terms(query: str, names: tuple[str, ...]) -> str | None:
    if not names or not query:
        return None
    params: dict[str, str] = {}
    try:
        for key, value in parse_qsl(query, max_num_fields=200):
            params.setdefault(key, value)
    except ValueError:
        return None
    for name in names:
        terms = _clean_terms(params.get(name))
        if terms:
            return terms
    return None


def _clean_terms(value: str | None) -> str | None:
    if value is None:
        return None
    return " ".join(value.split())[:_MAX_TERMS_LENGTH] or None


def _clean_source(value: str | None) -> str | None:
    return (value or "").strip().lower() or None


def _medium_class(medium: str | None, table: _Table) -> str | None:
    key = _NOT_ALNUM.sub("", (medium or "").lower())
    if not key:
        return None
    for cls, rule in table.mediums:
        if key in rule.exact or key.startswith(rule.prefixes):
            return cls
    return None


def _same_site(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


# --- the classifier --------------------------------------------------------------------------


#: Distinct (page, campaign) pairs whose classification is kept: most visits repeat a landing
#: page and campaign, and the classification (URL parsing) is the costliest part of a feature row.
CACHE_SIZE = 4096


@functools.lru_cache(maxsize=CACHE_SIZE)
def classify_referrer(page: Page, campaign: Campaign) -> Referrer:
    """Classify where a visit came from.

    Precedence, first match wins:

    1. a **paid click id** in the page URL (``gclid``, ``gbraid``, ``wbraid``, ``dclid``,
       ``msclkid``, ``ttclid``, ``li_fat_id``, ``twclid``, ...) -> ``paid``;
    2. ``utm_medium`` (from ``campaign``, else from the page URL) -> ``paid``, ``email``,
       ``social``, ``search`` (``organic``) or ``referral`` (``affiliate``, ...); unknown
       mediums fall through;
    3. a **non-paid click id** -> its class (``fbclid`` means ``social``, Mailchimp's
       ``mc_cid`` means ``email``);
    4. the referrer host: the page's own site (same host, or one a subdomain of the other,
       ignoring ``www.``) -> ``internal``; a known host -> its class and source; any other
       host -> ``referral`` with the host (without ``www.``) as source;
    5. a ``utm_source`` with no usable medium and no referrer -> ``referral``;
    6. otherwise ``direct``. A referrer with no http(s) or android-app host counts as none.

    ``source`` is ``utm_source`` (lowercased) when given, otherwise the click id's, the known
    host's or the referring host. ``search_terms`` is ``utm_term`` for paid, email and search
    visits, else the decoded query of a known search engine's referrer (often ``None``).
    ``click_id`` names the first known click-id parameter in the page URL.

    Args:
        page: The page being viewed, with its URL and ``document.referrer``.
        campaign: The UTM parameters the tag reported; missing fields are read from the URL.

    Returns:
        The referrer class, source, search terms and click id. Never raises. Cached on the
        exact inputs (:data:`CACHE_SIZE` pairs, the least recently used dropped first).
    """
    table = _table()
    search = _page_search(page)
    params = _query(search)
    from_url = campaign_from_query(search) or _NO_CAMPAIGN
    medium = (campaign.medium or "").strip() or from_url.medium
    source = _clean_source(campaign.source) or _clean_source(from_url.source)
    term = _clean_terms(campaign.term) or _clean_terms(from_url.term)
    click = next(((n, r) for n, r in table.click_ids if params.get(n)), None)
    click_id = click[0] if click else None

    referrer = _host(page.referrer)
    page_site = _host(page.url)
    internal = (
        referrer is not None and page_site is not None and _same_site(referrer[0], page_site[0])
    )
    ref_rule = _lookup_host(referrer[0], table) if referrer and not internal else None
    ref_terms = _search_terms(referrer[1], ref_rule.params) if referrer and ref_rule else None
    ref_source = None
    if referrer and not internal:
        ref_source = ref_rule.source if ref_rule else referrer[0]

    if click is not None and click[1].cls == "paid":
        return Referrer("paid", source or click[1].source, term or ref_terms, click_id)

    cls = _medium_class(medium, table)
    if cls is not None:
        fallback = click[1].source if click else ref_source
        terms = (term or ref_terms) if cls in ("paid", "email", "search") else None
        return Referrer(cls, source or fallback, terms, click_id)

    if click is not None:
        terms = term if click[1].cls == "email" else None
        return Referrer(click[1].cls, source or click[1].source, terms, click_id)

    if internal:
        return Referrer("internal", None, None, click_id)
    if referrer is not None:
        cls = ref_rule.cls if ref_rule else "referral"
        return Referrer(cls, ref_source, ref_terms, click_id)
    if source is not None:
        return Referrer("referral", source, None, click_id)
    return Referrer("direct", None, None, click_id)
