"""Personas grounded in the data (``model_export/fit/personas.py``): a template's name only
where its facts hold, otherwise a name and description built from the segment's numbers."""

from __future__ import annotations

import math

import numpy as np

from model_export.fit.personas import describe_segments, facts_hold, generated_persona
from model_export.inputs.catalogue import FeatureBound, PersonaTemplate

WINDOW = PersonaTemplate(
    id="window_shoppers",
    name="Window shoppers",
    description="Look around without buying.",
    signature={"page_views_log": 0.5, "purchases_log": -1.0},
    requires={"purchases_log": FeatureBound(max=0.1823)},
)
EMAIL = PersonaTemplate(
    id="bargain_hunters",
    name="Bargain hunters",
    description="Arrive from email.",
    signature={"ref_email": 1.0, "aov_log": -0.5},
)


def test_facts_need_measured_main_features_lifts_and_bounds() -> None:
    lift = {"purchases_log": -1.0, "ref_email": 0.0}
    assert facts_hold(WINDOW, {"purchases_log": 0.1}, lift, {"purchases_log"})
    # fewer purchases than the others, but everyone bought: the bound fails
    assert not facts_hold(WINDOW, {"purchases_log": 0.7}, lift, {"purchases_log"})
    # the lift is too small to call it a difference
    assert not facts_hold(
        WINDOW, {"purchases_log": 0.1}, {"purchases_log": -0.1}, {"purchases_log"}
    )
    # a main feature the data does not measure is no evidence, and a bound on it cannot hold
    assert not facts_hold(EMAIL, {"ref_email": 0.0}, {"ref_email": 0.0}, {"purchases_log"})
    assert not facts_hold(WINDOW, {"purchases_log": 0.1}, lift, set())


def test_segments_no_template_fits_get_their_own_numbers_and_overrides_still_win() -> None:
    rng = np.random.default_rng(0)
    # two groups of buyers: 1 order of ~80 long ago, and ~4 orders of ~20 recently;
    # the email column is constant (not measured)
    n = 200
    one = np.c_[
        np.full(n, math.log1p(1)),
        rng.normal(math.log1p(80), 0.05, n),
        rng.normal(240, 5, n),
        np.zeros(n),
    ]
    four = np.c_[
        np.full(n, math.log1p(4)),
        rng.normal(math.log1p(20), 0.05, n),
        rng.normal(20, 5, n),
        np.zeros(n),
    ]
    x = np.vstack([one, four])
    labels = np.array([0] * n + [1] * n)
    features = ["purchases_log", "aov_log", "recency_days", "ref_email"]
    personas, segments = describe_segments(x, labels, features, [WINDOW, EMAIL])
    assert [s.persona for s in segments] == ["segment_0", "segment_1"]
    by_id = {p.id: p for p in personas}
    assert by_id["segment_0"].name == "One-time buyers, higher order value, lapsed 8 months"
    assert by_id["segment_1"].name == "Frequent buyers, lower order value, bought recently"
    assert "4.0 purchases per customer" in by_id["segment_1"].description
    assert "email" not in " ".join(p.description for p in personas)
    assert segments[0].lift["ref_email"] == 0.0
    # a segment whose facts hold takes the template's name, and an override renames it
    browsing = np.c_[np.zeros(n), np.zeros(n), np.full(n, 0.0), np.zeros(n)]
    x2 = np.vstack([browsing, four])
    personas, segments = describe_segments(
        x2, labels, features, [WINDOW, EMAIL], {"window_shoppers": ("Lookers", None)}
    )
    assert segments[0].persona == "window_shoppers"
    assert {p.id: p.name for p in personas}["window_shoppers"] == "Lookers"


def test_a_generated_description_states_only_measured_numbers() -> None:
    pid, name, text = generated_persona(
        3, {"purchases_log": math.log1p(0.0), "page_views_log": math.log1p(6)}, {}
    )
    assert (pid, name) == ("segment_3", "Browsers without purchases")
    assert text == "On average 0.0 purchases per customer, 6.0 pages a visit."
