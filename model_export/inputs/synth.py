"""A seeded synthetic generator of visits with planted personas (:data:`PERSONAS`), for the demo
and for tests: each :class:`Visit` holds a real wire :class:`~sdk.schema.DecideRequest`, its
time, the planted persona and the offer that visitor accepted.

Must not import server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sdk.schema import Behavior, Campaign, Consent, Context, DecideRequest, Page, Screen

__all__ = ["PERSONAS", "Visit", "generate"]

PERSONAS = ("loyal", "bargain", "mobile", "researcher", "dormant", "newcomer")

_UA = {
    "desktop": [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    ],
    "mobile": [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
    ],
    "tablet": [
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Mobile/15E148 Safari/604.1",
    ],
}
_SCREENS = {
    "desktop": (1920.0, 1080.0, 1.0),
    "mobile": (393.0, 852.0, 3.0),
    "tablet": (820.0, 1180.0, 2.0),
}
_ZONES = [
    ("Europe/London", "en-GB"),
    ("Europe/Berlin", "de-DE"),
    ("Europe/Paris", "fr-FR"),
    ("America/New_York", "en-US"),
    ("America/Los_Angeles", "en-US"),
    ("Asia/Tokyo", "ja-JP"),
    ("Australia/Sydney", "en-AU"),
]
_SEARCH = [
    ("https://www.google.com/", None),
    ("https://www.bing.com/search?q=best+noise+cancelling+headphones", "bing"),
    ("https://duckduckgo.com/?q=laptop+review", "duckduckgo"),
]
_SOCIAL = [
    "https://l.facebook.com/",
    "https://www.instagram.com/",
    "https://t.co/abc123",
    "https://www.tiktok.com/",
]
_OFFER_TASTE = {
    "loyal": {"loyalty_points": 0.55, "new_arrivals": 0.3, "coupon_15": 0.15},
    "bargain": {"clearance_sale": 0.5, "coupon_15": 0.4, "new_arrivals": 0.1},
    "mobile": {"app_download": 0.6, "clearance_sale": 0.25, "welcome_10": 0.15},
    "researcher": {"buying_guide": 0.6, "new_arrivals": 0.25, "welcome_10": 0.15},
    "dormant": {"winback_20": 0.7, "clearance_sale": 0.2, "coupon_15": 0.1},
    "newcomer": {"welcome_10": 0.6, "new_arrivals": 0.25, "clearance_sale": 0.15},
}
_CATEGORY_TASTE = {
    "loyal": ["electronics", "home", "electronics", "books"],
    "bargain": ["fashion", "home", "beauty", "fashion"],
    "mobile": ["fashion", "beauty", "sports"],
    "researcher": ["electronics", "books", "electronics"],
    "dormant": ["home", "sports", "fashion"],
    "newcomer": ["electronics", "fashion", "home", "beauty", "sports", "books"],
}


@dataclass(frozen=True, slots=True)
class Visit:
    """One synthetic visit: the request, when it happened, the planted truth."""

    request: DecideRequest
    now: datetime
    persona: str
    offer: str


def _choice(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _visit(rng: random.Random, i: int, persona: str, base: datetime) -> Visit:
    g = rng.gauss
    u = rng.uniform
    campaign = Campaign()
    referrer: str | None = None
    query = ""
    if persona == "loyal":
        device = rng.choices(["desktop", "mobile"], [0.8, 0.2])[0]
        purchases = float(rng.randint(6, 30))
        aov = max(60.0, g(160, 40))
        recency, since_visit = u(1, 25), u(0.5, 10)
        sessions, views = float(rng.randint(15, 70)), float(rng.randint(3, 12))
        searches, fails = float(rng.randint(0, 3)), 0.0
        cart = float(rng.randint(0, 2))
        if rng.random() < 0.3:
            referrer = "https://shop.example.com/account"
    elif persona == "bargain":
        device = rng.choices(["desktop", "mobile"], [0.55, 0.45])[0]
        purchases = float(rng.randint(2, 7))
        aov = max(8.0, g(28, 8))
        recency, since_visit = u(5, 45), u(2, 20)
        sessions, views = float(rng.randint(5, 20)), float(rng.randint(4, 15))
        searches, fails = float(rng.randint(0, 4)), 0.0
        cart = float(rng.randint(2, 7))
        campaign = Campaign(
            source=rng.choice(["newsletter", "promo_mail", "coupon_blast"]),
            medium="email",
            name=rng.choice(["spring_sale", "weekly_deals", "clearance"]),
        )
        query = f"?utm_source={campaign.source}&utm_medium=email&utm_campaign={campaign.name}"
    elif persona == "mobile":
        device = rng.choices(["mobile", "tablet"], [0.9, 0.1])[0]
        purchases = float(rng.choices([0, 1], [0.85, 0.15])[0])
        aov = max(10.0, g(35, 10))
        recency, since_visit = u(20, 120), u(0.5, 7)
        sessions, views = float(rng.randint(2, 12)), float(rng.randint(6, 25))
        searches, fails = float(rng.randint(0, 2)), 0.0
        cart = float(rng.randint(0, 1))
        referrer = rng.choice(_SOCIAL)
    elif persona == "researcher":
        device = "desktop"
        purchases = 0.0
        aov = 0.0
        recency, since_visit = 0.0, u(0.2, 5)
        sessions, views = float(rng.randint(3, 15)), float(rng.randint(5, 20))
        searches = float(rng.randint(6, 25))
        fails = float(rng.randint(2, max(2, int(searches * 0.6))))
        cart = 0.0
        referrer, _ = rng.choice(_SEARCH)
    elif persona == "newcomer":
        device = rng.choices(["desktop", "mobile", "tablet"], [0.5, 0.4, 0.1])[0]
        purchases, aov = 0.0, 0.0
        recency, since_visit = 0.0, None
        sessions, views = 1.0, float(rng.randint(1, 4))
        searches, fails = float(rng.randint(0, 1)), 0.0
        cart = 0.0
        source = rng.choice(["direct", "search", "social", "paid"])
        if source == "search":
            referrer, _ = rng.choice(_SEARCH)
        elif source == "social":
            referrer = rng.choice(_SOCIAL)
        elif source == "paid":
            query = "?gclid=Cj0KCQ" + str(rng.randint(1000, 9999))
    else:  # dormant
        device = rng.choices(["desktop", "mobile"], [0.6, 0.4])[0]
        purchases = float(rng.randint(1, 2))
        aov = max(15.0, g(55, 20))
        recency, since_visit = u(190, 365), u(120, 300)
        sessions, views = float(rng.randint(2, 6)), float(rng.randint(1, 3))
        searches, fails = 0.0, 0.0
        cart = 0.0
    zone, locale = rng.choice(_ZONES)
    width, height, density = _SCREENS[device]
    categories = [rng.choice(_CATEGORY_TASTE[persona]) for _ in range(rng.randint(1, 6))]
    behavior = Behavior(
        page_views=views,
        session_count=sessions,
        categories_viewed=categories,
        searches=searches,
        searches_without_results=fails,
        cart_items=cart,
        cart_value=round(cart * max(aov, 20.0) * u(0.6, 1.2), 2) if cart else 0.0,
        purchases=purchases,
        revenue=round(purchases * aov, 2),
        days_since_last_visit=round(since_visit, 2) if since_visit is not None else None,
        days_since_last_purchase=round(recency, 2) if purchases else None,
        days_since_first_purchase=(
            round(recency + (purchases - 1) * u(10, 60), 2) if purchases else None
        ),
    )
    path = rng.choice(["/", "/c/electronics", "/c/fashion", "/p/12345", "/search"])
    request = DecideRequest(
        visitor_id=f"v{i:07d}",
        session_id=f"s{i:07d}",
        consent=Consent(personalization=True, storage=True),
        context=Context(
            page=Page(url=f"https://shop.example.com{path}{query}", path=path, referrer=referrer),
            campaign=campaign,
            user_agent=rng.choice(_UA[device]),
            locale=locale,
            timezone=zone,
            screen=Screen(width=width, height=height, density=density, touch=device != "desktop"),
        ),
        behavior=behavior,
        slots=["hero", "banner", "recommendation"],
    )
    now = base + timedelta(minutes=rng.randint(0, 60 * 24 * 28))
    return Visit(
        request=request, now=now, persona=persona, offer=_choice(rng, _OFFER_TASTE[persona])
    )


def generate(n: int, seed: int = 7) -> list[Visit]:
    """Generate ``n`` visits with planted personas, deterministically for a given seed.

    Args:
        n: number of visits (one visitor each).
        seed: random seed; the same seed gives the same visits.
    """
    rng = random.Random(seed)
    base = datetime(2026, 6, 1, tzinfo=UTC)
    mix = {
        "loyal": 0.14,
        "bargain": 0.2,
        "mobile": 0.2,
        "researcher": 0.14,
        "dormant": 0.16,
        "newcomer": 0.16,
    }
    return [_visit(rng, i, _choice(rng, mix), base) for i in range(n)]
