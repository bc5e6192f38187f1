"""The bundle manifest: the only contract between ``model_export`` and ``sdk``/``server``.

Manifest types forbid unknown fields (a typo in a catalogue or rule fails loudly), unlike wire
types. ``model_export`` writes a :class:`Manifest` with :data:`manifest_encoder`; the loader in
``sdk.bundle`` reads it with :data:`manifest_decoder`.

Must not import anything but the standard library, msgspec and ``sdk.schema``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "PUBLIC_SCORES",
    "ArmDef",
    "BgNbdDef",
    "BtydDef",
    "ContentDef",
    "ExperimentDef",
    "ExplorationDef",
    "FusedSpec",
    "GammaGammaDef",
    "HoldoutDef",
    "LifecycleDef",
    "LifecycleRule",
    "Manifest",
    "ModelIO",
    "ModelSpec",
    "NamespaceDef",
    "OfferDef",
    "PersonaDef",
    "RfmDef",
    "SegmentDef",
    "SensitiveDef",
    "SlotDef",
    "TrainingInfo",
    "VariantDef",
    "manifest_decoder",
    "manifest_encoder",
]

#: Version of the bundle directory layout and manifest. Readers accept only versions they know.
BUNDLE_FORMAT_VERSION = 1

Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Condition = dict[str, Any]


class _Config(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """Base of manifest types: immutable, camelCase, unknown fields are an error."""


class ModelIO(_Config, frozen=True, kw_only=True):
    """One ONNX input or output: name, element type and shape (None for a dynamic axis)."""

    name: str
    dtype: Literal["float32", "float64", "int64", "string"]
    shape: list[int | None]


class ModelSpec(_Config, frozen=True, kw_only=True):
    """One ONNX model of the bundle and the features (by name, in order) it consumes."""

    file: str
    features: list[str]
    inputs: list[ModelIO]
    outputs: list[ModelIO]


class FusedSpec(_Config, frozen=True, kw_only=True):
    """All of the bundle's models as one ONNX graph, so that serving makes one run per batch.

    Its input is the full feature row (``Manifest.feature_names``, in order); each model's
    columns are selected inside the graph. Output ``"{model}/{output}"`` is that model's output.
    Optional: bundles without it run each model on its own.
    """

    file: str
    inputs: list[ModelIO]
    outputs: list[ModelIO]


class PersonaDef(_Config, frozen=True, kw_only=True):
    """A human-readable persona that one or more segments map to."""

    id: Name
    name: str
    description: str


class SegmentDef(_Config, frozen=True, kw_only=True):
    """A learned segment: its persona and profile in original units."""

    id: int
    persona: Name
    size: int
    share: float
    centroid: dict[str, float]
    lift: dict[str, float]


class ContentDef(_Config, frozen=True, kw_only=True):
    """What a variant shows (see :class:`sdk.schema.Content`)."""

    type: Literal["text", "html", "image", "link"]
    text: str | None = None
    html: str | None = None
    image_url: str | None = None
    href: str | None = None
    alt: str | None = None


class OfferDef(_Config, frozen=True, kw_only=True):
    """An offer of the catalogue; ``eligibility`` is a condition over decision attributes."""

    id: Name
    name: str
    category: str | None = None
    eligibility: Condition = {}


class VariantDef(_Config, frozen=True, kw_only=True):
    """A slot variant: shown for ``offer`` when that offer ranks, or whenever ``when`` holds."""

    id: Name
    content: ContentDef
    offer: Name | None = None
    when: Condition = {}


class SlotDef(_Config, frozen=True, kw_only=True):
    """A page slot, its variants and the variant shown when nothing else applies."""

    id: Name
    default: Name
    variants: list[VariantDef]


class LifecycleRule(_Config, frozen=True, kw_only=True):
    """A lifecycle stage and the condition (over profile facts) that assigns it."""

    stage: Name
    when: Condition


class LifecycleDef(_Config, frozen=True, kw_only=True):
    """Lifecycle rules, evaluated in order; the first that matches wins."""

    rules: list[LifecycleRule]
    default: Name


class TrainingInfo(_Config, frozen=True, kw_only=True):
    """Where the training data came from and how good the models are.

    ``data`` summarises what was read and rejected per input; ``metrics`` are the held-out
    numbers; ``diagnostics`` holds what the model card plots (curves, importances, tables)."""

    data: dict[str, Any]
    rows: int
    metrics: dict[str, float]
    diagnostics: dict[str, Any] = {}


class RfmDef(_Config, frozen=True, kw_only=True):
    """RFM quintile edges learned from the customer base, so serving scores a profile the way
    training did. Each ``*_edges`` holds the 4 inner quintile boundaries, ascending. Recency
    scores 5 for the most recent fifth; frequency and monetary score 5 for the highest fifth.
    ``weights`` (keys r, f, m) define the weighted score sum(w*score)/sum(w), from 1 to 5."""

    recency_edges: Annotated[list[float], Meta(min_length=4, max_length=4)]
    frequency_edges: Annotated[list[float], Meta(min_length=4, max_length=4)]
    monetary_edges: Annotated[list[float], Meta(min_length=4, max_length=4)]
    weights: dict[str, float]


Share = Annotated[float, Meta(ge=0.0, le=1.0)]
Positive = Annotated[float, Meta(gt=0.0)]


class BgNbdDef(_Config, frozen=True, kw_only=True):
    """BG/NBD parameters (:class:`sdk.btyd.BgNbd`), time in the unit of :class:`BtydDef`."""

    r: Positive
    alpha: Positive
    a: Positive
    b: Positive


class ParetoNbdDef(_Config, frozen=True, kw_only=True):
    """Pareto/NBD parameters (:class:`sdk.btyd.ParetoNbd`), time in the unit of
    :class:`BtydDef`."""

    r: Positive
    alpha: Positive
    s: Positive
    beta: Positive


class GammaGammaDef(_Config, frozen=True, kw_only=True):
    """Gamma-Gamma spend parameters (:class:`sdk.btyd.GammaGamma`; ``q`` above 1)."""

    p: Positive
    q: Annotated[float, Meta(gt=1.0)]
    v: Positive


#: Decision scores a buy-till-you-die model can give (``pAlive`` always, the others when the
#: bundle has no supervised model for them).
BtydScore = Literal["churnProbability", "expectedPurchases", "expectedValue"]


class AdjustDef(_Config, frozen=True, kw_only=True):
    """A supervised adjustment of one buy-till-you-die score (:func:`sdk.btyd.adjust_score`):
    the bundle model ``model`` reads the customer's features and outputs ``eta``, a shift of
    the score on its link scale (log for expected purchases and value, log-odds of buying
    for the churn probability), bounded by :data:`sdk.btyd.ADJUST_BOUND`."""

    model: Name


class BtydDef(_Config, frozen=True, kw_only=True):
    """Buy-till-you-die models fitted on the purchase history before the cutoff
        (:mod:`sdk.btyd`): evaluated at serving time from a profile's purchases, revenue and
        purchase days, for customers with at least one purchase. ``serves`` lists the decision
        scores they provide (those without a supervised model in the bundle); ``pAlive`` is added
        whenever the models are present. With ``pareto_nbd``, the Pareto/NBD is the repeat-buying
    model evaluated (it fitted the history better than the BG/NBD, which is kept for the model
    card); without, the BG/NBD. ``adjusted`` lists the scores a supervised model shifts
        (:class:`AdjustDef`). Parameters are population aggregates: no customer's data."""

    unit_days: Positive
    horizon_days: Positive
    bgnbd: BgNbdDef
    pareto_nbd: ParetoNbdDef | None = None
    gamma_gamma: GammaGammaDef | None = None
    serves: list[BtydScore] = []
    adjusted: dict[BtydScore, AdjustDef] = {}


