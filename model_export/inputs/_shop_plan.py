"""The planted structure of the simulated shop: customer groups (purchase rates, order values,
categories, channels, churn), offers and their conversion rates per group, logging policies.

Must not import server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from model_export.inputs.config import TransactionColumns

Format = Literal["csv", "jsonl", "parquet", "mixed"]

#: The last instant of the simulated period (the export's "now").
END = datetime(2026, 6, 1, tzinfo=UTC)
#: The shop's time zone: timestamps without an offset are wall time here.
SHOP_TIMEZONE = "Europe/Berlin"
SHOP = "https://shop.example.com"
#: Offers of the packaged demo catalogue.
OFFERS = (
    "clearance_sale",
    "coupon_15",
    "loyalty_points",
    "new_arrivals",
    "app_download",
    "buying_guide",
    "winback_20",
    "welcome_10",
)
#: Logging policies of the offer log: probability of showing each offer.
LOGGING_POLICIES: dict[str, dict[str, float]] = {
    "uniform": dict.fromkeys(OFFERS, 1 / len(OFFERS)),
    "skewed": {
        "new_arrivals": 0.3,
        "clearance_sale": 0.25,
        "coupon_15": 0.15,
        "loyalty_points": 0.06,
        "app_download": 0.06,
        "buying_guide": 0.06,
        "winback_20": 0.06,
        "welcome_10": 0.06,
    },
}
#: Column names of the transactions export (mapped by the returned config).
TX_COLUMNS = TransactionColumns(
    customer_id="Customer ID",
    order_id="Invoice",
    timestamp="InvoiceDate",
    amount="Total",
    quantity="Quantity",
    category="Category",
    channel="Channel",
)
TX_COLUMNS_ORDER = (
    "Customer ID",
    "Invoice",
    "InvoiceDate",
    "Total",
    "Quantity",
    "Category",
    "Channel",
)
MAX_AMOUNT = 50_000.0


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """How one planted group buys, browses and responds to offers."""

    share: float
    #: Mean days between purchases while active; None: never buys.
    gap_days: float | None
    #: Probability of leaving for good after each purchase.
    dropout: float
    #: Median order value and its log-normal spread.
    aov: float
    aov_sigma: float
    categories: dict[str, float]
    channels: dict[str, float]
    devices: dict[str, float]
    arrivals: dict[str, float]
    #: Mean days between browsing sessions while active.
    visit_gap_days: float
    views: tuple[int, int]
    search_rate: float
    best_offer: str


GROUPS = ("loyal", "bargain", "lapsing", "one_time", "new", "window")
GROUP_SPECS: dict[str, GroupSpec] = {
    "loyal": GroupSpec(
        share=0.15,
        gap_days=16.0,
        dropout=0.01,
        aov=140.0,
        aov_sigma=0.35,
        categories={"electronics": 0.4, "home": 0.35, "books": 0.25},
        channels={"web": 0.5, "store": 0.35, "app": 0.15},
        devices={"desktop": 0.8, "mobile": 0.2},
        arrivals={"direct": 0.7, "search": 0.3},
        visit_gap_days=30.0,
        views=(2, 5),
        search_rate=0.05,
        best_offer="loyalty_points",
    ),
    "bargain": GroupSpec(
        share=0.22,
        gap_days=21.0,
        dropout=0.03,
        aov=22.0,
        aov_sigma=0.4,
        categories={"fashion": 0.45, "beauty": 0.35, "home": 0.2},
        channels={"app": 0.6, "web": 0.35, "store": 0.05},
        devices={"mobile": 0.6, "desktop": 0.4},
        arrivals={"email": 0.75, "direct": 0.25},
        visit_gap_days=20.0,
        views=(3, 8),
        search_rate=0.1,
        best_offer="coupon_15",
    ),
    "lapsing": GroupSpec(
        share=0.13,
        gap_days=30.0,
        dropout=0.2,
        aov=60.0,
        aov_sigma=0.4,
        categories={"sports": 0.4, "fashion": 0.3, "home": 0.3},
        channels={"web": 0.6, "store": 0.3, "app": 0.1},
        devices={"desktop": 0.6, "mobile": 0.4},
        arrivals={"search": 0.6, "direct": 0.4},
        visit_gap_days=40.0,
        views=(2, 4),
        search_rate=0.1,
        best_offer="winback_20",
    ),
    "one_time": GroupSpec(
        share=0.2,
        gap_days=60.0,
        dropout=1.0,
        aov=45.0,
        aov_sigma=0.5,
        categories={"home": 0.3, "sports": 0.3, "fashion": 0.4},
        channels={"web": 0.7, "store": 0.2, "app": 0.1},
        devices={"desktop": 0.5, "mobile": 0.5},
        arrivals={"paid": 0.5, "search": 0.5},
        visit_gap_days=90.0,
        views=(1, 3),
        search_rate=0.1,
        best_offer="winback_20",
    ),
    "new": GroupSpec(
        share=0.1,
        gap_days=35.0,
        dropout=0.1,
        aov=50.0,
        aov_sigma=0.4,
        categories={"electronics": 0.3, "fashion": 0.3, "beauty": 0.2, "books": 0.2},
        channels={"web": 0.6, "app": 0.3, "store": 0.1},
        devices={"mobile": 0.5, "desktop": 0.5},
        arrivals={"paid": 0.4, "social": 0.3, "search": 0.3},
        visit_gap_days=10.0,
        views=(2, 5),
        search_rate=0.1,
        best_offer="welcome_10",
    ),
    "window": GroupSpec(
        share=0.2,
        gap_days=None,
        dropout=0.0,
        aov=40.0,
        aov_sigma=0.4,
        categories={"electronics": 0.35, "fashion": 0.35, "sports": 0.3},
        channels={},
        devices={"mobile": 0.75, "desktop": 0.15, "tablet": 0.1},
        arrivals={"social": 0.6, "search": 0.4},
        visit_gap_days=12.0,
        views=(4, 12),
        search_rate=0.3,
        best_offer="buying_guide",
    ),
}


def _reward_row(best: str, second: str) -> dict[str, float]:
    row = dict.fromkeys(OFFERS, 0.02)
    row[best] = 0.2
    row[second] = 0.08
    return row


#: Conversion probability of an impression, by planted group and offer.
REWARD: dict[str, dict[str, float]] = {
    "loyal": _reward_row("loyalty_points", "new_arrivals"),
    "bargain": _reward_row("coupon_15", "clearance_sale"),
    "lapsing": _reward_row("winback_20", "coupon_15"),
    "one_time": _reward_row("winback_20", "clearance_sale"),
    "new": _reward_row("welcome_10", "new_arrivals"),
    "window": _reward_row("buying_guide", "app_download"),
}

_UA = {
    "desktop": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "mobile": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "tablet": "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
}
