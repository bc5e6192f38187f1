"""The last step of a decision: one content variant per slot.

:class:`Variants` holds a bundle's slot catalogue with its targeting conditions compiled once.
For each slot asked for it applies, in order: the global holdout (the default variant), an
experiment arm that fixes the variant, a marketer's targeting rule, then the variant of the
best-ranked eligible offer, explored epsilon-greedily when the policy says so (the logged
propensity is the probability of the variant shown). :func:`slot_decision` builds the
decision of one variant; fallbacks use it too.

Must import only the standard library, msgspec and sdk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from sdk._plan import MEMO_LIMIT, Memo
from sdk._policy import Assignment, Exploration, explore, explore_pick
from sdk.conditions import Predicate, compile_condition, condition_paths, numeric_thresholds
from sdk.hashing import unit_after
from sdk.manifest import ArmDef, Manifest, SlotDef, VariantDef
from sdk.schema import Candidate, Content, RankedOffer, Reason, SlotDecision

__all__ = ["Variants", "slot_decision"]

#: Cached candidates at most (their probabilities come from the bundle's epsilons).
_MAX_CANDIDATES = 4096


def slot_decision(variant: VariantDef, reason: str) -> SlotDecision:
    """The slot decision showing ``variant`` (propensity 1), with ``reason``."""
    c = variant.content
    return SlotDecision(
        variant_id=variant.id,
        offer_id=variant.offer,
        content=Content(
            type=c.type, text=c.text, html=c.html, image_url=c.image_url, href=c.href, alt=c.alt
        ),
        propensity=1.0,
        reason=reason,
    )


#: What a slot's conditions say of a visit: the targeting rule's variant and reason that
#: matches first (None: none), and the offers whose variant's condition holds.
Targeting = tuple[tuple[VariantDef, str] | None, frozenset[str]]


class Variants:
    """A bundle's slots and variants, with their conditions compiled once and their results
    memoised per slot on the values they read (:mod:`sdk._plan`).

    Args:
        manifest: the bundle's manifest (its conditions are already checked by the loader).
        memo_limit: results each memo keeps (0: evaluate every condition every time, the
            reference path).
    """

    def __init__(self, manifest: Manifest, *, memo_limit: int = MEMO_LIMIT) -> None:
        slots = manifest.slots
        self.ids = [s.id for s in slots]
        self._slots = {s.id: s for s in slots}
        self._defaults = {s.id: next(v for v in s.variants if v.id == s.default) for s in slots}
        # per slot: variants chosen by a marketer's targeting rule, and offer variants with
        # their conditions
        self._targeted = {
            s.id: [
                (v, compile_condition(v.when), f"targeting rule of {v.id} matched")
                for v in s.variants
                if v.offer is None and v.when
            ]
            for s in slots
        }
        self._by_offer: dict[str, dict[str, tuple[VariantDef, Predicate]]] = {
            s.id: {
                v.offer: (v, compile_condition(v.when)) for v in s.variants if v.offer is not None
            }
            for s in slots
        }
        self._variant_ids = {s.id: [v.id for v in s.variants] for s in slots}
        self._variants = {s.id: {v.id: v for v in s.variants} for s in slots}
        # slot decisions are immutable and their reasons come from the bundle's own names, so
        # each (variant, reason) pair is built once
        self._slot_decisions: dict[tuple[int, str], SlotDecision] = {}
        self._candidates: dict[tuple[str, float], Candidate] = {}
        # what every slot's conditions say of a visit, memoised once for all slots
        whens = [v.when for s in slots for v in s.variants if v.when]
        read = [p for when in whens for p in condition_paths(when)]
        cuts = numeric_thresholds(whens)
        self.memo = Memo("slot targeting", read, self._targeting, memo_limit, cuts)
        # per (slot, offer order, offers whose variant holds): the greedy variant, the index
        # of the offer that chose it, and the exploration candidates in catalogue order
        self._greedy: dict[tuple[Any, ...], tuple[VariantDef, int, tuple[str, ...]]] = {}
        self._explored_decisions: dict[tuple[Any, ...], SlotDecision] = {}
        self._memo_limit = memo_limit

    def _targeting(self, attributes: Mapping[str, Any]) -> dict[str, Targeting]:
        """Per slot: the first targeting rule that matches, and the offers whose variant's
        condition holds (:attr:`memo` is this, memoised)."""
        out: dict[str, Targeting] = {}
        for slot_id, targeted in self._targeted.items():
            rule = next(((v, r) for v, when, r in targeted if when(attributes)), None)
            by_offer = self._by_offer[slot_id]
            holds = frozenset(k for k, (_, when) in by_offer.items() if when(attributes))
            out[slot_id] = (rule, holds)
        return out

    def decide(
        self,
        wanted: list[str],
        plan: Assignment,
        ranked: list[RankedOffer],
        attributes: Mapping[str, Any],
        exploration: Exploration,
        reasons: list[Reason],
    ) -> dict[str, SlotDecision]:
        """The variant of every slot in ``wanted`` (an unknown slot gets a reason instead).

        Args:
            wanted: the slot ids asked for, in order.
            plan: the holdout and experiment arms of the visit.
            ranked: the eligible offers, best first.
            attributes: the decision attributes targeting conditions read.
            exploration: the visit's exploration rate and draws.
            reasons: the decision's reasons, extended here.
        """
        slots: dict[str, SlotDecision] = {}
        targeting = self.memo(attributes) if not plan.holdout else {}
        order = tuple([o.id for o in ranked])
        for slot_id in wanted:
            slot = self._slots.get(slot_id)
            if slot is None:
                reasons.append(
                    Reason(code="slot.unknown", message=f"slot {slot_id!r} is not in the catalogue")
                )
                continue
            if plan.holdout:
                slots[slot_id] = self.slot(self._defaults[slot_id], "global holdout")
                continue
            arm = plan.slots.get(slot_id)
            fixed = self.arm_variant(slot, arm[0], arm[1]) if arm else None
            chosen = fixed or self._choose(slot, ranked, order, targeting[slot_id], exploration)
            if arm is not None:
                chosen = msgspec.structs.replace(chosen, arm=f"{arm[0]}:{arm[1].key}")
            slots[slot_id] = chosen
        return slots

    def choose(
        self,
        slot: SlotDef,
        ranked: list[RankedOffer],
        attributes: Mapping[str, Any],
        exploration: Exploration,
    ) -> SlotDecision:
        """The model's variant for ``slot``: a matching targeting rule's, else the variant of
        the best-ranked offer whose condition holds (else the default), explored
        epsilon-greedily among the eligible variants and the default."""
        order = tuple([o.id for o in ranked])
        return self._choose(slot, ranked, order, self.memo(attributes)[slot.id], exploration)

    def _choose(
        self,
        slot: SlotDef,
        ranked: list[RankedOffer],
        order: tuple[str, ...],
        targeting: Targeting,
        exploration: Exploration,
    ) -> SlotDecision:
        """:meth:`choose` with the offer ids of ``ranked`` (``order``) and the slot's
        targeting already known."""
        rule, holds = targeting
        if rule is not None:
            return self.slot(*rule)
        key = (slot.id, order, holds)
        greedy_of = self._greedy.get(key)
        if greedy_of is None:
            greedy_of = self._greedy_variant(slot.id, order, holds)
            if len(self._greedy) >= self._memo_limit:
                self._greedy.clear()
            if self._memo_limit:
                self._greedy[key] = greedy_of
        greedy, index, ids = greedy_of
        if index < 0:
            reason = "default variant"
        else:
            first = ranked[index]
            reason = f"offer {first.id} ranked {first.rank}"
        epsilon = exploration.epsilon
        if epsilon <= 0:
            return self.slot(greedy, reason)
        key_ = f"{exploration.visit}|{slot.id}"
        state = exploration.state
        unit = unit_after(state, slot.id) if state is not None else None
        pick = explore_pick(ids, greedy.id, epsilon, key_, unit=unit)
        # the slot decision is a function of these (the visit only chose the pick): built once
        made_key = (slot.id, greedy.id, reason, pick, epsilon, ids)
        made = self._explored_decisions.get(made_key)
        if made is not None:
            return made
        pick, probabilities = explore(ids, greedy.id, epsilon, key_, unit=unit)
        candidates = [self.candidate(v, p) for v, p in probabilities]
        if pick != greedy.id:
            greedy = self._variants[slot.id][pick]
            reason = f"exploring (epsilon {epsilon:g}) among {len(ids)} candidates"
        propensity = next(c.probability for c in candidates if c.variant_id == greedy.id)
        made = msgspec.structs.replace(
            self.slot(greedy, reason), propensity=propensity, candidates=candidates
        )
        if len(self._explored_decisions) < self._memo_limit:
            self._explored_decisions[made_key] = made
        return made

    def _greedy_variant(
        self, slot_id: str, order: tuple[str, ...], holds: frozenset[str]
    ) -> tuple[VariantDef, int, tuple[str, ...]]:
        """The variant of the best-ranked offer in ``order`` whose variant's condition holds
        (else the slot's default), that offer's index in ``order`` (-1: none), and the
        variants exploration chooses among: the eligible ones and the default, in catalogue
        order."""
        by_offer = self._by_offer[slot_id]
        default = self._defaults[slot_id]
        eligible = [by_offer[o][0] for o in order if o in holds]
        index = next((i for i, o in enumerate(order) if o in holds), -1)
        chosen_ids = frozenset([*(v.id for v in eligible), default.id])
        ids = tuple(v for v in self._variant_ids[slot_id] if v in chosen_ids)
        return (eligible[0] if eligible else default), index, ids

    def candidate(self, variant_id: str, probability: float) -> Candidate:
        """A logged candidate variant with its probability (built once per pair)."""
        key = (variant_id, probability)
        made = self._candidates.get(key)
        if made is None:
            made = Candidate(variant_id=variant_id, probability=round(probability, 6))
            if len(self._candidates) < _MAX_CANDIDATES:
                self._candidates[key] = made
        return made

    def arm_variant(self, slot: SlotDef, experiment: str, arm: ArmDef) -> SlotDecision | None:
        """The slot decision a non-model arm imposes, or None to let the model decide."""
        if arm.policy == "default":
            variant: VariantDef | None = self._defaults[slot.id]
        elif arm.policy == "variants" and slot.id in arm.variants:
            variant = next((v for v in slot.variants if v.id == arm.variants[slot.id]), None)
        else:
            return None
        if variant is None:
            return None
        return self.slot(variant, f"experiment {experiment}, arm {arm.key}")

    def slot(self, variant: VariantDef, reason: str) -> SlotDecision:
        """:func:`slot_decision` of ``variant`` and ``reason``, built once per pair."""
        key = (id(variant), reason)
        made = self._slot_decisions.get(key)
        if made is None:
            made = self._slot_decisions[key] = slot_decision(variant, reason)
        return made
