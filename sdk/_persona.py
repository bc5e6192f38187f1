"""The persona step of a decision: nearest segment, persona affinities and model scores.

:class:`Personas` turns a row of segment distances into the nearest segment and the persona
affinities (a softmax over negative squared distances, summed per persona), and describes them
as the decision's persona, segment and reason. :func:`row_scores` and :func:`rfm_result` give
the optional predictive and RFM scores. Plain Python, so every batch size gives the same bits.

Must import only the standard library and sdk (numpy arrays are passed in, never imported).
"""

from __future__ import annotations

import math
from typing import Any

from sdk._exact import round4, round6
from sdk.manifest import Manifest, RfmDef
from sdk.rfm import score_rfm
from sdk.schema import Behavior, PersonaResult, Reason, RfmResult, SegmentResult

__all__ = ["Nearest", "Personas", "rfm_result", "row_scores"]

#: The nearest segment, its distance and the affinity of every persona (manifest order).
Nearest = tuple[int, float, list[float]]


class Personas:
    """A bundle's segment -> persona table and affinity temperature.

    Args:
        manifest: the bundle's manifest.
    """

    def __init__(self, manifest: Manifest) -> None:
        self._temperature = manifest.affinity_temperature
        self._personas = {p.id: p for p in manifest.personas}
        self._segment_persona = {s.id: s.persona for s in manifest.segments}
        self.ids = list(self._personas)
        by_id = {seg.id: self.ids.index(seg.persona) for seg in manifest.segments}
        self._segment_persona_index = [by_id[i] for i in range(len(manifest.segments))]

    def nearest(self, distances: list[float]) -> Nearest:
        """The nearest segment, its distance and the persona affinities: a softmax over
        negative squared distances (temperature from the manifest), summed per persona."""
        t = self._temperature
        best = self.segment_of(distances)
        logits = [-(d * d) / t for d in distances]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        total = math.fsum(weights)
        affinities = [0.0] * len(self.ids)
        for persona, w in zip(self._segment_persona_index, weights, strict=True):
            affinities[persona] += w / total
        return best, distances[best], affinities

    def segment_of(self, distances: list[float]) -> int:
        """The nearest segment (the first of equals)."""
        return distances.index(min(distances))

    def persona_of(self, segment: int) -> str:
        """The persona id of ``segment``."""
        return self._segment_persona[segment]

    def describe(self, nearest: Nearest) -> tuple[PersonaResult, SegmentResult]:
        """The decision's persona and segment for ``nearest``."""
        seg_id, distance, weights = nearest
        affinities = {p: round6(w) for p, w in zip(self.ids, weights, strict=True)}
        pid = self.persona_of(seg_id)
        persona = PersonaResult(id=pid, name=self._personas[pid].name, affinities=affinities)
        return persona, SegmentResult(id=seg_id, distance=round6(distance))

    def reason(self, persona: PersonaResult, segment: SegmentResult) -> Reason:
        """The reason naming the persona and segment :meth:`describe` gave."""
        return Reason(
            code="persona.nearest_segment",
            message=f"closest to segment {segment.id} ({persona.name}), "
            f"affinity {persona.affinities[persona.id]:.2f}",
        )


def row_scores(np: Any, names: list[str], outputs: list[Any], n: int) -> list[dict[str, float]]:
    """Predictive scores per row: a classifier's positive-class probability, or a regressor's
    prediction (never negative), named ``names[i]`` for ``outputs[i]``; ``np`` is numpy."""
    per_row: list[dict[str, float]] = [{} for _ in range(n)]
    for score, output in zip(names, outputs, strict=True):
        values = np.asarray(output, dtype=np.float64)
        column = (values[:, -1] if values.ndim == 2 else values).tolist()
        for i in range(n):
            per_row[i][score] = round6(max(column[i], 0.0))
    return per_row


def rfm_result(edges: RfmDef | None, behavior: Behavior) -> RfmResult | None:
    """The visit's RFM scores from the bundle's learned edges (None without them)."""
    if edges is None:
        return None
    s = score_rfm(edges, behavior.days_since_last_purchase, behavior.purchases, behavior.revenue)
    return RfmResult(code=s.code, r=s.r, f=s.f, m=s.m, score=round4(s.score))
