"""Logged choices: the decisions of the server's event log (read through :mod:`sdk.logs`),
one per slot, joined with the reward of their feedback events, for offline evaluation and the
VW export.

Must not import server.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from model_export.errors import ModelExportError
from sdk.logs import DecisionRecord, EventRecord, LoggedSlot, LogNotFoundError, read_log

__all__ = [
    "REWARDS",
    "EvaluationError",
    "LogReadError",
    "LoggedChoice",
    "LoggedData",
    "Reward",
    "read_choices",
]

Reward = Literal["click", "conversion", "value"]

#: Reward definitions :func:`read_choices` knows.
REWARDS: tuple[Reward, ...] = ("click", "conversion", "value")
_TOLERANCE = 1e-5  # logged probabilities are rounded to 6 decimals


class EvaluationError(ModelExportError):
    """Base of the errors of offline evaluation."""


class LogReadError(EvaluationError):
    """The log path does not exist or holds no ``*.jsonl`` file."""


@dataclass(frozen=True, slots=True)
class LoggedChoice:
    """One slot of one logged decision: context, action, its probability and the reward."""

    decision: DecisionRecord
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
    """The logged choices of an event log, with what was read and skipped.

    ``skipped`` counts lines by reason: ``malformed`` (not a log record; a torn last line after
    a crash is one), ``newer_log_version``, ``other_records`` (erasure markers, unknown kinds),
    ``duplicate_decision``; and slots: ``bad_propensity`` (not in (0, 1]),
    ``inconsistent_candidates`` (the chosen variant is not among the logged candidates, or with
    another probability).
    """

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


def _logging_distribution(slot: LoggedSlot) -> dict[str, float] | None:
    """The slot's logging distribution, or None when the candidates contradict the choice."""
    if slot.candidates is None:
        return {slot.variant_id: 1.0}
    chosen = slot.candidates.get(slot.variant_id)
    if chosen is None or abs(chosen - slot.propensity) > _TOLERANCE:
        return None
    return dict(slot.candidates)


def _event_slots(decision: DecisionRecord, event: EventRecord) -> list[str]:
    """The slots of ``decision`` an event of its visitor rewards: the one it names, else those
    that showed its offer; only where its variant and offer (when given) are the ones shown."""
    if event.slot is not None:
        slots = [event.slot] if event.slot in decision.slots else []
    elif event.offer_id is not None:
        slots = [s for s, v in decision.slots.items() if v.offer_id == event.offer_id]
    else:
        slots = []
    return [
        s
        for s in slots
        if event.variant_id in (None, decision.slots[s].variant_id)
        and event.offer_id in (None, decision.slots[s].offer_id)
    ]


def _rewards(
    decisions: dict[str, DecisionRecord],
    events: dict[str, list[EventRecord]],
    reward: Reward,
) -> tuple[dict[tuple[str, str], float], int]:
    """The reward per (decision id, slot), and the number of events attributed to none."""
    rewards: dict[tuple[str, str], float] = defaultdict(float)
    unattributed = 0
    for decision_id, found in events.items():
        decision = decisions.get(decision_id)
        for event in found:
            slots = (
                _event_slots(decision, event)
                if decision is not None and event.visitor_id == decision.visitor_id
                else []
            )
            if not slots:
                unattributed += 1
            for s in slots:
                if reward == "value":
                    rewards[(decision_id, s)] += event.value or 0.0
                else:
                    rewards[(decision_id, s)] = 1.0
    return rewards, unattributed


def read_choices(path: str | Path, *, reward: Reward = "click") -> LoggedData:
    """Read an event log into logged choices with their rewards.

    Every slot of every decision is one choice; its reward comes from the events that carry the
    decision's id: ``click`` (1 when a click names the decision and slot), ``conversion``
    (likewise) or ``value`` (the sum of those conversions' values, confirmed ones only:
    ``trusted`` events, sent by the site's backend; values browsers reported are skipped and
    counted as ``unconfirmed_value``, since anyone holding the public key can claim them). An
    event names a slot by ``slot``, or by ``offerId`` for the slots that showed that offer; an
    event of another visitor or about another variant than the one shown is unattributed.

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
    try:
        reader = read_log(path)
    except LogNotFoundError as exc:
        raise LogReadError(str(exc)) from exc
    skipped: Counter[str] = Counter()
    decisions: dict[str, DecisionRecord] = {}
    events: dict[str, list[EventRecord]] = defaultdict(list)
    n_events = 0
    for record in reader:
        if isinstance(record, DecisionRecord):
            if record.decision_id in decisions:
                skipped["duplicate_decision"] += 1
            else:
                decisions[record.decision_id] = record
        elif isinstance(record, EventRecord):
            n_events += 1
            if record.type != wanted or record.decision_id is None:
                continue
            if reward == "value" and not record.trusted:
                skipped["unconfirmed_value"] += 1  # a browser's claim, not revenue
                continue
            events[record.decision_id].append(record)
        else:
            skipped["other_records"] += 1
    if not reader.files:
        raise LogReadError(f"no *.jsonl file in {path}")
    skipped["malformed"] += reader.malformed
    skipped["newer_log_version"] += reader.newer
    skipped["other_records"] += reader.unknown_kind
    rewards, unattributed = _rewards(decisions, events, reward)
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
        skipped={k: v for k, v in sorted(skipped.items()) if v},
        files=len(reader.files),
        lines=reader.lines,
        decisions=len(decisions),
        events=n_events,
        unattributed_events=unattributed,
    )
