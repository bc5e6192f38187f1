"""The stacked-origin adjustments of the BTYD scores and the choice among candidates
(:mod:`model_export.fit.stacked`), on planted data where the answer is known."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from model_export.fit.stacked import (
    RMSE_SLACK,
    TOTAL_TOLERANCE,
    Window,
    adjustment_metrics,
    choose,
    eval_fold,
    fit_adjustments,
    origins,
    recency_model,
    sample_customers,
)
from sdk.btyd import ADJUST_BOUND, adjust_score

FEATURES = ("recency_days", "sessions_log")
START = datetime(2026, 1, 1, tzinfo=UTC)


def _window(n: int, seed: int, lift: float, days: float = 60.0) -> Window:
    """Customers whose true purchase rate is the BTYD forecast times ``exp(lift * z)``, where
    ``z`` is the (standardized) second feature: an adjustment should learn ``lift``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.0, n)
    recency = rng.uniform(1, 200, n)
    forecast = rng.gamma(2.0, 0.5, n)
    bought = rng.poisson(forecast * np.exp(lift * z)).astype(float)
    buy = 1 - np.exp(-forecast)
    return Window(
        at=START,
        horizon_days=days,
        ids=[f"c{seed}-{i}" for i in range(n)],
        x=np.column_stack([recency, z]),
        btyd={
            "churnProbability": 1 - buy,
            "expectedPurchases": forecast,
            "expectedValue": forecast * 30.0,
        },
        purchases_next=bought,
        value_next=bought * 30.0,
        recency=recency,
        purchase_rate=forecast / days,
        value_rate=forecast * 30.0 / days,
    )


def test_origins_step_back_from_the_end_and_never_outrun_it() -> None:
    end = START + timedelta(days=300)
    found = origins(START, end, 120)
    assert found[0] == (end - timedelta(days=28), 28)  # the newest: the shortest window
    for at, days in found:
        assert at + timedelta(days=days) <= end and 28 <= days <= 120
        assert at >= START + timedelta(days=28)
    gaps = {(a - b).days for (a, _), (b, _) in itertools.pairwise(found)}
    assert gaps == {14} and len(found) == 12
    assert origins(START, START + timedelta(days=40), 120) == []


def test_the_fold_is_one_horizon_back_or_half_the_history() -> None:
    cutoff = START + timedelta(days=400)
    assert eval_fold(START, cutoff, 120) == (cutoff - timedelta(days=120), 120)
    assert eval_fold(START, cutoff, 273) == (cutoff - timedelta(days=200), 200)


def test_an_adjustment_learns_the_planted_shift_through_the_offset() -> None:
    windows = [_window(3000, seed, lift=0.5) for seed in range(3)]
    pipes = fit_adjustments(windows, {"expectedPurchases": 0.01})
    linear = pipes["expectedPurchases"][-1]
    # the second feature was standardized (it already is, up to sampling): its slope is lift
    assert linear.coef_[1] == pytest.approx(0.5, abs=0.05)
    assert abs(linear.coef_[0]) < 0.05 and abs(linear.intercept_) < 0.05
    fold = _window(3000, 9, lift=0.5)
    metrics, _ = adjustment_metrics(pipes, fold)
    assert metrics["adjusted_purchases_rmse"] < metrics["btyd_purchases_rmse"]
    assert abs(metrics["adjusted_purchases_total_ratio"] - 1) < 0.05


def test_adjustments_are_bounded_and_keep_probabilities_inside_zero_one() -> None:
    base = np.array([0.2, 0.5, 0.99])
    shifted = adjust_score("churnProbability", base, np.array([50.0, -50.0, np.nan]))
    assert np.all((shifted > 0) & (shifted < 1))
    assert shifted[2] == pytest.approx(0.99)  # NaN: no shift
    bought = adjust_score("expectedPurchases", np.array([2.0]), np.array([99.0]))
    assert bought[0] == pytest.approx(2.0 * np.exp(ADJUST_BOUND))
    with pytest.raises(ValueError, match="no adjustment"):
        adjust_score("pAlive", base, base)


