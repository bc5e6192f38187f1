"""The segment model: median imputation, standard scaling and KMeans over the segment features,
with k chosen by silhouette and stability; and the parameters of a training run.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans
from sklearn.impute import SimpleImputer
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sdk.features import FEATURE_SET_VERSION

__all__ = ["SEGMENT_FEATURES", "Progress", "TrainConfig", "fit_segments", "segment_recovery"]

#: Features the segments are learned from: RFM, engagement, search, cart and acquisition.
SEGMENT_FEATURES: tuple[str, ...] = (
    "page_views_log",
    "sessions_log",
    "purchases_log",
    "revenue_log",
    "aov_log",
    "recency_days",
    "days_since_visit",
    "searches_log",
    "search_fail_ratio",
    "cart_items_log",
    "cart_value_log",
    "first_visit",
    "device_mobile",
    "ref_direct",
    "ref_search",
    "ref_social",
    "ref_email",
)
Progress = Callable[[str], None]


@dataclass
class TrainConfig:
    """Parameters of one training run."""

    seed: int = 7
    feature_set_version: str = FEATURE_SET_VERSION
    k: int | None = None
    k_min: int = 3
    k_max: int = 8
    holdout: float = 0.2
    silhouette_sample: int = 3000
    seeds: int = 3
    min_stability: float = 0.6
    min_share: float = 0.02
    min_group_size: int = 10


def _segment_pipeline(k: int, seed: int) -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("kmeans", KMeans(n_clusters=k, n_init=8, random_state=seed)),
        ]
    )


def _stability(sample: npt.NDArray[np.float64], k: int, seeds: Sequence[int]) -> float:
    """Mean pairwise adjusted Rand index between KMeans fits that differ only by seed: 1.0
    when every seed finds the same partition, near 0 when the partition is arbitrary."""
    labels = [_segment_pipeline(k, s).fit(sample)[-1].labels_ for s in seeds]
    pairs = [
        adjusted_rand_score(labels[i], labels[j])
        for i in range(len(labels))
        for j in range(i + 1, len(labels))
    ]
    return float(np.mean(pairs)) if pairs else 1.0


def fit_segments(
    x: npt.NDArray[np.float64], config: TrainConfig, progress: Progress | None = None
) -> tuple[Pipeline, dict[str, float]]:
    """Fit the segment pipeline. Unless ``config.k`` fixes k, every k in [k_min, k_max] is
    scored on a sample by silhouette and by stability over ``config.seeds`` seeds; the k with
    the best silhouette among those at least ``config.min_stability`` stable wins (the most
    stable k when none is). Then, while a segment holds less than ``config.min_share`` of the
    rows or fewer than ``config.min_group_size`` rows, k is lowered and the model refitted:
    tiny segments are merged away rather than shipped (over-segmenting is the classic failure;
    a segment under k customers would also describe too few people, see ``docs/training.md``).
    At k = 2 the fit is kept as it is; the manifest then leaves the small segment's traits out.

    Args:
        x: rows restricted to the segment features (float64; NaN is imputed).
        config: the run's configuration.
        progress: called with a short message per step.
    """
    rng = np.random.default_rng(config.seed)
    sample = x[rng.choice(len(x), size=min(config.silhouette_sample, len(x)), replace=False)]
    seeds = [config.seed + i for i in range(max(config.seeds, 1))]
    metrics: dict[str, float] = {}
    if config.k is not None:
        best_k = config.k
    else:
        candidates: list[tuple[int, float, float]] = []
        for k in range(config.k_min, config.k_max + 1):
            pipe = _segment_pipeline(k, config.seed).fit(sample)
            transformed = pipe[:-1].transform(sample)
            score = float(silhouette_score(transformed, pipe[-1].labels_))
            stable = _stability(sample, k, seeds) if len(seeds) > 1 else 1.0
            metrics[f"silhouette_k{k}"] = round(score, 4)
            metrics[f"stability_k{k}"] = round(stable, 4)
            candidates.append((k, score, stable))
            if progress:
                progress(f"k={k}: silhouette {score:.3f}, stability {stable:.3f}")
        ok = [c for c in candidates if c[2] >= config.min_stability]
        best_k = max(ok, key=lambda c: c[1])[0] if ok else max(candidates, key=lambda c: c[2])[0]
    k = best_k
    pipe = _segment_pipeline(k, config.seed).fit(x)
    merged = 0
    smallest = max(config.min_share * len(x), config.min_group_size)
    while k > 2:
        sizes = np.bincount(pipe[-1].labels_, minlength=k)
        if sizes.min() >= smallest:
            break
        k -= 1
        merged += 1
        if progress:
            progress(f"a segment holds {sizes.min()} rows < {smallest:.0f}: k={k}")
        pipe = _segment_pipeline(k, config.seed).fit(x)
    metrics["segments_k_selected"] = float(best_k)
    metrics["segments_merged"] = float(merged)
    metrics["segments_k"] = float(k)
    metrics["segments_inertia"] = float(pipe[-1].inertia_)
    return pipe, metrics


def segment_recovery(labels: Sequence[int], planted: Sequence[str]) -> float:
    """Adjusted Rand index between learned segments and planted personas."""
    return float(adjusted_rand_score(list(planted), list(labels)))
