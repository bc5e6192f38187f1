"""RFM: rank quintiles, learned edges, and the serving scorer agreeing with training."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime

import msgspec
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from model_export.fit.rfm import rank_quintiles, rfm_def, rfm_scores
from model_export.inputs.ingest import read_all
from model_export.inputs.profiles import build_profiles, profile_requests
from model_export.inputs.synth_shop import generate_shop
from sdk.manifest import RfmDef
from sdk.rfm import DEFAULT_WEIGHTS, rfm_code, score_rfm, weighted_score


def profiles(
    purchases: list[int], revenue: list[float], recency: list[float | None]
) -> pl.DataFrame:
    n = len(purchases)
    return pl.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "purchases": purchases,
            "revenue": revenue,
            "recency_days": recency,
        },
        schema_overrides={"recency_days": pl.Float64},
    )


# Nine buyers and one customer who never bought.
EXAMPLE = profiles(
    purchases=[1, 1, 1, 1, 1, 1, 2, 2, 3, 0],
    revenue=[10, 20, 30, 40, 50, 60, 70, 80, 90, 0],
    recency=[1, 2, 3, 4, 5, 6, 7, 8, 9, None],
)


def test_hand_made_example() -> None:
    # n = 9 buyers; a tie group at ranks a..b scores ceil(5 * (a + b - 1) / 18).
    # Purchases: six 1s (ranks 1-6) -> ceil(30/18) = 2; two 2s (7-8) -> ceil(70/18) = 4;
    # one 3 (9) -> ceil(85/18) = 5. Recency and revenue have no ties: ranks 1..9 give
    # quintiles 1,1,2,2,3,4,4,5,5 (recency scores 6 - quintile).
    edges = rfm_def(EXAMPLE)
    assert edges.frequency_edges == [0.0, 1.0, 1.0, 2.0]  # no buyer below F2: min - 1
    assert edges.recency_edges == [2.0, 4.0, 5.0, 7.0]
    assert edges.monetary_edges == [20.0, 40.0, 50.0, 70.0]
    assert edges.weights == DEFAULT_WEIGHTS
    scores = rfm_scores(EXAMPLE, edges)
    assert scores["rfm_code"].to_list() == [
        "R5F2M1",
        "R5F2M1",
        "R4F2M2",
        "R4F2M2",
        "R3F2M3",
        "R2F2M4",
        "R2F4M4",
        "R1F4M5",
        "R1F5M5",
        "R1F1M1",  # never bought
    ]
    assert scores["rfm_score"][0] == pytest.approx(0.4 * 5 + 0.3 * 2 + 0.3 * 1)
    assert scores["rfm_score"][9] == 1.0


def test_without_ties_each_quintile_holds_a_fifth() -> None:
    n = 1000
    frame = profiles(
        list(range(1, n + 1)), [float(i) for i in range(n)], [float(i) for i in range(n)]
    )
    ranks = rank_quintiles(frame)
    for column in ("rfm_r", "rfm_f", "rfm_m"):
        counts = ranks.group_by(column).len().sort(column)["len"].to_list()
        assert counts == [200] * 5
    # Recency 0 is the most recent: R5.
    assert ranks.row(0, named=True)["rfm_r"] == 5


def test_all_tied_buyers_share_the_middle_score() -> None:
    scores = rank_quintiles(profiles([2] * 10, [5.0] * 10, [3.0] * 10))
    assert set(scores["rfm_f"].to_list()) == {3}
    assert set(scores["rfm_r"].to_list()) == {3}


def test_edges_reproduce_the_rank_scores_on_training_customers() -> None:
    edges = rfm_def(EXAMPLE)
    ranked = rank_quintiles(EXAMPLE)
    scored = rfm_scores(EXAMPLE, edges).filter(pl.col("customer_id") != "c9")
    assert_frame_equal(scored.select("customer_id", "rfm_r", "rfm_f", "rfm_m"), ranked)


CUTOFF = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def shop_profiles(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    shop = generate_shop(tmp_path_factory.mktemp("shop"), customers=600, seed=13)
    results = read_all(shop.config, now=shop.now)
    return build_profiles(results["transactions"].frame, CUTOFF, events=results["events"].frame)


def test_score_rfm_agrees_with_training_on_every_customer(shop_profiles: pl.DataFrame) -> None:
    """Parity: the serving scorer, fed what a decide request carries, equals training."""
    edges = rfm_def(shop_profiles)
    # The edges travel in the manifest: score with a decoded copy, as serving would.
    edges = msgspec.json.decode(msgspec.json.encode(edges), type=RfmDef)
    training = rfm_scores(shop_profiles, edges)
    requests = profile_requests(shop_profiles, CUTOFF)
    assert len(requests) == training.height > 500
    for request, row in zip(requests, training.iter_rows(), strict=True):
        b = request.behavior
        served = score_rfm(edges, b.days_since_last_purchase, b.purchases, b.revenue)
        assert tuple(served) == row[1:], row[0]
    buyers = rank_quintiles(shop_profiles)
    joined = training.join(buyers, on="customer_id", suffix="_rank")
    assert joined.height == shop_profiles.filter(pl.col("purchases") > 0).height
    for axis in "rfm":
        assert (joined[f"rfm_{axis}"] == joined[f"rfm_{axis}_rank"]).all()
    assert set(training["rfm_r"].unique().to_list()) == {1, 2, 3, 4, 5}


def test_weights_are_validated_and_used() -> None:
    edges = rfm_def(EXAMPLE, weights={"r": 1, "f": 0, "m": 0})
    assert rfm_scores(EXAMPLE, edges)["rfm_score"].to_list()[:3] == [5.0, 5.0, 4.0]
    with pytest.raises(ValueError, match="keys r, f and m"):
        rfm_def(EXAMPLE, weights={"r": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        rfm_def(EXAMPLE, weights={"r": 0, "f": 0, "m": 0})


def test_no_buyers_cannot_fit_edges() -> None:
    with pytest.raises(ValueError, match="no buyer"):
        rfm_def(profiles([0, 0], [0.0, 0.0], [None, None]))


def test_never_purchased_and_unknown_values() -> None:
    edges = rfm_def(EXAMPLE)
    assert score_rfm(edges, None, None, None) == (1, 1, 1, "R1F1M1", 1.0)
    assert score_rfm(edges, 3.0, 0.0, 50.0) == (1, 1, 1, "R1F1M1", 1.0)
    assert score_rfm(edges, 3.0, math.nan, 50.0).code == "R1F1M1"
    assert score_rfm(edges, None, 2.0, None).code == "R1F4M1"  # unknown recency: R1


def test_sdk_rfm_imports_only_the_standard_library_and_the_manifest() -> None:
    code = (
        "import sys, sdk.rfm; "
        "bad = {'numpy', 'polars', 'onnxruntime', 'sklearn', 'model_export'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


finite = st.floats(min_value=-1e6, max_value=1e9, allow_nan=False)
inputs = st.one_of(st.none(), st.just(math.nan), st.floats(min_value=0, allow_infinity=True))
weights = st.fixed_dictionaries(
    {k: st.floats(min_value=0.01, max_value=10) for k in ("r", "f", "m")}
)


@given(
    r_edges=st.lists(finite, min_size=4, max_size=4).map(sorted),
    f_edges=st.lists(finite, min_size=4, max_size=4).map(sorted),
    m_edges=st.lists(finite, min_size=4, max_size=4).map(sorted),
    w=weights,
    recency=inputs,
    purchases=inputs,
    revenue=inputs,
)
def test_score_rfm_is_always_1_to_5_with_a_matching_code(
    r_edges: list[float],
    f_edges: list[float],
    m_edges: list[float],
    w: dict[str, float],
    recency: float | None,
    purchases: float | None,
    revenue: float | None,
) -> None:
    edges = RfmDef(
        recency_edges=r_edges, frequency_edges=f_edges, monetary_edges=m_edges, weights=w
    )
    r, f, m, code, score = score_rfm(edges, recency, purchases, revenue)
    assert {r, f, m} <= {1, 2, 3, 4, 5}
    assert code == rfm_code(r, f, m) == f"R{r}F{f}M{m}"
    assert score == weighted_score(r, f, m, w)
    assert 1.0 - 1e-9 <= score <= 5.0 + 1e-9
    if purchases is not None and purchases > 0:
        assert f == 1 + sum(purchases > e for e in f_edges)
