from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.pipeline import Pipeline

from model_export.fit.scores import (
    CHURN,
    PURCHASES,
    SCORE_OUTPUTS,
    VALUE,
    SyntheticCustomers,
    calibration_bins,
    churn_diagnostics,
    evaluate_churn,
    evaluate_value,
    export_predictive,
    fit_churn,
    fit_value_models,
    make_synthetic_customers,
    roc_auc,
    roc_points,
    spearman,
    time_split_note,
)

# Planted data: future purchase rates drift with an engagement level that only sessions, page
# views, cart and days since the last visit reveal, so recency alone ranks churn poorly.
CHURN_AUC_MIN = 0.75
CHURN_AUC_MARGIN = 0.08  # model AUC over the recency-only AUC
CALIBRATION_TOLERANCE = 0.08  # |mean predicted - observed| per equal-count bin of 400 rows
MAE_RATIO_MAX = 0.8  # model MAE / naive-baseline MAE, for purchases and for value
# ONNX (float32) against sklearn (float64 on the same float32-rounded rows)
CHURN_PARITY = 1e-5
REGRESSOR_RELATIVE_PARITY = 1e-5


@pytest.fixture(scope="module")
def train() -> SyntheticCustomers:
    return make_synthetic_customers(6000, seed=1)


@pytest.fixture(scope="module")
def test() -> SyntheticCustomers:
    return make_synthetic_customers(4000, seed=2)


@pytest.fixture(scope="module")
def churn(train: SyntheticCustomers) -> Pipeline:
    return fit_churn(train.x, train.churned, seed=0)


@pytest.fixture(scope="module")
def value_models(train: SyntheticCustomers) -> dict[str, Pipeline]:
    return fit_value_models(train.x, train.purchases_next, train.value_next, seed=0)


def test_churn_beats_the_recency_baseline(churn: Pipeline, test: SyntheticCustomers) -> None:
    m = evaluate_churn(churn, test.x, test.churned, test.recency)
    assert set(m) == {"churn_auc", "churn_auc_recency_baseline", "churn_brier", "churn_base_rate"}
    assert m["churn_auc"] >= CHURN_AUC_MIN
    assert m["churn_auc"] >= m["churn_auc_recency_baseline"] + CHURN_AUC_MARGIN
    assert m["churn_auc_recency_baseline"] > 0.55  # recency does carry signal
    base = m["churn_base_rate"]
    assert 0.2 < base < 0.6
    # better than always predicting the base rate
    assert m["churn_brier"] < base * (1 - base) * 0.85


def test_churn_is_calibrated(churn: Pipeline, test: SyntheticCustomers) -> None:
    diag = churn_diagnostics(churn, test.x, test.churned)
    bins = diag["churn_calibration"]
    assert len(bins) == 10
    assert sum(b[2] for b in bins) == len(test.x)
    means = [b[0] for b in bins]
    assert means == sorted(means)
    for predicted, observed, _ in bins:
        assert abs(predicted - observed) < CALIBRATION_TOLERANCE


def test_roc_points_are_downsampled_and_span_the_curve(
    churn: Pipeline, test: SyntheticCustomers
) -> None:
    roc = churn_diagnostics(churn, test.x, test.churned)["churn_roc"]
    assert 10 <= len(roc) <= 50
    assert roc[0] == [0.0, 0.0]
    assert roc[-1] == [1.0, 1.0]
    fpr, tpr = zip(*roc, strict=True)
    assert list(fpr) == sorted(fpr)
    assert list(tpr) == sorted(tpr)
    assert len(roc_points([0.1, 0.9], [0, 1])) <= 3


def test_value_models_beat_the_historical_rate_baseline(
    value_models: dict[str, Pipeline], test: SyntheticCustomers
) -> None:
    m = evaluate_value(
        value_models,
        test.x,
        test.purchases_next,
        test.value_next,
        test.purchase_rate,
        test.value_rate,
        test.horizon_days,
    )
    for key in (PURCHASES, VALUE):
        assert m[f"{key}_mae"] <= MAE_RATIO_MAX * m[f"{key}_mae_baseline"]
        assert m[f"{key}_spearman"] > m[f"{key}_spearman_baseline"] + 0.1
        assert 0.85 < m[f"{key}_total_ratio"] < 1.15  # right on aggregate, not just in rank


