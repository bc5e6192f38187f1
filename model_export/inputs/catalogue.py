"""The offer/slot catalogue, lifecycle rules and persona templates that go into a bundle, read
from JSON (``model_export/data/catalogue.json`` by default) and validated with the manifest's
own Structs.

Must not import server.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import msgspec

from sdk.manifest import (
    ExperimentDef,
    ExplorationDef,
    HoldoutDef,
    LifecycleDef,
    OfferDef,
    SlotDef,
)

__all__ = ["Catalogue", "PersonaTemplate", "load_catalogue"]


class PersonaTemplate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A persona a segment can be named after, with its signature: weights over the z-scores
    of a segment's centroid (how far the segment sits from the population on each feature)."""

    id: str
    name: str
    description: str
    signature: dict[str, float]


class Catalogue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a bundle needs besides the models."""

    version: int
    offers: list[OfferDef]
    slots: list[SlotDef]
    lifecycle: LifecycleDef
    personas: list[PersonaTemplate]
    experiments: list[ExperimentDef] = []
    holdout: HoldoutDef | None = None
    exploration: ExplorationDef | None = None


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Load and validate a catalogue file; the packaged demo catalogue when ``path`` is None."""
    if path is None:
        raw = resources.files("model_export").joinpath("data/catalogue.json").read_bytes()
    else:
        raw = Path(path).read_bytes()
    return msgspec.json.decode(raw, type=Catalogue)
