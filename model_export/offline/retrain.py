"""Close the loop (``tailor retrain``): train a candidate through the one training run, evaluate
it offline against the serving bundle on the event log, and promote it only when it is not worse.

Must not import server.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from model_export.bundle.lifecycle import LiveLinkError, PolicyConfig, promote, with_policy
from model_export.offline.evaluate import (
    Estimate,
    Evaluation,
    LoggedData,
    Reward,
    compare,
    evaluate,
    read_choices,
)
from sdk.bundle import load_bundle
from sdk.hashing import hash_unit

__all__ = ["EVAL_SEED", "RetrainResult", "retrain", "split_log"]

log = logging.getLogger("tailor.model_export.offline.retrain")

#: Hash seed of the visitor split between training and evaluation.
EVAL_SEED = "tailor-retrain-eval"
_VISITOR_RE = re.compile(rb'"visitorId":"([^"\\]*)"')

Estimator = Literal["ips", "snips", "dr"]
Rule = Literal["lower", "point"]
PolicySource = Literal["serving", "candidate"]


class RetrainResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a retrain run did (``tailor retrain --json`` prints it as one line)."""

    #: ``promoted`` or ``kept`` (the serving bundle stays live)
    status: Literal["promoted", "kept"]
    reason: str
    live: str
    candidate: str
    candidate_version: str
    serving: str | None
    serving_version: str | None
    trained_from: str
    policy_from: str
    evaluated_on: str
    estimator: str
    rule: str
    margin: float
    rows: int
    visitors: int
    skipped: dict[str, int]
    candidate_value: Estimate
    serving_value: Estimate | None = None
    difference: Estimate | None = None


def _is_eval(visitor: str, share: float) -> bool:
    return (hash_unit(EVAL_SEED, visitor) or 0.0) < share


def split_log(log_path: Path, out: Path, eval_share: float) -> int:
    """Copy the event log to ``out`` without the lines of evaluation visitors (see
    :func:`retrain`); lines without a visitor id (erasure markers) are kept. Returns lines kept."""
    out.mkdir(parents=True, exist_ok=True)
    files = [log_path] if log_path.is_file() else sorted(log_path.glob("*.jsonl"))
    kept = 0
    for file in files:
        with file.open("rb") as src, (out / file.name).open("wb") as dst:
            for line in src:
                match = _VISITOR_RE.search(line)
                if match is None or not _is_eval(
                    match.group(1).decode(errors="replace"), eval_share
                ):
                    dst.write(line)
                    kept += 1
    return kept


def _stamp(out_dir: Path, name: str) -> Path:
    base = f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    path, n = out_dir / base, 1
    while path.exists():
        path, n = out_dir / f"{base}-{n}", n + 1
    return path


def _train(
    log_path: Path,
    out: Path,
    config_path: str | None,
    visitors: int,
    seed: int,
    segments: int | None,
    name: str,
    eval_share: float,
    say: Callable[[str], None],
) -> tuple[str, bool]:
    """Train into ``out``; returns a description of the data and whether the log was split."""
    from model_export.training import train

    if config_path is None:
        from model_export.fit.segments import TrainConfig
        from model_export.inputs.demo import demo_inputs

        say(f"training the synthetic demo bundle ({visitors} visits, seed {seed})")
        demo = TrainConfig(seed=seed, k=segments)
        train(
            demo_inputs(n_visitors=visitors, config=demo, name=name, progress=say),
            out,
            progress=say,
        )
        return f"synthetic demo data ({visitors} visits, seed {seed})", False
    from model_export.inputs.config import load_config
    from model_export.inputs.customer import customer_inputs

    config = load_config(config_path)
    events = config.data.events
    uses_log = events is None or Path(events).resolve() == log_path.resolve()
    if not uses_log:
        say(f"training from {config_path} (events: {events})")
        train(customer_inputs(config, progress=say), out, progress=say)
        return f"config {config_path}", False
    with tempfile.TemporaryDirectory(prefix=".tailor-retrain-", dir=out.parent) as tmp:
        kept = split_log(log_path, Path(tmp), eval_share)
        say(
            f"training from {config_path} with the event log minus the {eval_share:.0%} of "
            f"visitors held out for evaluation ({kept} lines)"
        )
        data = msgspec.structs.replace(config.data, events=tmp)
        held_out = msgspec.structs.replace(config, data=data)
        train(customer_inputs(held_out, progress=say), out, progress=say)
    return f"config {config_path} with the event log {log_path} (training visitors)", True


