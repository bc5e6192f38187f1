"""The next-best-offer model learned from labelled rows (impute, scale, multinomial logistic
regression) and its held-out metrics against the most popular offer.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["fit_offers", "offer_metrics"]


def fit_offers(x: npt.NDArray[np.float64], y: Sequence[str], seed: int) -> Pipeline:
    """Fit the next-best-offer pipeline: impute, scale, multinomial logistic regression."""
    pipe = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=1.0, max_iter=2000, random_state=seed)),
        ]
    )
    return pipe.fit(x, list(y))


def offer_metrics(
    pipe: Pipeline, x: npt.NDArray[np.float64], y: Sequence[str], train_y: Sequence[str]
) -> dict[str, float]:
    """Held-out top-1/top-3 accuracy and log loss of the offer model, against the baseline of
    always showing the most popular offer."""
    classes = list(pipe.classes_)
    proba = pipe.predict_proba(x)
    order = np.argsort(-proba, axis=1)
    truth = np.asarray([classes.index(v) for v in y])
    top1 = float(np.mean(order[:, 0] == truth))
    top3 = float(np.mean([t in row[:3] for t, row in zip(truth, order, strict=True)]))
    popular = max(set(train_y), key=list(train_y).count)
    baseline = float(np.mean([v == popular for v in y]))
    return {
        "offers_top1_accuracy": round(top1, 4),
        "offers_top3_accuracy": round(top3, 4),
        "offers_log_loss": round(float(log_loss(truth, proba, labels=range(len(classes)))), 4),
        "offers_baseline_top1_accuracy": round(baseline, 4),
    }
