"""Device classification: the shared vectors, the UA cache and the optional ua-parser import."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cachetools import LRUCache

from sdk import device as device_module
from sdk.device import DEVICE_TYPES, MAX_UA_LENGTH, Device, parse_device
from sdk.schema import Screen, UserAgentData

VECTORS = Path(__file__).resolve().parents[1] / "contract" / "vectors" / "devices.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36"
)


@pytest.fixture
def small_cache(monkeypatch: pytest.MonkeyPatch) -> LRUCache[str, Device]:
    """Swap the module's UA cache for a tiny empty one, so evictions happen quickly."""
    cache: LRUCache[str, Device] = LRUCache(maxsize=16)
    monkeypatch.setattr(device_module, "_cache", cache)
    return cache


def test_vector_file_shape() -> None:
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert doc["version"] == 1
    assert len(CASES) >= 25
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    assert {c["expected"]["type"] for c in CASES} == set(DEVICE_TYPES)
    assert sum("userAgentData" in c for c in CASES) >= 5


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors(case: dict[str, Any]) -> None:
    ua_data = case.get("userAgentData")
    screen = case.get("screen")
    device = parse_device(
        case["userAgent"],
        msgspec.convert(ua_data, UserAgentData) if ua_data is not None else None,
        msgspec.convert(screen, Screen) if screen is not None else None,
    )
    expected = case["expected"]
    assert dataclasses.asdict(device) == expected


def test_headless_chrome_is_desktop_not_bot() -> None:
    ua = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/131.0.0.0 Safari/537.36"
    )
    assert parse_device(ua) == Device("desktop", "Linux", "Chrome", touch=False)


def test_http_library_without_a_ua_parser_family_is_a_bot() -> None:
    device = parse_device("python-httpx/0.27.0")
    assert device.type == "bot"
    assert device.touch is False


def test_device_is_immutable() -> None:
    device = parse_device(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        device.type = "mobile"  # type: ignore[misc]


def test_never_raises_on_odd_strings() -> None:
    for ua in [
        "\x00",
        "   ",
        "é" * 50,
        "Mozilla/5.0 (",
        ")" * 2000,
        "Mozilla/5.0 \ud800 lone surrogate",
    ]:
        assert parse_device(ua).type in DEVICE_TYPES


def test_cache_has_the_documented_bound() -> None:
    assert isinstance(device_module._cache, LRUCache)
    assert device_module._cache.maxsize == 4096


def test_each_string_is_parsed_once(
    small_cache: LRUCache[str, Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = device_module._classify_ua

    def counting(ua: str) -> Device:
        calls.append(ua)
        return real(ua)

    monkeypatch.setattr(device_module, "_classify_ua", counting)
    ua = CHROME_WINDOWS.format(v=120)
    results = {parse_device(ua) for _ in range(10)}
    assert calls == [ua]
    assert len(results) == 1


def test_cache_is_bounded(small_cache: LRUCache[str, Device]) -> None:
    for v in range(100):
        parse_device(CHROME_WINDOWS.format(v=v))
    assert len(small_cache) == small_cache.maxsize == 16
    assert CHROME_WINDOWS.format(v=99) in small_cache
    assert CHROME_WINDOWS.format(v=0) not in small_cache


def test_only_the_capped_prefix_is_parsed_and_is_the_cache_key(
    small_cache: LRUCache[str, Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MAX_UA_LENGTH == 512
    parsed: list[str] = []
    real = device_module._classify_ua
    monkeypatch.setattr(device_module, "_classify_ua", lambda ua: parsed.append(ua) or real(ua))
    ua = CHROME_WINDOWS.format(v=124) + " x" * 5000
    other_tail = CHROME_WINDOWS.format(v=124) + " y" * 5000
    assert parse_device(ua) == Device("desktop", "Windows", "Chrome", touch=False)
    assert parse_device(ua[:MAX_UA_LENGTH] + other_tail[MAX_UA_LENGTH:]).browser == "Chrome"
    assert [len(p) for p in parsed] == [MAX_UA_LENGTH]  # the second is the same cache key
    assert list(small_cache) == [ua[:MAX_UA_LENGTH]]


def test_cache_is_thread_safe(small_cache: LRUCache[str, Device]) -> None:
    agents = [CHROME_WINDOWS.format(v=v) for v in range(64)] + [
        f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
        for v in range(64)
    ]
    expected = {ua: device_module._classify_ua(ua) for ua in agents}
    start = threading.Barrier(8)

    def hammer(offset: int) -> list[bool]:
        start.wait()
        return [
            parse_device(agents[(offset + i) % len(agents)])
            == expected[agents[(offset + i) % len(agents)]]
            for i in range(2000)
        ]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked cache would corrupt
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = [ok for batch in pool.map(hammer, range(0, 128, 16)) for ok in batch]
    finally:
        sys.setswitchinterval(interval)
    assert len(outcomes) == 16_000
    assert all(outcomes)
    assert len(small_cache) <= small_cache.maxsize


def test_missing_ua_parser_names_the_extra(
    small_cache: LRUCache[str, Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ua_parser", None)
    with pytest.raises(ImportError, match=r"tailor\[local\]"):
        parse_device(CHROME_WINDOWS.format(v=1))
    # No string, nothing to parse: no import needed.
    assert parse_device("").type == "desktop"


def test_import_sdk_does_not_import_optional_parsers() -> None:
    code = (
        "import sys, sdk, sdk.device, sdk.referrer, sdk.geo\n"
        "bad = [m for m in ('ua_parser', 'ua_parser_rs', 'maxminddb') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
