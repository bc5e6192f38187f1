"""The model card's charts: matplotlib figures (object API, never ``pyplot``) inlined as
deterministic SVG.

Must not import server or sklearn.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from model_export.bundle._card_html import _e, _Html, _tag, format_number

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["TOP_FEATURES"]

#: How many features the importance charts show, largest |weight| first.
TOP_FEATURES = 15

# Tableau 10: persona colours, in manifest order.
_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_POSITIVE, _NEGATIVE = "#c0392b", "#2e6fb7"


@contextmanager
def _plotting() -> Iterator[None]:
    """Matplotlib settings for the card's figures, undone afterwards.

    Glyph warnings are silenced here and only here: with ``svg.fonttype = "none"`` the browser
    draws the text with its own fonts, so a glyph missing from matplotlib's font (an emoji in a
    persona name) only affects label layout, not what the reader sees.
    """
    import matplotlib

    # svg.fonttype "none": text stays text (selectable, drawn with the page's fonts);
    # text.parse_math False: a "$" in a persona name is a dollar sign, not mathtext.
    with (
        matplotlib.rc_context(
            {
                "svg.fonttype": "none",
                "text.parse_math": False,
                "font.size": 9.0,
                "axes.spines.top": False,
                "axes.spines.right": False,
                "axes.titlesize": 10.0,
                "axes.titleweight": "bold",
                "axes.edgecolor": "#8a96a3",
                "axes.labelcolor": "#3d4852",
                "xtick.color": "#3d4852",
                "ytick.color": "#3d4852",
            }
        ),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        yield


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


_ID = re.compile(r'\sid="([^"]+)"')


def _svg(fig: Figure, name: str, label: str) -> _Html:
    """Inline SVG of ``fig``. Ids that nothing references are dropped and the rest are salted
    by ``name``, so several figures can share one page; no date is written, so the same
    figure gives the same bytes."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"tailor-{name}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    referenced = set(re.findall(r"#([^\s\"')]+)", svg))
    svg = _ID.sub(lambda m: m.group(0) if m.group(1) in referenced else "", svg)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{_e(label)}" ', 1)
    return _tag("figure", _Html(svg), class_="fig")


def _bar_sizes(labels: list[str], sizes: list[float], colors: list[str]) -> Figure:
    fig = _figure(7.5, 0.42 * len(labels) + 0.8)
    ax = fig.add_subplot()
    y = list(range(len(labels)))
    ax.barh(y, sizes, color=colors)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    total = sum(sizes) or 1.0
    for i, size in enumerate(sizes):
        ax.annotate(
            f" {format_number(size)} ({size / total:.1%})",
            (size, i),
            va="center",
            fontsize=8,
            color="#3d4852",
        )
    ax.set_xlabel("training rows")
    ax.margins(x=0.18)
    return fig


def _heatmap(
    rows: list[str],
    columns: list[str],
    values: list[list[float]],
    *,
    limit: float,
    cmap: str,
    label: str,
    fmt: Callable[[float], str],
    centred: bool,
) -> Figure:
    import numpy as np

    data = np.asarray(values, dtype=float)
    fig = _figure(max(5.0, 0.5 * len(columns) + 2.5), 0.45 * len(rows) + 1.9)
    ax = fig.add_subplot()
    vmin = -limit if centred else 0.0
    image = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=limit, aspect="auto")
    if max(map(len, columns), default=0) > 4:
        ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    ax.spines[:].set_visible(False)
    ax.tick_params(length=0)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            if math.isnan(v):
                continue
            strong = abs(v) > 0.6 * limit if centred else v > 0.6 * limit
            ax.text(
                j,
                i,
                fmt(v),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if strong else "#1f2933",
            )
    fig.colorbar(image, ax=ax, label=label, shrink=0.8, pad=0.01)
    return fig


def _importance_chart(weights: Mapping[str, float]) -> Figure:
    top = sorted(weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:TOP_FEATURES]
    top.reverse()
    fig = _figure(7.0, 0.3 * len(top) + 0.9)
    ax = fig.add_subplot()
    names = [k for k, _ in top]
    values = [v for _, v in top]
    ax.barh(range(len(top)), values, color=[_POSITIVE if v >= 0 else _NEGATIVE for v in values])
    ax.set_yticks(range(len(top)), names)
    ax.axvline(0, color="#8a96a3", linewidth=0.8)
    ax.set_xlabel("weight")
    return fig


def _per_k_chart(per_k: dict[str, dict[int, float]], chosen: float | None) -> Figure:
    fig = _figure(5.2, 2.8)
    ax = fig.add_subplot()
    ks = sorted({k for values in per_k.values() for k in values})
    for i, (name, values) in enumerate(sorted(per_k.items())):
        xs = sorted(values)
        ax.plot(
            xs, [values[k] for k in xs], marker="o", color=_PALETTE[i % len(_PALETTE)], label=name
        )
    if chosen is not None:
        ax.axvline(chosen, color="#e15759", linestyle=":", linewidth=1.2)
        ax.annotate(
            f"chosen k = {format_number(chosen)}",
            (chosen, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
            color="#e15759",
        )
    ax.set_xlabel("k (segments)")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="center right")
    return fig


def _roc_calibration(
    roc: list[tuple[float, float]] | None,
    calibration: list[tuple[float, float, float]] | None,
    auc: float | None,
) -> Figure:
    panels = (roc is not None) + (calibration is not None)
    fig = _figure(4.2 * panels, 3.9)
    grid = fig.add_gridspec(2, panels, height_ratios=(3, 1))
    col = 0
    if roc is not None:
        ax: Axes = fig.add_subplot(grid[:, col])
        col += 1
        points = sorted(roc)
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            color=_PALETTE[0],
            label=f"model (AUC {format_number(auc)})" if auc is not None else "model",
        )
        ax.plot([0, 1], [0, 1], linestyle="--", color="#8a96a3", linewidth=0.8, label="chance")
        ax.set(
            xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate"
        )
        ax.set_title("ROC")
        ax.legend(loc="lower right", frameon=False)
        ax.set_aspect("equal")
    if calibration is not None:
        ax = fig.add_subplot(grid[0, col])
        counts = fig.add_subplot(grid[1, col], sharex=ax)
        pred = [c[0] for c in calibration]
        observed = [c[1] for c in calibration]
        n = [c[2] for c in calibration]
        biggest = max(n) or 1.0
        ax.plot([0, 1], [0, 1], linestyle="--", color="#8a96a3", linewidth=0.8)
        ax.plot(pred, observed, color=_PALETTE[1], linewidth=1)
        ax.scatter(pred, observed, s=[20 + 120 * c / biggest for c in n], color=_PALETTE[1])
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed rate")
        ax.set_title("Calibration")
        ax.tick_params(labelbottom=False)
        counts.bar(pred, n, width=0.04, color="#bab0ac")
        counts.set(xlabel="mean predicted probability", ylabel="rows")
    return fig


def _bars(labels: list[str], values: list[float]) -> Figure:
    fig = _figure(max(4.0, 0.32 * len(labels) + 1.5), 2.8)
    ax = fig.add_subplot()
    ax.bar(range(len(labels)), values, color=_PALETTE[0])
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_ylabel("customers")
    return fig
