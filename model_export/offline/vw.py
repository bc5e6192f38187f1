"""Export logged slot decisions as Vowpal Wabbit decision-service JSON (``tailor export-vw``).

The reward is the one :func:`model_export.offline.choices.read_choices` joins (click,
conversion or value).

Must not import server.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import msgspec

from model_export.offline.choices import LoggedChoice, LoggedData
from sdk.features import FEATURE_SPECS, feature_names

__all__ = ["VwExport", "export_vw", "vw_line"]

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class VwExport:
    """What :func:`export_vw` wrote."""

    path: str
    lines: int
    randomized: int
    rewarded: int
    skipped: dict[str, int]


def _visit(choice: LoggedChoice) -> dict[str, Any]:
    d = choice.decision
    s = d.signals
    values: dict[str, Any] = {
        "slot": choice.slot,
        "segment": None if d.segment is None else str(d.segment),
        "persona": d.persona,
        "lifecycle": d.lifecycle,
        "device": s.device_type,
        "os": s.os,
        "browser": s.browser,
        "referrer": s.referrer_class,
        "referrerSource": s.referrer_source,
        "country": s.country,
        "personalized": "yes" if d.personalized else "no",
    }
    return {k: v for k, v in values.items() if v is not None}


def _features(choice: LoggedChoice) -> dict[str, float]:
    d = choice.decision
    if d.features is None or d.feature_set not in FEATURE_SPECS:
        return {}
    names = feature_names(d.feature_set)
    if len(names) != len(d.features):
        return {}
    return {
        name: float(v)
        for name, v in zip(names, d.features, strict=True)
        if v is not None and math.isfinite(v)
    }


def vw_line(choice: LoggedChoice) -> dict[str, Any]:
    """The decision-service JSON object of one logged slot decision.

    The format VW reads with ``--dsjson --cb_explore_adf`` (the Azure Personalizer /
    Decision Service log format)::

        _label_cost         -reward (VW minimises cost): -1 for a click, 0 without one
        _label_probability  the logged propensity of the chosen variant
        _label_Action       1-based position of the chosen variant in c._multi
        _labelIndex         0-based position (= _label_Action - 1)
        Timestamp           the decision's time, ISO 8601 UTC ("...Z")
        Version             "1"
        EventId             "<decisionId>/<slot>"
        a                   the actions as 1-based positions in c._multi, chosen one first, then
                            the others in c._multi order (the decision service's ranking order)
        p                   the logging probability of each action of "a", in "a" order: p[0] is
                            _label_probability
        c                   the shared context:
            visit           namespace of categorical features: slot, segment, persona, lifecycle,
                            device, os, browser, referrer, referrerSource, country, personalized
                            (absent values are left out)
            features        namespace of the logged feature row, by feature name (NaN values are
                            left out: JSON has no NaN)
            _multi          one object per candidate variant, {"variant": "<variant id>"}: the
                            logged candidates in the order the decider listed them (the slot's
                            catalogue order), or the chosen variant alone when the choice was not
                            randomized (a targeting rule, a fixed experiment arm, the holdout, no
                            exploration): such lines have one action with probability 1
    """
    actions = list(choice.logging)
    chosen = actions.index(choice.variant_id)
    order = [chosen] + [i for i in range(len(actions)) if i != chosen]
    d = choice.decision
    stamp = d.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {
        "_label_cost": -choice.reward if choice.reward else 0.0,
        "_label_probability": choice.propensity,
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
        "Timestamp": stamp,
        "Version": "1",
        "EventId": f"{d.decision_id}/{choice.slot}",
        "a": [i + 1 for i in order],
        "c": {
            "visit": _visit(choice),
            "features": _features(choice),
            "_multi": [{"variant": v} for v in actions],
        },
        "p": [choice.propensity if i == chosen else choice.logging[actions[i]] for i in order],
    }


def export_vw(data: LoggedData, out: str | Path) -> VwExport:
    """Write every logged slot decision of ``data`` to ``out`` as decision-service JSON lines.

    The file is written under a temporary name and renamed, so a reader never sees half of it.
    """
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    randomized = rewarded = 0
    try:
        with tmp.open("wb") as fh:
            for choice in data.choices:
                fh.write(_encoder.encode(vw_line(choice)) + b"\n")
                randomized += choice.randomized
                rewarded += choice.reward > 0
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return VwExport(
        path=str(path),
        lines=len(data.choices),
        randomized=randomized,
        rewarded=rewarded,
        skipped=dict(data.skipped),
    )
