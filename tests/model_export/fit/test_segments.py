from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score

from model_export.fit.segments import TrainConfig, _stability, fit_segments


def _blobs(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(len(sizes), 4))
    x = np.vstack([rng.normal(c, 1.0, size=(n, 4)) for c, n in zip(centres, sizes, strict=True)])
    y = np.repeat(np.arange(len(sizes)), sizes)
    return x, y


def test_k_is_chosen_by_silhouette_and_stability() -> None:
    x, y = _blobs([400, 400, 400, 400])
    pipe, metrics = fit_segments(x, TrainConfig(k_min=2, k_max=6, seeds=3))
    assert metrics["segments_k"] == 4
    assert metrics["stability_k4"] >= 0.95
    assert adjusted_rand_score(y, pipe[-1].labels_) > 0.95


def test_tiny_segments_are_merged_away() -> None:
    x, _ = _blobs([500, 500, 500], seed=3)
    outliers = np.random.default_rng(4).normal(60.0, 1.0, size=(10, 4))  # 0.7 % of rows
    x = np.vstack([x, outliers])
    _, metrics = fit_segments(x, TrainConfig(k=4, min_share=0.02))
    assert metrics["segments_k_selected"] == 4
    assert metrics["segments_merged"] >= 1
    assert metrics["segments_k"] <= 3


def test_structureless_data_is_less_stable_than_clustered_data() -> None:
    rng = np.random.default_rng(1)
    noise = rng.uniform(0, 1, size=(1200, 4))
    clustered, _ = _blobs([300, 300, 300, 300])
    assert _stability(noise, 6, [1, 2, 3]) < _stability(clustered, 4, [1, 2, 3])
