"""Synthetic parity requests: decide requests drawn from the training rows' per-field marginal
distributions, with made-up ids and a few generic contexts, so ``parity.jsonl`` holds no
customer's request (see ``docs/training.md``, "Privacy of bundles").

Must not import server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from sdk.schema import Behavior, Consent, Context, DecideRequest, Page

__all__ = ["GENERIC_TIMEZONES", "GENERIC_USER_AGENTS", "synthetic_requests"]

#: Generic user agents of the synthetic contexts (a desktop and a mobile browser).
GENERIC_USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 tailor-parity",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36 tailor-parity",
)
#: Time zones of the synthetic contexts.
GENERIC_TIMEZONES = ("UTC", "America/Chicago", "Asia/Singapore", "Australia/Perth")

#: Behaviour fields counted in whole units (the others are amounts or days).
_COUNTS = ("session_count", "searches", "searches_without_results", "cart_items", "purchases")
_AMOUNTS = ("page_views", "cart_value", "revenue")
_DAYS = ("days_since_last_visit", "days_since_last_purchase", "days_since_first_purchase")
#: Draws stay between these quantiles, so no customer's extreme value is reproduced.
_Q_LOW, _Q_HIGH = 0.01, 0.99


def _draw(values: Sequence[float | None], n: int, rng: np.random.Generator) -> list[float | None]:
    """``n`` values from the marginal of ``values``: missing as often as in ``values``, else a
    linearly interpolated quantile at a uniform level (never a row's value by design)."""
    known = np.asarray([v for v in values if v is not None], dtype=np.float64)
    missing = 1.0 - len(known) / max(len(values), 1)
    levels = rng.uniform(_Q_LOW, _Q_HIGH, size=n)
    gaps = rng.uniform(size=n) < missing
    if not len(known):
        return [None] * n
    drawn = np.quantile(known, levels, method="linear")
    return [None if gap else float(v) for gap, v in zip(gaps, drawn, strict=True)]


def _categories(
    rows: Sequence[list[str]], n: int, min_group: int, rng: np.random.Generator
) -> list[list[str]]:
    """Category lists: a length from the lengths' marginal, categories drawn by their overall
    frequency among those at least ``min_group`` rows viewed."""
    seen = Counter(c for row in rows for c in set(row))
    pool = sorted(c for c, rows_with in seen.items() if rows_with >= min_group)
    lengths = _draw([float(len(r)) for r in rows], n, rng)
    if not pool:
        return [[] for _ in range(n)]
    counts = Counter(c for row in rows for c in row if c in seen and seen[c] >= min_group)
    weights = np.asarray([counts[c] for c in pool], dtype=np.float64)
    weights /= weights.sum()
    return [
        [str(c) for c in rng.choice(pool, size=round(length or 0), p=weights)] for length in lengths
    ]


def synthetic_requests(
    requests: Sequence[DecideRequest],
    nows: Sequence[datetime],
    n: int,
    *,
    seed: int,
    min_group: int,
) -> tuple[list[DecideRequest], list[datetime]]:
    """``n`` synthetic decide requests and the times they are made at.

    Each behaviour field is drawn independently (seeded) from its marginal over ``requests``;
    ids are ``parity-0001``...; the context is a generic one (``/`` path, one of
    :data:`GENERIC_USER_AGENTS` and :data:`GENERIC_TIMEZONES`, no referrer); the times are
    quantiles of ``nows`` rounded down to the hour.

    Args:
        requests: the training rows' requests.
        nows: the time each of ``requests`` is made at.
        n: how many requests to make.
        seed: the run's seed.
        min_group: categories viewed by fewer rows than this are never drawn.
    """
    rng = np.random.default_rng([seed, 15])
    behaviours = [r.behavior for r in requests]
    fields: dict[str, list[float | None]] = {}
    for name in (*_COUNTS, *_AMOUNTS, *_DAYS):
        drawn = _draw([getattr(b, name) for b in behaviours], n, rng)
        if name in _COUNTS:
            drawn = [None if v is None else float(round(v)) for v in drawn]
        elif name in _AMOUNTS:
            drawn = [None if v is None else round(v, 2) for v in drawn]
        fields[name] = drawn
    categories = _categories([b.categories_viewed for b in behaviours], n, min_group, rng)
    stamps = [t.timestamp() for t in nows]
    times = [
        datetime.fromtimestamp(v, UTC).replace(minute=0, second=0, microsecond=0)
        for v in np.quantile(np.asarray(stamps), rng.uniform(size=n), method="linear")
    ]
    out: list[DecideRequest] = []
    for i in range(n):
        mobile = i % 2 == 1
        behavior = Behavior(categories_viewed=categories[i], **{k: v[i] for k, v in fields.items()})
        context = Context(
            page=Page(path="/"),
            user_agent=GENERIC_USER_AGENTS[int(mobile)],
            timezone=GENERIC_TIMEZONES[i % len(GENERIC_TIMEZONES)],
        )
        out.append(
            DecideRequest(
                visitor_id=f"parity-{i + 1:04d}",
                consent=Consent(personalization=True, storage=True),
                context=context,
                behavior=behavior,
                timestamp=times[i],
            )
        )
    return out, times
