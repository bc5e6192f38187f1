"""The persona step on its own: nearest segment, affinities, predictive and RFM scores."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import numpy as np
import pytest

from sdk._persona import Personas, rfm_result, row_scores
from sdk.manifest import Manifest, RfmDef, manifest_decoder
from sdk.schema import Behavior

MANIFEST = (
    Path(__file__).resolve().parents[1] / "fixtures" / "recorded" / "bundle" / "manifest.json"
)


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return manifest_decoder.decode(MANIFEST.read_bytes())


def _softmax(distances: list[float], t: float) -> list[float]:
    weights = [math.exp(-(d * d) / t) for d in distances]
    return [w / sum(weights) for w in weights]


def test_nearest_segment_and_affinities_sum_per_persona(manifest: Manifest) -> None:
    personas = Personas(manifest)
    assert manifest.affinity_temperature == 4.0
    distances = [3.0, 2.5, 1.0, 4.0, 2.0, 5.0]
    best, distance, affinities = personas.nearest(distances)
    assert (best, distance) == (2, 1.0)
    # one segment per persona in this bundle, in persona order
    assert affinities == pytest.approx(_softmax(distances, 4.0), abs=1e-12)
    assert math.fsum(affinities) == pytest.approx(1.0)
    assert personas.ids == [p.id for p in manifest.personas]


def test_segments_of_one_persona_add_up(manifest: Manifest) -> None:
    segments = [msgspec.structs.replace(s, persona="researchers") for s in manifest.segments[:2]]
    merged = msgspec.structs.replace(manifest, segments=segments + manifest.segments[2:])
    personas = Personas(merged)
    distances = [1.0, 1.0, 3.0, 2.0, 3.0, 3.0]
    _, _, affinities = personas.nearest(distances)
    shares = dict(zip(personas.ids, affinities, strict=True))
    expected = _softmax(distances, 4.0)
    assert shares["researchers"] == pytest.approx(expected[0] + expected[1] + expected[3])
    assert shares["bargain_hunters"] == 0.0


def test_a_far_segment_does_not_overflow(manifest: Manifest) -> None:
    _, _, affinities = Personas(manifest).nearest([1e3, 1e3, 1.0, 1e3, 1e3, 1e3])
    assert affinities[2] == 1.0 and sum(affinities) == 1.0


def test_describe_names_the_persona_with_rounded_values(manifest: Manifest) -> None:
    personas = Personas(manifest)
    nearest = personas.nearest([3.0, 2.5, 1.1234567891, 4.0, 2.0, 5.0])
    persona, segment = personas.describe(nearest)
    reason = personas.reason(persona, segment)
    assert persona.id == "mobile_browsers" and persona.name == "Mobile browsers"
    assert segment.id == 2 and segment.distance == 1.123457
    assert persona.affinities["mobile_browsers"] == round(nearest[2][2], 6)
    assert list(persona.affinities) == personas.ids
    assert reason.code == "persona.nearest_segment"
    assert reason.message == (
        f"closest to segment 2 (Mobile browsers), affinity {nearest[2][2]:.2f}"
    )


def test_row_scores_read_probabilities_or_clipped_predictions() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    predictions = np.array([-0.5, 2.123456789], dtype=np.float32)
    rows = row_scores(np, ["churnProbability", "expectedValue"], [probabilities, predictions], 2)
    assert rows[0] == {"churnProbability": round(float(np.float32(0.1)), 6), "expectedValue": 0.0}
    assert rows[1]["churnProbability"] == round(float(np.float32(0.8)), 6)
    assert rows[1]["expectedValue"] == round(float(np.float32(2.123456789)), 6)
    assert row_scores(np, [], [], 3) == [{}, {}, {}]


def test_rfm_needs_the_bundles_edges() -> None:
    behavior = Behavior(purchases=4.0, revenue=300.0, days_since_last_purchase=10.0)
    assert rfm_result(None, behavior) is None
    edges = RfmDef(
        recency_edges=[15.0, 30.0, 60.0, 120.0],
        frequency_edges=[1.0, 2.0, 3.0, 5.0],
        monetary_edges=[50.0, 100.0, 200.0, 400.0],
        weights={"r": 0.4, "f": 0.3, "m": 0.3},
    )
    result = rfm_result(edges, behavior)
    assert result is not None
    assert (result.code, result.r, result.f, result.m) == ("R5F4M4", 5, 4, 4)
    assert result.score == round((0.4 * 5 + 0.3 * 4 + 0.3 * 4) / 1.0, 4)
