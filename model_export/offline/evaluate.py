"""Offline policy evaluation: what click or conversion rate a bundle would have had on logged
traffic, estimated from the server's event log (``tailor evaluate``).

**The log.** :func:`read_log` reads the decision and event lines of the server's event log
(``server.eventlog``; a directory of ``*.jsonl`` files or one file) and joins them: every slot of
every decision line is one *logged choice* ``(x, a, p, r)``: the context ``x`` (the decision
line: ids, consent, signals, behaviour, segment, feature row...), the variant ``a`` shown, the
probability ``p`` the logging policy chose it with (the logged ``propensity``; its ``candidates``
give the whole logging distribution ``mu(. | x)``, or ``a`` alone with probability 1 when the
choice was not randomized) and the reward ``r`` of the events that carry the decision's id:

* ``click`` (default): 1 when at least one ``click`` event names the decision and the slot;
* ``conversion``: 1 when at least one ``conversion`` event does;
* ``value``: the sum of those conversions' ``value`` (a conversion without a value counts 0).

An event names a slot by its ``slot``; one without a slot but with an ``offerId`` counts for the
decision's slots that showed that offer; other events are *unattributed*. An event of another
visitor than the decision's, or about another variant than the one logged, is ignored.

**The target policy.** For a candidate bundle, every logged decision is decided again with
:meth:`sdk.Decider.replay` from its logged feature row (so the candidate sees exactly what the
logging policy saw, rules and experiments included) and ``pi(. | x)`` is the candidate's
distribution over the slot's variants: its ``candidates`` when it randomizes, else 1 for the
variant it chooses.

**Estimators** (``w_i = pi(a_i | x_i) / p_i``; ``n`` logged choices)::

    IPS      mean(w r)                                  unbiased when p is right and pi > 0
                                                        only where mu > 0 ("support")
    SNIPS    sum(w r) / sum(w)                          self-normalized: slightly biased,
                                                        lower variance
    DR       mean(sum_a pi(a|x) q(x, a) + w (r - q(x, a_i)))
                                                        doubly robust: unbiased when p or q is
                                                        right; lower variance when q is good
    logging  mean(r)                                    the logging policy's own value

``q(x, a)`` is a deliberately simple direct-method reward model: the mean reward of variant
``a`` of the slot in the decision's segment, shrunk towards the variant's mean (which is shrunk
towards the overall mean) by :data:`SHRINKAGE` pseudo-observations. It is *cross-fitted*: the
visitors are split in two folds by a hash of their id and each fold's ``q`` is fitted on the
other fold, so no row's prediction has seen its own reward.

**Intervals.** Rows of one visitor are correlated (three slots of one page view; several
visits), so every interval treats the visitor as the unit: by default a normal interval with a
cluster-robust standard error (the sum over visitors of their summed influence terms, squared;
for SNIPS the delta method), or with ``bootstrap=N`` percentile intervals from ``N`` resamples of
whole visitors (:func:`model_export.fit.offer_policy.off_policy_estimates`). Differences between two
bundles (:func:`compare`) are *paired* (same rows, per-visitor differences of the influence
terms), so they are much tighter than the two intervals side by side.

**Diagnostics.** ``ess`` (Kish effective sample size of ``w``), ``match_rate`` (mean
``pi(a_i | x_i)``), ``max_weight`` and ``unsupported``: the mean probability the candidate puts on
variants the logging policy could not show (``mu = 0``). IPS and SNIPS cannot see rewards
there (they are biased downwards by up to that share); DR fills them in with ``q``, which is only
as good as the segment means. Log exploration (``epsilon > 0``) to keep it near 0.

**Skipped rows**, counted by reason: ``no_features`` (logged before feature rows were logged,
or by an old server), ``bad_features`` (a row of the wrong length), ``feature_set`` (features of
another set than a bundle reads: retrain or evaluate with a bundle of that set),
``bad_propensity`` (not in (0, 1]), ``inconsistent_candidates`` (the chosen variant is not
among the logged candidates, or with another probability), ``slot_unknown`` (a bundle has no
such slot). Lines: ``malformed`` (not JSON or not a log record; a torn last line after a crash
is one), ``newer_log_version``, ``duplicate_decision`` and ``other_records`` (erasure markers).

The whole log is read into memory (a decision line takes about 2 KB) and every decision is
replayed (about 0.3 ms each on one core): evaluate a window of days, not years.

Errors::

    EvaluationError      base of this module's errors
    ├── LogReadError     the log path does not exist or holds no ``*.jsonl`` file
    └── NoUsableRows     no logged choice can be evaluated; ``.skipped`` says why

Must not import server (the line formats are read with this module's own Structs).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from model_export.fit.offer_policy import off_policy_estimates
from sdk import Decider
from sdk.analysis.stats import normal_ppf
from sdk.bundle import Bundle, load_bundle
from sdk.features import FeatureRow, feature_names
from sdk.hashing import hash_unit
from sdk.schema import (
    Behavior,
    Campaign,
    Consent,
    Context,
    DecideRequest,
    Decision,
    Page,
    Signals,
)

__all__ = [
    "ESTIMATORS",
    "LOG_VERSION",
    "REWARDS",
    "SHRINKAGE",
    "Comparison",
    "Estimate",
    "Evaluation",
    "EvaluationError",
    "LogReadError",
    "LoggedChoice",
    "LoggedData",
    "LoggedDecision",
    "NoUsableRows",
    "compare",
    "evaluate",
    "read_log",
    "replay_inputs",
]

Array = npt.NDArray[np.float64]
Reward = Literal["click", "conversion", "value"]

#: The newest event log line format this module reads (``logVersion`` of ``server.eventlog``).
LOG_VERSION = 1
#: Reward definitions :func:`read_log` knows.
REWARDS: tuple[Reward, ...] = ("click", "conversion", "value")
#: Estimators of an :class:`Evaluation`, in report order.
ESTIMATORS = ("ips", "snips", "dr", "logging")
#: Pseudo-observations pulling a segment's mean reward of a variant towards the variant's mean
#: (and that towards the overall mean) in the direct-method reward model.
SHRINKAGE = 20.0
#: Decisions replayed per ONNX call.
REPLAY_BATCH = 1024
_FOLD_SEED = "tailor-evaluate-fold"
_TOLERANCE = 1e-5  # logged probabilities are rounded to 6 decimals


class EvaluationError(Exception):
    """Base of the errors of offline evaluation."""


class LogReadError(EvaluationError):
    """The log path does not exist or holds no ``*.jsonl`` file."""


class NoUsableRows(EvaluationError):
    """No logged choice can be evaluated; :attr:`skipped` counts the reasons."""

    def __init__(self, message: str, skipped: dict[str, int]) -> None:
        super().__init__(message)
        self.skipped = skipped


# --- the log's lines (read with our own Structs: model_export must not import server) --------


class _Line(msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="kind"):
    """Base of the log lines read here; unknown fields are ignored."""

    log_version: int = 1


class LoggedSlot(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A slot of a decision line: chosen variant, propensity, candidates."""

    variant_id: str
    offer_id: str | None = None
    propensity: float
    candidates: dict[str, float] | None = None
    arm: str | None = None


