"""Feature rows for fitting: the serving feature function over many requests, and the columns of
a model's features in a full row.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from sdk.features import FEATURE_SET_VERSION, build_features, feature_names
from sdk.schema import Behavior, DecideRequest

__all__ = ["columns", "feature_matrix"]


def columns(names: Sequence[str], version: str = FEATURE_SET_VERSION) -> list[int]:
    """Column indexes of ``names`` in a full feature row of feature set ``version``."""
    index = {n: i for i, n in enumerate(feature_names(version))}
    return [index[n] for n in names]


def feature_matrix(
    requests: Sequence[DecideRequest],
    nows: Sequence[datetime],
    profiles: Sequence[Behavior | None] | None = None,
    version: str = FEATURE_SET_VERSION,
) -> npt.NDArray[np.float64]:
    """Full feature rows for many requests, through the serving feature function."""
    profiles = profiles if profiles is not None else [None] * len(requests)
    rows = [
        build_features(r, p, n, version).values
        for r, p, n in zip(requests, profiles, nows, strict=True)
    ]
    return np.asarray(rows, dtype=np.float64)
