"""Name learned segments as personas by documented rules.

Each persona template carries a *signature*: weights over features. A segment's score for a
template is the weighted sum of the segment centroid's z-scores (centroid minus population mean,
divided by population standard deviation, all in feature units). Segments and templates are
paired greedily by highest score, each template used once while unused templates remain; a
segment left over (more segments than templates) takes its best-scoring template again.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from model_export.catalogue import PersonaTemplate

__all__ = ["assign_personas", "template_score"]


def template_score(zscores: Mapping[str, float], template: PersonaTemplate) -> float:
    """How well a segment (by its centroid z-scores) matches a persona template."""
    return sum(w * zscores.get(name, 0.0) for name, w in template.signature.items())


def assign_personas(
    segment_zscores: Sequence[Mapping[str, float]], templates: Sequence[PersonaTemplate]
) -> list[str]:
    """Return the persona template id for each segment, in segment order."""
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