class LoggedSignals(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The enrichment signals of a decision line (no search terms are logged)."""

    device_type: str
    os: str | None = None
    browser: str | None = None
    touch: bool = False
    referrer_class: str
    referrer_source: str | None = None
    country: str | None = None
    local_hour: int
    local_weekday: int


class LoggedDecision(_Line, frozen=True, kw_only=True, tag="decision"):
    """What evaluation reads of a ``kind: decision`` line of the event log."""

    timestamp: datetime
    decision_id: str
    model_version: str
    visitor_id: str
    session_id: str | None = None
    user_id: str | None = None
    consent: Consent = Consent()
    personalized: bool = False
    signals: LoggedSignals
    timezone: str | None = None
    behavior: Behavior | None = None
    persona: str | None = None
    segment: int | None = None
    lifecycle: str = "unknown"
    experiment: dict[str, str] | None = None
    slots: dict[str, LoggedSlot] = {}
    #: NaN feature values are written as null by the JSON encoder
    features: list[float | None] | None = None
    feature_set: str | None = None
    path: str | None = None
    campaign: Campaign | None = None


class _EventLine(_Line, frozen=True, kw_only=True, tag="event"):
    type: str
    visitor_id: str
    decision_id: str | None = None
    slot: str | None = None
    variant_id: str | None = None
    offer_id: str | None = None
    value: float | None = None


class _Kind(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    kind: str | None = None
    log_version: int | None = None


_line_decoder = msgspec.json.Decoder(LoggedDecision | _EventLine)
_kind_decoder = msgspec.json.Decoder(_Kind)


# --- logged choices ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedChoice:
    """One slot of one logged decision: context, action, its probability and the reward."""

    decision: LoggedDecision
    slot: str
    variant_id: str
    propensity: float
    #: the logging distribution over the slot's variants: the logged candidates, or the chosen
    #: variant alone with probability 1 when the choice was not randomized
    logging: dict[str, float]
    reward: float

    @property
    def randomized(self) -> bool:
        """Whether the logging policy could have shown another variant."""
        return len([p for p in self.logging.values() if p > 0]) > 1


@dataclass(frozen=True)
class LoggedData:
    """The logged choices of an event log, with what was read and skipped."""

    source: str
    reward: Reward
    choices: list[LoggedChoice]
    skipped: dict[str, int] = field(default_factory=dict)
    files: int = 0
    lines: int = 0
    decisions: int = 0
    events: int = 0
    unattributed_events: int = 0

    def where(self, keep: Callable[[LoggedChoice], bool]) -> LoggedData:
        """The same data with only the choices ``keep`` accepts (say, one slot)."""
        return replace(self, choices=[c for c in self.choices if keep(c)])


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LogReadError(f"event log {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix == ".jsonl" and p.is_file())
    if not files:
        raise LogReadError(f"no *.jsonl file in {path}")
    return files


def _lines(files: Iterable[Path]) -> Iterator[bytes]:
    for file in files:
        with file.open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield line


def _unreadable(raw: bytes) -> str:
    """Why a line that is not a decision or event record was skipped."""
    try:
        view = _kind_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "malformed"
    if view.log_version is not None and view.log_version > LOG_VERSION:
        return "newer_log_version"
    if view.kind is not None and view.kind not in ("decision", "event"):
        return "other_records"
    return "malformed"


def _logging_distribution(slot: LoggedSlot) -> dict[str, float] | None:
    """The slot's logging distribution, or None when the candidates contradict the choice."""
    if slot.candidates is None:
        return {slot.variant_id: 1.0}
    chosen = slot.candidates.get(slot.variant_id)
    if chosen is None or abs(chosen - slot.propensity) > _TOLERANCE:
        return None
    return dict(slot.candidates)


def read_log(path: str | Path, *, reward: Reward = "click") -> LoggedData:
    """Read an event log into logged choices with their rewards (see the module docstring).

    Args:
        path: the server's event log directory (every ``*.jsonl`` file in it) or one file.
        reward: ``click``, ``conversion`` or ``value``.

    Raises:
        LogReadError: ``path`` does not exist or holds no ``*.jsonl`` file.
        ValueError: an unknown ``reward``.
    """
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, not {reward!r}")
    wanted = "click" if reward == "click" else "conversion"
    files = _files(Path(path))
    skipped: Counter[str] = Counter()
    decisions: dict[str, LoggedDecision] = {}
    events: dict[str, list[_EventLine]] = defaultdict(list)
    n_lines = n_events = 0
    for raw in _lines(files):
        n_lines += 1
        try:
            line = _line_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            skipped[_unreadable(raw)] += 1
            continue
        if line.log_version > LOG_VERSION:
            skipped["newer_log_version"] += 1
            continue
        if isinstance(line, LoggedDecision):
            if line.decision_id in decisions:
                skipped["duplicate_decision"] += 1
                continue
            decisions[line.decision_id] = line
        else:
            n_events += 1
            if line.type == wanted and line.decision_id is not None:
                events[line.decision_id].append(line)
    rewards: dict[tuple[str, str], float] = defaultdict(float)
    unattributed = 0
    for decision_id, found in events.items():
        decision = decisions.get(decision_id)
        for event in found:
            if decision is None or event.visitor_id != decision.visitor_id:
                unattributed += 1
                continue
            if event.slot is not None:
                slots = [event.slot] if event.slot in decision.slots else []
            elif event.offer_id is not None:
                slots = [s for s, v in decision.slots.items() if v.offer_id == event.offer_id]
            else:
                slots = []
            slots = [
                s
                for s in slots
                if event.variant_id in (None, decision.slots[s].variant_id)
                and event.offer_id in (None, decision.slots[s].offer_id)
            ]
            if not slots:
                unattributed += 1
            for s in slots:
                key = (decision_id, s)
                if reward == "value":
                    rewards[key] += event.value or 0.0
                else:
                    rewards[key] = 1.0
    choices: list[LoggedChoice] = []
    for decision in decisions.values():
        for slot_id, slot in decision.slots.items():
            if not 0.0 < slot.propensity <= 1.0:
                skipped["bad_propensity"] += 1
                continue
            logging = _logging_distribution(slot)
            if logging is None:
                skipped["inconsistent_candidates"] += 1
                continue
            choices.append(
                LoggedChoice(
                    decision=decision,
                    slot=slot_id,
                    variant_id=slot.variant_id,
                    propensity=slot.propensity,
                    logging=logging,
                    reward=rewards.get((decision.decision_id, slot_id), 0.0),
                )
            )
    return LoggedData(
        source=str(path),
        reward=reward,
        choices=choices,
        skipped=dict(skipped),
        files=len(files),
        lines=n_lines,
        decisions=len(decisions),
        events=n_events,
        unattributed_events=unattributed,
    )


# --- replay ------------------------------------------------------------------------------------


def replay_inputs(
    decision: LoggedDecision, slots: Sequence[str]
) -> tuple[DecideRequest, FeatureRow]:
    """The decide request and feature row that replay ``decision`` for ``slots``.

    The request carries what the rules read besides the row (ids, consent, page path, UTM
    campaign, time zone); the row the logged feature values (null read as NaN), signals (no
    search terms) and behaviour.

    Raises:
        ValueError: the decision line has no feature row.
    """
    if decision.features is None or decision.feature_set is None:
        raise ValueError(f"decision {decision.decision_id} has no logged feature row")
    s = decision.signals
    request = DecideRequest(
        visitor_id=decision.visitor_id,
        session_id=decision.session_id,
        user_id=decision.user_id,
        consent=decision.consent,
        context=Context(
            page=Page(path=decision.path),
            campaign=decision.campaign or Campaign(),
            timezone=decision.timezone,
        ),
        behavior=decision.behavior or Behavior(),
        slots=list(slots),
    )
    row = FeatureRow(
        values=tuple(math.nan if v is None else float(v) for v in decision.features),
        signals=Signals(
            device_type=s.device_type,
            os=s.os,
            browser=s.browser,
            touch=s.touch,
            referrer_class=s.referrer_class,
            referrer_source=s.referrer_source,
            search_terms=None,
            country=s.country,
            local_hour=s.local_hour,
            local_weekday=s.local_weekday,
        ),
        behavior=decision.behavior or Behavior(),
        version=decision.feature_set,
    )
    return request, row


def _distribution(decision: Decision, slot: str) -> dict[str, float] | None:
    chosen = decision.slots.get(slot)
    if chosen is None:
        return None
    if chosen.candidates is None:
        return {chosen.variant_id: 1.0}
    return {c.variant_id: c.probability for c in chosen.candidates}


def _replay(bundle: Bundle, choices: Sequence[LoggedChoice]) -> list[dict[str, float] | None]:
    """The bundle's distribution over each choice's slot variants (None: unknown slot)."""
    by_decision: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(choices):
        by_decision[c.decision.decision_id].append(i)
    groups = list(by_decision.values())
    decider = Decider(bundle)
    out: list[dict[str, float] | None] = [None] * len(choices)
    for start in range(0, len(groups), REPLAY_BATCH):
        batch = groups[start : start + REPLAY_BATCH]
        inputs = [
            replay_inputs(choices[idx[0]].decision, [choices[i].slot for i in idx]) for idx in batch
        ]
        decided = decider.replay([q for q, _ in inputs], [r for _, r in inputs])
        for idx, decision in zip(batch, decided, strict=True):
            for i in idx:
                out[i] = _distribution(decision, choices[i].slot)
    return out


# --- results -----------------------------------------------------------------------------------


class Estimate(msgspec.Struct, frozen=True, kw_only=True):
    """A policy value with its confidence interval (``std_error`` None for a bootstrap)."""

    value: float
    ci_low: float
    ci_high: float
    std_error: float | None = None


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """What one bundle would have earned on the logged traffic."""

    bundle: str
    model_version: str
    feature_set_version: str
    reward: str
    rows: int
    decisions: int
    visitors: int
    skipped: dict[str, int]
    confidence: float
    interval: str
    #: ``ips``, ``snips``, ``dr`` and ``logging`` (see :data:`ESTIMATORS`)
    estimates: dict[str, Estimate]
    ess: float
    match_rate: float
    max_weight: float
    unsupported: float


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """A candidate against a baseline on the same rows: both evaluations and the paired
    differences (candidate minus baseline) of ``ips``, ``snips`` and ``dr``."""

    candidate: Evaluation
    baseline: Evaluation
    difference: dict[str, Estimate]


# --- estimation --------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """The usable choices as arrays, shared by every bundle evaluated on them."""

    choices: list[LoggedChoice]
    skipped: dict[str, int]
    r: Array
    p: Array
    groups: npt.NDArray[np.int64]  # visitor index per row
    n_groups: int
    columns: dict[tuple[str, str], int]  # (slot, variant) -> column
    action: npt.NDArray[np.int64]
    logging: Array  # [n, k] logging distribution
    q: Array  # [n, k] cross-fitted reward model
    targets: list[Array]  # [n, k] per bundle


def _usable(
    choices: Sequence[LoggedChoice], feature_sets: set[str]
) -> tuple[list[LoggedChoice], Counter[str]]:
    skipped: Counter[str] = Counter()
    kept = []
    # bundles of different feature sets cannot be evaluated on the same rows
    wanted = next(iter(feature_sets)) if len(feature_sets) == 1 else None
    for c in choices:
        d = c.decision
        if d.features is None or d.feature_set is None:
            skipped["no_features"] += 1
        elif d.feature_set != wanted:
            skipped["feature_set"] += 1
        elif len(d.features) != len(feature_names(d.feature_set)):
            skipped["bad_features"] += 1
        else:
            kept.append(c)
    return kept, skipped


def _fold(visitor: str) -> int:
    return 0 if (hash_unit(_FOLD_SEED, visitor) or 0.0) < 0.5 else 1


def _reward_model(
    choices: Sequence[LoggedChoice],
    r: Array,
    columns: dict[tuple[str, str], int],
    folds: npt.NDArray[np.int64],
) -> Array:
    """Cross-fitted ``q(x, a)`` for every row and column: segment-within-variant means with
    shrinkage (see the module docstring); a fold without training rows predicts 0."""
    n, k = len(choices), len(columns)
    slot_of = [""] * k
    for (slot, _), j in columns.items():
        slot_of[j] = slot
    action = np.fromiter(
        (columns[(c.slot, c.variant_id)] for c in choices), dtype=np.int64, count=n
    )
    segments = [str(c.decision.segment) if c.decision.segment is not None else "-" for c in choices]
    seg_index = {s: i for i, s in enumerate(sorted(set(segments)))}
    seg = np.fromiter((seg_index[s] for s in segments), dtype=np.int64, count=n)
    q = np.zeros((n, k))
    for f in (0, 1):
        train, test = folds != f, folds == f
        if not train.any() or not test.any():
            continue
        overall = float(r[train].mean())
        n_v = np.bincount(action[train], minlength=k).astype(np.float64)
        s_v = np.bincount(action[train], weights=r[train], minlength=k)
        m_v = (s_v + SHRINKAGE * overall) / (n_v + SHRINKAGE)
        cell = seg[train] * k + action[train]
        size = len(seg_index) * k
        n_sv = np.bincount(cell, minlength=size).astype(np.float64).reshape(-1, k)
        s_sv = np.bincount(cell, weights=r[train], minlength=size).reshape(-1, k)
        m_sv = (s_sv + SHRINKAGE * m_v) / (n_sv + SHRINKAGE)
        q[test] = m_sv[seg[test]]
    slot_index = {s: i for i, s in enumerate(sorted(set(slot_of)))}
    column_slot = np.fromiter((slot_index[s] for s in slot_of), dtype=np.int64, count=k)
    row_slot = np.fromiter((slot_index[c.slot] for c in choices), dtype=np.int64, count=n)
    return np.where(row_slot[:, None] == column_slot[None, :], q, 0.0)


def _prepare(bundles: Sequence[Bundle], data: LoggedData) -> _Prepared:
    feature_sets = {b.manifest.feature_set_version for b in bundles}
    choices, skipped = _usable(data.choices, feature_sets)
    skipped.update(data.skipped)
    if not choices:
        raise _no_rows(data, skipped, feature_sets)
    replays = [_replay(b, choices) for b in bundles]
    keep = [all(rep[i] is not None for rep in replays) for i in range(len(choices))]
    skipped["slot_unknown"] += keep.count(False)
    if not any(keep):
        raise _no_rows(data, skipped, feature_sets)
    choices = [c for c, ok in zip(choices, keep, strict=True) if ok]
    dists = [[d for d, ok in zip(rep, keep, strict=True) if ok] for rep in replays]
    columns: dict[tuple[str, str], int] = {}
    for i, c in enumerate(choices):
        for variant in (c.variant_id, *c.logging, *(v for d in dists for v in d[i] or {})):
            columns.setdefault((c.slot, variant), len(columns))
    n, k = len(choices), len(columns)

    def matrix(rows: Iterable[dict[str, float]]) -> Array:
        m = np.zeros((n, k))
        for i, (c, dist) in enumerate(zip(choices, rows, strict=True)):
            for variant, prob in dist.items():
                m[i, columns[(c.slot, variant)]] = prob
        return m

    visitors: dict[str, int] = {}
    groups = np.fromiter(
        (visitors.setdefault(c.decision.visitor_id, len(visitors)) for c in choices),
        dtype=np.int64,
        count=n,
    )
    r = np.fromiter((c.reward for c in choices), dtype=np.float64, count=n)
    folds = np.fromiter((_fold(c.decision.visitor_id) for c in choices), dtype=np.int64, count=n)
    return _Prepared(
        choices=choices,
        skipped={k: v for k, v in sorted(skipped.items()) if v},
        r=r,
        p=np.fromiter((c.propensity for c in choices), dtype=np.float64, count=n),
        groups=groups,
        n_groups=len(visitors),
        columns=columns,
        action=np.fromiter(
            (columns[(c.slot, c.variant_id)] for c in choices), dtype=np.int64, count=n
        ),
        logging=matrix(c.logging for c in choices),
        q=_reward_model(choices, r, columns, folds),
        targets=[matrix(d for d in dist if d is not None) for dist in dists],
    )


def _no_rows(data: LoggedData, skipped: Counter[str], feature_sets: set[str]) -> NoUsableRows:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()) if v) or "none logged"
    return NoUsableRows(
        f"no logged choice in {data.source} can be evaluated by a bundle of feature set "
        f"{'/'.join(sorted(feature_sets))} ({len(data.choices)} slot decisions read; "
        f"skipped: {reasons})",
        {k: v for k, v in skipped.items() if v},
    )