def _policy(serving_dir: Path) -> PolicyConfig:
    m = load_bundle(serving_dir, verify_parity=False).manifest
    return PolicyConfig(experiments=m.experiments, holdout=m.holdout, exploration=m.exploration)


def _carry_policy(
    candidate: Path,
    serving_dir: Path | None,
    source: PolicySource,
    out_dir: Path,
    name: str,
    owned: bool,
    say: Callable[[str], None],
) -> tuple[Path, str]:
    """Apply the policy rule of :func:`retrain`; returns the bundle to evaluate."""
    if serving_dir is None:
        return candidate, "candidate (no serving bundle)"
    m = load_bundle(candidate, verify_parity=False).manifest
    bare = not m.experiments and m.holdout is None and m.exploration is None
    if source == "candidate" and not bare:
        return candidate, "candidate"
    target = _stamp(out_dir, name)
    say(f"copying the serving bundle's policy onto the candidate: {target}")
    with_policy(candidate, target, _policy(serving_dir), name)
    if owned:
        shutil.rmtree(candidate)
    return target, f"serving bundle {serving_dir}"


def _decide(diff: Estimate, rule: Rule, margin: float, estimator: str) -> tuple[bool, str]:
    bound = diff.ci_low if rule == "lower" else diff.value
    what = "lower confidence bound" if rule == "lower" else "estimate"
    text = (
        f"{estimator} difference {diff.value:+.5f} [{diff.ci_low:+.5f}, {diff.ci_high:+.5f}]: "
        f"{what} {bound:+.5f}"
    )
    if bound != bound:  # NaN: nothing can be concluded
        return False, f"{text} is undefined; keeping the serving bundle"
    if bound >= -margin:
        return True, f"{text} >= -{margin:g}: not worse"
    return False, f"{text} < -{margin:g}: possibly worse"


