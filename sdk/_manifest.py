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
    "ContentDef",
    "LifecycleDef",
    "LifecycleRule",
    "Manifest",
    "ModelIO",
    "ModelSpec",
    "OfferDef",
    "PersonaDef",
    "RfmDef",
    "SegmentDef",
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
    experiments: list[dict[str, Any]] = []
    rfm: RfmDef | None = None


manifest_encoder = msgspec.json.Encoder(order="deterministic")
manifest_decoder = msgspec.json.Decoder(Manifest)