@dataclass(frozen=True)
class _Terms:
    """Per-row influence terms of each estimator for one bundle, and its point values."""

    values: dict[str, float]
    influence: dict[str, Array]


def _terms(prep: _Prepared, target: Array) -> _Terms:
    rows = np.arange(len(prep.r))
    match = target[rows, prep.action]
    w = match / prep.p
    r = prep.r
    ips_t = w * r
    dr_t = (target * prep.q).sum(axis=1) + w * (r - prep.q[rows, prep.action])
    values = {"ips": float(ips_t.mean()), "dr": float(dr_t.mean()), "logging": float(r.mean())}
    influence = {
        "ips": ips_t - values["ips"],
        "dr": dr_t - values["dr"],
        "logging": r - values["logging"],
    }
    if w.sum() > 0:
        values["snips"] = float(ips_t.sum() / w.sum())
        influence["snips"] = w * (r - values["snips"]) / w.mean()
    else:
        values["snips"] = math.nan
        influence["snips"] = np.full(len(r), math.nan)
    return _Terms(values=values, influence=influence)


def _normal(value: float, influence: Array, prep: _Prepared, z: float) -> Estimate:
    """Normal interval with a cluster-robust (by visitor) standard error."""
    n, g = len(influence), prep.n_groups
    if g < 2 or not math.isfinite(value):
        return Estimate(value=value, ci_low=math.nan, ci_high=math.nan, std_error=math.nan)
    sums = np.bincount(prep.groups, weights=influence, minlength=g)
    se = math.sqrt(float(np.square(sums).sum()) * g / (g - 1)) / n
    return Estimate(value=value, ci_low=value - z * se, ci_high=value + z * se, std_error=se)


