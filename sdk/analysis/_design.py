"""The design of a bundle's experiments as the reports need it: arm weights and controls.

Must not import server or model_export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdk.manifest import Manifest

#: The experiment key (and control arm) of the global holdout (see ``sdk._policy``).
HOLDOUT = "holdout"
_PERSONALIZED = "personalized"


def design_of(manifest: Manifest) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """The arm weights and control arms of a bundle's experiments and holdout.

    Returns:
        ``(weights, controls)``: experiment key -> arm -> weight (manifest order, the first arm
        being the control unless ``control`` names another), and experiment key -> control
        arm. The holdout is ``{"holdout": share, "personalized": 1 - share}`` with control
        ``holdout``. Coverage scales every arm alike, so it does not change the split.
    """
    weights: dict[str, dict[str, float]] = {}
    controls: dict[str, str] = {}
    for exp in manifest.experiments:
        weights[exp.key] = {arm.key: float(arm.weight) for arm in exp.arms}
        controls[exp.key] = exp.control or exp.arms[0].key
    if manifest.holdout is not None and manifest.holdout.share > 0:
        share = float(manifest.holdout.share)
        weights[HOLDOUT] = {HOLDOUT: share, _PERSONALIZED: 1.0 - share}
        controls[HOLDOUT] = HOLDOUT
    return weights, controls
