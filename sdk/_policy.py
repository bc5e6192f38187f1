"""The policy step of a decision: holdout, experiment arms and exploration.

Pure functions of the manifest's holdout, experiments and exploration rates and of the
decision attributes; :class:`Policy` binds them to one bundle. Every draw is a deterministic
FNV-1a hash (:mod:`sdk.hashing`), so the server and the SDK's local mode make the same choice
for the same visit, a visitor keeps an arm, and a logged propensity is the probability of the
choice over visitors. The rules of holdout, experiment exposure and exploration are in
:func:`assign` and :func:`explore`.

Must import only the standard library and sdk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sdk._plan import MEMO_LIMIT, Memo
from sdk.conditions import (
    Predicate,
    compile_condition,
    condition_paths,
    evaluate_condition,
    numeric_thresholds,
)
from sdk.hashing import bucket_ranges, choose, hash_unit, in_namespace, prefix_state
from sdk.manifest import ArmDef, ExperimentDef, ExplorationDef, HoldoutDef, Manifest
from sdk.schema import DecideRequest, Reason

__all__ = [
    "Assignment",
    "Exploration",
    "Policy",
    "Prepared",
    "assign",
    "bucket_seed",
    "epsilon_for",
    "explore",
    "explore_pick",
    "prepare",
    "sticky_fields",
]

HOLDOUT = "holdout"
PERSONALIZED = "personalized"


@dataclass
class Assignment:
    """The arms of one decision.

    Attributes:
        arms: experiment key -> arm key, for every experiment the visitor is in (and
            ``holdout`` when a holdout is configured and the visitor consented).
        slots: slot id -> (experiment key, arm) of the experiment that decides the slot.
        holdout: the visitor is in the global holdout.
    """

    arms: dict[str, str] = field(default_factory=dict)
    slots: dict[str, tuple[str, ArmDef]] = field(default_factory=dict)
    holdout: bool = False


class Prepared(NamedTuple):
    """What an experiment's arm draw needs, computed once per bundle (:func:`prepare`)."""

    #: the parts of the hash attribute's path
    path: tuple[str, ...]
    #: :func:`bucket_seed`
    seed: str
    #: :func:`~sdk.hashing.bucket_ranges` of the arms' weights and the coverage
    ranges: list[tuple[float, float]]


def prepare(exp: ExperimentDef) -> Prepared:
    """The hash attribute's path, seed and bucket ranges of ``exp``."""
    ranges = bucket_ranges([a.weight for a in exp.arms], exp.coverage)
    return Prepared(tuple(exp.hash_attribute.split(".")), bucket_seed(exp), ranges)


