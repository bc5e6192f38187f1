"""The synthetic shop: deterministic, and its planted structure is really there to be learned."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import polars as pl
import pytest

from model_export.inputs.catalogue import load_catalogue
from model_export.inputs.config import load_config
from model_export.inputs.ingest import read_all
from model_export.inputs.profiles import build_profiles
from model_export.inputs.synth_shop import (
    GROUP_SPECS,
    GROUPS,
    LOGGING_POLICIES,
    OFFERS,
    REWARD,
    ShopExport,
    generate_shop,
)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> ShopExport:
    return generate_shop(
        tmp_path_factory.mktemp("shop"), customers=1200, seed=17, logging_policy="skewed"
    )


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def auc(scores: list[float], positive: list[bool]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos = [s for s, y in zip(scores, positive, strict=True) if y]
    neg = [s for s, y in zip(scores, positive, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_the_same_seed_writes_the_same_files(tmp_path: Path) -> None:
    kwargs = {"customers": 150, "fmt": "mixed", "files": 3, "messy": True, "mixed_timezones": True}
    a = generate_shop(tmp_path / "a", seed=5, **kwargs)  # type: ignore[arg-type]
    b = generate_shop(tmp_path / "b", seed=5, **kwargs)  # type: ignore[arg-type]
    c = generate_shop(tmp_path / "c", seed=6, **kwargs)  # type: ignore[arg-type]
    data = {k: v for k, v in digests(a.root).items() if k != "tailor.toml"}
    assert data == {k: v for k, v in digests(b.root).items() if k != "tailor.toml"}
    assert data["labels.csv"] != digests(c.root)["labels.csv"]
    assert a.injected == b.injected


def test_layout_and_config(shop: ShopExport, tmp_path: Path) -> None:
    assert shop.files == {
        "transactions": ["transactions.csv"],
        "events": ["events.csv"],
        "traits": ["traits.csv"],
    }
    assert load_config(shop.root / "tailor.toml") == shop.config
    parts = generate_shop(tmp_path, customers=60, seed=1, fmt="mixed", files=3)
    assert parts.files["transactions"] == [
        "transactions/part-000.csv",
        "transactions/part-001.jsonl",
        "transactions/part-002.parquet",
    ]
    assert parts.config.data.transactions == str(tmp_path / "transactions")


def test_offers_are_the_demo_catalogue_offers() -> None:
    assert {o.id for o in load_catalogue().offers} == set(OFFERS)
    for policy in LOGGING_POLICIES.values():
        assert set(policy) == set(OFFERS)
        assert sum(policy.values()) == pytest.approx(1.0)


def test_mixed_timezones_write_every_style(tmp_path: Path) -> None:
    shop = generate_shop(tmp_path, customers=100, seed=2, mixed_timezones=True)
    stamps = pl.read_csv(shop.root / "transactions.csv", infer_schema=False)["InvoiceDate"]
    styles = {
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$",  # ISO, Z
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$",  # ISO, offset
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$",  # naive, space
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$",  # naive, T
        r"^\d{2}/\d{2}/\d{4} \d\d:\d\d:\d\d$",  # naive, day-first
        r"^\d{10}$",  # epoch seconds
        r"^\d{13}$",  # epoch milliseconds
    }
    for style in styles:
        assert any(re.match(style, s) for s in stamps.to_list()), style
    assert shop.config.data.date_formats == ["%d/%m/%Y %H:%M:%S"]


def test_planted_groups_behave_as_specified(shop: ShopExport) -> None:
    labels = shop.labels
    shares = labels.group_by("group").len().with_columns(share=pl.col("len") / labels.height)
    for group, share in shares.select("group", "share").iter_rows():
        assert share == pytest.approx(GROUP_SPECS[group].share, abs=0.05)
    assert set(shares["group"].to_list()) == set(GROUPS)
    tx = shop.transactions.join(labels.select("customer_id", "group"), on="customer_id")
    per_group = tx.group_by("group").agg(
        aov=pl.col("amount").median(),
        app=(pl.col("channel") == "app").mean(),
        orders_per_customer=pl.len() / pl.col("customer_id").n_unique(),
    )
    g = {row["group"]: row for row in per_group.iter_rows(named=True)}
    assert "window" not in g  # window shoppers never buy
    assert g["loyal"]["aov"] > 3 * g["bargain"]["aov"]
    assert g["bargain"]["app"] > 0.5
    assert g["loyal"]["orders_per_customer"] > 10 * g["one_time"]["orders_per_customer"] / 2
    assert g["one_time"]["orders_per_customer"] == 1.0
    # Window shoppers browse a lot; bargain hunters arrive from e-mail campaigns.
    views = shop.events.filter(pl.col("type") == "pageview").with_columns(
        customer=pl.coalesce("customer_id", "visitor_id")
    )
    views = views.join(
        labels.select(pl.col("customer_id").alias("customer"), "group"), on="customer"
    )
    landing = views.filter(pl.col("url").str.contains("utm_medium=email"))
    email = landing.group_by("group").agg(sessions=pl.col("session_id").n_unique())
    assert email.sort("sessions")["group"][-1] == "bargain"
    per_session = views.group_by("group").agg(pl.len() / pl.col("session_id").n_unique())
    assert per_session.sort("len")["group"][-1] == "window"


def test_churn_is_planted_and_learnable_from_recency(shop: ShopExport) -> None:
    results = read_all(shop.config, now=shop.now)
    profiles = build_profiles(results["transactions"].frame, shop.cutoff)
    joined = profiles.join(shop.labels, on="customer_id").filter(pl.col("churned").is_not_null())
    assert (joined["purchases"] == joined["purchases_before"]).all()
    rate = joined.group_by("group").agg(pl.col("churned").mean()).sort("group")
    churn = dict(rate.iter_rows())
    assert churn["one_time"] == 1.0
    assert churn["lapsing"] > 0.6 > 0.4 > churn["loyal"]
    # Recency alone separates who will not buy again; within repeat buyers too.
    assert auc(joined["recency_days"].to_list(), joined["churned"].to_list()) > 0.85
    repeat = joined.filter(pl.col("purchases") >= 2)
    assert auc(repeat["recency_days"].to_list(), repeat["churned"].to_list()) > 0.75


def test_the_offer_log_lets_a_learned_policy_beat_the_logging_policy(shop: ShopExport) -> None:
    events = shop.events.with_columns(customer=pl.coalesce("customer_id", "visitor_id"))
    shown = events.filter(pl.col("type") == "impression")
    converted = events.filter(pl.col("type") == "conversion").select(
        "session_id", "offer_id", pl.lit(1.0).alias("reward")
    )
    log = (
        shown.join(converted, on=["session_id", "offer_id"], how="left")
        .with_columns(pl.col("reward").fill_null(0.0))
        .join(shop.labels.select(pl.col("customer_id").alias("customer"), "group"), on="customer")
    )
    assert log.height > 5000
    policy = LOGGING_POLICIES["skewed"]
    assert log.select(
        (pl.col("propensity") == pl.col("offer_id").replace_strict(policy)).all()
    ).item()
    shares = log.group_by("offer_id").len().with_columns(share=pl.col("len") / log.height)
    for offer, share in shares.select("offer_id", "share").iter_rows():
        assert share == pytest.approx(policy[offer], abs=0.03)
    logging_value = log["reward"].mean()
    best = {g: GROUP_SPECS[g].best_offer for g in GROUPS}
    assert all(max(REWARD[g], key=REWARD[g].__getitem__) == best[g] for g in GROUPS)
    ips = log.select(
        (
            (pl.col("offer_id") == pl.col("group").replace_strict(best)).cast(pl.Float64)
            * pl.col("reward")
            / pl.col("propensity")
        ).mean()
    ).item()
    assert logging_value == pytest.approx(0.05, abs=0.02)
    assert ips > 2.5 * logging_value