def _evaluation(
    bundle: Bundle,
    prep: _Prepared,
    terms: _Terms,
    target: Array,
    data: LoggedData,
    confidence: float,
    bootstrap: int,
    seed: int,
) -> Evaluation:
    z = normal_ppf(0.5 + confidence / 2)
    rows = np.arange(len(prep.r))
    w = target[rows, prep.action] / prep.p
    if bootstrap > 0:
        if confidence != 0.95:
            raise ValueError("bootstrap intervals are 95% intervals; use confidence=0.95")
        boot = off_policy_estimates(
            target,
            prep.action,
            prep.r,
            prep.p,
            seed,
            n_boot=bootstrap,
            direct=prep.q,
            groups=prep.groups,
        )
        keys = {
            "ips": "policy_value_ips",
            "snips": "policy_value_snips",
            "dr": "policy_value_dr",
            "logging": "logging_policy_value",
        }
        estimates = {
            name: Estimate(
                value=terms.values[name],
                ci_low=boot[f"{key}_ci_low"],
                ci_high=boot[f"{key}_ci_high"],
            )
            for name, key in keys.items()
        }
        interval = f"bootstrap: {bootstrap} resamples of visitors, percentile"
    else:
        estimates = {
            name: _normal(terms.values[name], terms.influence[name], prep, z) for name in ESTIMATORS
        }
        interval = "normal, standard error clustered by visitor"
    unsupported = (target * (prep.logging <= 0)).sum(axis=1)
    m = bundle.manifest
    return Evaluation(
        bundle=str(bundle.path),
        model_version=m.model_version,
        feature_set_version=m.feature_set_version,
        reward=data.reward,
        rows=len(prep.r),
        decisions=len({c.decision.decision_id for c in prep.choices}),
        visitors=prep.n_groups,
        skipped=prep.skipped,
        confidence=confidence,
        interval=interval,
        estimates={name: estimates[name] for name in ESTIMATORS},
        ess=float(w.sum() ** 2 / np.square(w).sum()) if w.any() else 0.0,
        match_rate=float(target[rows, prep.action].mean()),
        max_weight=float(w.max()),
        unsupported=float(unsupported.mean()),
    )


