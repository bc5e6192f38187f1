"""Geo enrichment: the visitor's country, region and city.

:class:`GeoResolver` reads, in order, the location headers a trusted edge (CDN) adds to the
request, then a MaxMind ``.mmdb`` database (GeoIP2/GeoLite2 City or Country) for the client IP.
:func:`fallback_location` guesses the country from the browser's IANA time zone or locale when
neither knows. ``maxminddb`` is an optional dependency (the ``local`` extra), imported lazily
when a database is first used, so ``import sdk`` never pulls it in; this module must import
nothing but the standard library, msgspec and :mod:`sdk.schema`.

Headers are only as trustworthy as the edge that sets them, so none is trusted by default: pass
``header_names=`` (e.g. :data:`EDGE_HEADERS` or :func:`edge_header_groups`) only when every
request goes through an edge that overwrites them.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from types import TracebackType
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

import msgspec

from sdk.errors import GeoDatabaseError
from sdk.schema import Location

if TYPE_CHECKING:
    from maxminddb import Reader

__all__ = [
    "DEFAULT_GEO_HEADERS",
    "EDGE_HEADERS",
    "GeoDatabaseError",
    "GeoHeaderGroup",
    "GeoHeaderNames",
    "GeoResolver",
    "edge_header_groups",
    "fallback_location",
]

_MAX_TEXT = 256  # Location.region / Location.city are ShortText on the wire.
_COUNTRY = re.compile(r"^[A-Z]{2}$")
#: Country values edges send for "unknown": Cloudflare XX (unknown) and T1 (Tor), App Engine ZZ.
_UNKNOWN_COUNTRIES = frozenset({"XX", "T1", "ZZ"})
#: Region subtags that are not countries: unknown and private-use ISO 3166 codes (XK is Kosovo).
_NOT_A_COUNTRY = re.compile(r"^(?:AA|ZZ|Q[M-Z]|X[A-JL-Z])$")


@dataclass(frozen=True, slots=True)
class GeoHeaderGroup:
    """The location headers one edge sets; region and city are only read beside its country.

    Attributes:
        country: Header with the ISO 3166-1 alpha-2 country code.
        region: Header with the ISO 3166-2 subdivision code (without the country prefix).
        city: Header with the city name.
        city_url_encoded: Whether the edge percent-encodes the city name.
    """

    country: str
    region: str | None = None
    city: str | None = None
    city_url_encoded: bool = False


#: Header groups in priority order; the first group with a valid country wins.
GeoHeaderNames = tuple[GeoHeaderGroup, ...]

#: The location headers of well-known edges, to opt in to (never trusted by default).
EDGE_HEADERS: GeoHeaderNames = (
    # Cloudflare: CF-IPCountry always; region and city with the "visitor location" transform.
    GeoHeaderGroup("cf-ipcountry", "cf-region-code", "cf-ipcity"),
    # Amazon CloudFront, when the origin request policy forwards the viewer location headers.
    GeoHeaderGroup(
        "cloudfront-viewer-country", "cloudfront-viewer-country-region", "cloudfront-viewer-city"
    ),
    # Vercel: the city is percent-encoded.
    GeoHeaderGroup("x-vercel-ip-country", "x-vercel-ip-country-region", "x-vercel-ip-city", True),
    # Google App Engine.
    GeoHeaderGroup("x-appengine-country", "x-appengine-region", "x-appengine-city"),
)
#: What :class:`GeoResolver` trusts unless told otherwise: no header (any client can send one).
DEFAULT_GEO_HEADERS: GeoHeaderNames = ()


def edge_header_groups(names: Iterable[str]) -> GeoHeaderNames:
    """Header groups from country header names (case-insensitive): a name of
    :data:`EDGE_HEADERS` brings its edge's region and city headers, any other is a country
    header alone."""
    known = {group.country: group for group in EDGE_HEADERS}
    groups = []
    for name in names:
        name = name.strip().lower()
        if name:
            groups.append(known.get(name, GeoHeaderGroup(name)))
    return tuple(groups)


def _text(value: str | None, *, url_encoded: bool = False) -> str | None:
    """A header value as clean text: percent-decoded if asked, UTF-8 read back if the server
    decoded the bytes as Latin-1, trimmed and cut to the wire limit."""
    if value is None:
        return None
    if url_encoded:
        value = unquote(value)
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        value = value.encode("latin-1").decode("utf-8")
    return value.strip()[:_MAX_TEXT] or None


def _from_headers(headers: Mapping[str, str], groups: GeoHeaderNames) -> Location | None:
    lowered = {name.lower(): value for name, value in headers.items()}
    for group in groups:
        country = (lowered.get(group.country.lower()) or "").strip().upper()
        if not _COUNTRY.match(country) or country in _UNKNOWN_COUNTRIES:
            continue
        region = _text(lowered.get(group.region.lower())) if group.region else None
        city = (
            _text(lowered.get(group.city.lower()), url_encoded=group.city_url_encoded)
            if group.city
            else None
        )
        return Location(
            country=country,
            region=region.upper() if region else None,
            city=city,
            source="header",
        )
    return None


def _child(record: object, key: str) -> object:
    return record.get(key) if isinstance(record, dict) else None


def _from_record(record: object) -> Location | None:
    country = _child(_child(record, "country"), "iso_code")
    if not isinstance(country, str) or not _COUNTRY.match(country):
        return None
    subdivisions = _child(record, "subdivisions")
    region = None
    if isinstance(subdivisions, list) and subdivisions:
        code = _child(subdivisions[0], "iso_code")
        region = code[:_MAX_TEXT] if isinstance(code, str) and code else None
    city = _child(_child(_child(record, "city"), "names"), "en")
    return Location(
        country=country,
        region=region,
        city=city[:_MAX_TEXT] if isinstance(city, str) and city else None,
        source="mmdb",
    )


class GeoResolver:
    """Resolves a request's location from trusted edge headers, then a MaxMind database.

    The database is opened on first use, once, behind a lock; lookups are thread-safe.

    Args:
        header_names: Edge header groups to trust, in priority order; ``None`` or ``()``
            (the default) trusts no header.
        mmdb_path: A GeoIP2/GeoLite2 City or Country database, or ``None`` for headers only.
    """

    def __init__(
        self,
        *,
        header_names: GeoHeaderNames | None = None,
        mmdb_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._groups = DEFAULT_GEO_HEADERS if header_names is None else tuple(header_names)
        self._path = os.fspath(mmdb_path) if mmdb_path is not None else None
        self._lock = threading.Lock()
        self._reader: Reader | None = None
        self._open_error: str | None = None

    def _database(self) -> Reader:
        with self._lock:
            if self._reader is not None:
                return self._reader
            if self._open_error is not None:
                raise GeoDatabaseError(self._open_error)
            try:
                import maxminddb
            except ImportError as exc:
                raise ImportError(
                    "GeoIP lookups need the 'maxminddb' package: install tailor[local]"
                ) from exc
            try:
                self._reader = maxminddb.open_database(self._path or "")
            except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                self._open_error = f"cannot open GeoIP database {self._path!r}: {exc}"
                raise GeoDatabaseError(self._open_error) from exc
            return self._reader

    def lookup(self, client_ip: str) -> Location | None:
        """Look ``client_ip`` up in the database only.

        Returns:
            The location, or ``None`` for unknown, private, loopback and malformed addresses,
            or when no database is configured.

        Raises:
            GeoDatabaseError: The database cannot be opened or is corrupt.
        """
        if self._path is None:
            return None
        try:
            address = ipaddress.ip_address(client_ip.strip())
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        reader = self._database()
        import maxminddb

        try:
            record = reader.get(address)
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoDatabaseError(f"corrupt GeoIP database {self._path!r}: {exc}") from exc
        except ValueError:
            return None
        return _from_record(record)

    def resolve(self, headers: Mapping[str, str], client_ip: str | None) -> Location | None:
        """Where the request comes from: edge headers first, then the database.

        Args:
            headers: The request headers; names are matched case-insensitively.
            client_ip: The client address as the server determined it, if known.

        Returns:
            The location with its ``source`` (``"header"`` or ``"mmdb"``), or ``None``.

        Raises:
            GeoDatabaseError: The database cannot be opened or is corrupt.
        """
        if self._groups and headers:
            location = _from_headers(headers, self._groups)
            if location is not None:
                return location
        if client_ip:
            return self.lookup(client_ip)
        return None

    def close(self) -> None:
        """Close the database; a later lookup opens it again."""
        with self._lock:
            reader, self._reader = self._reader, None
            self._open_error = None
        if reader is not None:
            reader.close()

    def __enter__(self) -> GeoResolver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- fallbacks without an IP -----------------------------------------------------------------


class _Zones(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Literal[1]
    zones: dict[str, str]
    comment: str = ""


@functools.cache
def _zones() -> dict[str, str]:
    raw = resources.files("sdk").joinpath("data", "timezones.json").read_bytes()
    zones = msgspec.json.decode(raw, type=_Zones).zones
    table = {name.lower(): country for name, country in zones.items()}
    table.update(zones)
    return table


def _locale_country(locale: str) -> str | None:
    """The region subtag of a BCP 47 or POSIX locale: ``en-GB``, ``pt_BR``, ``zh-Hant-TW``."""
    tag = re.split(r"[.@]", locale.strip(), maxsplit=1)[0]
    subtags = re.split(r"[-_]", tag)
    for subtag in subtags[1:3]:  # script (4 letters) may sit between language and region
        if len(subtag) == 2 and subtag.isascii() and subtag.isalpha():
            region = subtag.upper()
            return None if _NOT_A_COUNTRY.match(region) else region
        if len(subtag) != 4:  # a numeric region (es-419) or a variant: no country
            return None
    return None


def fallback_location(timezone: str | None, locale: str | None) -> Location | None:
    """Guess the country when neither headers nor the database know it.

    Args:
        timezone: The browser's IANA time zone (``Intl.DateTimeFormat().resolvedOptions()``).
        locale: The browser's locale (``navigator.language``).

    Returns:
        The country from the time zone (``source="timezone"``), else from the locale's region
        (``source="locale"``), else ``None``.
    """
    if timezone:
        zones = _zones()
        name = timezone.strip()
        country = zones.get(name) or zones.get(name.lower())
        if country is not None:
            return Location(country=country, source="timezone")
    if locale:
        country = _locale_country(locale)
        if country is not None:
            return Location(country=country, source="locale")
    return None