def retrain(
    log_path: str | Path,
    live: str | Path,
    out_dir: str | Path,
    *,
    config: str | None = None,
    candidate: str | Path | None = None,
    visitors: int = 20_000,
    seed: int = 7,
    segments: int | None = None,
    name: str = "retrain",
    margin: float = 0.0,
    estimator: Estimator = "dr",
    rule: Rule = "lower",
    policy: PolicySource = "serving",
    eval_share: float = 0.3,
    reward: Reward = "click",
    confidence: float = 0.95,
    progress: Callable[[str], None] | None = None,
) -> RetrainResult:
    """Train (or take) a candidate, evaluate it against the serving bundle on the event log,
    and promote it when it is not worse. Each step is logged on :data:`log`.

    1. The log is read first, so a log that cannot be evaluated fails before training.
    2. The candidate is trained into ``out_dir/<name>-<UTC time>`` by
       :func:`model_export.training.train`: from the config, whose events input is the log minus
       the ``eval_share`` of visitors held out for evaluation (a hash of the visitor id) when
       it is unset or names the same log; without a config, the synthetic demo. Or it is given
       (``candidate=``).
    3. ``policy="serving"`` copies the serving bundle's holdout, experiments and exploration
       onto the candidate (:func:`model_export.bundle.lifecycle.with_policy`);
       ``policy="candidate"`` keeps the candidate's own unless it has none.
    4. Both are evaluated on the same logged choices
       (:func:`model_export.offline.evaluate.compare`); rule ``lower`` promotes when the lower
       confidence bound of the difference (candidate minus serving) is at least ``-margin``,
       ``point`` when the estimate is. With no serving bundle the candidate is promoted.
    5. :func:`model_export.bundle.lifecycle.promote` swaps ``live`` atomically; a kept
       candidate stays in ``out_dir``. Any error leaves ``live`` as it was.

    Args:
        log_path: the server's event log directory (or one file).
        live: the symlink servers load bundles through (may not exist yet).
        out_dir: where candidate bundles are written.
        config: training config (TOML); None trains the synthetic demo.
        candidate: an existing bundle to evaluate and promote instead of training.
        visitors: synthetic visits of the demo training.
        seed: seed of the demo training.
        segments: fix the number of segments of the demo training (else it is chosen).
        name: model version prefix and directory name of the candidate.
        margin: how much worse (in reward per slot decision) the candidate may be.
        estimator: ``dr``, ``snips`` or ``ips``: the estimate the rule reads.
        rule: ``lower`` (non-inferiority on the confidence bound) or ``point``.
        policy: ``serving`` or ``candidate``: whose holdout, experiments and exploration the
            candidate gets.
        eval_share: share of visitors held out of training when the log is training data.
        reward: ``click``, ``conversion`` or ``value``.
        confidence: of the intervals.
        progress: called with a message per step (besides the logger).

    Raises:
        model_export.offline.evaluate.EvaluationError: the log cannot be read or has no usable rows.
        model_export.bundle.lifecycle.LifecycleError: a bundle is refused or ``live`` is not a link.
        model_export.errors.TrainingDataError, model_export.inputs.ingest.IngestError: training
            failed.
        ValueError: bad arguments.
    """
    if estimator not in ("ips", "snips", "dr") or rule not in ("lower", "point"):
        raise ValueError("estimator is ips, snips or dr; rule is lower or point")
    if policy not in ("serving", "candidate") or not 0.0 < eval_share < 1.0 or margin < 0:
        raise ValueError("policy is serving or candidate; eval_share in (0, 1); margin >= 0")

    def say(message: str) -> None:
        log.info(message)
        if progress is not None:
            progress(message)

    log_dir, live, out = Path(log_path), Path(live), Path(out_dir)
    if live.exists() and not live.is_symlink():
        raise LiveLinkError(f"{live} exists and is not a symlink: promote a bundle to it first")
    serving_dir = live.resolve() if live.is_symlink() else None
    say(f"serving bundle: {serving_dir or 'none (first promotion)'}")
    data = read_choices(log_dir, reward=reward)
    say(
        f"read {data.lines} lines from {data.files} file(s) of {log_dir}: {data.decisions} "
        f"decisions, {len(data.choices)} slot decisions, {data.events} events"
    )
    out.mkdir(parents=True, exist_ok=True)
    split = False
    if candidate is not None:
        cand_dir, trained_from, owned = (
            Path(candidate).resolve(),
            f"given bundle {candidate}",
            False,
        )
        say(f"candidate given: {cand_dir} (not training)")
    else:
        cand_dir, owned = _stamp(out, name), True
        trained_from, split = _train(
            log_dir, cand_dir, config, visitors, seed, segments, name, eval_share, say
        )
        say(f"trained candidate {cand_dir}")
    cand_dir, policy_from = _carry_policy(cand_dir, serving_dir, policy, out, name, owned, say)
    evaluated_on = "every logged visitor"
    if split:
        data = _held_out(data, eval_share)
        evaluated_on = f"the {eval_share:.0%} of visitors held out of training"
    say(f"evaluating on {evaluated_on}: {len(data.choices)} slot decisions")
    difference: Estimate | None = None
    serving_eval: Evaluation | None = None
    if serving_dir is None:
        cand_eval = evaluate(cand_dir, data, confidence=confidence)
        ok, reason = True, "no serving bundle: first promotion"
    else:
        result = compare(cand_dir, serving_dir, data, confidence=confidence)
        cand_eval, serving_eval = result.candidate, result.baseline
        difference = result.difference[estimator]
        ok, reason = _decide(difference, rule, margin, estimator)
    for role, ev in (("candidate", cand_eval), ("serving", serving_eval)):
        if ev is not None:
            e = ev.estimates[estimator]
            say(
                f"{role} {ev.model_version}: {estimator} {e.value:.5f} "
                f"[{e.ci_low:.5f}, {e.ci_high:.5f}] on {ev.rows} slot decisions "
                f"(ess {ev.ess:.0f}, unsupported {ev.unsupported:.3f})"
            )
    say(f"decision: {'promote' if ok else 'keep the serving bundle'}: {reason}")
    if ok:
        promoted = promote(cand_dir, live)
        say(f"promoted {live} -> {promoted.target} (previous: {promoted.previous})")
    return RetrainResult(
        status="promoted" if ok else "kept",
        reason=reason,
        live=str(live),
        candidate=str(cand_dir),
        candidate_version=cand_eval.model_version,
        serving=str(serving_dir) if serving_dir is not None else None,
        serving_version=serving_eval.model_version if serving_eval is not None else None,
        trained_from=trained_from,
        policy_from=policy_from,
        evaluated_on=evaluated_on,
        estimator=estimator,
        rule=rule,
        margin=margin,
        rows=cand_eval.rows,
        visitors=cand_eval.visitors,
        skipped=cand_eval.skipped,
        candidate_value=cand_eval.estimates[estimator],
        serving_value=serving_eval.estimates[estimator] if serving_eval is not None else None,
        difference=difference,
    )


def _held_out(data: LoggedData, share: float) -> LoggedData:
    return data.where(lambda c: _is_eval(c.decision.visitor_id, share))
