from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.pipeline import Pipeline

from model_export.bundle.export import onnx_bytes, onnx_outputs
from model_export.fit.offer_policy import (
    MAX_IMPORTANCE_WEIGHT,
    SyntheticLog,
    evaluate_policy,
    fit_affinity_model,
    fit_policy,
    greedy_actions,
    make_synthetic_log,
    off_policy_estimates,
)

# Planted data: offer k converts with sigmoid(-2 + 1.5 x.w_k), so the best offer depends on x.
# Thresholds for 20,000 logged training rows and 10,000 held-out rows:
# the learned policy's SNIPS lower bound must clear the logging policy's upper bound by this
LIFT_MARGIN = 0.05  # conversions per row (logging ~0.19-0.20, learned ~0.39)
# and its true value (from the planted expected rewards) must reach this share of the oracle's
ORACLE_SHARE = 0.9
EXPECTED_KEYS = {
    "policy_value_ips",
    "policy_value_ips_ci_low",
    "policy_value_ips_ci_high",
    "policy_value_snips",
    "policy_value_snips_ci_low",
    "policy_value_snips_ci_high",
    "logging_policy_value",
    "logging_policy_value_ci_low",
    "logging_policy_value_ci_high",
    "policy_match_rate",
    "policy_ess",
    "policy_propensities_estimated",
}


def _log(logging: str, reward: str, n: int, seed: int) -> SyntheticLog:
    return make_synthetic_log(n, seed, logging=logging, reward=reward)


def _true_value(pipe: Pipeline, log: SyntheticLog) -> tuple[float, float]:
    chosen = greedy_actions(pipe, log.x, log.offers)
    true = float(log.expected_reward[np.arange(len(chosen)), chosen].mean())
    return true, float(log.expected_reward.max(axis=1).mean())


@pytest.mark.parametrize("logging", ["uniform", "skewed"])
@pytest.mark.parametrize("reward", ["binary", "value"])
def test_learned_policy_beats_the_logging_policy(logging: str, reward: str) -> None:
    train, test = _log(logging, reward, 20_000, 1), _log(logging, reward, 10_000, 2)
    pipe, meta = fit_policy(
        train.x, train.actions, train.rewards, train.propensities, train.offers, 0
    )
    assert meta["method"] == "outcome_weighted_learning"
    assert meta["reward_kind"] == reward
    assert meta["propensity_source"] == "logged"
    m = evaluate_policy(
        pipe, test.x, test.actions, test.rewards, test.propensities, test.offers, seed=0
    )
    assert set(m) == EXPECTED_KEYS
    margin = LIFT_MARGIN * (35.0 if reward == "value" else 1.0)  # value: ~35 per conversion
    assert m["policy_value_snips_ci_low"] > m["logging_policy_value_ci_high"] + margin
    assert m["policy_value_ips_ci_low"] > m["logging_policy_value_ci_high"]
    for key in ("policy_value_ips", "policy_value_snips", "logging_policy_value"):
        assert m[f"{key}_ci_low"] < m[key] < m[f"{key}_ci_high"]
    # the estimate is honest: the planted truth lies in the interval
    true, oracle = _true_value(pipe, test)
    assert m["policy_value_snips_ci_low"] < true < m["policy_value_snips_ci_high"]
    assert true >= ORACLE_SHARE * oracle
    assert 0 < m["policy_match_rate"] < 1
    assert 0 < m["policy_ess"] <= len(test.x)


def test_ips_of_the_logging_policy_is_its_mean_reward() -> None:
    log = _log("skewed", "binary", 5000, 3)
    index = {o: i for i, o in enumerate(log.offers)}
    a = np.asarray([index[v] for v in log.actions])
    m = off_policy_estimates(log.logging_probs, a, log.rewards, log.propensities, seed=0)
    assert m["policy_value_ips"] == pytest.approx(m["logging_policy_value"])
    assert m["policy_value_snips"] == pytest.approx(m["logging_policy_value"])
    assert m["policy_ess"] == pytest.approx(len(a))
    # and it is the planted value of the logging policy, within its interval
    truth = float((log.logging_probs * log.expected_reward).sum(axis=1).mean())
    assert m["logging_policy_value_ci_low"] < truth < m["logging_policy_value_ci_high"]


