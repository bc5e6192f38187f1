"""The rules step of a decision: lifecycle stage, offer eligibility and suppression.

:class:`Rules` compiles a bundle's lifecycle rules and offer eligibility conditions once, then
gives each decision its lifecycle stage and its ranked, eligible, unsuppressed offers, with the
reasons that explain them. Pure and synchronous; :func:`decision_attributes` builds the
attributes that eligibility and targeting conditions read.

Must import only the standard library and sdk (no numpy, onnxruntime, litestar or sklearn).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from operator import neg
from typing import Any

from sdk._exact import round6
from sdk._plan import MEMO_LIMIT, Memo
from sdk.conditions import compile_condition, condition_paths, numeric_thresholds
from sdk.features import FeatureRow
from sdk.manifest import Manifest
from sdk.schema import Behavior, DecideRequest, Lifecycle, RankedOffer, Reason

__all__ = ["CONSENT_LIFECYCLE", "Rules", "decision_attributes", "lifecycle_facts"]

#: The lifecycle of a visit decided without personalization consent.
CONSENT_LIFECYCLE = Lifecycle(stage="unknown", rule="consent")


def lifecycle_facts(b: Behavior) -> dict[str, Any]:
    """The behaviour facts lifecycle rules read (``behavior`` in the decision attributes)."""
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
        "behavior": facts if facts is not None else lifecycle_facts(row.behavior),
        "localHour": s.local_hour,
        "localWeekday": s.local_weekday,
    }


@lru_cache(maxsize=256)
def _lifecycle_reason(stage: str, rule: str) -> Reason:
    return Reason(code="lifecycle.rule", message=f"lifecycle {stage} by {rule}")


class Rules:
    """A bundle's lifecycle rules and offer eligibility, compiled once, their results memoised
    on the values they read (:mod:`sdk._plan`).

    Args:
        manifest: the bundle's manifest (its conditions are already checked by the loader).
        memo_limit: results each memo keeps (0: evaluate every condition every time, the
            reference path).
    """

    def __init__(self, manifest: Manifest, *, memo_limit: int = MEMO_LIMIT) -> None:
        lifecycle = manifest.lifecycle
        self._stages = [
            (
                Lifecycle(stage=rule.stage, rule=f"lifecycle.rules[{i}]"),
                compile_condition(rule.when),
            )
            for i, rule in enumerate(lifecycle.rules)
        ]
        self._default = Lifecycle(stage=lifecycle.default, rule="lifecycle.default")
        self._offer_classes = manifest.offer_classes
        self._eligible = {o.id: compile_condition(o.eligibility) for o in manifest.offers}
        self._names = {o.id: o.name for o in manifest.offers}
        whens = [r.when for r in lifecycle.rules]
        read = [p for when in whens for p in condition_paths(when)]
        cuts = numeric_thresholds(whens)
        self.lifecycle = Memo("lifecycle", read, self._first_stage, memo_limit, cuts)
        whens = [o.eligibility for o in manifest.offers]
        read = [p for when in whens for p in condition_paths(when)]
        cuts = numeric_thresholds(whens)
        self.eligible = Memo("eligibility", read, self._eligible_ids, memo_limit, cuts)

    def _first_stage(self, facts: Mapping[str, Any]) -> Lifecycle:
        """The stage of the first lifecycle rule ``facts`` satisfy, else the default stage
        (:attr:`lifecycle` is this, memoised)."""
        for stage, when in self._stages:
            if when(facts):
                return stage
        return self._default

    def _eligible_ids(self, attributes: Mapping[str, Any]) -> frozenset[str]:
        """The offers whose eligibility holds (:attr:`eligible` is this, memoised)."""
        return frozenset(k for k, holds in self._eligible.items() if holds(attributes))

    def rank(
        self, probas: list[float], attributes: dict[str, Any], suppressed: frozenset[str]
    ) -> list[RankedOffer]:
        """The offers by descending score (ties by id), without suppressed or ineligible ones.

        Args:
            probas: the offer model's probabilities, in the manifest's ``offer_classes`` order.
            attributes: the decision attributes eligibility conditions read.
            suppressed: offers the visitor said "not interested" to.
        """
        # (-score, id) pairs sort as the key (-score, id) would, without a key function
        scored = sorted(zip(map(neg, probas), self._offer_classes, strict=True))
        eligible = self.eligible(attributes)
        if suppressed:
            eligible = eligible - suppressed
        names = self._names
        kept = [(offer_id, -minus) for minus, offer_id in scored if offer_id in eligible]
        return [
            RankedOffer(id=offer_id, name=names[offer_id], score=round6(score), rank=i)
            for i, (offer_id, score) in enumerate(kept, 1)
        ]

    @staticmethod
    def lifecycle_reason(lifecycle: Lifecycle) -> Reason:
        """Why the visit has its lifecycle stage (built once per rule)."""
        return _lifecycle_reason(lifecycle.stage, lifecycle.rule)

    @staticmethod
    def offer_reasons(ranked: list[RankedOffer], suppressed: frozenset[str]) -> list[Reason]:
        """Why offers are missing (suppressed) and which one ranks first."""
        reasons: list[Reason] = []
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
        return reasons
