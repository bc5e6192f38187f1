"""Per-customer profiles as of a cutoff, the labels of the period after it, and the decide
requests that carry profiles through :func:`sdk.features.build_features`.

Must not import server.
"""

from __future__ import annotations

import gc
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

import polars as pl

from sdk.schema import Behavior, Consent, Context, DecideRequest, Page

__all__ = [
    "MAX_CATEGORIES",
    "PROFILE_COLUMNS",
    "SEARCH_PATTERN",
    "build_profiles",
    "future_labels",
    "iter_profile_requests",
    "profile_requests",
    "visitor_id",
    "visitor_ids",
]

#: Newest categories kept per customer (the schema's limit on ``categories_viewed``).
MAX_CATEGORIES = 200
#: A page view is a search when its URL matches this (case-insensitive).
SEARCH_PATTERN = r"(?i)(/search([/?#]|$)|[?&](q|query|search|s|keyword|term)=)"
#: Columns of :func:`build_profiles` before any ``trait_*`` columns, in order.
PROFILE_COLUMNS = (
    "customer_id",
    "visitor_id",
    "purchases",
    "revenue",
    "aov",
    "first_purchase",
    "last_purchase",
    "recency_days",
    "tenure_days",
    "interpurchase_days",
    "categories",
    "category_mix",
    "top_category",
    "channels",
    "channel_mix",
    "top_channel",
    "recent_categories",
    "sessions",
    "page_views",
    "searches",
    "last_visit",
    "days_since_last_visit",
    "last_url",
    "last_referrer",
    "last_user_agent",
    "last_timezone",
)

_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"
_ID_RE = re.compile(_ID_PATTERN)
_DAY_US = 86_400e6
_UTC = pl.Datetime("us", "UTC")
_MIX = pl.List(pl.Struct({"name": pl.String(), "share": pl.Float64()}))
# Schema limits of the wire types (sdk.schema): values beyond them would fail decoding.
_MAX_COUNT = 1_000_000.0
_MAX_MONEY = 1_000_000_000.0
_MAX_DAYS = 36_500.0


def visitor_id(customer_id: str) -> str:
    """A schema-valid visitor id for a customer id: the id itself when it is one (letters,
    digits, ``_ . : -``, at most 128), else ``"c_"`` + the first 20 hex digits of its SHA-1."""
    if _ID_RE.fullmatch(customer_id):
        return customer_id
    return "c_" + hashlib.sha1(customer_id.encode("utf-8")).hexdigest()[:20]


def visitor_ids(customer_ids: pl.Series) -> pl.Series:
    """:func:`visitor_id` of every customer id, computed in Python only for the invalid ones.

    Raises:
        ValueError: two customers map to the same visitor id (a raw id equal to another's hash).
    """
    valid = customer_ids.str.contains(_ID_PATTERN)
    invalid = customer_ids.filter(~valid).unique().to_list()
    out = customer_ids.replace({c: visitor_id(c) for c in invalid}) if invalid else customer_ids
    out = out.alias("visitor_id")
    if out.n_unique() != customer_ids.n_unique():
        raise ValueError("two customer ids map to the same visitor id")
    return out


def _aware(when: datetime, name: str) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return when.astimezone(UTC)


def _days(since: pl.Expr, cutoff: datetime) -> pl.Expr:
    return (pl.lit(cutoff, _UTC) - since).dt.total_microseconds() / _DAY_US


def _mix(lines: pl.LazyFrame, column: str) -> pl.LazyFrame:
    """Per customer: the values of ``column`` by share of rows (desc), as names and structs."""
    plural = "categories" if column == "category" else f"{column}s"
    return (
        lines.filter(pl.col(column).is_not_null())
        .group_by("customer_id", column)
        .agg(n=pl.len())
        .with_columns(share=pl.col("n") / pl.col("n").sum().over("customer_id"))
        # One global sort, then order-keeping groups: cheaper than sorting inside each group.
        .sort(["customer_id", "share", column], descending=[False, True, False])
        .group_by("customer_id", maintain_order=True)
        .agg(
            pl.col(column).alias(plural),
            pl.struct(name=pl.col(column), share=pl.col("share")).alias(f"{column}_mix"),
            pl.col(column).first().alias(f"top_{column}"),
        )
    )