def _lookup(attributes: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = attributes
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def assign(
    experiments: Sequence[ExperimentDef],
    holdout: HoldoutDef | None,
    attributes: Mapping[str, Any],
    slot_ids: Sequence[str],
    personalized: bool,
    conditions: Mapping[str, Predicate] | None = None,
    sticky: Mapping[str, str] | None = None,
    prepared: Mapping[str, Prepared] | None = None,
) -> Assignment:
    """The holdout and experiment arms of a visit.

    Only consenting visitors are in the holdout or in experiments. ``hash_unit(seed,
    visitorId) < share`` puts a visitor in the holdout: generic content everywhere and no
    experiment (recorded as ``arms["holdout"]`` = ``holdout`` or ``personalized``). Running
    experiments are taken in manifest order; a slot belongs to the first experiment the visitor
    is in that lists it (no slots listed: all of them). An experiment is recorded (the
    exposure) only when it decides at least one slot of the request: make experiments on the
    same slot mutually exclusive with one namespace and disjoint ranges.

    ``conditions`` maps experiment keys to their compiled targeting conditions (the decider
    compiles them once); an experiment without one is evaluated with
    :func:`~sdk.conditions.evaluate_condition`.

    ``sticky`` holds the visitor's stored arms (:attr:`~sdk.manifest.ExperimentDef.sticky_key`
    -> arm key). A running ``sticky`` experiment with a stored arm that still exists gives that
    arm, skipping targeting, namespace, coverage and weights (they may have changed since the
    visitor was exposed); a stored arm of another bucket version, or one no longer in the
    experiment, is ignored and the visitor is bucketed by hash again.

    ``prepared`` maps experiment keys to what :func:`prepare` computes once per bundle (computed
    here for an experiment without it).
    """
    out = Assignment()
    if not personalized:
        return out  # contextual decisions are in no test: there is no consent to measure
    visitor = str(attributes.get("visitorId") or "")
    if holdout is not None and holdout.share > 0:
        unit = hash_unit(holdout.seed, visitor)
        out.holdout = unit is not None and unit < holdout.share
        out.arms[HOLDOUT] = HOLDOUT if out.holdout else PERSONALIZED
        if out.holdout:
            return out
    for exp in experiments:
        if exp.status != "running":
            continue
        ready = prepared.get(exp.key) if prepared is not None else None
        if ready is None:
            ready = prepare(exp)
        value = _lookup(attributes, ready.path)
        if value is None or value == "":
            continue
        value = str(value)
        stored = _stored_arm(exp, sticky)
        if stored is not None:
            _expose(out, exp, stored, slot_ids)
            continue
        if exp.condition:
            compiled = conditions.get(exp.key) if conditions is not None else None
            matched = (
                compiled(attributes)
                if compiled is not None
                else evaluate_condition(attributes, exp.condition)
            )
            if not matched:
                continue
        if exp.namespace is not None and not in_namespace(
            value, (exp.namespace.name, exp.namespace.start, exp.namespace.end)
        ):
            continue
        unit = hash_unit(ready.seed, value)
        if unit is None:
            continue
        index = choose(unit, ready.ranges)
        if index < 0:
            continue
        _expose(out, exp, exp.arms[index], slot_ids)
    return out


def bucket_seed(exp: ExperimentDef) -> str:
    """The seed of ``exp``'s arm draw: ``seed`` (the key by default), then ``/v<n>`` from
    bucket version 2 on, so that bumping the version re-randomises the draw as well as
    forgetting the stored arms (version 1 keeps every existing assignment)."""
    seed = exp.seed or exp.key
    return seed if exp.bucket_version == 1 else f"{seed}/v{exp.bucket_version}"


def _stored_arm(exp: ExperimentDef, sticky: Mapping[str, str] | None) -> ArmDef | None:
    """The arm stored for a sticky ``exp``, when it is one of its arms."""
    if not sticky or not exp.sticky:
        return None
    key = sticky.get(exp.sticky_key)
    return next((a for a in exp.arms if a.key == key), None) if key is not None else None


def _expose(out: Assignment, exp: ExperimentDef, arm: ArmDef, slot_ids: Sequence[str]) -> None:
    """Record ``arm`` of ``exp`` when it decides at least one of the visit's slots."""
    wanted = set(slot_ids)
    taken = [s for s in (exp.slots or slot_ids) if s in wanted and s not in out.slots]
    if not taken:
        return  # it decides nothing the visitor sees: no exposure
    out.arms[exp.key] = arm.key
    for slot in taken:
        out.slots[slot] = (exp.key, arm)


def sticky_fields(
    experiments: Sequence[ExperimentDef],
    arms: Mapping[str, str] | None,
    stored: Mapping[str, str],
) -> dict[str, str]:
    """What to store after a decision exposed ``arms``: ``sticky_key -> arm`` of each sticky
    experiment exposed whose arm is not stored already."""
    if not arms:
        return {}
    out: dict[str, str] = {}
    for exp in experiments:
        arm = arms.get(exp.key) if exp.sticky else None
        if arm is not None and stored.get(exp.sticky_key) != arm:
            out[exp.sticky_key] = arm
    return out


def epsilon_for(exploration: ExplorationDef | None, segment: int | None) -> float:
    """The exploration rate of a segment (0 without exploration)."""
    if exploration is None:
        return 0.0
    if segment is not None:
        return exploration.by_segment.get(str(segment), exploration.epsilon)
    return exploration.epsilon


#: Seeds of the two exploration draws.
EXPLORE_SEED = "tailor-explore"
EXPLORE_PICK_SEED = "tailor-explore-pick"


def explore(
    candidates: Sequence[str],
    greedy: str,
    epsilon: float,
    key: str,
    *,
    unit: float | None = None,
) -> tuple[str, list[tuple[str, float]]]:
    """Epsilon-greedy over ``candidates`` (variant ids; ``greedy`` among them).

    Returns the chosen variant (:func:`explore_pick`) and every candidate with its
    probability: ``1 - epsilon + epsilon / n`` for the greedy one, ``epsilon / n`` for the
    others.
    """
    n = len(candidates)
    pick = explore_pick(candidates, greedy, epsilon, key, unit=unit)
    if n <= 1 or epsilon <= 0:
        return pick, [(c, 1.0 if c == greedy else 0.0) for c in candidates]
    share = epsilon / n
    return pick, [(c, (1.0 - epsilon + share) if c == greedy else share) for c in candidates]


def explore_pick(
    candidates: Sequence[str],
    greedy: str,
    epsilon: float,
    key: str,
    *,
    unit: float | None = None,
) -> str:
    """The variant epsilon-greedy shows: a uniform draw among ``candidates`` with probability
    ``epsilon``, else ``greedy``. The two draws (explore or not; which candidate) are
    independent hashes of ``key``. ``unit``, when given, is the first draw already computed
    (``hash_unit(EXPLORE_SEED, key)``, which the decider gets from one hash of the visit shared
    by its slots)."""
    n = len(candidates)
    if n <= 1 or epsilon <= 0:
        return greedy
    explore_unit = unit if unit is not None else hash_unit(EXPLORE_SEED, key)
    if explore_unit is None or explore_unit >= epsilon:
        return greedy
    pick_unit = hash_unit(EXPLORE_PICK_SEED, key) or 0.0
    return candidates[min(int(pick_unit * n), n - 1)]


class Exploration(NamedTuple):
    """The exploration of one visit's slots."""

    #: the probability of showing a uniformly drawn candidate instead of the greedy one
    epsilon: float
    #: the visit's key (``visitorId|sessionId``); a slot's draws hash ``visit|slot``
    visit: str
    #: the hash state of ``visit|`` that the slots' first draws share (None without exploring)
    state: int | None


class Policy:
    """A bundle's holdout, experiments and exploration rates: targeting compiled once and
    memoised on the values it reads (:mod:`sdk._plan`), bucket ranges computed once.

    Args:
        manifest: the bundle's manifest (its conditions are already checked by the loader).
        memo_limit: results each memo keeps (0: evaluate every condition every time, the
            reference path).
    """

    def __init__(self, manifest: Manifest, *, memo_limit: int = MEMO_LIMIT) -> None:
        self._experiments = manifest.experiments
        self._holdout = manifest.holdout
        self._exploration = manifest.exploration
        self.memos = {
            e.key: Memo(
                f"experiment {e.key}",
                condition_paths(e.condition),
                compile_condition(e.condition),
                memo_limit,
                numeric_thresholds([e.condition]),
            )
            for e in manifest.experiments
        }
        self._targeting: Mapping[str, Predicate] = self.memos
        self._prepared = {e.key: prepare(e) for e in manifest.experiments}
        #: whether any experiment keeps its arms (the store then reads and writes them)
        self.sticky = any(e.sticky for e in manifest.experiments)

    def assign(
        self,
        attributes: Mapping[str, Any],
        slot_ids: Sequence[str],
        personalized: bool,
        sticky: Mapping[str, str] | None = None,
    ) -> Assignment:
        """The holdout and experiment arms of a visit (see :func:`assign`)."""
        return assign(
            self._experiments,
            self._holdout,
            attributes,
            slot_ids,
            personalized,
            self._targeting,
            sticky if self.sticky else None,
            self._prepared,
        )

    def sticky_fields(
        self, arms: Mapping[str, str] | None, stored: Mapping[str, str]
    ) -> dict[str, str]:
        """What to store after a decision (see :func:`sticky_fields`)."""
        return sticky_fields(self._experiments, arms, stored) if self.sticky else {}

    def exploration(
        self, request: DecideRequest, segment: int | None, personalized: bool
    ) -> Exploration:
        """How the visit's slots explore: never without personalization consent."""
        epsilon = epsilon_for(self._exploration, segment) if personalized else 0.0
        visit = f"{request.visitor_id}|{request.session_id or ''}"
        state = prefix_state(EXPLORE_SEED, visit + "|") if epsilon > 0 else None
        return Exploration(epsilon=epsilon, visit=visit, state=state)

    @staticmethod
    def holdout_reason() -> Reason:
        """Why a visit in the global holdout gets generic content."""
        return Reason(
            code="experiment.holdout",
            message="in the global holdout: generic content, no experiment",
        )