#: Profile-derived scores a bundle may let the server return to public keys: ``"rfm"`` and the
#: keys of ``Decision.scores`` (see ``sdk._decider.PREDICTIVE_SCORES``).
PUBLIC_SCORES = ("rfm", "churnProbability", "expectedPurchases", "expectedValue", "pAlive")
PublicScore = Literal["rfm", "churnProbability", "expectedPurchases", "expectedValue", "pAlive"]
#: A sensitive path prefix: starts with ``/`` and is more than slashes; no query or fragment.
PathPrefix = Annotated[str, Meta(max_length=256, pattern=r"^/+[^/?#\s][^?#\s]*$")]


class SensitiveDef(_Config, frozen=True, kw_only=True):
    """Product categories and page paths that must never enter a profile, a feature row, the
    log or a targeting rule (health, pregnancy, religion, financial hardship...).

    ``categories`` match case-insensitively; ``paths`` are URL path prefixes matched
    case-insensitively and by whole segments (``/health`` covers ``/health`` and
    ``/health/x``, not ``/healthy-snacks``). Names and prefixes are not personal data; the
    one definition of the matching is :class:`sdk.sensitive.Sensitivity`.
    """

    categories: list[Annotated[str, Meta(min_length=1, max_length=64)]] = []
    paths: list[PathPrefix] = []


