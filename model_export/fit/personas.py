"""Name learned segments as personas: by a catalogue template where its facts hold for the
segment, else by the segment's own most distinctive measured features, in plain words.

A template's facts (:func:`facts_hold`) are its main signature features and its ``requires``
bounds. A feature the data does not measure (the same value for every customer, as referrers
and devices in an order export) is no evidence either way: it neither supports a template
nor appears in a generated description. Lifts are z-scores of the segment's centroid against
the population; a difference below :data:`MIN_DIFFERENCE` in the feature's units counts as
none, so a feature that is all but constant cannot dominate by a tiny standard deviation.

Must not import server.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from model_export.inputs.catalogue import PersonaTemplate
from sdk.manifest import PersonaDef, SegmentDef

__all__ = [
    "MIN_DIFFERENCE",
    "MIN_LIFT",
    "assign_personas",
    "describe_segments",
    "facts_hold",
    "generated_persona",
    "template_score",
]

#: How far (in standard deviations) a main signature feature must sit in the signature's
#: direction for the template's name to be used.
MIN_LIFT = 0.25
#: The weight from which a signature feature is one of the template's main facts.
MAIN_WEIGHT = 0.7
#: A centroid this close to the population mean (in the feature's units) has no lift.
MIN_DIFFERENCE = 0.01
#: Lifts are clipped to this many standard deviations.
MAX_LIFT = 10.0


def template_score(zscores: Mapping[str, float], template: PersonaTemplate) -> float:
    """How well a segment matches a persona template: the template's signature weights summed
    over the segment centroid's z-scores (centroid minus population mean, over its std)."""
    return sum(w * zscores.get(name, 0.0) for name, w in template.signature.items())


def facts_hold(
    template: PersonaTemplate,
    centroid: Mapping[str, float],
    lift: Mapping[str, float],
    measured: Collection[str],
) -> bool:
    """Whether a template's name is true of a segment: each main signature feature (weight of
    magnitude :data:`MAIN_WEIGHT` or more) that the data ``measured`` lifts by
    :data:`MIN_LIFT` or more in the weight's direction, at least one main feature is measured,
    and the centroid meets every bound of ``template.requires`` (a bound on a feature the data
    does not measure fails: the fact cannot be shown)."""
    main = [(f, w) for f, w in template.signature.items() if abs(w) >= MAIN_WEIGHT]
    shown = [(f, w) for f, w in main if f in measured]
    if not shown:
        return False
    if any(lift.get(f, 0.0) * (1 if w > 0 else -1) < MIN_LIFT for f, w in shown):
        return False
    for feature, bound in template.requires.items():
        value = centroid.get(feature)
        if feature not in measured or value is None:
            return False
        if (bound.min is not None and value < bound.min) or (
            bound.max is not None and value > bound.max
        ):
            return False
    return True


def assign_personas(
    segment_zscores: Sequence[Mapping[str, float]],
    templates: Sequence[PersonaTemplate],
    allowed: Sequence[Collection[str]] | None = None,
) -> list[str | None]:
    """The persona template id of each segment, in segment order (None: no template fits).

    Segments and templates are paired greedily by highest score, each template used once,
    among the pairs ``allowed`` (per segment, the template ids whose facts hold; every pair
    when None). Without ``allowed``, a segment left over takes its best-scoring template
    again; with it, a segment left over gets None (a generated persona)."""
    scores = [[template_score(z, t) for t in templates] for z in segment_zscores]
    pairs = sorted(
        (
            (scores[s][t], s, t)
            for s in range(len(scores))
            for t in range(len(templates))
            if allowed is None or templates[t].id in allowed[s]
        ),
        reverse=True,
    )
    chosen: dict[int, int] = {}
    used: set[int] = set()
    for _, s, t in pairs:
        if s not in chosen and t not in used:
            chosen[s] = t
            used.add(t)
    if allowed is None:
        for s in range(len(scores)):
            if s not in chosen:
                row = scores[s]
                chosen[s] = max(range(len(templates)), key=row.__getitem__)
    return [templates[chosen[s]].id if s in chosen else None for s in range(len(scores))]


