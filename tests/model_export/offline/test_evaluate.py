"""Offline policy evaluation recovers known policy values on simulated logs.

The logs are real: synthetic visits decided by the real :class:`sdk.Decider` on a bundle that
explores (the logging policy), written by the real :class:`server.eventlog.EventLog` with their
feature rows, and clicks drawn from a known ground truth ``P(click | planted persona,
variant)``. A candidate's true value on the same visits is then exact: the mean over slot
decisions of ``sum_a pi(a | x) P(click | persona, a)``, with ``pi`` from the candidate deciding
the original requests (not the replay under test).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from model_export.bundle.lifecycle import PolicyConfig, with_policy
from model_export.cli import main
from model_export.fit.offer_policy import off_policy_estimates
from model_export.inputs.synth import PERSONAS, Visit, generate
from model_export.offline.evaluate import (
    Estimate,
    LogReadError,
    NoUsableRows,
    compare,
    evaluate,
    read_choices,
)
from sdk import Decider, load_bundle
from sdk.features import FeatureRow
from sdk.logs import encode_record, erasure_record, event_record
from sdk.manifest import ExplorationDef
from sdk.schema import Decision, Event
from server.eventlog import EventLog

#: The time of every simulated decision and event.
SIM_NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
#: Exploration rate of the logging policy.
LOGGING_EPSILON = 0.3


Truth = Callable[[Visit, str, str], float]


@dataclass
class SimulatedLog:
    """A written event log and the truth behind it."""

    path: Path
    visits: list[Visit]
    decisions: list[Decision]
    #: (visit, slot, variant id) -> click probability
    truth: Truth


def explore_bundle(src: Path, out: Path, epsilon: float) -> Path:
    """``src`` with exploration ``epsilon`` and no holdout or experiment."""
    policy = PolicyConfig(exploration=ExplorationDef(epsilon=epsilon))
    with_policy(src, out, policy, f"eps{round(epsilon * 100)}")
    return out


def click_truth(bundle: Path, seed: int, low: float = 0.02, high: float = 0.4) -> Truth:
    """A random click probability per (planted persona, variant) of every slot."""
    rng = random.Random(seed)
    slots = load_bundle(bundle, verify_parity=False).manifest.slots
    table = {
        (persona, v.id): rng.uniform(low, high)
        for persona in PERSONAS
        for s in slots
        for v in s.variants
    }
    return lambda visit, slot, variant: table[(visit.persona, variant)]


def simulate_log(
    logging_bundle: Path,
    out: Path,
    *,
    n: int,
    seed: int,
    truth: Truth,
    impressions: bool = True,
) -> SimulatedLog:
    """Decide ``n`` synthetic visits with ``logging_bundle``, log them with their feature rows,
    and log a click for each slot with its true probability (and an impression for each)."""
    visits = generate(n, seed=seed)
    ids = iter(range(n))
    decider = Decider(
        load_bundle(logging_bundle), clock=lambda: SIM_NOW, new_id=lambda: f"d{seed}-{next(ids)}"
    )
    rows: list[FeatureRow] = []
    decisions = decider.decide_many([v.request for v in visits], rows=rows)
    log = EventLog(out, clock=lambda: SIM_NOW)
    rng = np.random.default_rng(seed)
    for visit, decision, row in zip(visits, decisions, rows, strict=True):
        log.append_decision(decision, visit.request, row=row)
        events = []
        for slot, chosen in decision.slots.items():
            common: dict[str, Any] = {
                "visitor_id": decision.visitor_id,
                "session_id": decision.session_id,
                "decision_id": decision.decision_id,
                "slot": slot,
                "variant_id": chosen.variant_id,
            }
            if impressions:
                events.append(Event(type="impression", **common))
            if rng.random() < truth(visit, slot, chosen.variant_id):
                events.append(Event(type="click", **common))
        if events:
            log.append_events(events, received_at=SIM_NOW)
    log.close()
    return SimulatedLog(path=out, visits=visits, decisions=decisions, truth=truth)


def distribution(decision: Decision, slot: str) -> dict[str, float]:
    chosen = decision.slots[slot]
    if chosen.candidates is None:
        return {chosen.variant_id: 1.0}
    return {c.variant_id: c.probability for c in chosen.candidates}


def true_value(bundle: Path, sim: SimulatedLog) -> float:
    """The exact expected click rate per slot decision of ``bundle`` on the logged visits."""
    decider = Decider(load_bundle(bundle), clock=lambda: SIM_NOW)
    decisions = decider.decide_many([v.request for v in sim.visits])
    values = [
        sum(p * sim.truth(visit, slot, v) for v, p in distribution(d, slot).items())
        for visit, d in zip(sim.visits, decisions, strict=True)
        for slot in d.slots
    ]
    return float(np.mean(values))


@pytest.fixture(scope="module")
def policies(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    """The test bundle as logging policy (epsilon 0.3), greedy (0) and uniform (1)."""
    root = tmp_path_factory.mktemp("policies")
    return {
        eps: explore_bundle(bundle_dir, root / f"eps{eps}", eps)
        for eps in (LOGGING_EPSILON, 0.0, 1.0)
    }


@pytest.fixture(scope="module")
def sim(policies: dict[float, Path], tmp_path_factory: pytest.TempPathFactory) -> SimulatedLog:
    logging = policies[LOGGING_EPSILON]
    return simulate_log(
        logging, tmp_path_factory.mktemp("log"), n=1500, seed=1, truth=click_truth(logging, 1)
    )


def covers(estimate: Estimate, value: float) -> bool:
    return estimate.ci_low <= value <= estimate.ci_high


# --- the logging policy evaluated on its own log -------------------------------------------------


def test_the_logging_policy_is_replayed_exactly_and_recovers_its_value(
    policies: dict[float, Path], sim: SimulatedLog
) -> None:
    data = read_choices(sim.path)
    assert len(data.choices) == sum(len(d.slots) for d in sim.decisions)
    assert data.skipped == {} and data.unattributed_events == 0
    ev = evaluate(policies[LOGGING_EPSILON], data)
    # replay gives every logged variant its logged probability: every weight is 1
    assert ev.max_weight == pytest.approx(1.0) and ev.ess == pytest.approx(ev.rows)
    assert ev.unsupported == 0.0
    empirical = float(np.mean([c.reward for c in data.choices]))
    for name in ("ips", "snips", "logging"):
        assert ev.estimates[name].value == pytest.approx(empirical)
        assert covers(ev.estimates[name], empirical)
    assert covers(ev.estimates["dr"], empirical)
    truth = true_value(policies[LOGGING_EPSILON], sim)
    for name in ("ips", "snips", "dr", "logging"):
        assert covers(ev.estimates[name], truth), (name, ev.estimates[name], truth)


# --- other policies: known true values ---------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ips_snips_and_dr_recover_known_policy_values(
    policies: dict[float, Path], tmp_path: Path, seed: int
) -> None:
    logging = policies[LOGGING_EPSILON]
    sim = simulate_log(
        logging, tmp_path / "log", n=1500, seed=seed, truth=click_truth(logging, seed)
    )
    data = read_choices(sim.path)
    greedy, uniform = policies[0.0], policies[1.0]
    result = compare(greedy, uniform, data)
    truth = {"greedy": true_value(greedy, sim), "uniform": true_value(uniform, sim)}
    for role, ev in (("greedy", result.candidate), ("uniform", result.baseline)):
        assert ev.unsupported == 0.0  # epsilon > 0 logs every candidate with p > 0
        for name in ("ips", "snips", "dr"):
            assert covers(ev.estimates[name], truth[role]), (seed, role, name, ev.estimates)
    # uniform weights vary most: the reward model earns DR a narrower interval than IPS
    ips, dr = result.baseline.estimates["ips"], result.baseline.estimates["dr"]
    assert dr.ci_high - dr.ci_low < ips.ci_high - ips.ci_low
    # paired differences cover the true difference, tighter than unpaired intervals would be
    delta = truth["greedy"] - truth["uniform"]
    for name in ("ips", "snips", "dr"):
        d = result.difference[name]
        assert covers(d, delta), (seed, name, d, delta)
        a, b = result.candidate.estimates[name], result.baseline.estimates[name]
        unpaired = np.hypot(a.ci_high - a.ci_low, b.ci_high - b.ci_low)
        assert d.ci_high - d.ci_low < unpaired, name


def test_a_much_better_policy_is_recognised(policies: dict[float, Path], tmp_path: Path) -> None:
    # ground truth: the greedy choice of the model is what visitors click
    logging, greedy = policies[LOGGING_EPSILON], policies[0.0]
    decider = Decider(load_bundle(greedy), clock=lambda: SIM_NOW)
    visits = generate(1500, seed=4)
    best = {
        (v.request.visitor_id, slot): d.slots[slot].variant_id
        for v, d in zip(visits, decider.decide_many([v.request for v in visits]), strict=True)
        for slot in d.slots
    }
    sim = simulate_log(
        logging,
        tmp_path / "log",
        n=1500,
        seed=4,
        truth=lambda visit, slot, variant: (
            0.3 if best[(visit.request.visitor_id, slot)] == variant else 0.05
        ),
    )
    result = compare(greedy, policies[1.0], read_choices(sim.path))
    for name in ("ips", "snips", "dr"):
        assert result.difference[name].ci_low > 0, name


def test_bootstrap_intervals_agree_with_the_normal_ones(
    policies: dict[float, Path], sim: SimulatedLog
) -> None:
    first = {d.visitor_id for d in sim.decisions[:800]}
    data = read_choices(sim.path).where(lambda c: c.decision.visitor_id in first)
    bundle = load_bundle(policies[1.0])
    normal = evaluate(bundle, data)
    boot = evaluate(bundle, data, bootstrap=400, seed=3)
    assert boot.interval.startswith("bootstrap")
    for name in ("ips", "snips", "dr", "logging"):
        n, b = normal.estimates[name], boot.estimates[name]
        assert b.value == n.value
        width = n.ci_high - n.ci_low
        assert abs(b.ci_low - n.ci_low) < 0.2 * width, name
        assert abs(b.ci_high - n.ci_high) < 0.2 * width, name


def test_point_estimates_match_the_offer_model_estimators(
    policies: dict[float, Path], sim: SimulatedLog
) -> None:
    """The same numbers as :func:`model_export.fit.offer_policy.off_policy_estimates` on the
    same rows."""
    visits = sim.visits[:500]
    first = {v.request.visitor_id for v in visits}
    data = read_choices(sim.path).where(lambda c: c.decision.visitor_id in first)
    ev = evaluate(policies[0.0], data)
    decider = Decider(load_bundle(policies[0.0]), clock=lambda: SIM_NOW)
    again = decider.decide_many([v.request for v in visits])
    chosen = {d.decision_id: d for d in sim.decisions}
    by_visitor = {d.visitor_id: d for d in again}
    variants = sorted({v for c in data.choices for v in c.logging})
    col = {v: i for i, v in enumerate(variants)}
    target = np.zeros((len(data.choices), len(variants)))
    for i, c in enumerate(data.choices):
        for v, p in distribution(by_visitor[c.decision.visitor_id], c.slot).items():
            target[i, col[v]] = p
        assert chosen[c.decision.decision_id].slots[c.slot].variant_id == c.variant_id
    m = off_policy_estimates(
        target,
        [col[c.variant_id] for c in data.choices],
        [c.reward for c in data.choices],
        [c.propensity for c in data.choices],
        seed=0,
        n_boot=1,
    )
    assert ev.estimates["ips"].value == pytest.approx(m["policy_value_ips"])
    assert ev.estimates["snips"].value == pytest.approx(m["policy_value_snips"])
    assert ev.estimates["logging"].value == pytest.approx(m["logging_policy_value"])
    assert ev.ess == pytest.approx(m["policy_ess"])


# --- reading the log -----------------------------------------------------------------------------


def _small_log(policies: dict[float, Path], path: Path) -> list[Decision]:
    """Three decisions of the logging bundle, logged with their rows, and no events yet."""
    visits = generate(3, seed=9)
    ids = iter(range(3))
    decider = Decider(
        load_bundle(policies[LOGGING_EPSILON]),
        clock=lambda: SIM_NOW,
        new_id=lambda: f"small-{next(ids)}",
    )
    rows: list[FeatureRow] = []
    decisions = decider.decide_many([v.request for v in visits], rows=rows)
    log = EventLog(path, clock=lambda: SIM_NOW)
    for v, d, row in zip(visits, decisions, rows, strict=True):
        log.append_decision(d, v.request, row=row)
    log.close()
    return decisions


def _append_lines(directory: Path, lines: list[object | bytes]) -> None:
    file = directory / "events-20260610-120001-1.jsonl"
    with file.open("ab") as fh:
        for line in lines:
            fh.write(line if isinstance(line, bytes) else msgspec.json.encode(line) + b"\n")


def test_rewards_are_joined_by_decision_and_slot(
    policies: dict[float, Path], tmp_path: Path
) -> None:
    decisions = _small_log(policies, tmp_path)
    a, b, c = decisions
    hero = a.slots["hero"]

    def event(kind: str, d: Decision, **fields: object) -> dict[str, object]:
        return {
            "kind": "event",
            "logVersion": 1,
            "type": kind,
            "timestamp": SIM_NOW.isoformat(),
            "receivedAt": SIM_NOW.isoformat(),
            "visitorId": d.visitor_id,
            "decisionId": d.decision_id,
            **fields,
        }

    offer_slot = next(s for s, v in b.slots.items() if v.offer_id is not None)
    _append_lines(
        tmp_path,
        [
            event("click", a, slot="hero", variantId=hero.variant_id),
            event("click", a, slot="hero"),  # a second click: still 1
            event("conversion", a, slot="hero", value=30.0, trusted=True),
            event("conversion", a, slot="hero", value=12.5, trusted=True),
            event("conversion", a, slot="hero", value=9999.0),  # a browser's claim: no value
            event("conversion", a, slot="banner"),  # no value: counts 0 as value
            event("click", a, slot="banner", variantId="not-the-one-shown"),  # ignored
            event("click", a, slot="hero", visitorId="someone-else"),  # ignored
            event("click", b, offerId=b.slots[offer_slot].offer_id),  # by offer
            event("click", c),  # no slot, no offer: unattributed
            encode_record(erasure_record(a.visitor_id, SIM_NOW)),
            {"kind": "decision", "logVersion": 2, "decisionId": "from-the-future"},
            b'{"kind":"event","type":"cli',  # a torn last line
        ],
    )
    clicks = read_choices(tmp_path)
    reward = {(x.decision.decision_id, x.slot): x.reward for x in clicks.choices}
    assert reward[(a.decision_id, "hero")] == 1.0
    assert reward[(a.decision_id, "banner")] == 0.0
    assert reward[(b.decision_id, offer_slot)] == 1.0
    assert sum(reward.values()) == 2.0
    assert clicks.unattributed_events == 3  # another variant, another visitor, no slot
    assert clicks.skipped == {"other_records": 1, "newer_log_version": 1, "malformed": 1}
    conversions = read_choices(tmp_path, reward="conversion")
    got = {(x.decision.decision_id, x.slot): x.reward for x in conversions.choices}
    assert got[(a.decision_id, "hero")] == 1.0 and got[(a.decision_id, "banner")] == 1.0
    values = read_choices(tmp_path, reward="value")
    got = {(x.decision.decision_id, x.slot): x.reward for x in values.choices}
    assert got[(a.decision_id, "hero")] == 42.5 and got[(a.decision_id, "banner")] == 0.0
    assert values.skipped["unconfirmed_value"] == 2  # the claim, and the banner's (no value)
    with pytest.raises(ValueError, match="reward"):
        read_choices(tmp_path, reward="likes")  # type: ignore[arg-type]


# --- refusals ----------------------------------------------------------------------------------


def test_a_missing_or_empty_log_is_refused(policies: dict[float, Path], tmp_path: Path) -> None:
    with pytest.raises(LogReadError, match="does not exist"):
        read_choices(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogReadError, match=r"no \*\.jsonl"):
        read_choices(tmp_path / "empty")
    (tmp_path / "only-events").mkdir()
    _append_lines(
        tmp_path / "only-events",
        [encode_record(event_record(Event(type="click", visitor_id="v"), SIM_NOW))],
    )
    with pytest.raises(NoUsableRows, match="none logged"):
        evaluate(policies[0.0], read_choices(tmp_path / "only-events"))


def test_decisions_without_feature_rows_are_refused(
    policies: dict[float, Path], tmp_path: Path
) -> None:
    visits = generate(5, seed=2)
    decider = Decider(load_bundle(policies[LOGGING_EPSILON]), clock=lambda: SIM_NOW)
    log = EventLog(tmp_path, clock=lambda: SIM_NOW)
    for v, d in zip(visits, decider.decide_many([v.request for v in visits]), strict=True):
        log.append_decision(d, v.request)  # no row: an older server
    log.close()
    with pytest.raises(NoUsableRows) as refused:
        evaluate(policies[0.0], read_choices(tmp_path))
    assert refused.value.skipped == {"no_features": 15}
    assert main(["evaluate", "--bundle", str(policies[0.0]), "--log", str(tmp_path)]) == 1


def test_features_of_another_feature_set_are_refused_and_partial_logs_skip_them(
    policies: dict[float, Path], sim: SimulatedLog, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for file in sim.path.glob("*.jsonl"):
        text = file.read_text().replace('"featureSet":"2"', '"featureSet":"1"')
        (old / file.name).write_text(text)
    with pytest.raises(NoUsableRows, match="feature set 2") as refused:
        evaluate(policies[0.0], read_choices(old))
    assert refused.value.skipped == {"feature_set": len(read_choices(old).choices)}
    # a log that mixes both: the old rows are skipped and counted, the rest evaluated
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    lines = next(sim.path.glob("*.jsonl")).read_text().splitlines(keepends=True)
    decisions = [i for i, line in enumerate(lines) if line.startswith('{"kind":"decision"')]
    for i in decisions[:100]:
        lines[i] = lines[i].replace('"featureSet":"2"', '"featureSet":"1"')
    (mixed / "events-20260610-120000-1.jsonl").write_text("".join(lines))
    ev = evaluate(policies[0.0], read_choices(mixed))
    assert ev.skipped == {"feature_set": 300}
    assert ev.rows == len(read_choices(mixed).choices) - 300


# --- the command -------------------------------------------------------------------------------


def test_tailor_evaluate_prints_a_table_and_json(
    policies: dict[float, Path], sim: SimulatedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--bundle", str(policies[0.0]), "--log", str(sim.path)]
    assert main([*args, "--baseline", str(policies[LOGGING_EPSILON])]) == 0
    out = capsys.readouterr().out
    for word in ("ips", "snips", "dr", "logging", "difference", "effective sample size"):
        assert word in out
    assert main([*args, "--json", "--reward", "conversion", "--slot", "hero"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reward"] == "conversion"
    assert result["estimates"]["ips"]["value"] == 0.0  # no conversions were logged
    assert result["rows"] == len(sim.decisions)  # one hero slot per decision
    assert main(["evaluate", "--bundle", str(policies[0.0]), "--log", "/nonexistent"]) == 1
