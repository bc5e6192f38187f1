"""``tailor train`` on a real order history (the CDNOW sample, ``tests/fixtures/cdnow``), as a
user runs it: a 273-day horizon (39 weeks, the classic holdout) leaves too little history for
the supervised GLMs, and the CLI says why; every candidate (GLMs, BG/NBD adjusted by GLMs on
stacked origins, BG/NBD, baselines) is compared out of time and the better one serves; the
decisions' scores are compared with plain BG/NBD on the holdout the file also holds."""

from __future__ import annotations

import csv
import dataclasses
import html
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from model_export.fit.btyd import summary_of
from model_export.fit.personas import facts_hold
from model_export.inputs import ingest, profiles
from model_export.inputs.catalogue import load_catalogue
from model_export.inputs.config import load_config
from model_export.scoring import score_frame
from sdk import BundleError, Decider, load_bundle
from sdk.btyd import score_customers
from sdk.manifest import ParetoNbdDef
from tests import cdnow
from tests.conftest import ROOT

CUTOFF = datetime(1997, 10, 1, tzinfo=UTC)


def _config(root: Path, horizon_days: int) -> Path:
    with (root / "orders.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer_id", "order_id", "timestamp", "amount"])
        for i, (customer, day, value) in enumerate(cdnow.orders()):
            out.writerow([customer, f"o{i}", day.isoformat(), value])
    path = root / "tailor.toml"
    path.write_text(
        f'name = "cdnow"\nseed = 7\ncutoff = {CUTOFF.isoformat().replace("+00:00", "Z")}\n\n'
        '[data]\ntransactions = "orders.csv"\ntimezone = "UTC"\n\n'
        f"[predict]\nhorizon_days = {horizon_days}\n"
    )
    return path


def _train(root: Path, horizon_days: int) -> tuple[Path, Path, str]:
    config = _config(root, horizon_days)
    out = root / "bundle"
    cmd = [sys.executable, "-m", "model_export.cli", "train", "--config", str(config)]
    wide = {**os.environ, "COLUMNS": "250"}  # progress lines unwrapped
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=wide
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return config, out, " ".join(proc.stdout.split())  # rich wraps long lines


