"""Device enrichment: the visitor's device type, OS, browser and touch support.

:func:`parse_device` combines the User-Agent string (parsed by ``ua-parser``, imported lazily
on the first miss of a bounded, locked per-string cache), User-Agent Client Hints and the
screen the tag reported. Pure apart from that cache.

Must import nothing but the standard library, ``cachetools`` and :mod:`sdk.schema`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from cachetools import LRUCache

from sdk.schema import Screen, UserAgentData

__all__ = [
    "DEVICE_TYPES",
    "MAX_UA_LENGTH",
    "Device",
    "clear_device_cache",
    "device_cache_stats",
    "parse_device",
]

#: Every value :attr:`Device.type` can take.
DEVICE_TYPES = ("desktop", "mobile", "tablet", "bot")

#: Longest User-Agent prefix that is parsed and cached: a never-seen long string costs ua-parser
#: milliseconds, so only this much is read (real browsers send 100-300 characters; see
#: docs/sdk.md, "Local mode limits").
MAX_UA_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Device:
    """What enrichment knows about the visitor's device.

    Attributes:
        type: One of :data:`DEVICE_TYPES`.
        os: Short stable OS name (``"iOS"``, ``"Android"``, ``"Windows"``, ``"macOS"``,
            ``"Linux"``, ``"Chrome OS"``, ...) or ``None`` when unknown.
        browser: Short stable browser name (``"Chrome"``, ``"Safari"``, ``"Firefox"``,
            ``"Edge"``, ``"Samsung Internet"``, ...; the crawler's name for bots) or ``None``.
        touch: Whether the device has a touch screen.
    """

    type: str
    os: str | None
    browser: str | None
    touch: bool


# --- name normalisation ----------------------------------------------------------------------

_OS_NAMES = {
    "mac os x": "macOS",
    "macos": "macOS",
    "mac os": "macOS",
    "macintosh": "macOS",
    "ios": "iOS",
    "ipados": "iOS",
    "android": "Android",
    "windows": "Windows",
    "windows phone": "Windows Phone",
    "windows mobile": "Windows Phone",
    "chrome os": "Chrome OS",
    "chromeos": "Chrome OS",
    "chromium os": "Chrome OS",
    "cros": "Chrome OS",
    "linux": "Linux",
    "ubuntu": "Linux",
    "kubuntu": "Linux",
    "xubuntu": "Linux",
    "debian": "Linux",
    "fedora": "Linux",
    "red hat": "Linux",
    "centos": "Linux",
    "suse": "Linux",
    "opensuse": "Linux",
    "gentoo": "Linux",
    "arch linux": "Linux",
    "linux mint": "Linux",
    "mandriva": "Linux",
    "slackware": "Linux",
}

_BROWSER_NAMES = {
    "chrome": "Chrome",
    "chrome mobile": "Chrome",
    "chrome mobile ios": "Chrome",
    "headlesschrome": "Chrome",
    "google chrome": "Chrome",
    "chrome mobile webview": "Chrome WebView",
    "android webview": "Chrome WebView",
    "chromium": "Chromium",
    "safari": "Safari",
    "mobile safari": "Safari",
    "mobile safari ui/wkwebview": "Safari",
    "firefox": "Firefox",
    "firefox mobile": "Firefox",
    "firefox ios": "Firefox",
    "edge": "Edge",
    "edge mobile": "Edge",
    "microsoft edge": "Edge",
    "samsung internet": "Samsung Internet",
    "opera": "Opera",
    "opera mobile": "Opera",
    "opera mini": "Opera",
    "opera gx": "Opera",
    "opera touch": "Opera",
    "amazon silk": "Silk",
    "ie": "IE",
    "ie mobile": "IE",
    "yandex browser": "Yandex Browser",
    "yabrowser": "Yandex Browser",
    "yandex": "Yandex Browser",
    "brave": "Brave",
    "vivaldi": "Vivaldi",
}

#: ua-parser families of HTTP libraries and tools; ua-parser does not mark these as ``Spider``.
_TOOL_FAMILIES = frozenset(
    {"curl", "wget", "python requests", "python-urllib", "go-http-client", "okhttp", "java"}
)

_BOT_MARKERS = re.compile(
    r"crawl|spider|scraper|scrapy|slurp|[a-z]bot/|\bbot\b|facebookexternalhit|"
    r"^(?:curl|wget|python-|go-http-client|okhttp|java/|libwww-perl|apache-httpclient|axios|"
    r"node-fetch|undici|httpie|postmanruntime)",
    re.IGNORECASE,
)
_TABLET_MARKERS = re.compile(r"ipad|tablet|kindle|silk/|playbook", re.IGNORECASE)
_MOBILE_MARKERS = re.compile(r"mobi|iphone|ipod|windows phone|opera mini", re.IGNORECASE)
_GREASE_BRAND = re.compile(r"^[\W_]*not[\W_]*a[\W_]*brand[\W_]*$", re.IGNORECASE)


def _os_name(raw: str | None) -> str | None:
    if raw is None:
        return None
    raw = raw.strip()
    key = raw.lower()
    if not key or key in ("other", "unknown"):
        return None
    if key in _OS_NAMES:
        return _OS_NAMES[key]
    if key.startswith(("windows phone", "windows mobile")):
        return "Windows Phone"
    if key.startswith("windows"):
        return "Windows"
    return raw


def _browser_name(raw: str | None) -> str | None:
    if raw is None:
        return None
    raw = raw.strip()
    key = raw.lower()
    if not key or key == "other":
        return None
    return _BROWSER_NAMES.get(key, raw)


# --- the User-Agent string, parsed once per distinct string ---------------------------------

_cache: LRUCache[str, Device] = LRUCache(maxsize=4096)
_cache_lock = threading.Lock()


def _classify_ua(ua: str) -> Device:
    """Classify a non-empty User-Agent string without Client Hints or screen information."""
    try:
        import ua_parser
    except ImportError as exc:
        raise ImportError(
            "device detection needs the 'ua-parser' package: install tailor[local]"
        ) from exc

    result = ua_parser.parse(ua)
    family = result.user_agent.family if result.user_agent else None
    os_name = _os_name(result.os.family if result.os else None)
    device_family = result.device.family if result.device else ""
    device_brand = result.device.brand if result.device else None

    if (
        device_family == "Spider"
        or (family is not None and family.lower() in _TOOL_FAMILIES)
        or _BOT_MARKERS.search(ua)
    ):
        return Device("bot", os_name, family, touch=False)

    if (
        _TABLET_MARKERS.search(ua)
        or device_brand == "Generic_Android_Tablet"
        or device_family.lower().startswith("kindle")
        or (os_name == "Android" and "mobi" not in ua.lower())
    ):
        kind = "tablet"
    elif _MOBILE_MARKERS.search(ua) or os_name in ("iOS", "Android", "Windows Phone"):
        kind = "mobile"
    else:
        kind = "desktop"
    return Device(kind, os_name, _browser_name(family), touch=kind in ("mobile", "tablet"))


#: Hits and misses of :data:`_cache` (reported by benchmarks).
_stats = {"hits": 0, "misses": 0}


def device_cache_stats() -> dict[str, float]:
    """Hits and misses of the User-Agent cache since the last :func:`clear_device_cache`, and
    the hit rate (for benchmarks)."""
    hits, misses = _stats["hits"], _stats["misses"]
    return {"hits": hits, "misses": misses, "rate": round(hits / max(hits + misses, 1), 4)}


def clear_device_cache() -> None:
    """Empty the User-Agent cache and zero its counters."""
    with _cache_lock:
        _cache.clear()
        _stats["hits"] = _stats["misses"] = 0


def _cached_classify(ua: str) -> Device:
    key = ua[:MAX_UA_LENGTH]
    if not key.isascii():  # lone surrogates (possible only from Python callers) cannot be parsed
        key = key.encode("utf-8", "replace").decode("utf-8")
    with _cache_lock:
        hit = _cache.get(key)
        _stats["hits" if hit is not None else "misses"] += 1
    if hit is not None:
        return hit
    # Parse outside the lock: two threads may parse the same string once each, harmlessly.
    device = _classify_ua(key)
    with _cache_lock:
        _cache[key] = device
    return device


# --- Client Hints and the public entry point ------------------------------------------------


def _hint_browser(ua_data: UserAgentData) -> tuple[str | None, bool]:
    """The browser the hints name, and whether it is only the generic ``Chromium`` brand."""
    generic: str | None = None
    for entry in ua_data.brands:
        brand = entry.brand.strip()
        if not brand or _GREASE_BRAND.match(brand):
            continue
        if brand.lower() == "chromium":
            generic = "Chromium"
            continue
        return _browser_name(brand), False
    return generic, generic is not None


def parse_device(
    user_agent: str | None,
    ua_data: UserAgentData | None = None,
    screen: Screen | None = None,
) -> Device:
    """Classify the visitor's device.

    Rules, in order:

    * **bot**: ua-parser's device family ``Spider`` or an HTTP library or crawler marker in
      the string (curl, Wget, python-requests, ``crawler``, ``spider``, ...). Headless
      Chromium is not a bot (its browser is reported as ``Chrome``).
    * Client Hints ``mobile=True`` -> **mobile**; ``mobile=False`` rules out mobile (a tablet
      stays a tablet, a phone asking for the desktop site becomes desktop).
    * **tablet**: iPad, Kindle/Silk, Android without ``Mobile``, ua-parser's tablet families.
    * **mobile**: iPhone/iPod, Android ``Mobile``, Windows Phone, ``Mobi`` markers.
    * otherwise **desktop**; an empty or missing User-Agent is ``desktop`` with unknown OS
      and browser.
    * A touch screen on macOS is an iPad asking for the desktop site: **tablet**, OS ``iOS``.

    ``touch`` is ``screen.touch`` when the tag reported it, else ``True`` for mobile and tablet.

    Args:
        user_agent: The ``User-Agent`` string; empty or ``None`` when unknown.
        ua_data: User-Agent Client Hints; where they say something they win over the string.
        screen: The screen the tag reported; its ``touch`` flag wins over the device type.

    Returns:
        The device; never raises on any input string.

    Raises:
        ImportError: ``ua-parser`` is not installed (install ``tailor[local]``).
    """
    ua = (user_agent or "").strip()
    base = _cached_classify(ua) if ua else Device("desktop", None, None, touch=False)
    kind, os_name, browser = base.type, base.os, base.browser

    if ua_data is not None and kind != "bot":
        if ua_data.mobile is True:
            kind = "mobile"
        elif ua_data.mobile is False and kind == "mobile":
            kind = "desktop"
        os_name = _os_name(ua_data.platform) or os_name
        hinted, generic = _hint_browser(ua_data)
        if hinted is not None and not (generic and browser is not None):
            browser = hinted

    if screen is not None and screen.touch is not None:
        touch = screen.touch
        if touch and kind == "desktop" and os_name == "macOS":
            # iPadOS Safari sends the macOS desktop string; no Mac has a touch screen.
            kind, os_name = "tablet", "iOS"
    else:
        touch = kind in ("mobile", "tablet")
    return Device(kind, os_name, browser, touch)
