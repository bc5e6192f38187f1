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

from sdk._policy import Assignment, Exploration, explore
from sdk.conditions import Predicate, compile_condition
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


class Variants:
    """A bundle's slots and variants, with their conditions compiled once.

    Args:
        manifest: the bundle's manifest (its conditions are already checked by the loader).
    """

    def __init__(self, manifest: Manifest) -> None:
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
            chosen = fixed or self.choose(slot, ranked, attributes, exploration)
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
        for variant, predicate, reason in self._targeted[slot.id]:
            if predicate(attributes):
                return self.slot(variant, reason)
        default = self._defaults[slot.id]
        by_offer = self._by_offer[slot.id]
        eligible: list[VariantDef] = []
        first: RankedOffer | None = None
        for offer in ranked:
            candidate = by_offer.get(offer.id)
            if candidate is not None and candidate[1](attributes):
                if first is None:
                    first = offer
                eligible.append(candidate[0])
        greedy = eligible[0] if eligible else default
        reason = f"offer {first.id} ranked {first.rank}" if first else "default variant"
        epsilon = exploration.epsilon
        if epsilon <= 0:
            return self.slot(greedy, reason)
        chosen_ids = {v.id for v in eligible}
        chosen_ids.add(default.id)
        ids = [v for v in self._variant_ids[slot.id] if v in chosen_ids]  # catalogue order
        key = f"{exploration.visit}|{slot.id}"
        state = exploration.state
        unit = unit_after(state, slot.id) if state is not None else None
        pick, probabilities = explore(ids, greedy.id, epsilon, key, unit=unit)
        candidates = [self.candidate(v, p) for v, p in probabilities]
        if pick != greedy.id:
            greedy = self._variants[slot.id][pick]
            reason = f"exploring (epsilon {epsilon:g}) among {len(ids)} candidates"
        propensity = next(c.probability for c in candidates if c.variant_id == greedy.id)
        return msgspec.structs.replace(
            self.slot(greedy, reason), propensity=propensity, candidates=candidates
        )

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