@pytest.fixture(scope="module")
def long_horizon(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    return _train(tmp_path_factory.mktemp("cdnow273"), 273)


def _holdout(ids: list[str], days: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Orders and revenue of each customer in the ``days`` after the calibration period."""
    end = cdnow.CALIBRATION_END + timedelta(days=days)
    orders: dict[str, int] = {}
    revenue: dict[str, float] = {}
    for customer, day, value in cdnow.orders():
        if cdnow.CALIBRATION_END < day <= end:
            orders[customer] = orders.get(customer, 0) + 1
            revenue[customer] = revenue.get(customer, 0.0) + value
    bought = np.array([orders.get(c, 0) for c in ids], dtype=np.float64)
    return bought, np.array([revenue.get(c, 0.0) for c in ids])


def _against_bgnbd(config: Path, out: Path, days: int) -> dict[str, tuple[float, float]]:
    """Every customer at the cutoff decided through the bundle, as a backend would, and scored
    by plain BG/NBD (the same bundle's parameters, no adjustment), against what they did in the
    holdout: ``(bundle, BG/NBD)`` per measure."""
    tx = ingest.read_all(load_config(config))["transactions"].frame
    buyers = profiles.build_profiles(tx, CUTOFF, include_visitors=False)
    buyers = buyers.filter(pl.col("purchases") > 0)
    requests = list(profiles.profile_requests(buyers, CUTOFF))
    decider = Decider(load_bundle(out), clock=lambda: CUTOFF)
    decided = [d.scores or {} for d in decider.decide_many(requests)]
    assert len(decided) == 2357
    names = ("churnProbability", "expectedPurchases", "expectedValue")
    mine = {n: np.array([s[n] for s in decided]) for n in names}
    # one decide at a time (the plain-float path) gives the same scores as the batch: both
    # are rounded to 6 decimals, so two values a hair apart may land one step (1e-6) apart
    for i in (0, 17, 1234):
        single = decider.decide(requests[i]).scores or {}
        for n in names:
            assert single[n] == pytest.approx(mine[n][i], rel=1e-9, abs=1.5e-6)
    m = load_bundle(out).manifest
    assert m.btyd is not None
    plain = score_customers(m.btyd, summary_of(requests))  # no etas: BG/NBD and Gamma-Gamma
    bought, spent = _holdout(buyers["customer_id"].to_list(), days)
    out_: dict[str, tuple[float, float]] = {}
    for key, churn, purchases, value in (
        ("bundle", mine["churnProbability"], mine["expectedPurchases"], mine["expectedValue"]),
        ("bgnbd", plain["churnProbability"], plain["expectedPurchases"], plain["expectedValue"]),
    ):
        got = {
            "auc": roc_auc_score(bought > 0, 1 - churn),
            "rmse": float(np.sqrt(np.mean((purchases - bought) ** 2))),
            "total": float(purchases.sum() / bought.sum()),
            "churn_error": float(abs(churn.mean() - np.mean(bought == 0))),
            "value_rmse": float(np.sqrt(np.mean((value - spent) ** 2))),
            "value_total": float(value.sum() / spent.sum()),
        }
        for k, v in got.items():
            out_.setdefault(k, (0.0, 0.0))
            out_[k] = (v, out_[k][1]) if key == "bundle" else (out_[k][0], v)
    return out_


def test_a_horizon_longer_than_half_the_history_is_checked_on_half_and_said(long_horizon) -> None:  # type: ignore[no-untyped-def]
    """At 273 days no supervised GLM window fits (two horizons of history), so the CLI says
    so; every candidate is still compared out of time on a fold of half the history, and the
    BG/NBD adjusted by stacked-origin GLMs wins all three scores."""
    _, out, printed = long_horizon
    assert "supervised churn/value models skipped: needs history before 1996-04-03" in printed
    assert "out-of-time check of every candidate from 1997-05-18 (136 days)" in printed
    assert "buy-till-you-die models serve: pAlive (horizon 273 days)" in printed
    assert (
        "adjusted by supervised models (stacked origins): churnProbability, "
        "expectedPurchases, expectedValue" in printed
    )
    assert "expectedPurchases: btyd model not served" in printed
    assert "repeat buying: BG/NBD serves, it fits the history better than Pareto/NBD" in printed
    m = load_bundle(out).manifest
    assert m.btyd is not None and m.btyd.pareto_nbd is None
    assert {"churn_adjust", "purchases_adjust", "value_adjust"} <= set(m.models)
    assert not {"churn", "purchases", "value"} & set(m.models)
    assert m.btyd is not None and m.btyd.horizon_days == 273 and m.btyd.gamma_gamma is not None
    assert m.btyd.serves == []
    metrics = m.training.metrics
    assert metrics["adjust_fold_window_days"] == 136 and metrics["adjust_train_origins"] >= 8
    # on the fold: the adjusted forecast ranks better and is closer in total than BG/NBD's
    assert metrics["adjusted_activity_auc"] > metrics["btyd_activity_auc"]
    assert metrics["adjusted_purchases_rmse"] < metrics["btyd_purchases_rmse"]
    assert metrics["btyd_purchases_total_ratio"] < metrics["adjusted_purchases_total_ratio"] < 1
    assert m.training.data["modelNotes"][0].startswith("supervised churn/value models skipped")


@pytest.mark.parametrize("days", [273, 120])
def test_the_bundle_beats_bgnbd_on_the_classic_holdout(days: int, long_horizon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The issue's yardstick: 39 calibration weeks, the next 273 (and 120) days, every
    customer decided through the bundle against plain BG/NBD on the same customers (measured:
    AUC 0.766 against 0.751 at 273 days and 0.788 against 0.773 at 120; purchases total 0.99
    and 1.01 against 0.83 and 0.84; value RMSE lower. The RMSE of purchases is 0.4 % and 1.1 %
    above BG/NBD's: the one part of the goal not met, see docs/training.md)."""
    config, out = long_horizon[:2] if days == 273 else _train(tmp_path, days)[:2]
    got = _against_bgnbd(config, out, days)
    mine, theirs = got["auc"]
    assert mine > theirs + 0.01
    assert abs(got["total"][0] - 1) <= 0.05 < abs(got["total"][1] - 1)
    assert got["rmse"][0] <= 1.02 * got["rmse"][1]
    assert got["value_rmse"][0] < got["value_rmse"][1]
    assert abs(got["value_total"][0] - 1) < abs(got["value_total"][1] - 1)
    assert got["churn_error"][0] < got["churn_error"][1] + 0.01


def test_at_120_days_every_candidate_is_compared_and_the_losers_are_said(tmp_path: Path) -> None:
    _, out, printed = _train(tmp_path, 120)
    m = load_bundle(out).manifest
    metrics = m.training.metrics
    assert m.btyd is not None
    # the supervised GLMs trained (two horizons of history) and were compared on the same fold
    for key in ("churn_auc", "purchases_rmse", "value_rmse"):
        assert np.isfinite(metrics[key])
    for key in ("btyd_activity_auc", "adjusted_activity_auc", "recency_activity_auc",
                "naive_purchases_rmse", "adjusted_churn_calibration_slope"):  # fmt: skip
        assert np.isfinite(metrics[key]), key
    assert metrics["adjust_fold_window_days"] == 120
    # the GLMs lose out of time: not served, each said with its number
    assert metrics["churn_auc"] < metrics["adjusted_activity_auc"]
    assert not {"churn", "purchases", "value"} & set(m.models)
    for score in ("churnProbability", "expectedPurchases", "expectedValue"):
        assert f"{score}: glm model not served" in printed
        assert f"{score}: btyd model not served" in printed
    assert set(m.btyd.adjusted) == {"churnProbability", "expectedPurchases", "expectedValue"}
    # the model card shows which model serves each score and the comparison it rests on
    card = (out / "report.html").read_text()
    section = card[card.index('id="value-models"') : card.index('id="rfm"')]
    assert "activity AUC (churn)" in section and "purchases RMSE" in section
    assert "BG/NBD adjusted by a supervised model (purchases_adjust, ONNX)" in section
    assert "calibration of the adjusted BG/NBD churn probability" in section
    for key in ("churn_auc", "adjusted_activity_auc", "btyd_activity_auc",
                "adjusted_purchases_total_ratio", "naive_value_rmse"):  # fmt: skip
        assert f"{metrics[key]:.4g}" in section, key
    for note in m.training.data.get("modelNotes", []):
        assert html.escape(note, quote=True) in section


def _score(args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "model_export.cli", "score", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_tailor_score_writes_what_decide_answers_for_every_customer(long_horizon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config, out, _ = long_horizon
    scores = tmp_path / "scores.csv"
    proc = _score(["--bundle", str(out), "--config", str(config), "--out", str(scores)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = " ".join(proc.stdout.split())
    assert "scored 2357 customers as of 1997-10-01" in printed and "horizon 273 days" in printed
    assert "churn_probability: adjusted" in printed and "p_alive: btyd" in printed
    table = pl.read_csv(scores, schema_overrides={"customer_id": pl.String})
    assert table.columns == [
        "customer_id", "segment", "persona", "lifecycle", "rfm_code", "p_alive",
        "churn_probability", "expected_purchases", "expected_value", "top_offer",
    ]  # fmt: skip
    assert table.height == 2357 and table["customer_id"].n_unique() == 2357
    # the same customers, one Decider.decide each, as a backend would ask
    tx = ingest.read_all(load_config(config))["transactions"].frame
    buyers = profiles.build_profiles(tx, CUTOFF, include_visitors=False)
    buyers = buyers.filter(pl.col("purchases") > 0)
    requests = list(profiles.profile_requests(buyers, CUTOFF))
    decider = Decider(load_bundle(out), clock=lambda: CUTOFF)
    rows = {r["customer_id"]: r for r in table.iter_rows(named=True)}
    ids = buyers["customer_id"].to_list()
    for i in range(0, len(ids), 37):
        d = decider.decide(requests[i])
        row = rows[ids[i]]
        assert d.segment is not None and d.persona is not None and d.rfm is not None
        assert (row["segment"], row["persona"], row["lifecycle"], row["rfm_code"]) == (
            d.segment.id, d.persona.id, d.lifecycle.stage, d.rfm.code,
        )  # fmt: skip
        assert row["top_offer"] == (d.offers[0].id if d.offers else None)
        got = d.scores or {}
        for column, score in (
            ("p_alive", "pAlive"),
            ("churn_probability", "churnProbability"),
            ("expected_purchases", "expectedPurchases"),
            ("expected_value", "expectedValue"),
        ):
            assert row[column] == pytest.approx(got[score], rel=1e-6, abs=2e-6), column


def test_tailor_score_forecasts_another_horizon_and_refuses_bad_arguments(
    long_horizon, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    config, out, _ = long_horizon
    base = ["--bundle", str(out), "--config", str(config)]
    short = tmp_path / "s120.parquet"
    proc = _score([*base, "--out", str(short), "--horizon-days", "120"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "horizon 120 days" in " ".join(proc.stdout.split())
    table = pl.read_parquet(short)
    m = load_bundle(out).manifest
    assert m.btyd is not None
    tx = ingest.read_all(load_config(config))["transactions"].frame
    buyers = profiles.build_profiles(tx, CUTOFF, include_visitors=False)
    requests = list(profiles.profile_requests(buyers.filter(pl.col("purchases") > 0), CUTOFF))
    # the adjustments hold at any horizon: each customer's adjusted / plain ratio is the same
    # at 120 days as at the bundle's 273
    plain120 = score_customers(m.btyd, summary_of(requests), horizon_days=120)["expectedPurchases"]
    plain273 = score_customers(m.btyd, summary_of(requests))["expectedPurchases"]
    decider = Decider(load_bundle(out), clock=lambda: CUTOFF)
    at273 = np.array([(d.scores or {})["expectedPurchases"] for d in decider.decide_many(requests)])
    at120 = table["expected_purchases"].to_numpy()
    sizable = plain120 > 1e-2  # decisions round scores to 6 decimals
    assert sizable.mean() > 0.9
    np.testing.assert_allclose((at120 / plain120)[sizable], (at273 / plain273)[sizable], rtol=2e-4)
    assert np.all(at120 <= at273 + 1e-6) and not np.allclose(at120, plain120, rtol=1e-3)
    assert _score([*base, "--out", str(tmp_path / "s.txt")]).returncode == 2
    assert _score([*base, "--out", str(short), "--horizon-days", "-3"]).returncode == 2
    missing = _score(
        ["--bundle", str(tmp_path / "nope"), "--config", str(config), "--out", str(short)]
    )
    assert missing.returncode == 1 and "cannot score" in missing.stdout


def test_a_bundle_without_btyd_scores_only_its_own_horizon(bundle_dir: Path, long_horizon) -> None:  # type: ignore[no-untyped-def]
    """The demo bundle (segments and offers, no score model) still gives every customer a
    segment, persona, lifecycle and top offer, says that no model gave the score columns, and
    refuses a horizon rather than invent a forecast."""
    config, _, _ = long_horizon
    tx = ingest.read_all(load_config(config))["transactions"].frame
    buyers = profiles.build_profiles(tx, CUTOFF, include_visitors=False).head(200)
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest.btyd is None
    run = score_frame(bundle, buyers, CUTOFF)
    assert run.table.height == 200 and set(run.sources.values()) == {"none"}
    assert run.table["persona"].null_count() == 0 and run.table["top_offer"].null_count() == 0
    for column in run.sources:
        assert run.table[column].null_count() == 200
    with pytest.raises(ValueError, match="no buy-till-you-die models"):
        score_frame(bundle, buyers, CUTOFF, horizon_days=30)


def test_no_persona_contradicts_its_segments_measured_profile(long_horizon) -> None:  # type: ignore[no-untyped-def]
    """Every CDNOW customer bought, and an order export has no referrer, device, search or
    cart signal: no persona may claim those. A template's name is used only where its facts
    hold; a generated one states the segment's own numbers, and its words match the lifts."""
    _, out, _ = long_horizon
    m = load_bundle(out).manifest
    templates = {t.id: t for t in load_catalogue().personas}
    personas = {p.id: p for p in m.personas}
    # a feature is measured when the segments' centroids differ on it
    features = set().union(*(s.centroid for s in m.segments))
    measured = {f for f in features if len({s.centroid.get(f) for s in m.segments}) > 1}
    assert {"purchases_log", "aov_log", "recency_days"} <= measured
    assert not {"ref_email", "device_mobile", "searches_log", "cart_items_log"} & measured
    names = [personas[s.persona].name for s in m.segments]
    for unsupported in ("Window shoppers", "Bargain hunters", "Mobile browsers", "Researchers"):
        assert unsupported not in names
    assert "First-time visitors" not in names
    generated = 0
    for segment in m.segments:
        persona = personas[segment.persona]
        if segment.persona in templates:
            assert facts_hold(templates[segment.persona], segment.centroid, segment.lift, measured)
            continue
        generated += 1
        purchases = math.expm1(segment.centroid["purchases_log"])
        aov = math.expm1(segment.centroid["aov_log"])
        assert f"{purchases:.1f} purchases per customer" in persona.description
        assert f"an average order of {aov:.2f}" in persona.description
        assert ("One-time buyers" in persona.name) == (purchases < 1.5)
        lift = segment.lift
        assert ("higher order value" in persona.name) == (lift["aov_log"] >= 0.25)
        assert ("lower order value" in persona.name) == (lift["aov_log"] <= -0.25)
        assert ("lapsed" in persona.name) == (lift["recency_days"] >= 0.25)
    assert generated >= 1  # the data has segments no template describes


def test_a_bundle_whose_btyd_serving_cannot_evaluate_is_refused_at_load(long_horizon) -> None:  # type: ignore[no-untyped-def]
    """Parameters outside what serving evaluates (a + b <= 1) fail when the decider is built,
    with a typed error, not at a visitor's decide."""
    _, out, _ = long_horizon
    bundle = load_bundle(out)
    assert bundle.manifest.btyd is not None
    bad = msgspec.structs.replace(
        bundle.manifest.btyd,
        bgnbd=msgspec.structs.replace(bundle.manifest.btyd.bgnbd, a=0.4, b=0.5),
    )
    broken = dataclasses.replace(
        bundle, manifest=msgspec.structs.replace(bundle.manifest, btyd=bad)
    )
    with pytest.raises(BundleError, match="a \\+ b > 1"):
        Decider(broken)


def test_tailor_score_in_two_worker_processes_writes_the_same_table(long_horizon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The frame is split between the caller and a worker process (Arrow IPC both ways):
    the table is the one a single process writes, row for row."""
    config, out, _ = long_horizon
    base = ["--bundle", str(out), "--config", str(config)]
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    for path, workers in ((one, "1"), (two, "2")):
        proc = _score([*base, "--out", str(path), "--workers", workers])
        assert proc.returncode == 0, proc.stdout + proc.stderr
    table = pl.read_parquet(two)
    assert table.height == 2357 and table.equals(pl.read_parquet(one))
    assert _score([*base, "--out", str(one), "--workers", "0"]).returncode == 2


def test_a_score_worker_refuses_a_bundle_that_changed_under_it(long_horizon) -> None:  # type: ignore[no-untyped-def]
    _, out, _ = long_horizon
    cmd = [sys.executable, "-m", "model_export.score_worker", str(out), "other-version",
           CUTOFF.isoformat(), ""]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, input="", timeout=120)
    assert proc.returncode == 1
    version = load_bundle(out).manifest.model_version
    assert f"is now {version}, not other-version" in proc.stderr


def test_a_bundle_whose_repeat_model_is_pareto_nbd_decides_with_it(long_horizon) -> None:  # type: ignore[no-untyped-def]
    """The same bundle with Pareto/NBD as its repeat-buying model (CDNOW's estimates on
    orders): every decision's scores are the Pareto/NBD ones, in a batch and one at a time."""
    config, out, _ = long_horizon
    bundle = load_bundle(out)
    assert bundle.manifest.btyd is not None
    btyd = msgspec.structs.replace(
        bundle.manifest.btyd,
        pareto_nbd=ParetoNbdDef(r=0.497, alpha=8.36, s=0.563, beta=9.33),
        adjusted={},
        serves=["churnProbability", "expectedPurchases", "expectedValue"],
    )
    pareto = dataclasses.replace(
        bundle, manifest=msgspec.structs.replace(bundle.manifest, btyd=btyd)
    )
    tx = ingest.read_all(load_config(config))["transactions"].frame
    buyers = profiles.build_profiles(tx, CUTOFF, include_visitors=False).head(300)
    requests = list(profiles.profile_requests(buyers, CUTOFF))
    decider = Decider(pareto, clock=lambda: CUTOFF)
    decided = [d.scores or {} for d in decider.decide_many(requests)]
    expected = score_customers(btyd, summary_of(requests))
    plain = score_customers(bundle.manifest.btyd, summary_of(requests))
    for name in ("pAlive", "churnProbability", "expectedPurchases", "expectedValue"):
        got = np.array([s[name] for s in decided])
        np.testing.assert_allclose(got, expected[name], atol=1e-6)
        assert not np.allclose(got, plain[name], atol=1e-3), name  # not the BG/NBD ones
    single = decider.decide(requests[7]).scores or {}
    assert single["churnProbability"] == pytest.approx(decided[7]["churnProbability"], abs=1e-9)
