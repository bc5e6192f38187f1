"""Geo enrichment: edge headers, MaxMind test databases, broken databases and the fallbacks.

The ``.mmdb`` files are MaxMind's MIT-licensed test databases, copied into ``tests/fixtures/geo``
so a clean clone can run this; set ``TAILOR_FIXTURES`` to read another copy (its ``geo/``).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import zoneinfo
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import pytest

from sdk.geo import (
    DEFAULT_GEO_HEADERS,
    EDGE_HEADERS,
    GeoDatabaseError,
    GeoHeaderGroup,
    GeoHeaderNames,
    GeoResolver,
    edge_header_groups,
    fallback_location,
)
from sdk.schema import Location

FIXTURES = (
    Path(os.environ["TAILOR_FIXTURES"])
    if os.environ.get("TAILOR_FIXTURES")
    else Path(__file__).resolve().parents[1] / "fixtures"
) / "geo"
CITY = FIXTURES / "GeoLite2-City-Test.mmdb"
COUNTRY = FIXTURES / "GeoLite2-Country-Test.mmdb"
BROKEN_DATA = FIXTURES / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
BROKEN_TREE = FIXTURES / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"

LONDON = Location(country="GB", region="ENG", city="London", source="mmdb")

MakeResolver = Callable[..., GeoResolver]


@pytest.fixture
def make_resolver() -> Iterator[MakeResolver]:
    """Factory of resolvers, every one closed after the test."""
    made: list[GeoResolver] = []

    def make(
        *,
        header_names: GeoHeaderNames | None = EDGE_HEADERS,
        mmdb_path: str | os.PathLike[str] | None = None,
    ) -> GeoResolver:
        resolver = GeoResolver(header_names=header_names, mmdb_path=mmdb_path)
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        resolver.close()


def test_fixtures_are_present() -> None:
    for path in (CITY, COUNTRY, BROKEN_DATA, BROKEN_TREE, FIXTURES / "LICENSE-MIT"):
        assert path.is_file(), path


# --- MaxMind lookups -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("81.2.69.142", LONDON),
        ("::ffff:81.2.69.142", LONDON),
        ("  81.2.69.142 ", LONDON),
        ("216.160.83.56", Location(country="US", region="WA", city="Milton", source="mmdb")),
        ("89.160.20.112", Location(country="SE", region="E", city="Linköping", source="mmdb")),
        ("2001:218::1", Location(country="JP", source="mmdb")),
    ],
)
def test_city_database(make_resolver: MakeResolver, ip: str, expected: Location) -> None:
    assert make_resolver(mmdb_path=CITY).resolve({}, ip) == expected


def test_country_database_has_no_region_or_city(make_resolver: MakeResolver) -> None:
    resolver = make_resolver(mmdb_path=str(COUNTRY))
    assert resolver.resolve({}, "81.2.69.142") == Location(country="GB", source="mmdb")


@pytest.mark.parametrize(
    "ip", ["127.0.0.1", "10.1.2.3", "192.168.0.10", "::1", "fe80::1", "1.2.3.4", "not-an-ip", ""]
)
def test_private_unknown_and_malformed_addresses_are_not_found(
    make_resolver: MakeResolver, ip: str
) -> None:
    resolver = make_resolver(mmdb_path=CITY)
    assert resolver.resolve({}, ip) is None
    assert resolver.resolve({}, "81.2.69.142") == LONDON  # the database itself works


def test_no_database_and_no_headers_is_none(make_resolver: MakeResolver) -> None:
    resolver = make_resolver()
    assert resolver.resolve({}, "81.2.69.142") is None
    assert resolver.resolve({"CF-IPCountry": "FR"}, None) == Location(country="FR", source="header")


def test_database_is_opened_lazily(make_resolver: MakeResolver, tmp_path: Path) -> None:
    resolver = make_resolver(mmdb_path=tmp_path / "missing.mmdb")  # no error yet
    with pytest.raises(GeoDatabaseError, match=r"missing\.mmdb"):
        resolver.resolve({}, "81.2.69.142")
    with pytest.raises(GeoDatabaseError):  # the failure is remembered, not retried silently
        resolver.resolve({}, "81.2.69.142")


def test_corrupt_search_tree_raises_typed_error(make_resolver: MakeResolver) -> None:
    resolver = make_resolver(mmdb_path=BROKEN_TREE)
    with pytest.raises(GeoDatabaseError, match="cannot open"):
        resolver.resolve({}, "81.2.69.142")


def test_corrupt_data_section_raises_typed_error(make_resolver: MakeResolver) -> None:
    resolver = make_resolver(mmdb_path=BROKEN_DATA)
    with pytest.raises(GeoDatabaseError, match="corrupt"):
        resolver.resolve({}, "81.2.69.142")


def test_headers_answer_before_a_broken_database_is_touched(make_resolver: MakeResolver) -> None:
    resolver = make_resolver(mmdb_path=BROKEN_TREE)
    assert resolver.resolve({"cf-ipcountry": "DE"}, "81.2.69.142") == Location(
        country="DE", source="header"
    )


def test_close_then_reuse_and_context_manager() -> None:
    with GeoResolver(mmdb_path=CITY) as resolver:
        assert resolver.resolve({}, "81.2.69.142") == LONDON
        resolver.close()
        assert resolver.resolve({}, "81.2.69.142") == LONDON  # reopened on demand
    resolver.close()  # closing twice is harmless
    assert resolver._reader is None


def test_concurrent_first_use_opens_once(
    make_resolver: MakeResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maxminddb

    opened: list[str] = []
    real_open = maxminddb.open_database

    def counting_open(path: str) -> maxminddb.Reader:
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr(maxminddb, "open_database", counting_open)
    resolver = make_resolver(mmdb_path=CITY)
    start = threading.Barrier(8)

    def lookup(_: int) -> Location | None:
        start.wait()
        return resolver.resolve({}, "81.2.69.142")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lookup, range(8)))
    assert results == [LONDON] * 8
    assert opened == [str(CITY)]


def test_missing_maxminddb_names_the_extra(
    make_resolver: MakeResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "maxminddb", None)
    resolver = make_resolver(mmdb_path=CITY)
    with pytest.raises(ImportError, match=r"tailor\[local\]"):
        resolver.resolve({}, "81.2.69.142")


# --- trusted headers -------------------------------------------------------------------------


def test_headers_win_over_the_database(make_resolver: MakeResolver) -> None:
    resolver = make_resolver(mmdb_path=CITY)
    headers = {"CF-IPCountry": "FR", "CF-Region-Code": "idf", "CF-IPCity": "Paris"}
    assert resolver.resolve(headers, "81.2.69.142") == Location(
        country="FR", region="IDF", city="Paris", source="header"
    )


def test_header_names_are_case_insensitive(make_resolver: MakeResolver) -> None:
    resolver = make_resolver()
    for name in ("CF-IPCountry", "cf-ipcountry", "CF-IPCOUNTRY"):
        assert resolver.resolve({name: "nl"}, None) == Location(country="NL", source="header")


def test_cloudflare_unknown_and_tor_fall_through(make_resolver: MakeResolver) -> None:
    resolver = make_resolver(mmdb_path=CITY)
    assert resolver.resolve({"CF-IPCountry": "XX"}, "81.2.69.142") == LONDON
    assert resolver.resolve({"CF-IPCountry": "T1"}, "81.2.69.142") == LONDON
    assert resolver.resolve({"CF-IPCountry": "T1"}, None) is None
    assert resolver.resolve(
        {"CF-IPCountry": "XX", "CloudFront-Viewer-Country": "ES"}, None
    ) == Location(country="ES", source="header")


def test_priority_order_and_no_mixing_between_edges(make_resolver: MakeResolver) -> None:
    resolver = make_resolver()
    headers = {
        "X-Vercel-IP-Country": "BR",
        "X-Vercel-IP-City": "S%C3%A3o%20Paulo",
        "CloudFront-Viewer-Country": "US",
        "CloudFront-Viewer-Country-Region": "WA",
        "CloudFront-Viewer-City": "Seattle",
    }
    assert resolver.resolve(headers, None) == Location(
        country="US", region="WA", city="Seattle", source="header"
    )
    # Cloudflare first; its missing city is not borrowed from another edge.
    assert resolver.resolve({**headers, "CF-IPCountry": "CA"}, None) == Location(
        country="CA", source="header"
    )


def test_vercel_city_is_url_decoded(make_resolver: MakeResolver) -> None:
    headers = {
        "x-vercel-ip-country": "BR",
        "x-vercel-ip-country-region": "SP",
        "x-vercel-ip-city": "S%C3%A3o%20Paulo",
    }
    assert make_resolver().resolve(headers, None) == Location(
        country="BR", region="SP", city="São Paulo", source="header"
    )


def test_utf8_read_as_latin1_is_repaired(make_resolver: MakeResolver) -> None:
    mojibake = "München".encode().decode("latin-1")
    headers = {"CloudFront-Viewer-Country": "DE", "CloudFront-Viewer-City": mojibake}
    assert make_resolver().resolve(headers, None) == Location(
        country="DE", city="München", source="header"
    )


@pytest.mark.parametrize("value", ["", "G", "GBR", "1A", "  ", "ZZ"])
def test_invalid_country_values_are_ignored(make_resolver: MakeResolver, value: str) -> None:
    resolver = make_resolver(mmdb_path=CITY)
    assert resolver.resolve({"CF-IPCountry": value}, "81.2.69.142") == LONDON


def test_headers_can_be_disabled_or_replaced(make_resolver: MakeResolver) -> None:
    untrusting = make_resolver(header_names=(), mmdb_path=CITY)
    assert untrusting.resolve({"CF-IPCountry": "FR"}, "81.2.69.142") == LONDON
    custom = make_resolver(header_names=(GeoHeaderGroup("X-Geo-Country", city="X-Geo-City"),))
    assert custom.resolve({"x-geo-country": "it", "X-GEO-CITY": "Roma"}, None) == Location(
        country="IT", city="Roma", source="header"
    )
    assert custom.resolve({"CF-IPCountry": "FR"}, None) is None


def test_no_header_is_trusted_by_default() -> None:
    assert DEFAULT_GEO_HEADERS == ()
    with GeoResolver() as resolver:
        assert resolver.resolve({"CF-IPCountry": "FR"}, None) is None
    assert edge_header_groups(["CF-IPCountry", "X-Geo"]) == (
        EDGE_HEADERS[0],
        GeoHeaderGroup("x-geo"),
    )


def test_edge_headers_are_lowercase_and_start_with_cloudflare() -> None:
    assert EDGE_HEADERS[0].country == "cf-ipcountry"
    for group in EDGE_HEADERS:
        for name in (group.country, group.region, group.city):
            assert name is None or name == name.lower()


# --- fallbacks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "country"),
    [
        ("Europe/London", "GB"),
        ("America/New_York", "US"),
        ("America/Argentina/Buenos_Aires", "AR"),
        ("Asia/Kolkata", "IN"),
        ("Asia/Calcutta", "IN"),
        ("Europe/Kiev", "UA"),
        ("Europe/Kyiv", "UA"),
        ("US/Pacific", "US"),
        ("Australia/Sydney", "AU"),
        ("Asia/Tokyo", "JP"),
        ("europe/paris", "FR"),
        (" Europe/Berlin ", "DE"),
    ],
)
def test_fallback_from_timezone(timezone: str, country: str) -> None:
    assert fallback_location(timezone, "ja-JP") == Location(country=country, source="timezone")


@pytest.mark.parametrize(
    ("locale", "country"),
    [
        ("en-GB", "GB"),
        ("pt_BR", "BR"),
        ("zh-Hant-TW", "TW"),
        ("sr-Latn-RS", "RS"),
        ("en_US.UTF-8", "US"),
        ("de_DE@euro", "DE"),
        ("fr-ca", "CA"),
        ("es-419", None),
        ("en", None),
        ("en-ZZ", None),
        ("C", None),
        ("", None),
    ],
)
def test_fallback_from_locale(locale: str, country: str | None) -> None:
    expected = Location(country=country, source="locale") if country else None
    assert fallback_location("Etc/UTC", locale) == expected
    assert fallback_location(None, locale) == expected


def test_fallback_with_nothing_is_none() -> None:
    assert fallback_location(None, None) is None
    assert fallback_location("UTC", None) is None
    assert fallback_location("Mars/Olympus_Mons", None) is None


def test_timezone_table() -> None:
    doc = json.loads(resources.files("sdk").joinpath("data", "timezones.json").read_bytes())
    zones: dict[str, str] = doc["zones"]
    assert doc["version"] == 1
    assert len(zones) >= 150
    assert all(len(c) == 2 and c.isascii() and c.isupper() for c in zones.values())
    assert not [z for z in zones if z.startswith("Etc/") or z in ("UTC", "GMT")]
    known = zoneinfo.available_timezones()
    # tzdata is a dependency of the local extra, so the database is always there
    assert len(known) > 300
    assert sorted(z for z in zones if z not in known) == []