@pytest.mark.parametrize("offer", [0, 3])
def test_ips_is_unbiased_for_a_fixed_policy_under_skewed_logging(offer: int) -> None:
    # offer 0 is favoured by the logger; offer 3 is rare (p down to ~0.03)
    log = _log("skewed", "binary", 20_000, 4)
    index = {o: i for i, o in enumerate(log.offers)}
    a = np.asarray([index[v] for v in log.actions])
    target = np.zeros_like(log.logging_probs)
    target[:, offer] = 1.0
    m = off_policy_estimates(target, a, log.rewards, log.propensities, seed=0)
    truth = float(log.expected_reward[:, offer].mean())
    assert m["policy_value_ips_ci_low"] < truth < m["policy_value_ips_ci_high"]
    naive = float(log.rewards[a == offer].mean())  # the biased on-policy-rows average
    assert abs(m["policy_value_ips"] - truth) < abs(naive - truth) or abs(naive - truth) < 0.01


def test_estimated_propensities_when_the_log_has_none() -> None:
    train, test = _log("skewed", "binary", 20_000, 1), _log("skewed", "binary", 10_000, 2)
    pipe, meta = fit_policy(train.x, train.actions, train.rewards, None, train.offers, 0)
    assert meta["propensity_source"].startswith("estimated")
    m = evaluate_policy(pipe, test.x, test.actions, test.rewards, None, test.offers, seed=0)
    assert m["policy_propensities_estimated"] == 1.0
    assert m["policy_value_snips_ci_low"] > m["logging_policy_value_ci_high"] + LIFT_MARGIN
    logged = evaluate_policy(
        pipe, test.x, test.actions, test.rewards, test.propensities, test.offers, seed=0
    )
    assert logged["policy_propensities_estimated"] == 0.0
    assert m["policy_value_snips"] == pytest.approx(logged["policy_value_snips"], abs=0.02)


def test_clipping_bounds_the_influence_of_rare_propensities() -> None:
    log = _log("uniform", "binary", 4000, 5)
    x, actions, r, p = log.x.copy(), list(log.actions), log.rewards.copy(), log.propensities.copy()
    # one rewarded row whose logger almost never showed its offer (weight 1e6 unclipped)
    x[0], actions[0], r[0], p[0] = 2.0, "offer_3", 1.0, 1e-6
    base, _ = fit_policy(log.x, log.actions, log.rewards, log.propensities, log.offers, 0)
    clipped, meta = fit_policy(x, actions, r, p, log.offers, 0)
    unclipped, meta_inf = fit_policy(x, actions, r, p, log.offers, 0, max_weight=np.inf)

    def shift(pipe: Pipeline) -> float:
        return float(np.abs(pipe.predict_proba(log.x) - base.predict_proba(log.x)).mean())

    assert shift(clipped) < 0.01  # weight 20 against 4 for the other rows: a nudge
    assert shift(unclipped) > 0.1  # one row moves every prediction (regularization caps it)
    assert meta["clipped_share"] == pytest.approx(1 / meta["rows_rewarded"])
    assert meta["max_importance_weight"] == MAX_IMPORTANCE_WEIGHT
    assert meta_inf["clipped_share"] == 0.0


def test_clip_at_one_is_unweighted_classification_of_successes() -> None:
    log = _log("skewed", "binary", 5000, 6)
    clipped, _ = fit_policy(log.x, log.actions, log.rewards, log.propensities, log.offers, 0, 1.0)
    ok = log.rewards > 0
    plain, _ = fit_affinity_model(log.x[ok], np.asarray(log.actions)[ok].tolist(), 0)
    np.testing.assert_allclose(clipped.predict_proba(log.x), plain.predict_proba(log.x), atol=1e-6)