def _bundle(value: str | Path | Bundle) -> Bundle:
    return value if isinstance(value, Bundle) else load_bundle(value)


def _check(confidence: float, bootstrap: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if bootstrap < 0:
        raise ValueError("bootstrap must be >= 0")


def evaluate(
    bundle: str | Path | Bundle,
    data: LoggedData,
    *,
    confidence: float = 0.95,
    bootstrap: int = 0,
    seed: int = 0,
) -> Evaluation:
    """Estimate the value ``bundle`` would have had on the logged choices.

    Args:
        bundle: the candidate bundle (a path is loaded and verified).
        data: from :func:`read_log`.
        confidence: of the intervals.
        bootstrap: 0 for normal intervals (cluster-robust), else the number of bootstrap
            resamples of visitors (95% percentile intervals).
        seed: of the bootstrap.

    Raises:
        NoUsableRows: no logged choice can be evaluated (no feature rows, another feature set).
        sdk.BundleError: the bundle is refused.
    """
    _check(confidence, bootstrap)
    b = _bundle(bundle)
    prep = _prepare([b], data)
    target = prep.targets[0]
    return _evaluation(b, prep, _terms(prep, target), target, data, confidence, bootstrap, seed)


def compare(
    candidate: str | Path | Bundle,
    baseline: str | Path | Bundle,
    data: LoggedData,
    *,
    confidence: float = 0.95,
    bootstrap: int = 0,
    seed: int = 0,
) -> Comparison:
    """Evaluate two bundles on the same logged choices (those both can evaluate) and the paired
    differences, candidate minus baseline, with normal cluster-robust intervals.

    Raises:
        NoUsableRows: no logged choice can be evaluated by both bundles.
        sdk.BundleError: a bundle is refused.
    """
    _check(confidence, bootstrap)
    cand, base = _bundle(candidate), _bundle(baseline)
    prep = _prepare([cand, base], data)
    terms = [_terms(prep, t) for t in prep.targets]
    evaluations = [
        _evaluation(b, prep, t, target, data, confidence, bootstrap, seed)
        for b, t, target in zip((cand, base), terms, prep.targets, strict=True)
    ]
    z = normal_ppf(0.5 + confidence / 2)
    difference = {
        name: _normal(
            terms[0].values[name] - terms[1].values[name],
            terms[0].influence[name] - terms[1].influence[name],
            prep,
            z,
        )
        for name in ("ips", "snips", "dr")
    }
    return Comparison(candidate=evaluations[0], baseline=evaluations[1], difference=difference)