def test_regressors_predict_non_negative_expectations(
    value_models: dict[str, Pipeline], test: SyntheticCustomers
) -> None:
    for key in (PURCHASES, VALUE):
        assert (value_models[key].predict(test.x) > 0).all()


def test_onnx_matches_sklearn_for_every_model(
    churn: Pipeline, value_models: dict[str, Pipeline], test: SyntheticCustomers
) -> None:
    pipes = {CHURN: churn, **value_models}
    models, parity = export_predictive(pipes, test.x.shape[1], test.x, name="t")
    assert set(models) == {CHURN, PURCHASES, VALUE}
    assert parity[f"parity_{CHURN}_max_abs_diff"] < CHURN_PARITY
    x32 = test.x.astype(np.float32).astype(np.float64)
    for key in (PURCHASES, VALUE):
        scale = float(np.abs(value_models[key].predict(x32)).max())
        assert parity[f"parity_{key}_max_abs_diff"] < REGRESSOR_RELATIVE_PARITY * scale


def test_onnx_output_names(churn: Pipeline, value_models: dict[str, Pipeline]) -> None:
    n = make_synthetic_customers(5, seed=3).x
    models, _ = export_predictive({CHURN: churn, **value_models}, n.shape[1], n)
    names = {}
    for key, data in models.items():
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        names[key] = [o.name for o in sess.get_outputs()]
        assert [i.name for i in sess.get_inputs()] == ["features"]
    assert names == {
        CHURN: ["label", "probabilities"],
        PURCHASES: ["variable"],
        VALUE: ["variable"],
    }
    assert {k: v[0] for k, v in SCORE_OUTPUTS.items()} == {
        CHURN: "probabilities",
        PURCHASES: "variable",
        VALUE: "variable",
    }


def test_same_seed_same_onnx(train: SyntheticCustomers) -> None:
    a = make_synthetic_customers(800, seed=5)
    b = make_synthetic_customers(800, seed=5)
    np.testing.assert_array_equal(a.x, b.x)
    pipes_a = {
        CHURN: fit_churn(a.x, a.churned, 0),
        **fit_value_models(a.x, a.purchases_next, a.value_next, 0),
    }
    pipes_b = {
        CHURN: fit_churn(b.x, b.churned, 0),
        **fit_value_models(b.x, b.purchases_next, b.value_next, 0),
    }
    assert (
        export_predictive(pipes_a, a.x.shape[1], a.x[:10])[0]
        == export_predictive(pipes_b, b.x.shape[1], b.x[:10])[0]
    )


def test_export_refuses_unknown_keys(churn: Pipeline, test: SyntheticCustomers) -> None:
    with pytest.raises(ValueError, match="unknown predictive model"):
        export_predictive({"ltv": churn}, test.x.shape[1], test.x[:5])


def test_columns_unknown_everywhere_are_kept(train: SyntheticCustomers) -> None:
    x = train.x.copy()
    x[:, 0] = np.nan  # a feature no training row knows still occupies its input column
    pipe = fit_churn(x, train.churned, 0)
    _, parity = export_predictive({CHURN: pipe}, x.shape[1], train.x[:200])
    assert parity[f"parity_{CHURN}_max_abs_diff"] < CHURN_PARITY


def test_labels_are_validated(train: SyntheticCustomers) -> None:
    with pytest.raises(ValueError, match="0/1"):
        fit_churn(train.x, train.churned * 2, 0)
    with pytest.raises(ValueError, match="non-negative"):
        fit_value_models(train.x, -train.purchases_next, train.value_next, 0)


def test_metric_helpers() -> None:
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 100]) == pytest.approx(1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    bins = calibration_bins(np.linspace(0, 1, 95), np.ones(95))
    assert len(bins) == 10
    assert sum(b[2] for b in bins) == 95


def test_time_split_note() -> None:
    note = time_split_note(datetime(2026, 3, 1, tzinfo=UTC), 90)
    assert "2026-03-01T00:00:00+00:00" in note
    assert "next 90 days" in note
    with pytest.raises(ValueError, match="timezone-aware"):
        time_split_note(datetime(2026, 3, 1), 90)  # noqa: DTZ001