def test_eligibility_restricts_the_policy() -> None:
    train, test = _log("uniform", "binary", 5000, 1), _log("uniform", "binary", 2000, 2)
    pipe, _ = fit_policy(train.x, train.actions, train.rewards, train.propensities, train.offers, 0)
    rng = np.random.default_rng(0)
    eligible = rng.random((len(test.x), len(test.offers))) < 0.5
    eligible[np.arange(len(test.x)), rng.integers(0, len(test.offers), len(test.x))] = True
    chosen = greedy_actions(pipe, test.x, test.offers, eligible)
    assert eligible[np.arange(len(chosen)), chosen].all()
    only_first = np.zeros_like(eligible)
    only_first[:, 0] = True
    assert (greedy_actions(pipe, test.x, test.offers, only_first) == 0).all()
    m = evaluate_policy(
        pipe, test.x, test.actions, test.rewards, test.propensities, test.offers, only_first
    )
    always_first = test.rewards[np.asarray(test.actions) == "offer_0"]
    assert m["policy_value_snips"] == pytest.approx(float(always_first.mean()))
    with pytest.raises(ValueError, match="at least one eligible"):
        greedy_actions(pipe, test.x, test.offers, np.zeros_like(eligible))
    with pytest.raises(ValueError, match="shape"):
        greedy_actions(pipe, test.x, test.offers, eligible[:, :2])


def test_unrewarded_offers_rank_last() -> None:
    log = _log("uniform", "binary", 4000, 7)
    offers = [*log.offers, "never_shown"]
    pipe, meta = fit_policy(log.x, log.actions, log.rewards, log.propensities, offers, 0)
    assert meta["unrewarded_offers"] == ["never_shown"]
    only_new = np.zeros((len(log.x), len(offers)), dtype=bool)
    only_new[:, -1] = True
    only_new[:5, 0] = True
    chosen = greedy_actions(pipe, log.x, offers, only_new)
    assert (chosen[:5] == 0).all()
    assert (chosen[5:] == len(offers) - 1).all()


def test_bootstrap_is_seeded_and_wide_enough() -> None:
    log = _log("uniform", "binary", 3000, 8)
    pipe, _ = fit_policy(log.x, log.actions, log.rewards, log.propensities, log.offers, 0)
    args = (pipe, log.x, log.actions, log.rewards, log.propensities, log.offers)
    a = evaluate_policy(*args, seed=1)
    assert a == evaluate_policy(*args, seed=1)
    assert a != evaluate_policy(*args, seed=2)
    # percentile interval of a mean ~ +-1.96 standard errors
    se = float(np.std(log.rewards) / np.sqrt(len(log.rewards)))
    width = a["logging_policy_value_ci_high"] - a["logging_policy_value_ci_low"]
    assert width == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_inputs_are_validated() -> None:
    log = _log("uniform", "binary", 500, 9)
    args = (log.x, log.actions)
    with pytest.raises(ValueError, match="non-negative"):
        fit_policy(*args, log.rewards - 1, log.propensities, log.offers, 0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        fit_policy(*args, log.rewards, log.propensities * 0, log.offers, 0)
    with pytest.raises(ValueError, match="missing from offers"):
        fit_policy(*args, log.rewards, log.propensities, log.offers[:2], 0)
    with pytest.raises(ValueError, match="at least two offers"):
        fit_policy(
            *args,
            np.where(np.asarray(log.actions) == "offer_0", log.rewards, 0.0),
            log.propensities,
            log.offers,
            0,
        )


def test_affinity_fallback() -> None:
    log = _log("uniform", "binary", 3000, 10)
    preferred = [log.offers[k] for k in np.nanargmax(log.expected_reward, axis=1)]
    pipe, meta = fit_affinity_model(log.x, preferred, 0)
    assert meta == {"method": "affinity", "why": "no logged offer outcomes"}
    assert list(pipe.classes_) == log.offers
    assert float(np.mean(pipe.predict(log.x) == np.asarray(preferred))) > 0.8


@pytest.mark.parametrize("fit", ["policy", "affinity"])
def test_onnx_export_matches_sklearn(fit: str) -> None:
    train, test = _log("skewed", "value", 5000, 1), _log("skewed", "value", 2000, 2)
    if fit == "policy":
        pipe, _ = fit_policy(
            train.x, train.actions, train.rewards, train.propensities, train.offers, 0
        )
    else:
        pipe, _ = fit_affinity_model(train.x, train.actions, 0)
    data = onnx_bytes(pipe, train.x.shape[1], "t_policy")
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    got = onnx_outputs(data, test.x)
    expected = pipe.predict_proba(test.x.astype(np.float32).astype(np.float64))
    assert np.abs(got["probabilities"] - expected).max() < 1e-5
    assert (
        got["label"] == pipe.predict(test.x.astype(np.float32).astype(np.float64))
    ).mean() > 0.999
