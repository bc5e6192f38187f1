"""k-suppression of group counts and the ``[privacy]`` training setting."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest

from model_export.fit.history import segment_traits
from model_export.fit.privacy import OTHER, merge_small, suppress_summary
from model_export.fit.segments import TrainConfig, fit_segments
from model_export.inputs.config import load_config


def test_small_groups_merge_into_other_and_a_small_other_is_dropped() -> None:
    assert merge_small({"a": 12, "b": 4, "c": 7}, 10) == {"a": 12, OTHER: 11}
    assert merge_small({"a": 12, "b": 4}, 10) == {"a": 12}
    assert merge_small({"a": 3, OTHER: 9}, 10) == {OTHER: 12}


def test_summary_loses_examples_and_small_counts() -> None:
    data = {
        "transactions": {
            "categories": {"home": 40, "rare": 2},
            "examples": {"negative_amount": ["tx.csv:4 'C001'"]},
        },
        "events": {"types": {"pageview": 90, "conversion": 3}},
        "cutoff": "2026-01-01",
    }
    out = suppress_summary(data, 10)
    assert out["transactions"] == {"categories": {"home": 40}}
    assert out["events"] == {"types": {"pageview": 90}}
    assert out["cutoff"] == "2026-01-01"


def test_segment_traits_leave_out_small_segments_and_values() -> None:
    tiers = ["gold"] * 30 + ["vip"] * 3 + ["silver"] * 12 + ["gold"] * 5
    frame = pl.DataFrame({"trait_tier": tiers})
    labels = np.asarray([0] * 45 + [1] * 5)
    out = segment_traits(frame, labels, ["tier"], min_group=10)
    assert set(out) == {"0"}
    assert out["0"]["tier"] == {"gold": round(30 / 45, 4), "silver": round(12 / 45, 4)}


def test_min_group_size_is_read_from_the_config_and_unknown_keys_are_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tailor.toml"
    path.write_text('[data]\ntransactions = "tx.csv"\n\n[privacy]\nmin_group_size = 25\n')
    assert load_config(path).privacy.min_group_size == 25
    path.write_text('[data]\ntransactions = "tx.csv"\n')
    assert load_config(path).privacy.min_group_size == 10
    path.write_text('[data]\ntransactions = "tx.csv"\n\n[privacy]\nk = 5\n')
    with pytest.raises(msgspec.ValidationError, match="privacy"):
        load_config(path)


def test_k_is_lowered_until_every_segment_holds_min_group_size_rows() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack(
        [
            rng.normal(0, 0.1, (200, 2)),
            rng.normal(5, 0.1, (200, 2)),
            rng.normal(-9, 0.1, (6, 2)),  # a tiny, far-away cluster
        ]
    )
    tiny = TrainConfig(k=3, min_share=0.0, min_group_size=1)
    assert np.bincount(fit_segments(x, tiny)[0][-1].labels_).min() == 6
    pipe, metrics = fit_segments(x, TrainConfig(k=3, min_share=0.0, min_group_size=10))
    assert metrics["segments_k"] == 2 and metrics["segments_merged"] == 1
    assert np.bincount(pipe[-1].labels_).min() >= 10
