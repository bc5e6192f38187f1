"""The decider: one decide request in, one decision out, pure and synchronous.

:class:`Decider` only orchestrates the steps of a decision: sensitive scrub
(:mod:`sdk.sensitive`) -> consent gate -> features -> one batched ONNX run -> persona
(:mod:`sdk._persona`) -> rules (:mod:`sdk._rules`) -> policy (:mod:`sdk._policy`) -> slot
variants (:mod:`sdk._variants`) -> decision. The same object serves the server and the SDK's
local mode; the clock and the decision id factory are injected.

Must not import litestar or sklearn; numpy and onnxruntime come in through ``sdk.bundle``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sdk._exact import IdPool, round6
from sdk._onnx import require_local
from sdk._persona import Nearest, Personas, rfm_result, row_scores
from sdk._plan import MEMO_LIMIT, Memo
from sdk._policy import Policy
from sdk._rules import CONSENT_LIFECYCLE, Rules, decision_attributes, lifecycle_facts
from sdk._variants import Variants, slot_decision
from sdk.bundle import Bundle
from sdk.consent import permissions
from sdk.errors import BundleError
from sdk.features import FeatureRow, build_features
from sdk.schema import (
    Behavior,
    DecideRequest,
    Decision,
    Lifecycle,
    PersonaResult,
    RankedOffer,
    Reason,
    SegmentResult,
)
from sdk.sensitive import Sensitivity

__all__ = ["CustomerRow", "Decider", "decision_attributes", "slot_decision"]

#: How long a client may reuse a decision for the same visit, in seconds.
DECISION_TTL = 1800
#: Optional bundle models and the name of the score each adds to ``Decision.scores``.
PREDICTIVE_SCORES = (
    ("churn", "churnProbability"),
    ("purchases", "expectedPurchases"),
    ("value", "expectedValue"),
)
#: Scores only the buy-till-you-die models give (``Manifest.btyd``).
BTYD_ONLY_SCORES = ("pAlive",)
#: The reason of a decision made without personalization consent.
_NO_CONSENT = Reason(
    code="consent.not_given",
    message="no personalization consent: contextual decision from page "
    "context only, no profile used or stored",
)


class CustomerRow(NamedTuple):
    """What a decision says of a customer (:meth:`Decider.profile_many`): segment, persona
    and RFM code (None without personalization consent), lifecycle stage, predictive scores
    by name, and the top-ranked offer."""

    segment: int | None
    persona: str | None
    lifecycle: str
    rfm_code: str | None
    scores: dict[str, float]
    top_offer: str | None


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: A random version-4 UUID as 32 hex digits (``uuid.uuid4().hex``), from a pool refilled by
#: one ``os.urandom`` read per 256 ids.
_new_id = IdPool()


class Decider:
    """Turns decide requests into decisions with one verified bundle.

    Args:
        bundle: a bundle returned by :func:`sdk.bundle.load_bundle`.
        clock: returns the current timezone-aware time.
        new_id: returns a fresh decision id.
        plan: memoise what the bundle's rules, targeting and policy decide on the few values
            each reads (:mod:`sdk._plan`); False evaluates every condition every time, the
            reference path the differential tests compare the plan with, decision for
            decision.

    Attributes:
        sensitivity: the bundle's sensitive categories and paths. Every request and stored
            profile is scrubbed with it before features, rules and personas; the server
            scrubs what it stores and logs with this same object.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        clock: Callable[[], datetime] = _utcnow,
        new_id: Callable[[], str] = _new_id,
        plan: bool = True,
    ) -> None:
        self.bundle = bundle
        self._clock = clock
        self._new_id = new_id
        self._np, _ = require_local()
        m = bundle.manifest
        self.sensitivity = Sensitivity.from_manifest(m)
        self._version = m.feature_set_version
        self._model_version = m.model_version
        self._rfm = m.rfm
        self._personas = Personas(m)
        limit = MEMO_LIMIT if plan else 0
        self._rules = Rules(m, memo_limit=limit)
        self._policy = Policy(m, memo_limit=limit)
        self._variants = Variants(m, memo_limit=limit)
        self._memos: list[Memo[Any]] = [
            self._rules.lifecycle,
            self._rules.eligible,
            *self._policy.memos.values(),
            self._variants.memo,
        ]
        self._context_reasons: dict[tuple[str, str | None, str], Reason] = {}
        self._context_limit = limit
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
        self._score_names = [score for _, score, _ in self._score_models]
        # buy-till-you-die scores: pAlive, and those no supervised model of the bundle gives
        self._btyd = m.btyd
        if m.btyd is not None:  # refused at load, not at the first decide
            from sdk.btyd import BgNbd, ParetoNbd, check_servable

            bg, pn = m.btyd.bgnbd, m.btyd.pareto_nbd
            try:
                check_servable(BgNbd(bg.r, bg.alpha, bg.a, bg.b))
                if pn is not None:
                    ParetoNbd(pn.r, pn.alpha, pn.s, pn.beta).check()
            except ValueError as exc:
                raise BundleError(f"manifest btyd: {exc}") from None
        # scores a supervised model adjusts: (score name, bundle model, its float output)
        self._adjust_models: list[tuple[str, str, str]] = []
        for score, adj in (m.btyd.adjusted if m.btyd is not None else {}).items():
            if adj.model not in m.models or score in self._score_names:
                raise BundleError(
                    f"manifest btyd: {score} is adjusted by {adj.model!r}, which the bundle "
                    "lacks or which a supervised model already gives"
                )
            out = next(o.name for o in m.models[adj.model].outputs if o.dtype == "float32")
            self._adjust_models.append((score, adj.model, out))
        self._btyd_names = (
            [
                *BTYD_ONLY_SCORES,
                *(s for s in m.btyd.serves if s not in self._score_names),
                *(s for s, _, _ in self._adjust_models if s not in m.btyd.serves),
            ]
            if m.btyd is not None
            else []
        )
        # one onnxruntime call per batch (fused graph), computing only what decisions read
        self._run = bundle.runner(
            [("segments", distance_output), ("offers", proba_output)]
            + [(model, output) for model, _, output in self._score_models]
            + [(model, output) for _, model, output in self._adjust_models]
        )

    def decide(
        self,
        request: DecideRequest,
        *,
        profile: Behavior | None = None,
        suppressed: frozenset[str] = frozenset(),
        sticky: Mapping[str, str] | None = None,
        rows: list[FeatureRow] | None = None,
    ) -> Decision:
        """Decide one visit.

        Args:
            request: the visit.
            profile: stored behaviour, used only when the request's consent allows.
            suppressed: offers the visitor said "not interested" to; never ranked.
            sticky: the visitor's stored arms of sticky experiments
                (:attr:`~sdk.manifest.ExperimentDef.sticky_key` -> arm key), kept while they
                exist; after the decision, :meth:`sticky_fields` says what to store.
            rows: when given, the feature row the decision was made from is appended (the
                server logs it for offline evaluation).
        """
        # decide_many's steps for one row, without its per-batch lists
        scrub = self.sensitivity
        if scrub:
            request = scrub.scrub_request(request)
            if profile is not None:
                profile = scrub.scrub_behavior(profile)
        row = self._row(request, profile, self._clock())
        if rows is not None:
            rows.append(row)
        distances, probas, scores = self._run_rows([row])
        nearest = self._personas.nearest(distances[0])
        return self._finish(request, row, nearest, probas[0], scores[0], suppressed, sticky or None)

    def decide_many(
        self,
        requests: list[DecideRequest],
        *,
        profiles: list[Behavior | None] | None = None,
        suppressed: list[frozenset[str]] | None = None,
        sticky: Sequence[Mapping[str, str] | None] | None = None,
        rows: list[FeatureRow] | None = None,
    ) -> list[Decision]:
        """Decide many visits with one batched ONNX call per model (``sticky``, ``rows``: see
        :meth:`decide`). Sensitive categories and paths are scrubbed from ``requests`` and
        ``profiles`` first (:meth:`sdk.sensitive.Sensitivity.scrub_request`)."""
        if self.sensitivity:
            scrub = self.sensitivity
            requests = [scrub.scrub_request(r) for r in requests]
            if profiles is not None:
                profiles = [p if p is None else scrub.scrub_behavior(p) for p in profiles]
        built = self._rows(requests, profiles)
        if rows is not None:
            rows.extend(built)
        return self._decide_rows(requests, built, suppressed, sticky)

    def plan_stats(self) -> dict[str, dict[str, float]]:
        """Hits, misses and hit rate of each memo of the decision plan (:mod:`sdk._plan`),
        by what it decides."""
        return {memo.name: memo.stats() for memo in self._memos}

    def plan_reset(self) -> None:
        """Empty the decision plan's memos and their counts (a cold start, for measuring)."""
        for memo in self._memos:
            memo.reset()

    @property
    def sticky(self) -> bool:
        """Whether an experiment of the bundle keeps its arms (:meth:`decide`'s ``sticky``)."""
        return self._policy.sticky

    def sticky_fields(self, decision: Decision, stored: Mapping[str, str]) -> dict[str, str]:
        """The arms to store after ``decision`` (one of this decider's) for a visitor whose
        stored arms are ``stored``: ``sticky_key -> arm`` of each sticky experiment it exposed
        the visitor to, when not stored already."""
        return self._policy.sticky_fields(decision.experiment, stored)

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
        if self.sensitivity:
            requests = [self.sensitivity.scrub_request(r) for r in requests]
        return self._decide_rows(requests, rows, None, None)

    def _rows(
        self, requests: list[DecideRequest], profiles: list[Behavior | None] | None
    ) -> list[FeatureRow]:
        now = self._clock()
        if profiles is None:
            return [self._row(req, None, now) for req in requests]
        return [self._row(req, p, now) for req, p in zip(requests, profiles, strict=True)]

    def _row(self, req: DecideRequest, profile: Behavior | None, now: datetime) -> FeatureRow:
        """The feature row of one visit, as its consent allows."""
        if permissions(req.consent).personalize:
            return build_features(req, profile, now, self._version)
        # contextual only: no behaviour, no stored profile
        bare = DecideRequest(
            visitor_id=req.visitor_id, context=req.context, timestamp=req.timestamp
        )
        return build_features(bare, None, now, self._version)

    def _decide_rows(
        self,
        requests: list[DecideRequest],
        rows: list[FeatureRow],
        suppressed: list[frozenset[str]] | None,
        sticky: Sequence[Mapping[str, str] | None] | None,
    ) -> list[Decision]:
        hidden = suppressed if suppressed is not None else [frozenset()] * len(requests)
        kept = sticky if sticky is not None else [None] * len(requests)
        if not rows:
            return []
        distance_rows, offer_scores, scores = self._run_rows(rows)
        nearest = [self._personas.nearest(d) for d in distance_rows]
        return [
            self._finish(req, row, nearest[i], offer_scores[i], scores[i], hidden[i], kept[i])
            for i, (req, row) in enumerate(zip(requests, rows, strict=True))
        ]

    def _run_rows(
        self, rows: list[FeatureRow]
    ) -> tuple[list[list[float]], list[list[float]], list[dict[str, float]]]:
        """One ONNX run for ``rows``: per row the segment distances, the offer scores and the
        predictive scores (supervised, buy-till-you-die and adjusted)."""
        np = self._np
        matrix = np.array([r.values for r in rows], dtype=np.float32)
        distances, probas, *outputs = self._run(matrix)
        n_scores = len(self._score_models)
        scores = row_scores(np, self._score_names, outputs[:n_scores], len(rows))
        if self._btyd is not None:
            etas = {
                score: np.asarray(out, dtype=np.float64).reshape(len(rows), -1)[:, 0]
                for (score, _, _), out in zip(self._adjust_models, outputs[n_scores:], strict=True)
            }
            self._add_btyd_scores(rows, scores, etas)
        # float32 to Python floats: the same values as through float64 (widening is exact)
        return np.asarray(distances).tolist(), np.asarray(probas).tolist(), scores

    def _add_btyd_scores(
        self, rows: list[FeatureRow], scores: list[dict[str, float]], etas: dict[str, Any]
    ) -> None:
        """Add the bundle's buy-till-you-die scores to the rows of customers with a purchase
        (:func:`sdk.btyd.score_customers` on :func:`sdk.btyd.purchase_summary` of each row's
        behaviour: the same definition ``tailor train`` fitted and ``tailor score`` uses)."""
        from sdk.btyd import purchase_summary, score_customers  # numpy: only with such models

        assert self._btyd is not None
        behaviors = [r.behavior for r in rows]
        summary = purchase_summary(
            [b.purchases for b in behaviors],
            [b.revenue for b in behaviors],
            [b.days_since_first_purchase for b in behaviors],
            [b.days_since_last_purchase for b in behaviors],
            self._btyd.unit_days,
        )
        if not summary.known.any():
            return
        values = score_customers(self._btyd, summary, etas=etas)
        for name in self._btyd_names:
            if name not in values:
                continue
            for i, v in enumerate(values[name].tolist()):
                if v == v:  # not NaN: a customer with a purchase
                    scores[i][name] = round6(max(v, 0.0))

    def _profile(
        self,
        req: DecideRequest,
        row: FeatureRow,
        persona: str | None,
        probas: list[float],
        suppressed: frozenset[str],
    ) -> tuple[Lifecycle, dict[str, Any], list[RankedOffer]]:
        """What a decision says of the visitor besides its persona (``persona``: its id, None
        without personalization consent), before its slots and experiments: the lifecycle
        stage, the rule attributes and the ranked offers (the one definition :meth:`decide`
        and :meth:`profile_many` share)."""
        facts = lifecycle_facts(row.behavior)
        lifecycle = self._rules.lifecycle(facts) if persona is not None else CONSENT_LIFECYCLE
        attributes = decision_attributes(req, row, persona, lifecycle.stage, facts)
        return lifecycle, attributes, self._rules.rank(probas, attributes, suppressed)

    def profile_many(self, requests: list[DecideRequest]) -> list[CustomerRow]:
        """What :meth:`decide_many` answers of each visit's customer, without building the
        decision: segment, persona, lifecycle stage, RFM code, scores and the top offer (no
        slots, experiments, reasons or ids, which a customer table does not hold). The same
        functions as :meth:`decide`, so each row equals the decision's fields (for
        ``tailor score``)."""
        if self.sensitivity:
            requests = [self.sensitivity.scrub_request(r) for r in requests]
        rows = self._rows(requests, None)
        if not rows:
            return []
        distances, probas, scores = self._run_rows(rows)
        rfm = self.bundle.manifest.rfm
        out: list[CustomerRow] = []
        for i, (req, row) in enumerate(zip(requests, rows, strict=True)):
            personalized = permissions(req.consent).personalize
            segment = self._personas.segment_of(distances[i]) if personalized else None
            persona = self._personas.persona_of(segment) if segment is not None else None
            lifecycle, _, ranked = self._profile(req, row, persona, probas[i], frozenset())
            out.append(
                CustomerRow(
                    segment=segment,
                    persona=persona,
                    lifecycle=lifecycle.stage,
                    rfm_code=r.code
                    if personalized and (r := rfm_result(rfm, row.behavior)) is not None
                    else None,
                    scores=scores[i] if personalized else {},
                    top_offer=ranked[0].id if ranked else None,
                )
            )
        return out

    def _context_reason(self, referrer: str, source: str | None, device: str) -> Reason:
        """How the visitor arrived (built once per referrer class, source and device)."""
        key = (referrer, source, device)
        made = self._context_reasons.get(key)
        if made is None:
            made = Reason(
                code="context.referrer",
                message=f"arrived via {referrer}"
                + (f" ({source})" if source else "")
                + f" on a {device}",
            )
            if len(self._context_reasons) < self._context_limit:
                self._context_reasons[key] = made
        return made

    def _finish(
        self,
        req: DecideRequest,
        row: FeatureRow,
        nearest: Nearest,
        probas: list[float],
        scores: dict[str, float],
        suppressed: frozenset[str] = frozenset(),
        sticky: Mapping[str, str] | None = None,
    ) -> Decision:
        personalized = permissions(req.consent).personalize
        persona: PersonaResult | None = None
        segment: SegmentResult | None = None
        if personalized:
            persona, segment = self._personas.describe(nearest)
        lifecycle, attributes, ranked = self._profile(
            req, row, persona.id if persona else None, probas, suppressed
        )
        if persona is not None and segment is not None:
            reasons = [
                self._personas.reason(persona, segment),
                self._rules.lifecycle_reason(lifecycle),
            ]
        else:
            reasons = [_NO_CONSENT]
        reasons += self._rules.offer_reasons(ranked, suppressed)
        signals = row.signals
        reasons.append(
            self._context_reason(
                signals.referrer_class, signals.referrer_source, signals.device_type
            )
        )
        wanted = req.slots or self._variants.ids
        attributes["visitorId"] = req.visitor_id
        attributes["userId"] = req.user_id
        attributes["sessionId"] = req.session_id
        attributes["segment"] = segment.id if segment is not None else None
        plan = self._policy.assign(attributes, wanted, personalized, sticky)
        if plan.holdout:
            reasons.append(self._policy.holdout_reason())
        exploration = self._policy.exploration(req, segment.id if segment else None, personalized)
        slots = self._variants.decide(wanted, plan, ranked, attributes, exploration, reasons)
        return Decision(
            decision_id=self._new_id(),
            model_version=self._model_version,
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
            rfm=rfm_result(self._rfm, row.behavior) if personalized else None,
            experiment=plan.arms or None,
        )
