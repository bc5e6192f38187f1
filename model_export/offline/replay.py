"""Replaying logged decisions with another bundle: the decide request and feature row of a
logged decision, and the distribution a bundle would have chosen each logged slot's variant
from (:meth:`sdk.Decider.replay`, from the logged feature row, rules and experiments included).

Must not import server.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from model_export.offline.choices import LoggedChoice
from sdk import Decider
from sdk.bundle import Bundle
from sdk.features import FeatureRow
from sdk.logs import DecisionRecord
from sdk.schema import Behavior, Context, DecideRequest, Decision, Page, Signals

__all__ = ["REPLAY_BATCH", "replay_distributions", "replay_inputs"]

#: Decisions replayed per ONNX call.
REPLAY_BATCH = 1024


def replay_inputs(
    decision: DecisionRecord, slots: Sequence[str]
) -> tuple[DecideRequest, FeatureRow]:
    """The decide request and feature row that replay ``decision`` for ``slots``.

    The request carries what the rules read besides the row (ids, consent, page path, UTM
    campaign, time zone); the row the logged feature values (null read as NaN), signals (no
    search terms) and behaviour.

    Raises:
        ValueError: the decision record has no feature row.
    """
    if decision.features is None or decision.feature_set is None:
        raise ValueError(f"decision {decision.decision_id} has no logged feature row")
    s = decision.signals
    behavior = decision.behavior_struct() or Behavior()
    request = DecideRequest(
        visitor_id=decision.visitor_id,
        session_id=decision.session_id,
        user_id=decision.user_id,
        consent=decision.consent,
        context=Context(
            page=Page(path=decision.path),
            campaign=decision.campaign_struct(),
            timezone=decision.timezone,
        ),
        behavior=behavior,
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
        behavior=behavior,
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


def replay_distributions(
    bundle: Bundle, choices: Sequence[LoggedChoice]
) -> list[dict[str, float] | None]:
    """The bundle's distribution over each choice's slot variants (None: a slot it lacks)."""
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
