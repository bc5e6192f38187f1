"""The model card's sections on how good the models are: held-out metrics, ONNX parity,
feature importance, churn, RFM and other diagnostics.

Must not import server or sklearn.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

from model_export.bundle._card_charts import (
    TOP_FEATURES,
    _bars,
    _heatmap,
    _importance_chart,
    _plotting,
    _roc_calibration,
    _svg,
)
from model_export.bundle._card_data import METRIC_GROUPS, _Card, _group_of, _per_k
from model_export.bundle._card_html import (
    _Html,
    _join,
    _json,
    _kv,
    _note,
    _pill,
    _share,
    _signed,
    _table,
    _tag,
    format_number,
)
from model_export.bundle.metrics import lower_is_better
from sdk.bundle import PARITY_ATOL


def _baselines(metrics: Mapping[str, float]) -> dict[str, list[tuple[str, str]]]:
    """Metric -> [(baseline key, baseline label)] for keys with a ``baseline`` token.

    A baseline key names its metric either with the ``baseline`` token removed
    (``offers_baseline_top1_accuracy`` is the baseline of ``offers_top1_accuracy``) or as its
    longest prefix that is a metric, the rest being the label (``churn_auc_recency_baseline``
    is the ``recency`` baseline of ``churn_auc``; ``value_mae_baseline`` that of ``value_mae``).
    """
    found: dict[str, list[tuple[str, str]]] = {}
    for key in sorted(metrics):
        tokens = key.split("_")
        if "baseline" not in tokens:
            continue
        i = tokens.index("baseline")
        without = "_".join(tokens[:i] + tokens[i + 1 :])
        if without in metrics:
            found.setdefault(without, []).append((key, "baseline"))
            continue
        for j in range(len(tokens) - 1, 0, -1):
            prefix = "_".join(tokens[:j])
            if prefix in metrics and "baseline" not in tokens[:j]:
                label = "_".join(t for t in tokens[j:] if t != "baseline") or "baseline"
                found.setdefault(prefix, []).append((key, label))
                break
    return found


def _delta_cell(name: str, delta: float) -> _Html:
    if delta == 0 or math.isnan(delta):
        return _tag("span", _signed(delta), class_="muted")
    better = (delta < 0) == lower_is_better(name)
    return _tag("span", _signed(delta), class_="up" if better else "down")


def _metrics_table(c: _Card, keys: list[str], baselines: dict[str, list[tuple[str, str]]]) -> _Html:
    with_baselines = any(key in baselines for key in keys)
    rows = []
    for key in keys:
        value = c.metrics[key]
        pairs = baselines.get(key, [])
        direction = _tag("span", "lower is better" if lower_is_better(key) else "", class_="muted")
        row: list[object] = [_tag("code", key), format_number(value)]
        if with_baselines:
            row.append(
                _join(
                    _tag(
                        "div",
                        _join(
                            [
                                f"{'' if label == 'baseline' else label} ",
                                format_number(c.metrics[b]),
                                _tag("span", b, class_="sub"),
                            ]
                        ),
                        title=b,
                    )
                    for b, label in pairs
                )
                or "—"
            )
            row.append(_join(_tag("div", _delta_cell(key, value - c.metrics[b])) for b, _ in pairs))
        rows.append([*row, direction])
    headers = ["metric", "value", *(["baseline", "vs baseline"] if with_baselines else []), ""]
    return _table(headers, rows, numeric=[1, 2, 3] if with_baselines else [1])


def _per_k_table(per_k: dict[str, dict[int, float]], chosen: float | None) -> _Html:
    ks = sorted({k for values in per_k.values() for k in values})
    names = sorted(per_k)
    rows = []
    for k in ks:
        label: object = format_number(k)
        if chosen is not None and k == chosen:
            label = _join([format_number(k), " ", _pill("chosen", "info")])
        values = [format_number(per_k[n][k]) if k in per_k[n] else "—" for n in names]
        rows.append([label, *values])
    return _table(["k", *names], rows, numeric=range(1, len(names) + 1))


def _metrics_section(c: _Card) -> _Html:
    metrics = c.metrics
    if not metrics:
        return _note("The manifest records no held-out metrics.")
    baselines = _baselines(metrics)
    per_k = _per_k(metrics)
    done = {b for pairs in baselines.values() for b, _ in pairs}
    done |= {f"{name}_k{k}" for name, values in per_k.items() for k in values}
    groups: dict[str, list[str]] = {}
    for key in sorted(metrics):
        if key not in done:
            groups.setdefault(_group_of(key), []).append(key)
    parts: list[str] = [
        _note(
            "Held-out numbers computed by training. Where training also scored a baseline "
            "(a key containing “baseline”), it is shown next to the metric it is a baseline for."
        )
    ]
    titles = dict(METRIC_GROUPS)
    for prefix in [*(p for p, _ in METRIC_GROUPS if p != "parity"), "other"]:
        if prefix in groups:
            parts.append(_tag("h3", titles.get(prefix, "Other")))
            parts.append(_metrics_table(c, groups[prefix], baselines))
        if prefix == "segments" and per_k:
            parts.append(_tag("h3", "Choosing the number of segments"))
            parts.append(_per_k_table(per_k, metrics.get("segments_k")))
    return _Html("".join(parts))


def _parity_section(c: _Card) -> _Html | None:
    keys = sorted(k for k in c.metrics if _group_of(k) == "parity")
    if not keys:
        return None
    rows = []
    for key in keys:
        value = c.metrics[key]
        check: object = ""
        if "diff" in key:
            ok = value <= PARITY_ATOL
            check = _pill("within tolerance" if ok else "over tolerance", "good" if ok else "bad")
        rows.append([_tag("code", key), format_number(value), check])
    return _Html(
        _note(
            "The same held-out rows run through the sklearn pipelines (float64) and the exported "
            f"ONNX graphs (onnxruntime, float32). The loader refuses a bundle whose parity rows "
            f"differ by more than {format_number(PARITY_ATOL)}."
        )
        + _table(["measure", "value", ""], rows, numeric=[1])
    )


def _importance_section(c: _Card) -> _Html | None:
    raw = c.diagnostics.get("feature_importance")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        return _note("feature_importance is present but not a {model: {feature: weight}} map.")
    parts: list[str] = [
        _note(
            f"The {TOP_FEATURES} largest weights by magnitude per model; red pushes the "
            "prediction up, blue down."
        )
    ]
    for model, weights in raw.items():
        parts.append(_tag("h3", model))
        try:
            clean = {str(f): float(w) for f, w in weights.items()}
        except (AttributeError, TypeError, ValueError):
            parts.append(_note("weights are not a {feature: number} map"))
            continue
        if not clean:
            parts.append(_note("no weights"))
            continue
        with _plotting():
            fig = _importance_chart(clean)
            parts.append(_svg(fig, f"importance-{model}", f"feature importance of {model}"))
    return _Html("".join(parts))


def _points(raw: Any, width: int) -> list[tuple[float, ...]]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("expected a non-empty list")
    points = []
    for item in raw:
        if not isinstance(item, list | tuple) or len(item) < width:
            raise ValueError(f"expected lists of {width} numbers")
        values = tuple(float(v) for v in item[:width])
        if not all(math.isfinite(v) for v in values):
            raise ValueError("non-finite value")
        points.append(values)
    return points


def _churn_section(c: _Card) -> _Html | None:
    roc_raw = c.diagnostics.get("churn_roc")
    cal_raw = c.diagnostics.get("churn_calibration")
    if roc_raw is None and cal_raw is None:
        return None
    parts: list[str] = []
    roc = cal = None
    try:
        roc = _points(roc_raw, 2) if roc_raw is not None else None
    except (TypeError, ValueError) as exc:
        parts.append(_note(f"churn_roc is malformed ({exc}); not plotted."))
    try:
        cal = _points(cal_raw, 3) if cal_raw is not None else None
    except (TypeError, ValueError) as exc:
        parts.append(_note(f"churn_calibration is malformed ({exc}); not plotted."))
    if roc is None and cal is None:
        return _Html("".join(parts))
    auc = c.metrics.get("churn_auc")
    if auc is None and roc is not None:
        pts = sorted(roc)
        auc = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(pts))
    with _plotting():
        fig = _roc_calibration(
            [(p[0], p[1]) for p in roc] if roc else None,
            [(p[0], p[1], p[2]) for p in cal] if cal else None,
            auc,
        )
        parts.append(_svg(fig, "churn", "churn ROC curve and calibration"))
    parts.append(
        _note(
            "ROC: how well the churn score ranks churners above the rest on held-out customers. "
            "Calibration: predicted probability against the observed churn rate per bin "
            "(marker size and the lower bars show how many customers fall in each bin)."
        )
    )
    return _Html("".join(parts))


def _rfm_section(c: _Card) -> _Html | None:
    rfm = c.m.rfm
    dist = c.diagnostics.get("rfm_distribution")
    if rfm is None and dist is None:
        return None
    parts: list[str] = []
    if rfm is not None:
        parts.append(
            _note(
                "Quintile edges learned from the customer base. Recency scores 5 for the most "
                "recent fifth; frequency and monetary score 5 for the highest fifth. The RFM "
                "score is the weighted mean of the three scores."
            )
        )
        rows = [
            [name, *(format_number(e) for e in edges), format_number(rfm.weights.get(key, 0.0))]
            for name, key, edges in (
                ("recency (days)", "r", rfm.recency_edges),
                ("frequency (purchases)", "f", rfm.frequency_edges),
                ("monetary", "m", rfm.monetary_edges),
            )
        ]
        parts.append(
            _table(
                ["", "edge 1", "edge 2", "edge 3", "edge 4", "weight"], rows, numeric=range(1, 6)
            )
        )
        extra = {k: v for k, v in rfm.weights.items() if k not in ("r", "f", "m")}
        if extra:
            parts.append(_kv((k, format_number(v)) for k, v in sorted(extra.items())))
    if dist is not None:
        try:
            counts = {str(k): float(v) for k, v in dist.items()}
        except (AttributeError, TypeError, ValueError):
            parts.append(_note("rfm_distribution is malformed; not plotted."))
            counts = {}
        if counts:
            parts.append(_tag("h3", "Customers by RFM code"))
            parts.append(_rfm_distribution(counts))
    return _Html("".join(parts))


def _rfm_distribution(counts: dict[str, float]) -> _Html:
    total = sum(counts.values()) or 1.0
    parts: list[str] = []
    codes = {k: v for k, v in counts.items() if re.fullmatch(r"[1-5]{3}", k)}
    with _plotting():
        if len(codes) == len(counts):
            grid = [[0.0] * 5 for _ in range(5)]
            for code, n in codes.items():
                grid[5 - int(code[0])][int(code[1]) - 1] += n
            fig = _heatmap(
                [f"R{r}" for r in range(5, 0, -1)],
                [f"F{f}" for f in range(1, 6)],
                grid,
                limit=max(max(row) for row in grid) or 1.0,
                cmap="Blues",
                label="customers (summed over M)",
                fmt=format_number,
                centred=False,
            )
            parts.append(_svg(fig, "rfm", "customers by recency and frequency score"))
        else:
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
            fig = _bars([k for k, _ in top], [v for _, v in top])
            parts.append(_svg(fig, "rfm", "customers by RFM code"))
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    parts.append(
        _table(
            ["RFM code", "customers", "share"],
            [[_tag("code", k), format_number(v), _share(v / total)] for k, v in top],
            numeric=[1, 2],
        )
    )
    return _Html("".join(parts))


_KNOWN_DIAGNOSTICS = {
    "feature_importance",
    "churn_roc",
    "churn_calibration",
    "rfm_distribution",
    "adjusted_churn_calibration",
    "btyd_churn_calibration",
}


def _other_diagnostics(c: _Card) -> _Html | None:
    other = {k: v for k, v in c.diagnostics.items() if k not in _KNOWN_DIAGNOSTICS}
    if not other:
        return None
    return _table(
        ["diagnostic", "value"],
        [[_tag("code", k), _tag("code", _json(v, 1200))] for k, v in sorted(other.items())],
    )


#: (label, supervised GLM, adjusted BTYD, BTYD, baseline, note) rows of the out-of-time
#: comparison of the customer-value candidates (metric names; None: not measured).
_VALUE_ROWS: tuple[tuple[str, str | None, str | None, str | None, str | None, str], ...] = (
    ("activity AUC (churn)", "churn_auc", "adjusted_activity_auc", "btyd_activity_auc",
     "recency_activity_auc", "higher is better"),
    ("churn Brier score", "churn_brier", "adjusted_churn_brier", "btyd_churn_brier", None,
     "lower is better"),
    ("churn calibration intercept", None, "adjusted_churn_calibration_intercept",
     "btyd_churn_calibration_intercept", None, "0 is calibrated"),
    ("churn calibration slope", None, "adjusted_churn_calibration_slope",
     "btyd_churn_calibration_slope", None, "1 is calibrated"),
    ("churn rate predicted", "churn_base_rate", "adjusted_churn_rate_predicted",
     "btyd_churn_rate_predicted", None, "observed: the GLM column"),
    ("purchases RMSE", "purchases_rmse", "adjusted_purchases_rmse", "btyd_purchases_rmse",
     "naive_purchases_rmse", "lower is better"),
    ("purchases total, forecast / actual", "purchases_total_ratio",
     "adjusted_purchases_total_ratio", "btyd_purchases_total_ratio",
     "naive_purchases_total_ratio", "1 is exact"),
    ("value RMSE", "value_rmse", "adjusted_value_rmse", "btyd_value_rmse", "naive_value_rmse",
     "lower is better"),
    ("value total, forecast / actual", "value_total_ratio", "adjusted_value_total_ratio",
     "btyd_value_total_ratio", "naive_value_total_ratio", "1 is exact"),
)  # fmt: skip
_SCORE_MODELS = (
    ("churnProbability", "churn"),
    ("expectedPurchases", "purchases"),
    ("expectedValue", "value"),
)


def _value_models_section(c: _Card) -> _Html | None:
    """Which model gives each customer score, the buy-till-you-die parameters, and the
    out-of-time comparison the choice was made on, with the run's notes."""
    btyd = c.m.btyd
    supervised = {model for _, model in _SCORE_MODELS if model in c.m.models}
    if btyd is None and not supervised:
        return None
    parts: list[str] = []
    served: list[tuple[object, object]] = []
    repeat = "Pareto/NBD" if btyd is not None and btyd.pareto_nbd is not None else "BG/NBD"
    for score, model in _SCORE_MODELS:
        if model in supervised:
            source = f"supervised model ({model}, ONNX)"
            if c.m.models[model].features == ["recency_days"]:
                source = f"recency baseline ({model}, ONNX)"
        elif btyd is not None and score in btyd.adjusted:
            source = f"{repeat} adjusted by a supervised model ({btyd.adjusted[score].model}, ONNX)"
        elif btyd is not None and score in btyd.serves:
            source = repeat + (" and Gamma-Gamma" if score == "expectedValue" else "")
        else:
            source = "none"
        served.append((score, source))
    if btyd is not None:
        served.append(("pAlive", repeat))
    parts.append(_kv(served))
    if btyd is not None:
        bg = btyd.bgnbd
        params = [
            ("horizon", f"{btyd.horizon_days:g} days (time unit {btyd.unit_days:g} days)"),
            (
                "BG/NBD r, alpha, a, b",
                ", ".join(format_number(v) for v in (bg.r, bg.alpha, bg.a, bg.b)),
            ),
        ]
        if btyd.pareto_nbd is not None:
            pn = btyd.pareto_nbd
            params.append(
                (
                    "Pareto/NBD r, alpha, s, beta (served: it fits better)",
                    ", ".join(format_number(v) for v in (pn.r, pn.alpha, pn.s, pn.beta)),
                )
            )
        if btyd.gamma_gamma is not None:
            gg = btyd.gamma_gamma
            params.append(
                ("Gamma-Gamma p, q, v", ", ".join(format_number(v) for v in (gg.p, gg.q, gg.v)))
            )
        parts.append(_kv(params))
    rows = []
    for label, *keys, note in _VALUE_ROWS:
        values = [c.metrics.get(k) if k is not None else None for k in keys]
        if all(v is None for v in values[:3]):
            continue
        cells = [format_number(v) if v is not None else "—" for v in values]
        rows.append([label, *cells, note])
    if rows:
        window = c.metrics.get("adjust_fold_window_days")
        head = "out of time" + (f" ({window:g}-day window)" if window else "")
        columns = [head, "supervised GLM", "adjusted BG/NBD", "BG/NBD", "baseline", ""]
        parts.append(_table(columns, rows, numeric=(1, 2, 3, 4)))
    curves = _served_calibration(c)
    if curves:
        parts.append(curves)
    notes = c.m.training.data.get("modelNotes") or []
    if notes:
        parts.append(_tag("ul", _join(_tag("li", n) for n in notes)))
    parts.append(
        _note(
            "Each score is served by the candidate that did better out of time on the same "
            "customers: churn by activity AUC (the recency baseline serves when it ranks best), "
            "purchases and value by RMSE, except that a forecast within 5% of the best RMSE "
            "whose total is within 10% of what happened wins over one whose total is not. The "
            "adjusted BG/NBD is the BG/NBD forecast shifted by a GLM of the customer's features "
            "trained on stacked earlier cutoffs; the buy-till-you-die models forecast any "
            "horizon, the supervised GLMs only the bundle's. Baselines: ranking by recency, "
            "and each customer's past rate times the window."
        )
    )
    return _Html("".join(parts))


def _served_calibration(c: _Card) -> str | None:
    """The reliability diagram of the adjusted churn probability out of time (else of the
    BG/NBD one)."""
    for key in ("adjusted_churn_calibration", "btyd_churn_calibration"):
        raw = c.diagnostics.get(key)
        if raw is None:
            continue
        try:
            cal = _points(raw, 3)
        except (TypeError, ValueError) as exc:
            return _note(f"{key} is malformed ({exc}); not plotted.")
        with _plotting():
            fig = _roc_calibration(None, [(p[0], p[1], p[2]) for p in cal], None)
            label = "adjusted BG/NBD" if key.startswith("adjusted") else "BG/NBD"
            return _svg(fig, key, f"calibration of the {label} churn probability out of time")
    return None