def _months(days: float) -> str:
    months = days / 30.44
    return f"{months:.0f} months" if months >= 1.5 else f"{days:.0f} days"


def generated_persona(
    segment: int, centroid: Mapping[str, float], lift: Mapping[str, float]
) -> tuple[str, str, str]:
    """An id, name and description for a segment no template fits, stating only what its
    centroid shows: purchases per customer, order value against the population, and time
    since the last purchase (from the measured purchase features; browsing features when the
    segment has no purchases)."""
    purchases = math.expm1(centroid.get("purchases_log", 0.0))
    parts: list[str] = []
    facts: list[str] = []
    if purchases < 0.2:
        parts.append("Browsers without purchases")
    elif purchases < 1.5:
        parts.append("One-time buyers")
    elif lift.get("purchases_log", 0.0) >= MIN_LIFT:
        parts.append("Frequent buyers")
    else:
        parts.append("Repeat buyers")
    facts.append(f"{purchases:.1f} purchases per customer")
    aov_lift = lift.get("aov_log", 0.0)
    if "aov_log" in centroid and purchases >= 0.2:
        aov = math.expm1(centroid["aov_log"])
        if aov_lift >= MIN_LIFT:
            parts.append("higher order value")
        elif aov_lift <= -MIN_LIFT:
            parts.append("lower order value")
        facts.append(f"an average order of {aov:.2f}")
    recency = centroid.get("recency_days")
    if recency is not None and purchases >= 0.2:
        if lift.get("recency_days", 0.0) >= MIN_LIFT:
            parts.append(f"lapsed {_months(recency)}")
        elif lift.get("recency_days", 0.0) <= -MIN_LIFT:
            parts.append("bought recently")
        facts.append(f"the last purchase {_months(recency)} ago")
    pages = centroid.get("page_views_log")
    if purchases < 0.2 and pages is not None:
        facts.append(f"{math.expm1(pages):.1f} pages a visit")
    name = ", ".join(parts)
    description = "On average " + ", ".join(facts) + "."
    return f"segment_{segment}", name, description


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
    against the population (see the module). Each segment is named by the best-scoring
    template whose facts hold for it (:func:`facts_hold`; each template once), else by
    :func:`generated_persona`; ``overrides`` maps a template id to a marketer's (name,
    description) and wins over the template's own.

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
    std_raw = np.sqrt((np.where(known_all, x - mean, 0.0) ** 2).sum(axis=0) / n_known)
    std = np.where(std_raw > 0, std_raw, 1.0)
    centroids, zscores, sizes = [], [], []
    # a feature is measured when the data holds more than one value of it
    spread = [float(v) for v in std_raw]
    measured = {f for f, sd in zip(features, spread, strict=True) if sd > 0}
    for s in range(k):
        members = x[labels == s]
        known = ~np.isnan(members)
        counts = known.sum(axis=0)
        totals = np.where(known, members, 0.0).sum(axis=0)
        centre = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        centroids.append({f: v for f, v in zip(features, centre.tolist(), strict=True) if v == v})
        diff = np.nan_to_num(centre - mean, nan=0.0)
        z = np.clip(np.where(np.abs(diff) < MIN_DIFFERENCE, 0.0, diff / std), -MAX_LIFT, MAX_LIFT)
        zscores.append(dict(zip(features, z.tolist(), strict=True)))
        sizes.append(len(members))
    allowed = [
        {t.id for t in templates if facts_hold(t, centroids[s], zscores[s], measured)}
        for s in range(k)
    ]
    chosen = assign_personas(zscores, templates, allowed)
    by_id = {t.id: t for t in templates}
    persona_ids: list[str] = []
    personas: list[PersonaDef] = []
    for s, pid in enumerate(chosen):
        if pid is None:
            shown = {f: z for f, z in zscores[s].items() if f in measured}
            pid, name, description = generated_persona(s, centroids[s], shown)
        else:
            name, description = by_id[pid].name, by_id[pid].description
            if pid in overrides:
                name = overrides[pid][0]
                description = overrides[pid][1] or description
        persona_ids.append(pid)
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
