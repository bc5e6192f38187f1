"""The decider: one decide request in, one decision out, pure and synchronous.

The same :class:`Decider` serves the server and the SDK's local mode, so both return identical
decisions for identical input. Steps: consent gate -> features (enrichment included) -> ONNX
(segment distances, offer probabilities) -> persona affinities -> lifecycle rules -> offer
eligibility and ranking -> per-slot variants -> decision. I/O-free: the clock and the decision
id factory are injected.

Must not import litestar or sklearn; numpy and onnxruntime come in through ``sdk.bundle``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from sdk._conditions import Predicate, compile_condition
from sdk._onnx import require_local
from sdk._policy import EXPLORE_SEED, assign, epsilon_for, explore
from sdk.bundle import Bundle
from sdk.features import FeatureRow, build_features
from sdk.hashing import prefix_state, unit_after
from sdk.manifest import ArmDef, SlotDef, VariantDef
from sdk.rfm import score_rfm
from sdk.schema import (
    Behavior,
    Candidate,
    Content,
    DecideRequest,
    Decision,
    Lifecycle,
    PersonaResult,
    RankedOffer,
    Reason,
    RfmResult,
    SegmentResult,
    SlotDecision,
)

__all__ = ["Decider", "decision_attributes", "slot_decision"]

#: How long a client may reuse a decision for the same visit, in seconds.
DECISION_TTL = 1800
#: Optional bundle models and the name of the score each adds to ``Decision.scores``.
PREDICTIVE_SCORES = (
    ("churn", "churnProbability"),
    ("purchases", "expectedPurchases"),
    ("value", "expectedValue"),
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


def _lifecycle_facts(b: Behavior) -> dict[str, Any]:
    return {
        "purchases": b.purchases or 0.0,
        "revenue": b.revenue or 0.0,
        "sessionCount": b.session_count if b.session_count is not None else 1.0,
        "pageViews": b.page_views or 0.0,
        "daysSinceLastPurchase": b.days_since_last_purchase,
        "daysSinceLastVisit": b.days_since_last_visit,
        "cartItems": b.cart_items or 0.0,
    }


def decision_attributes(
    request: DecideRequest,
    row: FeatureRow,
    persona: str | None,
    lifecycle: str,
    facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The attributes that offer eligibility and variant conditions are evaluated against
    (``facts``: the behaviour facts of ``row`` when already computed)."""
    s = row.signals
    return {
        "persona": persona,
        "lifecycle": lifecycle,
        "device": {"type": s.device_type, "os": s.os, "browser": s.browser, "touch": s.touch},
        "referrer": {"class": s.referrer_class, "source": s.referrer_source},
        "country": s.country,
        "page": {"path": request.context.page.path},
        "campaign": {
            "source": request.context.campaign.source,
            "medium": request.context.campaign.medium,
            "name": request.context.campaign.name,
        },
        "behavior": facts if facts is not None else _lifecycle_facts(row.behavior),
        "localHour": s.local_hour,
        "localWeekday": s.local_weekday,
    }