class ArmDef(_Config, frozen=True, kw_only=True):
    """One arm of an experiment and what it shows in the experiment's slots.

    ``policy``: ``model`` (the personalized choice, with exploration), ``default`` (each slot's
    default variant: the generic experience) or ``variants`` (the fixed ``variants``,
    slot -> variant id; slots not listed get the personalized choice).
    """

    key: Name
    weight: Annotated[float, Meta(ge=0.0)] = 1.0
    policy: Literal["model", "default", "variants"] = "model"
    variants: dict[str, Name] = {}


class NamespaceDef(_Config, frozen=True, kw_only=True):
    """A share ``[start, end)`` of a namespace's hash space: experiments with disjoint ranges of
    one namespace never share a visitor (mutual exclusion)."""

    name: Name
    start: Share = 0.0
    end: Share = 1.0


class ExperimentDef(_Config, frozen=True, kw_only=True):
    """A declarative A/B/n test over some slots.

    A visitor is in it when ``status`` is running, ``condition`` holds over the decision
    attributes (persona, segment, lifecycle, context, behaviour), the ``hash_attribute``
    (an attribute path, ``visitorId`` by default) has a value, the visitor falls in the
    ``namespace`` range (if any) and within ``coverage``. The arm is then
    ``hash_unit(seed, value)`` (FNV-1a, :mod:`sdk.hashing`) against the cumulative weights:
    stable while the weights stay, and independent of other experiments (each has its own
    seed). The first arm is the control unless ``control`` names another.

    ``sticky``: the first arm a visitor is exposed to is stored (a shared store, with storage
    consent) and kept while the experiment runs and the arm exists, whatever later weights,
    coverage, targeting or namespace say. Bumping ``bucket_version`` re-randomises everyone on
    purpose: stored arms are keyed by :attr:`sticky_key`, and from version 2 on the draw's seed
    is ``<seed>/v<bucket_version>``.
    """

    key: Name
    arms: Annotated[list[ArmDef], Meta(min_length=2, max_length=26)]
    slots: list[Name] = []
    seed: str | None = None
    hash_attribute: str = "visitorId"
    coverage: Share = 1.0
    condition: Condition = {}
    namespace: NamespaceDef | None = None
    status: Literal["running", "stopped"] = "running"
    control: Name | None = None
    sticky: bool = False
    bucket_version: Annotated[int, Meta(ge=1)] = 1

    @property
    def sticky_key(self) -> str:
        """The stored arm's field: ``<key>:<bucket_version>``."""
        return f"{self.key}:{self.bucket_version}"


class HoldoutDef(_Config, frozen=True, kw_only=True):
    """The global holdout: a stable ``share`` of consenting visitors always gets the generic
    experience (every slot's default) and no experiment, so personalization's lift can be
    measured against it. Recorded as experiment ``holdout`` (arms ``holdout`` /
    ``personalized``)."""

    share: Annotated[float, Meta(ge=0.0, le=0.5)]
    seed: str = "tailor-holdout"


class ExplorationDef(_Config, frozen=True, kw_only=True):
    """Epsilon-greedy exploration of slot variants chosen by the model.

    With probability ``epsilon`` (per segment: ``by_segment`` overrides it) a decision shows a
    variant drawn uniformly from the slot's eligible candidates instead of the greedy one. The
    draw is a hash of the visit (visitor, session, slot): stable within a visit,
    uniform across visitors. Variants chosen by a marketer's targeting rule are not explored.
    Every slot decision carries its candidates with their probabilities.
    """

    epsilon: Share = 0.05
    by_segment: dict[str, Share] = {}


class Manifest(_Config, frozen=True, kw_only=True):
    """``manifest.json`` of a bundle."""

    format_version: int
    model_version: Name
    created_at: datetime
    schema_version: str
    feature_set_version: str
    feature_names: list[str]
    models: dict[str, ModelSpec]
    offer_classes: list[Name]
    personas: list[PersonaDef]
    segments: list[SegmentDef]
    affinity_temperature: Annotated[float, Meta(gt=0)]
    offers: list[OfferDef]
    slots: list[SlotDef]
    lifecycle: LifecycleDef
    training: TrainingInfo
    producer: dict[str, str]
    files: dict[str, Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]]
    experiments: list[ExperimentDef] = []
    holdout: HoldoutDef | None = None
    exploration: ExplorationDef | None = None
    rfm: RfmDef | None = None
    #: Buy-till-you-die models (None in bundles without a purchase history, or made before).
    btyd: BtydDef | None = None
    fused: FusedSpec | None = None
    #: What this bundle's decider scrubs from every request (empty in bundles made before it).
    sensitive: SensitiveDef = SensitiveDef()
    #: Profile-derived scores (:data:`PUBLIC_SCORES`) the server may return to public keys.
    public_scores: list[PublicScore] = []


manifest_encoder = msgspec.json.Encoder(order="deterministic")
manifest_decoder = msgspec.json.Decoder(Manifest)
