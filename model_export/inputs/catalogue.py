"""The offer/slot catalogue, lifecycle rules, persona templates, sensitive categories and paths
and serving options that go into a bundle, read from JSON (``model_export/data/catalogue.json``
by default) and validated with the manifest's own Structs; a rule that targets a sensitive
category or path is refused when the catalogue is loaded (:mod:`model_export.inputs.sensitive`).

Must not import server.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import msgspec

from model_export.inputs.sensitive import check_catalogue
from sdk.manifest import (
    ExperimentDef,
    ExplorationDef,
    HoldoutDef,
    LifecycleDef,
    OfferDef,
    PublicScore,
    SensitiveDef,
    SlotDef,
)
from sdk.sensitive import Sensitivity

__all__ = ["Catalogue", "PersonaTemplate", "ServingDef", "check_sensitive", "load_catalogue"]


class FeatureBound(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bound on a segment's centroid value of one feature, in the feature's own units."""

    min: float | None = None
    max: float | None = None


class PersonaTemplate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A persona a segment can be named after, with its signature: weights over the z-scores
    of a segment's centroid (how far the segment sits from the population on each feature).

    The name is used only when its facts hold for the segment
    (:func:`model_export.fit.personas.facts_hold`): every main signature feature (weight of
    0.7 or more) that the data measures lies at least 0.25 standard deviations from the
    population in the signature's direction, at least one of them is measured, and the
    centroid meets every bound of ``requires``."""

    id: str
    name: str
    description: str
    signature: dict[str, float]
    requires: dict[str, FeatureBound] = {}


class ServingDef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the server may answer beyond the decision's content.

    ``public_scores``: the profile-derived scores (``"rfm"`` and the keys of
    ``Decision.scores``: ``churnProbability``, ``expectedPurchases``, ``expectedValue``) that
    public keys may receive, because a page needs them; none by default. Copied into the
    manifest's ``publicScores``.
    """

    public_scores: list[PublicScore] = []


class Catalogue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a bundle needs besides the models.

    ``sensitive`` lists the categories and URL path prefixes that never enter a profile, a
    feature row, the log or a rule (see :class:`sdk.manifest.SensitiveDef`).
    """

    version: int
    offers: list[OfferDef]
    slots: list[SlotDef]
    lifecycle: LifecycleDef
    personas: list[PersonaTemplate]
    experiments: list[ExperimentDef] = []
    holdout: HoldoutDef | None = None
    exploration: ExplorationDef | None = None
    sensitive: SensitiveDef = SensitiveDef()
    serving: ServingDef = ServingDef()


def check_sensitive(catalogue: Catalogue) -> Catalogue:
    """``catalogue`` itself once no rule or persona signature targets one of its sensitive
    categories or paths.

    Raises:
        model_export.inputs.sensitive.SensitiveTargetingError: naming each offending rule.
    """
    check_catalogue(
        catalogue,
        Sensitivity.from_def(catalogue.sensitive),
        {p.id: p.signature for p in catalogue.personas},
    )
    return catalogue


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Load and validate a catalogue file; the packaged demo catalogue when ``path`` is None.

    Raises:
        msgspec.ValidationError: unknown keys or wrong types, with the path of the key.
        model_export.inputs.sensitive.SensitiveTargetingError: a rule targets a sensitive
            category or path.
    """
    if path is None:
        raw = resources.files("model_export").joinpath("data/catalogue.json").read_bytes()
    else:
        raw = Path(path).read_bytes()
    return check_sensitive(msgspec.json.decode(raw, type=Catalogue))