class Decider:
    """Turns decide requests into decisions with one verified bundle.

    Args:
        bundle: a bundle returned by :func:`sdk.bundle.load_bundle`.
        clock: returns the current timezone-aware time.
        new_id: returns a fresh decision id.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        clock: Callable[[], datetime] = _utcnow,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self.bundle = bundle
        self._clock = clock
        self._new_id = new_id
        self._np, _ = require_local()
        m = bundle.manifest
        self._version = m.feature_set_version
        self._personas = {p.id: p for p in m.personas}
        self._segment_persona = {s.id: s.persona for s in m.segments}
        self._offers = {o.id: o for o in m.offers}
        self._slots = {s.id: s for s in m.slots}
        self._defaults = {s.id: next(v for v in s.variants if v.id == s.default) for s in m.slots}
        # conditions compiled once (keyed by the id of their manifest object, which the
        # manifest keeps alive as long as this decider)
        self._eligible = {o.id: compile_condition(o.eligibility) for o in m.offers}
        self._when: dict[int, Predicate] = {
            id(v): compile_condition(v.when) for s in m.slots for v in s.variants
        }
        self._when.update({id(r): compile_condition(r.when) for r in m.lifecycle.rules})
        self._targeting = {e.key: compile_condition(e.condition) for e in m.experiments}
        seg_out = m.models["segments"].outputs
        distance_output = next(o.name for o in seg_out if o.dtype == "float32")
        off_out = m.models["offers"].outputs
        proba_output = next(o.name for o in off_out if o.dtype == "float32")
        # optional predictive models: (bundle model name, decision score name, output)
        self._score_models = [
            (model, score, next(o.name for o in m.models[model].outputs if o.dtype == "float32"))
            for model, score in PREDICTIVE_SCORES
            if model in m.models
        ]
        # one onnxruntime call per batch (fused graph), computing only what decisions read
        self._run = bundle.runner(
            [("segments", distance_output), ("offers", proba_output)]
            + [(model, output) for model, _, output in self._score_models]
        )
        # segment -> persona index, for the affinities
        persona_ids = list(self._personas)
        self._persona_ids = persona_ids
        by_id = {seg.id: persona_ids.index(seg.persona) for seg in m.segments}
        self._segment_persona_index = [by_id[i] for i in range(len(m.segments))]
        self._offer_names = {o.id: o.name for o in m.offers}
        # slot decisions are immutable and their reasons come from the bundle's own names, so
        # each (variant, reason) pair is built once
        self._slot_decisions: dict[tuple[int, str], SlotDecision] = {}
        # per slot: variants chosen by a marketer's targeting rule, and offer variants with
        # their conditions, looked up once here rather than on every decision
        self._targeted = {
            s.id: [
                (v, self._when[id(v)], f"targeting rule of {v.id} matched")
                for v in s.variants
                if v.offer is None and v.when
            ]
            for s in m.slots
        }
        self._by_offer = {
            s.id: {v.offer: (v, self._when[id(v)]) for v in s.variants if v.offer is not None}
            for s in m.slots
        }
        self._variant_ids = {s.id: [v.id for v in s.variants] for s in m.slots}
        self._variants = {s.id: {v.id: v for v in s.variants} for s in m.slots}
        self._candidates: dict[tuple[str, float], Candidate] = {}
        self._rules = list(enumerate(m.lifecycle.rules))

    def decide(
        self,
        request: DecideRequest,
        *,
        profile: Behavior | None = None,
        suppressed: frozenset[str] = frozenset(),
        rows: list[FeatureRow] | None = None,
    ) -> Decision:
        """Decide one visit.

        Args:
            request: the visit.
            profile: stored behaviour, used only when the request's consent allows.
            suppressed: offers the visitor said "not interested" to; never ranked.
            rows: when given, the feature row the decision was made from is appended (the
                server logs it for offline evaluation).
        """
        return self.decide_many([request], profiles=[profile], suppressed=[suppressed], rows=rows)[
            0
        ]

    def decide_many(
        self,
        requests: list[DecideRequest],
        *,
        profiles: list[Behavior | None] | None = None,
        suppressed: list[frozenset[str]] | None = None,
        rows: list[FeatureRow] | None = None,
    ) -> list[Decision]:
        """Decide many visits with one batched ONNX call per model (``rows``: see
        :meth:`decide`)."""
        built = self._rows(requests, profiles)
        if rows is not None:
            rows.extend(built)
        return self._decide_rows(requests, built, suppressed)

    def replay(self, requests: list[DecideRequest], rows: list[FeatureRow]) -> list[Decision]:
        """Decide logged visits again from their logged feature rows (offline evaluation).

        ``requests`` carry what the rules read besides the row (ids, consent, page path,
        campaign, slots); ``rows`` the logged feature values, signals and behaviour, which must
        be of this bundle's feature set.

        Raises:
            ValueError: a row is of another feature set version.
        """
        for row in rows:
            if row.version != self._version:
                raise ValueError(
                    f"logged features are set {row.version}; this bundle reads {self._version}"
                )
        return self._decide_rows(requests, rows, None)

    def _rows(
        self, requests: list[DecideRequest], profiles: list[Behavior | None] | None
    ) -> list[FeatureRow]:
        now = self._clock()
        profiles = profiles if profiles is not None else [None] * len(requests)
        rows: list[FeatureRow] = []
        for req, profile in zip(requests, profiles, strict=True):
            if req.consent.personalization:
                rows.append(build_features(req, profile, now, self._version))
            else:  # contextual only: no behaviour, no stored profile
                bare = DecideRequest(
                    visitor_id=req.visitor_id,
                    context=req.context,
                    timestamp=req.timestamp,
                )
                rows.append(build_features(bare, None, now, self._version))
        return rows

    def _decide_rows(
        self,
        requests: list[DecideRequest],
        rows: list[FeatureRow],
        suppressed: list[frozenset[str]] | None,
    ) -> list[Decision]:
        np = self._np
        hidden = suppressed if suppressed is not None else [frozenset()] * len(requests)
        if not rows:
            return []
        matrix = np.array([r.values for r in rows], dtype=np.float32)
        distances, probas, *score_outputs = self._run(matrix)
        scores = self._scores(score_outputs, len(rows))
        offer_scores = np.asarray(probas, dtype=np.float64).tolist()
        nearest = [self._nearest(d) for d in np.asarray(distances, dtype=np.float64).tolist()]
        return [
            self._finish(req, row, nearest[i], offer_scores[i], scores[i], hidden[i])
            for i, (req, row) in enumerate(zip(requests, rows, strict=True))
        ]

    def _nearest(self, distances: list[float]) -> tuple[int, float, list[float]]:
        """The nearest segment, its distance and the persona affinities: a softmax over
        negative squared distances (temperature from the manifest), summed per persona.

        Plain Python on purpose: numpy's per-call overhead on a row of a few segments is
        several times the arithmetic, and the same code for every batch size keeps ``decide``
        and ``decide_many`` identical to the last bit."""
        t = self.bundle.manifest.affinity_temperature
        best = min(range(len(distances)), key=distances.__getitem__)
        logits = [-(d * d) / t for d in distances]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        total = math.fsum(weights)
        affinities = [0.0] * len(self._persona_ids)
        for persona, w in zip(self._segment_persona_index, weights, strict=True):
            affinities[persona] += w / total
        return best, distances[best], affinities

    def _scores(self, outputs: list[Any], n: int) -> list[dict[str, float]]:
        """Predictive scores per row: a classifier's positive-class probability, or a
        regressor's prediction (never negative)."""
        per_row: list[dict[str, float]] = [{} for _ in range(n)]
        for (_, score, _), output in zip(self._score_models, outputs, strict=True):
            values = self._np.asarray(output, dtype=self._np.float64)
            column = (values[:, -1] if values.ndim == 2 else values).tolist()
            for i in range(n):
                per_row[i][score] = round(max(column[i], 0.0), 6)
        return per_row

    def _rfm(self, behavior: Behavior) -> RfmResult | None:
        edges = self.bundle.manifest.rfm
        if edges is None:
            return None
        s = score_rfm(
            edges, behavior.days_since_last_purchase, behavior.purchases, behavior.revenue
        )
        return RfmResult(code=s.code, r=s.r, f=s.f, m=s.m, score=round(s.score, 4))

    def _lifecycle(self, facts: dict[str, Any]) -> Lifecycle:
        for i, rule in self._rules:
            if self._when[id(rule)](facts):
                return Lifecycle(stage=rule.stage, rule=f"lifecycle.rules[{i}]")
        return Lifecycle(stage=self.bundle.manifest.lifecycle.default, rule="lifecycle.default")

    def _finish(
        self,
        req: DecideRequest,
        row: FeatureRow,
        nearest: tuple[int, float, list[float]],
        probas: list[float],
        scores: dict[str, float],
        suppressed: frozenset[str] = frozenset(),
    ) -> Decision:
        m = self.bundle.manifest
        reasons: list[Reason] = []
        personalized = req.consent.personalization
        facts = _lifecycle_facts(row.behavior)
        persona: PersonaResult | None = None
        segment: SegmentResult | None = None
        if personalized:
            seg_id, distance, weights = nearest
            affinities = {p: round(w, 6) for p, w in zip(self._persona_ids, weights, strict=True)}
            pid = self._segment_persona[seg_id]
            persona = PersonaResult(id=pid, name=self._personas[pid].name, affinities=affinities)
            segment = SegmentResult(id=seg_id, distance=round(distance, 6))
            lifecycle = self._lifecycle(facts)
            reasons.append(
                Reason(
                    code="persona.nearest_segment",
                    message=f"closest to segment {seg_id} ({persona.name}), "
                    f"affinity {affinities[pid]:.2f}",
                )
            )
            reasons.append(
                Reason(
                    code="lifecycle.rule",
                    message=f"lifecycle {lifecycle.stage} by {lifecycle.rule}",
                )
            )
        else:
            lifecycle = Lifecycle(stage="unknown", rule="consent")
            reasons.append(
                Reason(
                    code="consent.not_given",
                    message="no personalization consent: contextual decision from page "
                    "context only, no profile used or stored",
                )
            )
        attributes = decision_attributes(
            req, row, persona.id if persona else None, lifecycle.stage, facts
        )
        scored = sorted(
            zip(m.offer_classes, probas, strict=True), key=lambda item: (-item[1], item[0])
        )
        eligible = self._eligible
        kept = [
            (offer_id, score)
            for offer_id, score in scored
            if offer_id not in suppressed and eligible[offer_id](attributes)
        ]
        names = self._offer_names
        ranked = [
            RankedOffer(id=offer_id, name=names[offer_id], score=round(score, 6), rank=i)
            for i, (offer_id, score) in enumerate(kept, 1)
        ]
        if suppressed:
            reasons.append(
                Reason(
                    code="offer.suppressed",
                    message="not shown, the visitor said not interested: "
                    + ", ".join(sorted(suppressed)),
                )
            )
        if ranked:
            reasons.append(
                Reason(
                    code="offer.top",
                    message=f"{ranked[0].id} ranks first of {len(ranked)} eligible offers "
                    f"(score {ranked[0].score:.3f})",
                )
            )
        signals = row.signals
        reasons.append(
            Reason(
                code="context.referrer",
                message=f"arrived via {signals.referrer_class}"
                + (f" ({signals.referrer_source})" if signals.referrer_source else "")
                + f" on a {signals.device_type}",
            )
        )
        wanted = req.slots or list(self._slots)
        attributes["visitorId"] = req.visitor_id
        attributes["userId"] = req.user_id
        attributes["sessionId"] = req.session_id
        attributes["segment"] = segment.id if segment is not None else None
        plan = assign(m.experiments, m.holdout, attributes, wanted, personalized, self._targeting)
        if plan.holdout:
            reasons.append(
                Reason(
                    code="experiment.holdout",
                    message="in the global holdout: generic content, no experiment",
                )
            )
        epsilon = (
            epsilon_for(m.exploration, segment.id if segment else None) if personalized else 0.0
        )
        visit = f"{req.visitor_id}|{req.session_id or ''}"
        # the slots' exploration draws share the hash of the visit
        visit_state = prefix_state(EXPLORE_SEED, visit + "|") if epsilon > 0 else None
        slots: dict[str, SlotDecision] = {}
        for slot_id in wanted:
            slot = self._slots.get(slot_id)
            if slot is None:
                reasons.append(
                    Reason(code="slot.unknown", message=f"slot {slot_id!r} is not in the catalogue")
                )
                continue
            if plan.holdout:
                slots[slot_id] = self._slot(self._defaults[slot_id], "global holdout")
                continue
            arm = plan.slots.get(slot_id)
            fixed = self._arm_variant(slot, arm[0], arm[1]) if arm else None
            chosen = fixed or self._choose_variant(
                slot, ranked, attributes, epsilon, visit, visit_state
            )
            if arm is not None:
                chosen = msgspec.structs.replace(chosen, arm=f"{arm[0]}:{arm[1].key}")
            slots[slot_id] = chosen
        return Decision(
            decision_id=self._new_id(),
            model_version=m.model_version,
            visitor_id=req.visitor_id,
            session_id=req.session_id,
            personalized=personalized,
            persona=persona,
            segment=segment,
            lifecycle=lifecycle,
            offers=ranked,
            slots=slots,
            signals=signals,
            reasons=reasons,
            ttl=DECISION_TTL,
            scores=scores if personalized and scores else None,
            rfm=self._rfm(row.behavior) if personalized else None,
            experiment=plan.arms or None,
        )

    def _choose_variant(
        self,
        slot: SlotDef,
        ranked: list[RankedOffer],
        attributes: Mapping[str, Any],
        epsilon: float,
        visit: str,
        visit_state: int | None = None,
    ) -> SlotDecision:
        for variant, predicate, reason in self._targeted[slot.id]:
            if predicate(attributes):
                return self._slot(variant, reason)
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
        if epsilon <= 0:
            return self._slot(greedy, reason)
        chosen_ids = {v.id for v in eligible}
        chosen_ids.add(default.id)
        ids = [v for v in self._variant_ids[slot.id] if v in chosen_ids]  # catalogue order
        key = f"{visit}|{slot.id}"
        unit = unit_after(visit_state, slot.id) if visit_state is not None else None
        pick, probabilities = explore(ids, greedy.id, epsilon, key, unit=unit)
        candidates = [self._candidate(v, p) for v, p in probabilities]
        if pick != greedy.id:
            greedy = self._variants[slot.id][pick]
            reason = f"exploring (epsilon {epsilon:g}) among {len(ids)} candidates"
        propensity = next(c.probability for c in candidates if c.variant_id == greedy.id)
        return msgspec.structs.replace(
            self._slot(greedy, reason), propensity=propensity, candidates=candidates
        )

    def _candidate(self, variant_id: str, probability: float) -> Candidate:
        key = (variant_id, probability)
        made = self._candidates.get(key)
        if made is None:
            made = Candidate(variant_id=variant_id, probability=round(probability, 6))
            if len(self._candidates) < 4096:  # probabilities come from the bundle's epsilons
                self._candidates[key] = made
        return made

    def _arm_variant(self, slot: SlotDef, experiment: str, arm: ArmDef) -> SlotDecision | None:
        """The slot decision a non-model arm imposes, or None to let the model decide."""
        if arm.policy == "default":
            variant: VariantDef | None = self._defaults[slot.id]
        elif arm.policy == "variants" and slot.id in arm.variants:
            variant = next((v for v in slot.variants if v.id == arm.variants[slot.id]), None)
        else:
            return None
        if variant is None:
            return None
        return self._slot(variant, f"experiment {experiment}, arm {arm.key}")

    def _slot(self, variant: VariantDef, reason: str) -> SlotDecision:
        key = (id(variant), reason)
        made = self._slot_decisions.get(key)
        if made is None:
            made = self._slot_decisions[key] = slot_decision(variant, reason)
        return made


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
