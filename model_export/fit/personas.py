"""Name learned segments as personas by the signature rules of the catalogue's persona templates.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from model_export.inputs.catalogue import PersonaTemplate
from sdk.manifest import PersonaDef, SegmentDef

__all__ = ["assign_personas", "describe_segments", "template_score"]


def template_score(zscores: Mapping[str, float], template: PersonaTemplate) -> float:
    """How well a segment matches a persona template: the template's signature weights summed
    over the segment centroid's z-scores (centroid minus population mean, over its std)."""
    return sum(w * zscores.get(name, 0.0) for name, w in template.signature.items())


def assign_personas(
    segment_zscores: Sequence[Mapping[str, float]], templates: Sequence[PersonaTemplate]
) -> list[str]:
    """Return the persona template id for each segment, in segment order.

    Segments and templates are paired greedily by highest score, each template used once while
    unused templates remain; a segment left over takes its best-scoring template again."""
    scores = [[template_score(z, t) for t in templates] for z in segment_zscores]
    pairs = sorted(
        ((scores[s][t], s, t) for s in range(len(scores)) for t in range(len(templates))),
        reverse=True,
    )
    chosen: dict[int, int] = {}
    used: set[int] = set()
    for _, s, t in pairs:
        if s not in chosen and t not in used:
            chosen[s] = t
            used.add(t)
    for s in range(len(scores)):
        if s not in chosen:
            row = scores[s]
            chosen[s] = max(range(len(templates)), key=row.__getitem__)
    return [templates[chosen[s]].id for s in range(len(scores))]


def describe_segments(
    x: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int_],
    features: Sequence[str],
    templates: Sequence[PersonaTemplate],
    overrides: Mapping[str, tuple[str, str | None]] | None = None,
) -> tuple[list[PersonaDef], list[SegmentDef]]:
    """Profile each segment and name it.

    A segment's centroid is the mean of its members' known values in original feature units
    (a feature unknown for all members is left out); its lift is the centroid's z-score
    against the population. Personas come from :func:`assign_personas`; ``overrides`` maps a
    template id to a marketer's (name, description) and wins over the template's own.

    Args:
        x: the rows the segments were fitted on (segment features only, NaN for unknown).
        labels: the segment of each row.
        features: names of the columns of ``x``.
        templates: persona templates from the catalogue.
        overrides: optional renames by template id.
    """
    overrides = overrides or {}
    k = int(labels.max()) + 1 if len(labels) else 0
    known_all = ~np.isnan(x)
    n_known = np.maximum(known_all.sum(axis=0), 1)
    filled = np.where(known_all, x, 0.0)
    mean = filled.sum(axis=0) / n_known  # columns with no known value get mean 0, std 1
    std = np.sqrt((np.where(known_all, x - mean, 0.0) ** 2).sum(axis=0) / n_known)
    std[~(std > 0)] = 1.0
    centroids, zscores, sizes = [], [], []
    for s in range(k):
        members = x[labels == s]
        known = ~np.isnan(members)
        counts = known.sum(axis=0)
        totals = np.where(known, members, 0.0).sum(axis=0)
        centre = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        centroids.append({f: v for f, v in zip(features, centre.tolist(), strict=True) if v == v})
        z = np.nan_to_num((centre - mean) / std, nan=0.0)
        zscores.append(dict(zip(features, z.tolist(), strict=True)))
        sizes.append(len(members))
    persona_ids = assign_personas(zscores, templates)
    by_id = {t.id: t for t in templates}
    used = sorted(set(persona_ids), key=persona_ids.index)
    personas = []
    for pid in used:
        name, description = by_id[pid].name, by_id[pid].description
        if pid in overrides:
            name = overrides[pid][0]
            description = overrides[pid][1] or description
        personas.append(PersonaDef(id=pid, name=name, description=description))
    total = max(len(labels), 1)
    segments = [
        SegmentDef(
            id=s,
            persona=persona_ids[s],
            size=sizes[s],
            share=round(sizes[s] / total, 4),
            centroid={f: round(v, 4) for f, v in centroids[s].items()},
            lift={f: round(v, 3) for f, v in zscores[s].items()},
        )
        for s in range(k)
    ]
    return personas, segments