def _event_profiles(
    events: pl.LazyFrame, cutoff: datetime, session_gap: timedelta
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Per customer key: sessions, views, searches, last visit and arrival; and the
    (customer_id, ts, category) rows of page views, for recent categories."""
    ev = events.filter(pl.col("ts") < cutoff).with_columns(
        customer_id=pl.coalesce("customer_id", "visitor_id")
    )
    pageview = pl.col("type") == "pageview"
    with_id = (
        ev.filter(pl.col("session_id").is_not_null())
        .group_by("customer_id")
        .agg(sessions_id=pl.col("session_id").n_unique())
    )
    gaps = (
        ev.filter(pl.col("session_id").is_null())
        .select("customer_id", "ts")
        .sort("customer_id", "ts")
        .with_columns(gap=pl.col("ts").diff().over("customer_id"))
        .group_by("customer_id")
        .agg(sessions_gap=(pl.col("gap").is_null() | (pl.col("gap") > session_gap)).sum())
    )
    url_host = pl.col("url").str.extract(r"^[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]+)", 1)
    ref_host = pl.col("referrer").str.extract(r"^[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]+)", 1)
    arrival = pageview & (
        pl.col("referrer").is_null() | url_host.is_null() | (ref_host != url_host).fill_null(True)
    )
    last_nonnull = {
        "last_user_agent": "user_agent",
        "last_timezone": "timezone",
    }
    per_key = ev.group_by("customer_id").agg(
        page_views=pageview.sum().cast(pl.Int64),
        searches=(pageview & pl.col("url").str.contains(SEARCH_PATTERN).fill_null(False))
        .sum()
        .cast(pl.Int64),
        last_visit=pl.col("ts").max(),
        last_url=pl.col("url").filter(arrival).sort_by(pl.col("ts").filter(arrival)).last(),
        last_referrer=pl.col("referrer")
        .filter(arrival)
        .sort_by(pl.col("ts").filter(arrival))
        .last(),
        **{out: pl.col(src).sort_by("ts").drop_nulls().last() for out, src in last_nonnull.items()},
    )
    profiles = (
        per_key.join(with_id, on="customer_id", how="left")
        .join(gaps, on="customer_id", how="left")
        .with_columns(
            sessions=(
                pl.col("sessions_id").fill_null(0) + pl.col("sessions_gap").fill_null(0)
            ).cast(pl.Int64)
        )
        .drop("sessions_id", "sessions_gap")
    )
    views = ev.filter(pageview & pl.col("category").is_not_null()).select(
        "customer_id", "ts", "category"
    )
    return profiles, views


def build_profiles(
    transactions: pl.DataFrame | pl.LazyFrame,
    cutoff: datetime,
    *,
    events: pl.DataFrame | pl.LazyFrame | None = None,
    traits: pl.DataFrame | None = None,
    include_visitors: bool = True,
    session_gap: timedelta = timedelta(minutes=30),
) -> pl.DataFrame:
    """Profiles of every customer as of ``cutoff``, sorted by customer id.

    An event belongs to a customer by its ``customer_id``, else by its ``visitor_id``. Sessions
    are distinct session ids; events without one are split by ``session_gap`` of inactivity. A
    search is a page view whose URL has a ``/search`` path segment or a ``q``, ``query``,
    ``search``, ``s``, ``keyword`` or ``term`` parameter. The last arrival is the newest page
    view whose referrer is empty or on another host. Category and channel shares count
    purchase rows; ``recent_categories`` lists the categories of purchase rows and page views,
    oldest first, the newest 200.

    Args:
        transactions: the clean transactions frame of
            :func:`model_export.inputs.ingest.read_transactions`.
        cutoff: timezone-aware; only rows strictly before it are used.
        events: the clean events frame, or None (then the web columns are null).
        traits: customer_id plus trait columns, joined as ``trait_<name>``.
        include_visitors: also profile event keys that never bought (window shoppers and
            anonymous visitors), with 0 purchases.
        session_gap: inactivity that ends a session without a session id.

    Returns:
        The columns of :data:`PROFILE_COLUMNS` (then ``trait_*``). Recency, tenure and days
        since the last visit are float days before the cutoff; ``interpurchase_days`` is
        ``(last - first) / (purchases - 1)`` and null with fewer than 2 purchases; without
        events the web counts are null, with events a customer without any has 0.
    """
    cutoff = _aware(cutoff, "cutoff")
    lines = transactions.lazy().filter(pl.col("ts") < cutoff)
    buyers = (
        lines.group_by("customer_id")
        .agg(
            purchases=pl.col("order_id").n_unique().cast(pl.Int64),
            revenue=pl.col("amount").sum(),
            first_purchase=pl.col("ts").min(),
            last_purchase=pl.col("ts").max(),
        )
        .join(_mix(lines, "category"), on="customer_id", how="left")
        .join(_mix(lines, "channel"), on="customer_id", how="left")
    )
    category_rows = lines.filter(pl.col("category").is_not_null()).select(
        "customer_id", "ts", "category"
    )
    if events is not None:
        web, views = _event_profiles(events.lazy(), cutoff, session_gap)
        how: Literal["full", "left"] = "full" if include_visitors else "left"
        frame = buyers.join(web, on="customer_id", how=how, coalesce=True).with_columns(
            pl.col("page_views", "searches", "sessions").fill_null(0)
        )
        category_rows = pl.concat([category_rows, views])
    else:
        frame = buyers.with_columns(
            pl.lit(None, pl.Int64()).alias("sessions"),
            pl.lit(None, pl.Int64()).alias("page_views"),
            pl.lit(None, pl.Int64()).alias("searches"),
            pl.lit(None, _UTC).alias("last_visit"),
            *(
                pl.lit(None, pl.String()).alias(c)
                for c in ("last_url", "last_referrer", "last_user_agent", "last_timezone")
            ),
        )
    recent = category_rows.group_by("customer_id").agg(
        recent_categories=pl.col("category").sort_by("ts").tail(MAX_CATEGORIES)
    )
    purchases = pl.col("purchases")
    out = (
        frame.join(recent, on="customer_id", how="left")
        .with_columns(
            purchases=purchases.fill_null(0),
            revenue=pl.col("revenue").fill_null(0.0),
            categories=pl.col("categories").fill_null([]),
            channels=pl.col("channels").fill_null([]),
            category_mix=pl.col("category_mix").fill_null([]).cast(_MIX),
            channel_mix=pl.col("channel_mix").fill_null([]).cast(_MIX),
            recent_categories=pl.col("recent_categories").fill_null([]),
        )
        .with_columns(
            aov=pl.when(purchases > 0).then(pl.col("revenue") / purchases),
            recency_days=_days(pl.col("last_purchase"), cutoff),
            tenure_days=_days(pl.col("first_purchase"), cutoff),
            interpurchase_days=pl.when(purchases >= 2).then(
                (pl.col("last_purchase") - pl.col("first_purchase")).dt.total_microseconds()
                / _DAY_US
                / (purchases - 1)
            ),
            days_since_last_visit=_days(pl.col("last_visit"), cutoff),
        )
        .sort("customer_id")
        .collect()
    )
    out = out.with_columns(visitor_ids(out.get_column("customer_id"))).select(PROFILE_COLUMNS)
    if traits is not None:
        renamed = traits.rename({c: f"trait_{c}" for c in traits.columns if c != "customer_id"})
        out = out.join(renamed, on="customer_id", how="left")
    return out


def future_labels(
    transactions: pl.DataFrame | pl.LazyFrame, cutoff: datetime, horizon_days: float
) -> pl.DataFrame:
    """What each customer who bought before ``cutoff`` did in ``[cutoff, cutoff + horizon)``.

    The window starts at the cutoff itself so that history (``ts < cutoff``, see
    :func:`build_profiles`) and future partition time: with date-only data a purchase on the
    cutoff day counts, in neither both nor none.

    Returns:
        customer_id, purchases_next (distinct orders, Int64), value_next (Float64) and churned
        (no purchase in the window), one row per customer active before the cutoff, sorted.
    """
    cutoff = _aware(cutoff, "cutoff")
    end = cutoff + timedelta(days=horizon_days)
    lf = transactions.lazy()
    active = lf.filter(pl.col("ts") < cutoff).select("customer_id").unique()
    future = (
        lf.filter((pl.col("ts") >= cutoff) & (pl.col("ts") < end))
        .group_by("customer_id")
        .agg(
            purchases_next=pl.col("order_id").n_unique().cast(pl.Int64),
            value_next=pl.col("amount").sum(),
        )
    )
    return (
        active.join(future, on="customer_id", how="left")
        .with_columns(
            purchases_next=pl.col("purchases_next").fill_null(0),
            value_next=pl.col("value_next").fill_null(0.0),
        )
        .with_columns(churned=pl.col("purchases_next") == 0)
        .sort("customer_id")
        .collect()
    )


# --- requests ------------------------------------------------------------------------------


def _request_frame(profiles: pl.DataFrame) -> pl.DataFrame:
    """The request fields of each profile, clipped and truncated to the schema's limits."""

    def clip(column: str, top: float) -> pl.Expr:
        return pl.col(column).cast(pl.Float64).fill_nan(None).clip(0.0, top)

    bought = pl.col("purchases").cast(pl.Float64) > 0
    timezone = pl.col("last_timezone")
    return profiles.select(
        "visitor_id",
        # the wire field means page views *this session*: the profile's mean session stands in
        (
            pl.col("page_views").cast(pl.Float64)
            / pl.when(pl.col("sessions") > 0).then(pl.col("sessions")).otherwise(1)
        )
        .fill_nan(None)
        .clip(0.0, _MAX_COUNT)
        .alias("page_views"),
        clip("sessions", _MAX_COUNT),
        pl.col("recent_categories").list.eval(pl.element().str.slice(0, 64)),
        clip("searches", _MAX_COUNT),
        clip("purchases", _MAX_COUNT),
        clip("revenue", _MAX_MONEY),
        clip("days_since_last_visit", _MAX_DAYS),
        pl.when(bought).then(clip("recency_days", _MAX_DAYS)),
        pl.when(bought).then(clip("tenure_days", _MAX_DAYS)),
        pl.col("last_url").str.slice(0, 4096),
        pl.col("last_referrer").str.slice(0, 4096),
        pl.col("last_user_agent").str.slice(0, 1024),
        pl.when(timezone.str.len_chars() <= 64).then(timezone),
    )


def _path(url: str | None) -> str | None:
    if url is None:
        return None
    try:
        return urlsplit(url).path[:4096] or None
    except ValueError:
        return None


def iter_profile_requests(
    profiles: pl.DataFrame, cutoff: datetime, *, chunk_size: int = 50_000
) -> Iterator[DecideRequest]:
    """Yield :func:`profile_requests` one at a time, reading the frame in chunks."""
    when = _aware(cutoff, "cutoff")
    consent = Consent(personalization=True, storage=True)
    for chunk in _request_frame(profiles).iter_slices(n_rows=chunk_size):
        for (
            vid,
            views,
            sessions,
            cats,
            searches,
            purchases,
            revenue,
            since_visit,
            recency,
            tenure,
            url,
            referrer,
            agent,
            zone,
        ) in chunk.iter_rows():
            behavior = Behavior(
                page_views=views,
                session_count=sessions,
                categories_viewed=cats,
                searches=searches,
                purchases=purchases,
                revenue=revenue,
                days_since_last_visit=since_visit,
                days_since_last_purchase=recency,
                days_since_first_purchase=tenure,
            )
            page = Page(url=url, path=_path(url), referrer=referrer)
            context = Context(page=page, user_agent=agent, timezone=zone)
            yield DecideRequest(
                visitor_id=vid, consent=consent, context=context, behavior=behavior, timestamp=when
            )


def profile_requests(profiles: pl.DataFrame, cutoff: datetime) -> list[DecideRequest]:
    """One decide request per profile, in frame order, as a visit at ``cutoff`` would send it.

    The request has the profile's ``visitor_id``, full consent, behaviour from the profile
    (counts clipped to the schema's limits; sessions is the lifetime count, page views the mean
    per session, since the wire field means "this session"; purchase
    recency and tenure only when the customer bought), the context of the last arrival (URL,
    path, referrer, user agent, time zone) when events were given, and ``timestamp=cutoff``.
    """
    # A million new Structs would set off the cyclic garbage collector again and again (about
    # 7x slower at 1M profiles); they form no cycles, so collection waits until the list is built.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return list(iter_profile_requests(profiles, cutoff))
    finally:
        if enabled:
            gc.enable()
