"""The decider: one decide request in, one decision out, pure and synchronous.

The same :class:`Decider` serves the server and the SDK's local mode, so both return identical
decisions for identical input. Steps: consent gate -> features (enrichment included) -> ONNX
(segment distances, offer probabilities) -> persona affinities -> lifecycle rules -> offer
eligibility and ranking -> per-slot variants -> decision. I/O-free: the clock and the decision
id factory are injected.

Must not import litestar or sklearn; numpy and onnxruntime come in through ``sdk.bundle``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from sdk._conditions import Predicate, compile_condition
from sdk._manifest import ArmDef, SlotDef, VariantDef
from sdk._onnx import require_local
from sdk._policy import assign, epsilon_for, explore
from sdk.bundle import Bundle
from sdk.features import FeatureRow, build_features
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
    request: DecideRequest, row: FeatureRow, persona: str | None, lifecycle: str
) -> dict[str, Any]:
    """The attributes that offer eligibility and variant conditions are evaluated against."""
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
        "behavior": _lifecycle_facts(row.behavior),
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
        np = self._np
        # segment -> persona as a matrix, so a batch's affinities are one product
        persona_ids = list(self._personas)
        self._persona_ids = persona_ids
        self._segment_personas = np.zeros((len(m.segments), len(persona_ids)))
        for seg in m.segments:
            self._segment_personas[seg.id, persona_ids.index(seg.persona)] = 1.0
        self._offer_names = {o.id: o.name for o in m.offers}
        # slot decisions are immutable and their reasons come from the bundle's own names, so
        # each (variant, reason) pair is built once
        self._slot_decisions: dict[tuple[int, str], SlotDecision] = {}
        self._by_offer = {
            s.id: {v.offer: v for v in s.variants if v.offer is not None} for s in m.slots
        }
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
        # the batch's numeric work at once: nearest segment, persona affinities (a softmax
        # over negative squared distances, summed per persona), per-row Python lists after
        d = np.asarray(distances, dtype=np.float64)
        logits = -(d * d) / self.bundle.manifest.affinity_temperature
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        affinities = (weights @ self._segment_personas).tolist()
        nearest = d.argmin(axis=1).tolist()
        nearest_distance = d[np.arange(len(rows)), nearest].tolist()
        scores = self._scores(score_outputs, len(rows))
        offer_scores = np.asarray(probas, dtype=np.float64).tolist()
        return [
            self._finish(
                req,
                row,
                (nearest[i], nearest_distance[i], affinities[i]),
                offer_scores[i],
                scores[i],
                hidden[i],
            )
            for i, (req, row) in enumerate(zip(requests, rows, strict=True))
        ]

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

    def _lifecycle(self, behavior: Behavior) -> Lifecycle:
        facts = _lifecycle_facts(behavior)
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
        persona: PersonaResult | None = None
        segment: SegmentResult | None = None
        if personalized:
            seg_id, distance, weights = nearest
            affinities = {p: round(w, 6) for p, w in zip(self._persona_ids, weights, strict=True)}
            pid = self._segment_persona[seg_id]
            persona = PersonaResult(id=pid, name=self._personas[pid].name, affinities=affinities)
            segment = SegmentResult(id=seg_id, distance=round(distance, 6))
            lifecycle = self._lifecycle(row.behavior)
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
        attributes = decision_attributes(req, row, persona.id if persona else None, lifecycle.stage)
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
            chosen = fixed or self._choose_variant(slot, ranked, attributes, epsilon, visit)
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
    ) -> SlotDecision:
        for variant in slot.variants:
            if variant.offer is None and variant.when and self._when[id(variant)](attributes):
                return self._slot(variant, f"targeting rule of {variant.id} matched")
        default = self._defaults[slot.id]
        by_offer = self._by_offer[slot.id]
        eligible: list[tuple[VariantDef, str]] = []
        for offer in ranked:
            candidate = by_offer.get(offer.id)
            if candidate is not None and self._when[id(candidate)](attributes):
                eligible.append((candidate, f"offer {offer.id} ranked {offer.rank}"))
        greedy, reason = eligible[0] if eligible else (default, "default variant")
        if epsilon <= 0:
            return self._slot(greedy, reason)
        chosen_ids = {v.id for v, _ in eligible} | {default.id}
        ids = [v.id for v in slot.variants if v.id in chosen_ids]  # catalogue order
        pick, probabilities = explore(ids, greedy.id, epsilon, f"{visit}|{slot.id}")
        candidates = [Candidate(variant_id=v, probability=round(p, 6)) for v, p in probabilities]
        if pick != greedy.id:
            greedy = next(v for v in slot.variants if v.id == pick)
            reason = f"exploring (epsilon {epsilon:g}) among {len(ids)} candidates"
        propensity = next(c.probability for c in candidates if c.variant_id == greedy.id)
        return msgspec.structs.replace(
            self._slot(greedy, reason), propensity=propensity, candidates=candidates
        )

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
