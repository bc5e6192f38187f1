"""The one feature function shared by training and serving.

``build_features(request, profile, now)`` turns a decide request, an optional stored profile
and the current time into a :class:`FeatureRow`: the float values named by
:data:`FEATURE_SPEC`, in order, plus the enrichment :class:`~sdk.schema.Signals` rules and
reasons use. Only deterministic encodings live here; learned transforms live in the ONNX graph.

Must not import numpy, onnxruntime, litestar or sklearn.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from sdk.device import parse_device
from sdk.geo import fallback_location
from sdk.referrer import REFERRER_CLASSES, classify_referrer
from sdk.schema import Behavior, DecideRequest, Signals

__all__ = [
    "CATEGORIES",
    "FEATURE_NAMES",
    "FEATURE_SET_VERSION",
    "FEATURE_SPEC",
    "FEATURE_SPECS",
    "FeatureDef",
    "FeatureRow",
    "build_features",
    "feature_names",
    "merge_behavior",
]

#: The newest feature set. Bumped whenever a feature is added, removed, reordered or computed
#: differently; older sets stay buildable (see :data:`FEATURE_SPECS`) so older bundles still load.
FEATURE_SET_VERSION = "2"

#: Product categories with a share feature each (views of the category / all category views).
CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "books")

#: Caps applied before encoding, so absurd-but-valid inputs cannot dominate a distance.
RECENCY_CAP_DAYS = 365.0
TENURE_CAP_DAYS = 3650.0


@dataclass(frozen=True, slots=True)
class FeatureDef:
    """One named feature: its name, group and what it means."""

    name: str
    group: str
    description: str


def _spec_v1() -> tuple[FeatureDef, ...]:
    behaviour = [
        FeatureDef("page_views_log", "behaviour", "log1p(page views this session)"),
        FeatureDef("sessions_log", "behaviour", "log1p(session count, this one included)"),
        FeatureDef("purchases_log", "rfm", "log1p(purchases): RFM frequency"),
        FeatureDef("revenue_log", "rfm", "log1p(revenue): RFM monetary"),
        FeatureDef("aov_log", "rfm", "log1p(revenue / purchases), 0 without purchases"),
        FeatureDef("recency_days", "rfm", "days since last purchase, capped at 365 (365 if never)"),
        FeatureDef("days_since_visit", "behaviour", "days since last visit, capped; NaN unknown"),
        FeatureDef("searches_log", "search", "log1p(searches)"),
        FeatureDef("search_fail_ratio", "search", "searches without results / searches"),
        FeatureDef("cart_items_log", "cart", "log1p(items in cart)"),
        FeatureDef("cart_value_log", "cart", "log1p(cart value)"),
        FeatureDef("categories_distinct", "behaviour", "distinct categories viewed"),
        FeatureDef("first_visit", "behaviour", "1 in a first session with no purchase history"),
    ]
    categories = [
        FeatureDef(f"cat_{c}", "category", f"share of category views that were {c}")
        for c in CATEGORIES
    ]
    device = [
        FeatureDef("device_mobile", "device", "1 if a phone"),
        FeatureDef("device_tablet", "device", "1 if a tablet"),
        FeatureDef("device_bot", "device", "1 if a crawler or script"),
        FeatureDef("touch", "device", "1 if a touch screen"),
    ]
    referrer = [
        FeatureDef(f"ref_{c}", "referrer", f"1 if the visit's referrer class is {c}")
        for c in REFERRER_CLASSES
    ]
    referrer += [
        FeatureDef("has_click_id", "referrer", "1 if the landing URL carries an ad click id"),
        FeatureDef("has_campaign", "referrer", "1 if the visit carries UTM campaign fields"),
    ]
    time = [
        FeatureDef("hour_sin", "time", "sin(2π local hour / 24)"),
        FeatureDef("hour_cos", "time", "cos(2π local hour / 24)"),
        FeatureDef("dow_sin", "time", "sin(2π local weekday / 7), Monday = 0"),
        FeatureDef("dow_cos", "time", "cos(2π local weekday / 7)"),
        FeatureDef("weekend", "time", "1 on a local Saturday or Sunday"),
    ]
    return tuple(behaviour + categories + device + referrer + time)


def _spec_v2() -> tuple[FeatureDef, ...]:
    """Version 2 adds customer tenure, the inter-purchase interval and how overdue the next
    purchase is (from order histories)."""
    return (
        *_spec_v1(),
        FeatureDef(
            "tenure_days",
            "rfm",
            "days since the first purchase, capped at 3650; 0 if never purchased; NaN unknown",
        ),
        FeatureDef(
            "interpurchase_days",
            "rfm",
            "mean days between purchases (first to last); 365 with fewer than 2; NaN unknown",
        ),
        FeatureDef(
            "overdue_log",
            "rfm",
            "log1p(recency_days / interpurchase_days): how overdue the next purchase is",
        ),
    )


#: Every feature set this code can build, by version: names and order of a row's values.
FEATURE_SPECS: dict[str, tuple[FeatureDef, ...]] = {"1": _spec_v1(), "2": _spec_v2()}
#: The newest feature specification.
FEATURE_SPEC: tuple[FeatureDef, ...] = FEATURE_SPECS[FEATURE_SET_VERSION]
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURE_SPEC)
_NAMES_BY_VERSION = {v: tuple(f.name for f in spec) for v, spec in FEATURE_SPECS.items()}


def feature_names(version: str = FEATURE_SET_VERSION) -> tuple[str, ...]:
    """Feature names, in row order, of feature set ``version``.

    Raises:
        KeyError: the version is unknown to this code.
    """
    return _NAMES_BY_VERSION[version]


class FeatureRow(msgspec.Struct, frozen=True):
    """A feature row: ``values`` in :data:`FEATURE_NAMES` order, and the enrichment signals."""

    values: tuple[float, ...]
    signals: Signals
    behavior: Behavior
    version: str = FEATURE_SET_VERSION

    def as_dict(self) -> dict[str, float]:
        """The row as ``{feature name: value}``."""
        return dict(zip(_NAMES_BY_VERSION[self.version], self.values, strict=True))


def merge_behavior(request: Behavior, profile: Behavior | None) -> Behavior:
    """Merge request behaviour over a stored profile: a value the request sends wins; the
    profile fills what the request leaves out; categories are concatenated (profile first)."""
    if profile is None:
        return request
    fields = {}
    for name in Behavior.__struct_fields__:
        if name == "categories_viewed":
            continue
        value = getattr(request, name)
        fields[name] = value if value is not None else getattr(profile, name)
    categories = (list(profile.categories_viewed) + list(request.categories_viewed))[-200:]
    return Behavior(categories_viewed=categories, **fields)


_zone_lock = threading.Lock()


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _local_time(now: datetime, timezone: str | None) -> datetime:
    zone = None
    if timezone:
        with _zone_lock:
            zone = _zone(timezone)
    return now.astimezone(zone if zone is not None else UTC)


#: The category shares of a visit without a known category viewed.
_NO_SHARES = (0.0,) * len(CATEGORIES)
#: :func:`_referrer_one_hot` by referrer class (the classes are a fixed, small set).
_REFERRER_ONE_HOT: dict[str, tuple[float, ...]] = {}


def _referrer_one_hot(cls: str) -> tuple[float, ...]:
    """One feature per class of :data:`~sdk.referrer.REFERRER_CLASSES`: 1.0 for ``cls``."""
    made = tuple(float(cls == c) for c in REFERRER_CLASSES)
    if cls in REFERRER_CLASSES:
        _REFERRER_ONE_HOT[cls] = made
    return made


#: :func:`_clock_features` by (local hour, weekday): 168 tuples at most.
_CLOCK: dict[tuple[int, int], tuple[float, ...]] = {}


def _clock_features(hour: int, weekday: int) -> tuple[float, ...]:
    """The time-of-week features: hour and weekday on circles (sine, cosine), and weekend."""
    hour_angle = 2 * math.pi * hour / 24
    dow_angle = 2 * math.pi * weekday / 7
    made = _CLOCK[(hour, weekday)] = (
        math.sin(hour_angle),
        math.cos(hour_angle),
        math.sin(dow_angle),
        math.cos(dow_angle),
        float(weekday >= 5),
    )
    return made


def _log1p(value: float | None) -> float:
    return math.log1p(value) if value is not None else 0.0


def build_features(
    request: DecideRequest,
    profile: Behavior | None,
    now: datetime,
    version: str = FEATURE_SET_VERSION,
) -> FeatureRow:
    """Build the feature row of one visit.

    Args:
        request: the decoded decide request; its ``timestamp`` wins over ``now`` when set.
        profile: stored behaviour of the visitor, or None (no consent, or first visit).
        now: timezone-aware current time, used when the request carries no timestamp.
        version: the feature set to build (a bundle's ``featureSetVersion``).

    Returns:
        The row, its signals and the merged behaviour it was computed from.
    """
    if version not in _NAMES_BY_VERSION:
        raise KeyError(f"unknown feature set version {version!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    when = request.timestamp if request.timestamp is not None else now
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ctx = request.context
    b = merge_behavior(request.behavior, profile)

    device = parse_device(ctx.user_agent, ctx.user_agent_data, ctx.screen)
    referrer = classify_referrer(ctx.page, ctx.campaign)
    local = _local_time(when, ctx.timezone)
    location = ctx.location or fallback_location(ctx.timezone, ctx.locale)

    purchases = b.purchases or 0.0
    revenue = b.revenue or 0.0
    if purchases <= 0:
        recency = RECENCY_CAP_DAYS
    elif b.days_since_last_purchase is None:
        recency = math.nan
    else:
        recency = min(b.days_since_last_purchase, RECENCY_CAP_DAYS)
    since_visit = (
        math.nan
        if b.days_since_last_visit is None
        else min(b.days_since_last_visit, RECENCY_CAP_DAYS)
    )
    if purchases <= 0:
        tenure = 0.0
    elif b.days_since_first_purchase is None:
        tenure = math.nan
    else:
        tenure = min(b.days_since_first_purchase, TENURE_CAP_DAYS)
    if purchases < 2:
        interpurchase = RECENCY_CAP_DAYS
    elif b.days_since_first_purchase is None or b.days_since_last_purchase is None:
        interpurchase = math.nan
    else:
        span = max(b.days_since_first_purchase - b.days_since_last_purchase, 0.0)
        interpurchase = min(span / (purchases - 1), RECENCY_CAP_DAYS)
    searches = b.searches or 0.0
    fails = min(b.searches_without_results or 0.0, searches)
    viewed = [c.lower() for c in b.categories_viewed]
    known = [c for c in viewed if c in CATEGORIES]
    shares = [known.count(c) / len(known) for c in CATEGORIES] if known else _NO_SHARES
    campaign = ctx.campaign
    has_campaign = any(
        (campaign.source, campaign.medium, campaign.name, campaign.term, campaign.content)
    ) or "utm_" in (ctx.page.url or "")
    hour, weekday = local.hour, local.weekday()
    clock = _CLOCK.get((hour, weekday)) or _clock_features(hour, weekday)

    values = [
        _log1p(b.page_views),
        _log1p(b.session_count if b.session_count is not None else 1.0),
        _log1p(purchases),
        _log1p(revenue),
        math.log1p(revenue / purchases) if purchases > 0 else 0.0,
        recency,
        since_visit,
        _log1p(searches),
        fails / searches if searches > 0 else 0.0,
        _log1p(b.cart_items),
        _log1p(b.cart_value),
        float(len(set(viewed))),
        float((b.session_count or 1.0) <= 1.0 and purchases <= 0),
        *shares,
        float(device.type == "mobile"),
        float(device.type == "tablet"),
        float(device.type == "bot"),
        float(device.touch),
        *(_REFERRER_ONE_HOT.get(referrer.cls) or _referrer_one_hot(referrer.cls)),
        float(referrer.click_id is not None),
        float(has_campaign),
        *clock,
    ]
    if version != "1":
        overdue = math.log1p(recency / max(interpurchase, 1.0))  # NaN propagates
        values += [tenure, interpurchase, overdue]
    signals = Signals(
        device_type=device.type,
        os=device.os,
        browser=device.browser,
        touch=device.touch,
        referrer_class=referrer.cls,
        referrer_source=referrer.source,
        search_terms=referrer.search_terms,
        country=location.country if location is not None else None,
        local_hour=hour,
        local_weekday=weekday,
    )
    return FeatureRow(values=tuple(values), signals=signals, behavior=b, version=version)