def _metrics(**values: float) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def test_churn_goes_to_the_best_auc_and_the_recency_baseline_serves_when_it_ranks_best() -> None:
    metrics = _metrics(
        churn_auc=0.70, adjusted_activity_auc=0.74, btyd_activity_auc=0.72,
        recency_activity_auc=0.71,
    )  # fmt: skip
    served, notes = choose(metrics, ["churn"], ["churnProbability"])
    assert served["churnProbability"] == "adjusted"
    assert "churnProbability: glm model not served (activity_auc 0.7; adjusted 0.74)" in notes
    metrics["recency_activity_auc"] = 0.80
    served, notes = choose(metrics, ["churn"], ["churnProbability"])
    assert served["churnProbability"] == "recency"
    assert any(n.startswith("churnProbability: adjusted model not served") for n in notes)


def test_a_close_rmse_with_the_right_total_wins_over_a_better_rmse_with_the_wrong_one() -> None:
    metrics = _metrics(
        adjusted_purchases_rmse=1.00, adjusted_purchases_total_ratio=0.99,
        btyd_purchases_rmse=0.98, btyd_purchases_total_ratio=0.80,
        naive_purchases_rmse=3.0, naive_purchases_total_ratio=4.0,
    )  # fmt: skip
    served, notes = choose(metrics, [], ["expectedPurchases"])
    assert served["expectedPurchases"] == "adjusted"
    line = next(n for n in notes if n.startswith("expectedPurchases: btyd model not served"))
    assert f"within {RMSE_SLACK:.0%}" in line and f"within {TOTAL_TOLERANCE:.0%}" in line
    # beyond the slack, RMSE decides whatever the totals
    metrics["adjusted_purchases_rmse"] = 0.98 * (1 + RMSE_SLACK) + 0.01
    served, _ = choose(metrics, [], ["expectedPurchases"])
    assert served["expectedPurchases"] == "btyd"
    # a GLM with the right total but a far worse RMSE is never chosen for its total
    metrics.update(purchases_rmse=8.8, purchases_total_ratio=1.0)
    served, _ = choose(metrics, ["purchases"], ["expectedPurchases"])
    assert served["expectedPurchases"] == "btyd"


def test_no_model_is_served_where_the_naive_rate_does_best() -> None:
    metrics = _metrics(
        btyd_value_rmse=50.0, btyd_value_total_ratio=1.0,
        naive_value_rmse=40.0, naive_value_total_ratio=1.0,
    )  # fmt: skip
    served, notes = choose(metrics, [], [])
    assert served["expectedValue"] is None
    assert "expectedValue: btyd model not served (value_rmse 50; naive 40)" in notes


def test_without_an_out_of_time_check_the_trained_model_serves() -> None:
    served, notes = choose({}, ["churn"], [])
    assert served["churnProbability"] == "glm" and served["expectedPurchases"] == "btyd"
    assert notes == []


def test_the_recency_baseline_model_ranks_like_recency() -> None:
    fold = _window(2000, 4, lift=0.0)
    fold.purchases_next[:] = (fold.recency < 60).astype(float)  # recent buyers buy again
    pipe = recency_model(fold, FEATURES)
    churn = pipe.predict_proba(fold.x[:, [0]])[:, 1]
    order = np.argsort(fold.recency)
    assert np.all(np.diff(churn[order]) >= -1e-12)  # older purchase, higher churn


def test_large_histories_are_sampled_by_customer_the_same_way_every_time() -> None:
    import polars as pl

    ids = [f"c{i}" for i in range(5000)]
    tx = pl.DataFrame({"customer_id": ids * 2, "amount": [1.0] * 10000})
    events = pl.DataFrame({"customer_id": [None] * 5000, "visitor_id": ids})
    kept, seen, share = sample_customers(tx, events, limit=1000)
    assert share == pytest.approx(0.2)
    customers = set(kept["customer_id"].to_list())
    assert 850 < len(customers) < 1150 and kept.height == 2 * len(customers)
    assert seen is not None and set(seen["visitor_id"].to_list()) == customers
    again, _, _ = sample_customers(tx, events, limit=1000)
    assert set(again["customer_id"].to_list()) == customers  # stable
    same, untouched, whole = sample_customers(tx, events, limit=5000)
    assert whole == 1.0 and same is tx and untouched is events
