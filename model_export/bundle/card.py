"""The model card: one self-contained HTML page describing a bundle, rendered from its manifest.

:func:`render_report` reads nothing but the :class:`~sdk.manifest.Manifest` it is given, so every
number on the page is the number in ``manifest.json``. It does not read ``manifest.files`` (the
card is rendered before the files are hashed, and is itself one of them) and it stamps no
render time, so the same manifest always renders the same bytes. The page needs no network and
no JavaScript: CSS is inline, plots are inline SVG drawn with matplotlib's object API (a
``Figure`` saved by the SVG backend, never ``pyplot``), and a Content-Security-Policy forbids
scripts and external loads. Every string taken from the manifest is HTML-escaped: marketers'
names and rule values can contain ``<``.

Sections whose data is absent (diagnostics, RFM, experiments) are omitted; malformed
diagnostics are reported on the page rather than raised.

Must not import server or sklearn.
"""

from __future__ import annotations

import html
import io
import itertools
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_export.bundle.lifecycle import lower_is_better
from sdk.bundle import PARITY_ATOL
from sdk.features import FEATURE_SPECS
from sdk.manifest import Manifest, manifest_decoder, manifest_encoder

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "METRIC_GROUPS",
    "REPORT_FILE",
    "format_condition",
    "format_number",
    "render_report",
    "write_report",
]

#: File name of the model card inside a bundle.
REPORT_FILE = "report.html"

#: Metric key prefixes and the heading each group gets; other keys go under "Other".
METRIC_GROUPS: tuple[tuple[str, str], ...] = (
    ("segments", "Segments"),
    ("offers", "Next-best offer"),
    ("churn", "Churn"),
    ("value", "Customer value"),
    ("purchases", "Expected purchases"),
    ("policy", "Offline policy value"),
    ("parity", "ONNX parity"),
)

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
_SIGMA = "\N{GREEK SMALL LETTER SIGMA}"


# --- small pieces ----------------------------------------------------------------------------


class _Html(str):
    """A trusted HTML fragment: inserted as is. Every other ``str`` is escaped."""

    __slots__ = ()


def _e(value: object) -> _Html:
    if isinstance(value, _Html):
        return value
    return _Html(html.escape(str(value), quote=True))


def _join(parts: Iterable[str]) -> _Html:
    return _Html("".join(_e(p) for p in parts))


def _tag(name: str, body: object = "", **attrs: object) -> _Html:
    attributes = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{_e(v)}"' for k, v in attrs.items() if v is not None
    )
    return _Html(f"<{name}{attributes}>{_e(body)}</{name}>")


def format_number(value: float | int) -> str:
    """How the card prints a number: integers with thousands separators, four significant
    digits in between, scientific notation for tiny values."""
    v = float(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    a = abs(v)
    if a >= 1e4:
        return f"{v:,.1f}"
    if a >= 1e-3:
        return f"{v:.4g}"
    return f"{v:.2e}"


def _signed(value: float) -> str:
    text = format_number(value)
    return text if text.startswith(("-", "n/a")) or value == 0 else f"+{text}"


def _share(value: float) -> str:
    return "<0.1%" if 0 < value < 0.0005 else f"{value:.1%}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any, limit: int = 2000) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return _truncate(text, limit)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _scalar(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return format_number(value)
    return str(value)


def _table(
    headers: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Iterable[int] = (),
    cls: str | None = None,
) -> _Html:
    right = set(numeric)
    head = _join(_tag("th", h, class_="num" if i in right else None) for i, h in enumerate(headers))
    body = _join(
        _tag(
            "tr",
            _join(_tag("td", c, class_="num" if i in right else None) for i, c in enumerate(row)),
        )
        for row in rows
    )
    table = _tag("table", _join([_tag("thead", _tag("tr", head)), _tag("tbody", body)]), class_=cls)
    return _tag("div", table, class_="scroll")


def _kv(items: Iterable[tuple[object, object]]) -> _Html:
    rows = _join(_tag("tr", _join([_tag("th", k), _tag("td", v)])) for k, v in items)
    return _tag("table", _tag("tbody", rows), class_="kv")


def _pill(text: str, kind: str) -> _Html:
    return _tag("span", text, class_=f"pill {kind}")


def _note(text: object) -> _Html:
    return _tag("p", text, class_="note")


def _chip(color: str) -> _Html:
    return _Html(f'<span class="chip" style="background:{_e(color)}"></span>')


# --- conditions ------------------------------------------------------------------------------

_COMPARE = {"$eq": "=", "$ne": "≠", "$gt": ">", "$gte": "≥", "$lt": "<", "$lte": "≤"}


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, default=str)


def _is_operator_spec(spec: Any) -> bool:
    return isinstance(spec, Mapping) and bool(spec) and all(str(k).startswith("$") for k in spec)


def _field(path: str, spec: Any) -> str:
    if not _is_operator_spec(spec):
        return f"{path} = {_literal(spec)}"
    parts = []
    for op, expected in spec.items():
        if op in _COMPARE:
            parts.append(f"{path} {_COMPARE[op]} {_literal(expected)}")
        elif op == "$in":
            parts.append(f"{path} in {_literal(expected)}")
        elif op == "$nin":
            parts.append(f"{path} not in {_literal(expected)}")
        elif op == "$exists":
            parts.append(f"{path} is set" if expected else f"{path} is not set")
        elif op == "$regex":
            parts.append(f"{path} matches /{expected}/")
        elif op == "$not":
            parts.append(f"not ({_field(path, expected)})")
        else:
            parts.append(f"{path} {op} {_literal(expected)}")
    return " and ".join(parts)


def _grouped(condition: Any) -> str:
    text = format_condition(condition)
    compound = isinstance(condition, Mapping) and (
        len(condition) > 1 or any(k in ("$and", "$or") for k in condition)
    )
    return f"({text})" if compound and text != "always" else text


def format_condition(condition: Mapping[str, Any]) -> str:
    """A condition of the MongoDB-style rule language as one readable line, e.g.
    ``daysSinceLastPurchase ≥ 180 and purchases ≥ 1``. An empty condition reads ``always``."""
    if not isinstance(condition, Mapping):
        return _literal(condition)
    if not condition:
        return "always"
    parts = []
    for key, spec in condition.items():
        if key in ("$and", "$or") and isinstance(spec, list):
            joiner = " and " if key == "$and" else " or "
            text = joiner.join(_grouped(c) for c in spec) or "always"
            parts.append(f"({text})" if len(condition) > 1 and len(spec) > 1 else text)
        elif key == "$not":
            parts.append(f"not ({format_condition(spec)})")
        else:
            parts.append(_field(str(key), spec))
    return " and ".join(parts)


# --- plots -----------------------------------------------------------------------------------


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


# --- sections --------------------------------------------------------------------------------


class _Card:
    """Shared lookups for the section renderers."""

    def __init__(self, manifest: Manifest) -> None:
        self.m = manifest
        self.persona_names = {p.id: p.name for p in manifest.personas}
        self.colors = {p.id: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(manifest.personas)}
        self.metrics = manifest.training.metrics
        self.diagnostics = manifest.training.diagnostics
        self.descriptions = {
            f.name: f.description for f in FEATURE_SPECS.get(manifest.feature_set_version, ())
        }

    def persona(self, pid: str) -> str:
        return self.persona_names.get(pid, pid)

    def segment_label(self, seg_id: int, persona: str) -> str:
        return f"{seg_id} · {self.persona(persona)}"


def _header(c: _Card) -> _Html:
    m = c.m
    facts = [
        ("created", m.created_at.isoformat(timespec="seconds")),
        ("feature set", f"version {m.feature_set_version} ({len(m.feature_names)} features)"),
        ("wire schema", f"version {m.schema_version}"),
        ("bundle format", f"version {m.format_version}"),
        ("training rows", format_number(m.training.rows)),
        ("segments", f"{len(m.segments)} in {len(m.personas)} personas"),
        ("offers", f"{len(m.offers)} in the catalogue, {len(m.offer_classes)} in the model"),
    ]
    grid = _join(
        _tag("div", _join([_tag("dt", k), _tag("dd", v)]), class_="fact") for k, v in facts
    )
    models = _table(
        ["model", "file", "features", "inputs", "outputs"],
        [
            [
                name,
                spec.file,
                format_number(len(spec.features)),
                ", ".join(f"{io.name}: {io.dtype}" for io in spec.inputs),
                ", ".join(f"{io.name}: {io.dtype}" for io in spec.outputs),
            ]
            for name, spec in sorted(m.models.items())
        ],
        numeric=[2],
    )
    producer = _join(
        _tag("span", _join([_tag("b", k), " ", v]), class_="tag")
        for k, v in sorted(m.producer.items())
    )
    return _tag(
        "header",
        _join(
            [
                _tag("p", "Tailor model card", class_="eyebrow"),
                _tag("h1", m.model_version),
                _tag("dl", grid, class_="facts"),
                _tag("h3", "Models"),
                models,
                _tag("h3", "Produced with"),
                _tag("div", producer, class_="tags"),
            ]
        ),
    )


_INPUT_KEYS = ("rowsRead", "rowsAccepted", "rejected", "files", "examples")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _input_card(title: str, data: Mapping[str, Any]) -> _Html:
    parts: list[str] = [_tag("h4", title)]
    read, accepted = _number(data.get("rowsRead")), _number(data.get("rowsAccepted"))
    stats: list[tuple[object, object]] = []
    if read is not None:
        stats.append(("rows read", format_number(read)))
    if accepted is not None:
        share = f" ({accepted / read:.1%})" if read else ""
        stats.append(("rows accepted", format_number(accepted) + share))
    skip = {"rowsRead", "rowsAccepted", "rejected", "files", "examples", "source"}
    nested: list[tuple[str, Any]] = []
    for key, value in data.items():
        if key in skip:
            continue
        if _is_scalar(value):
            stats.append((key, _scalar(value)))
        elif isinstance(value, list) and all(_is_scalar(v) for v in value):
            stats.append((key, _truncate(", ".join(_scalar(v) for v in value), 300)))
        else:
            nested.append((key, value))
    if stats:
        parts.append(_kv(stats))
    files = data.get("files")
    if isinstance(files, list) and files:
        shown = [_tag("li", _tag("code", str(f))) for f in files[:10]]
        if len(files) > 10:
            shown.append(_tag("li", f"… and {len(files) - 10} more"))
        parts.append(
            _tag(
                "details",
                _join(
                    [_tag("summary", f"{len(files)} file{'s' if len(files) != 1 else ''}"), *shown]
                ),
            )
        )
    rejected = data.get("rejected")
    if isinstance(rejected, Mapping) and rejected:
        reasons = sorted(rejected.items(), key=lambda kv: (-(_number(kv[1]) or 0), str(kv[0])))
        parts.append(
            _table(
                ["rejected because", "rows", "of rows read"],
                [
                    [
                        _tag("code", reason),
                        _scalar(count),
                        _share(n / read) if (n := _number(count)) is not None and read else "",
                    ]
                    for reason, count in reasons
                ],
                numeric=[1, 2],
            )
        )
    elif isinstance(rejected, Mapping) or (read is not None and read == accepted):
        parts.append(_note("No rows rejected."))
    examples = data.get("examples")
    if isinstance(examples, Mapping) and examples:
        items = []
        for reason, sample in examples.items():
            values = sample if isinstance(sample, list) else [sample]
            shown = [_tag("code", _json(v, 200) if not isinstance(v, str) else v) for v in values]
            items.append(
                _tag("li", _join([_tag("b", reason), ": ", _join(_intersperse(shown[:5]))]))
            )
        parts.append(
            _tag(
                "details",
                _join([_tag("summary", "examples of rejected rows"), _tag("ul", _join(items))]),
            )
        )
    for key, value in nested:
        parts.append(_tag("p", _join([_tag("b", key), " ", _tag("code", _json(value, 600))])))
    return _tag("div", _join(parts), class_="input")


def _intersperse(items: list[_Html]) -> Iterator[_Html]:
    for i, item in enumerate(items):
        if i:
            yield _Html(", ")
        yield item


def _data_section(c: _Card) -> _Html:
    data = c.m.training.data
    inputs: list[tuple[str, Mapping[str, Any]]] = []
    top: list[tuple[object, object]] = []
    if any(k in data for k in _INPUT_KEYS):  # the whole summary describes one input
        inputs.append((str(data.get("source", "input")), data))
    else:
        for key, value in data.items():
            if isinstance(value, Mapping):
                inputs.append((str(value.get("source", key)), value))
            elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
                for i, item in enumerate(value):
                    inputs.append((str(item.get("source", f"{key}[{i}]")), item))
            elif isinstance(value, list):
                top.append((key, _truncate(", ".join(_scalar(v) for v in value), 300)))
            else:
                top.append((key, _scalar(value)))
    parts: list[str] = []
    read = [_number(d.get("rowsRead")) for _, d in inputs]
    accepted = [_number(d.get("rowsAccepted")) for _, d in inputs]
    kpis = [("rows trained on", format_number(c.m.training.rows))]
    if any(v is not None for v in read):
        total_read = sum(v for v in read if v is not None)
        kpis.append(("rows read", format_number(total_read)))
        if any(v is not None for v in accepted):
            total_acc = sum(v for v in accepted if v is not None)
            kpis.append(("rows accepted", format_number(total_acc)))
            kpis.append(("rows rejected", format_number(total_read - total_acc)))
    parts.append(_kpis(kpis))
    if top:
        parts.append(_kv(top))
    parts.extend(_input_card(title, d) for title, d in inputs)
    if not data:
        parts.append(_note("The manifest records no data summary."))
    return _Html("".join(parts))


def _kpis(items: Sequence[tuple[str, str]]) -> _Html:
    return _tag(
        "div",
        _join(
            _tag("div", _join([_tag("span", v, class_="v"), _tag("span", k, class_="k")]))
            for k, v in items
        ),
        class_="kpis",
    )


def _segments_section(c: _Card) -> _Html:
    m = c.m
    segs = sorted(m.segments, key=lambda s: s.id)
    if not segs:
        return _note("The bundle has no segments.")
    labels = [c.segment_label(s.id, s.persona) for s in segs]
    parts: list[str] = []
    with _plotting():
        fig = _bar_sizes(labels, [float(s.size) for s in segs], [c.colors[s.persona] for s in segs])
        parts.append(_tag("h3", "Segment sizes"))
        parts.append(_svg(fig, "segment-sizes", "segment sizes"))
    parts.append(
        _table(
            ["segment", "persona", "training rows", "share"],
            [
                [
                    format_number(s.id),
                    _join([_chip(c.colors[s.persona]), c.persona(s.persona)]),
                    format_number(s.size),
                    _share(s.share),
                ]
                for s in segs
            ],
            numeric=[0, 2, 3],
        )
    )
    features = list(dict.fromkeys(f for s in segs for f in [*s.centroid, *s.lift]))
    if features:
        parts.append(_tag("h3", "Segment profiles"))
        parts.append(
            _note(
                "Each cell is the segment's centroid in original units (log1p for *_log "
                "features, days for recency) and, below it, its lift: how many standard "
                "deviations the centroid sits from the training mean. Red is above, blue below."
            )
        )
        header: list[object] = [
            "feature",
            *(
                _join([_tag("span", f"segment {s.id}", class_="sub"), _e(c.persona(s.persona))])
                for s in segs
            ),
        ]
        rows = []
        for f in features:
            row: list[object] = [_tag("code", f, title=c.descriptions.get(f))]
            for s in segs:
                centre, lift = s.centroid.get(f), s.lift.get(f)
                text = format_number(centre) if centre is not None else "—"
                sub = (
                    _tag("span", f"{_signed(lift)}{_SIGMA}", class_="sub")
                    if lift is not None
                    else ""
                )
                row.append(_Html(f'<span style="{_lift_style(lift)}">{_e(text)}{sub}</span>'))
            rows.append(row)
        parts.append(
            _table(header, rows, numeric=range(1, len(segs) + 1), cls="profile"),
        )
        lift_rows = [[s.lift.get(f, math.nan) for f in features] for s in segs]
        with _plotting():
            fig = _heatmap(
                labels,
                features,
                lift_rows,
                limit=3.0,
                cmap="RdBu_r",
                label=f"lift ({_SIGMA} from mean, clipped at ±3)",
                fmt=lambda v: f"{v:+.1f}",
                centred=True,
            )
            parts.append(_tag("h3", "Lift heatmap"))
            parts.append(_svg(fig, "lift", "lift heatmap"))
    per_k = _per_k(c.metrics)
    if per_k:
        with _plotting():
            fig = _per_k_chart(per_k, c.metrics.get("segments_k"))
            parts.append(_tag("h3", "Choosing the number of segments"))
            parts.append(_svg(fig, "per-k", "segment quality by number of segments"))
    return _Html("".join(parts))


def _lift_style(lift: float | None) -> str:
    if lift is None or math.isnan(lift):
        return "display:block"
    strength = min(abs(lift) / 3.0, 1.0) * 0.55
    rgb = "192,57,43" if lift > 0 else "46,111,183"
    return f"display:block;background:rgba({rgb},{strength:.2f});padding:2px 6px;border-radius:4px"


def _personas_section(c: _Card) -> _Html:
    rows = []
    for p in c.m.personas:
        segs = [s for s in c.m.segments if s.persona == p.id]
        rows.append(
            [
                _join([_chip(c.colors[p.id]), _tag("b", p.name)]),
                _tag("code", p.id),
                p.description,
                ", ".join(str(s.id) for s in sorted(segs, key=lambda s: s.id)) or "—",
                _share(sum(s.share for s in segs)),
            ]
        )
    return _table(["persona", "id", "description", "segments", "share"], rows, numeric=[4])


def _lifecycle_section(c: _Card) -> _Html:
    lc = c.m.lifecycle
    rows: list[list[object]] = [
        [format_number(i + 1), _tag("b", rule.stage), _tag("code", format_condition(rule.when))]
        for i, rule in enumerate(lc.rules)
    ]
    rows.append(["", _tag("b", lc.default), _tag("span", "otherwise (default)", class_="muted")])
    return _Html(
        _note("Rules are evaluated in order over the visitor's profile; the first match wins.")
        + _table(["#", "stage", "when"], rows, numeric=[0])
    )


def _content_preview(content: Any) -> str:
    for value in (content.text, content.html, content.image_url, content.href, content.alt):
        if value:
            return _truncate(" ".join(str(value).split()), 140)
    return ""


def _catalogue_section(c: _Card) -> _Html:
    m = c.m
    in_model = set(m.offer_classes)
    parts: list[str] = [_tag("h3", f"Offers ({len(m.offers)})")]
    parts.append(
        _table(
            ["offer", "name", "category", "eligible when", "scored by the model"],
            [
                [
                    _tag("code", o.id),
                    o.name,
                    o.category or "—",
                    _tag("code", format_condition(o.eligibility)),
                    _pill("yes", "good") if o.id in in_model else _pill("no", "warn"),
                ]
                for o in m.offers
            ],
        )
    )
    parts.append(_tag("h3", f"Slots ({len(m.slots)})"))
    for slot in m.slots:
        parts.append(
            _tag(
                "h4",
                _join([_tag("code", slot.id), f" · {len(slot.variants)} variants"]),
            )
        )
        parts.append(
            _table(
                ["variant", "shows for offer", "shown when", "content"],
                [
                    [
                        _join(
                            [
                                _tag("code", v.id),
                                " ",
                                _pill("default", "info") if v.id == slot.default else "",
                            ]
                        ),
                        v.offer or "—",
                        _tag("code", format_condition(v.when)) if v.when else "—",
                        _join(
                            [
                                _tag("span", v.content.type, class_="tag"),
                                " ",
                                _content_preview(v.content),
                            ]
                        ),
                    ]
                    for v in slot.variants
                ],
            )
        )
    if m.experiments:
        parts.append(_tag("h3", f"Experiments ({len(m.experiments)})"))
        parts.append(
            _table(
                ["#", "definition"],
                [
                    [format_number(i + 1), _tag("code", _json(e, 600))]
                    for i, e in enumerate(m.experiments)
                ],
                numeric=[0],
            )
        )
    return _Html("".join(parts))


def _group_of(key: str) -> str:
    for prefix, _ in METRIC_GROUPS:
        if key.startswith(prefix + "_"):
            return prefix
    return "other"


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


_PER_K = re.compile(r"^(?P<name>[a-z][a-z0-9_]*?)_k(?P<k>\d+)$")


def _per_k(metrics: Mapping[str, float]) -> dict[str, dict[int, float]]:
    """Metrics computed for each candidate k (``silhouette_k3``...) as {name: {k: value}}."""
    found: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        match = _PER_K.match(key)
        if match and _group_of(key) == "other":
            found.setdefault(match["name"], {})[int(match["k"])] = value
    return {name: values for name, values in found.items() if len(values) > 1}


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


_KNOWN_DIAGNOSTICS = {"feature_importance", "churn_roc", "churn_calibration", "rfm_distribution"}


def _other_diagnostics(c: _Card) -> _Html | None:
    other = {k: v for k, v in c.diagnostics.items() if k not in _KNOWN_DIAGNOSTICS}
    if not other:
        return None
    return _table(
        ["diagnostic", "value"],
        [[_tag("code", k), _tag("code", _json(v, 1200))] for k, v in sorted(other.items())],
    )


# --- page ------------------------------------------------------------------------------------

_CSS = """
:root{--ink:#1f2933;--muted:#61707e;--line:#dfe4ea;--soft:#f4f6f8;--accent:#3b5bdb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
sans-serif;color:var(--ink);background:#fff}
.page{max-width:1120px;margin:0 auto;padding:32px 28px 64px}
header{border-bottom:1px solid var(--line);padding-bottom:20px}
.eyebrow{margin:0;color:var(--accent);font-weight:600;letter-spacing:.06em;text-transform:uppercase;
font-size:12px}
h1{margin:4px 0 16px;font-size:28px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
h2{margin:40px 0 8px;font-size:21px;padding-top:8px;border-top:1px solid var(--line)}
h3{margin:22px 0 8px;font-size:16px}
h4{margin:14px 0 6px;font-size:15px}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:8px 20px;margin:0}
.fact dt{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.fact dd{margin:0;font-weight:600}
nav{margin:18px 0 0;display:flex;flex-wrap:wrap;gap:6px}
nav a{font-size:13px;color:var(--accent);text-decoration:none;border:1px solid var(--line);
border-radius:999px;padding:2px 10px}
nav a:hover{background:var(--soft)}
.scroll{overflow-x:auto;margin:8px 0 12px}
table{border-collapse:collapse;font-size:13.5px;min-width:50%}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--soft);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{color:var(--muted);font-weight:500;background:none;white-space:nowrap}
table.kv{margin:6px 0}
table.profile td{padding:3px 4px;font-size:12.5px}
table.profile thead th{white-space:normal;min-width:88px;font-size:12.5px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;
overflow-wrap:break-word}
.sub{display:block;font-size:11px;color:var(--muted);font-weight:400}
.muted{color:var(--muted)}
.note{color:var(--muted);font-size:13.5px;max-width:80ch}
.up{color:#1e7b34;font-weight:600}.down{color:#b42318;font-weight:600}
.pill{display:inline-block;border-radius:999px;padding:0 8px;font-size:12px;font-weight:600}
.pill.good{background:#e3f4e8;color:#1e7b34}.pill.bad{background:#fde8e6;color:#b42318}
.pill.warn{background:#fff3d6;color:#8a5a00}.pill.info{background:#e7ecfb;color:#3b5bdb}
.tags{display:flex;flex-wrap:wrap;gap:6px}
.tag{display:inline-block;background:var(--soft);border:1px solid var(--line);border-radius:6px;
padding:1px 8px;font-size:12.5px}
.chip{display:inline-block;width:10px;height:10px;border-radius:3px;margin-right:6px}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.kpis>div{background:var(--soft);border-radius:10px;padding:10px 16px;min-width:150px}
.kpis .v{display:block;font-size:22px;font-weight:700;font-variant-numeric:tabular-nums}
.kpis .k{color:var(--muted);font-size:12.5px}
.input{border:1px solid var(--line);border-radius:10px;padding:4px 16px 10px;margin:12px 0}
details summary{cursor:pointer;color:var(--accent);font-size:13.5px;margin:6px 0}
figure.fig{margin:10px 0 18px}
figure.fig svg{max-width:100%;height:auto}
footer{margin-top:48px;color:var(--muted);font-size:12.5px;border-top:1px solid var(--line);
padding-top:12px}
@media print{nav{display:none}h2{break-before:auto}figure{break-inside:avoid}}
"""

# No scripts, no external loads: only inline styles and the page itself.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_report(manifest: Manifest) -> str:
    """Render the model card of ``manifest`` as one self-contained HTML page.

    Reads every figure from the manifest and nothing else (not ``manifest.files``), so the same
    manifest renders the same page. Not thread-safe: plotting temporarily changes matplotlib's
    global rcParams and the warnings filters.
    """
    # what manifest.json says: the deterministic encoder sorts every mapping, so a manifest in
    # memory and the same manifest read back from disk render the same bytes
    manifest = manifest_decoder.decode(manifest_encoder.encode(manifest))
    card = _Card(manifest)
    sections: list[tuple[str, str, _Html | None]] = [
        ("data", "Training data", _data_section(card)),
        ("segments", "Segments", _segments_section(card)),
        ("personas", "Personas", _personas_section(card)),
        ("lifecycle", "Lifecycle rules", _lifecycle_section(card)),
        ("catalogue", "Offers and slots", _catalogue_section(card)),
        ("metrics", "Held-out metrics", _metrics_section(card)),
        ("parity", "ONNX parity", _parity_section(card)),
        ("importance", "Feature importance", _importance_section(card)),
        ("churn", "Churn model", _churn_section(card)),
        ("rfm", "RFM", _rfm_section(card)),
        ("diagnostics", "Other diagnostics", _other_diagnostics(card)),
    ]
    present = [(sid, title, body) for sid, title, body in sections if body is not None]
    nav = _tag("nav", _join(_tag("a", title, href=f"#{sid}") for sid, title, _ in present))
    body = _join(
        _tag("section", _join([_tag("h2", title), body]), id=sid) for sid, title, body in present
    )
    footer = _tag(
        "footer",
        f"Rendered from manifest.json of {manifest.model_version} by model_export.bundle.card. "
        "Every number on this page is read from the manifest.",
    )
    page = _tag("div", _join([_header(card), nav, _tag("main", body), footer]), class_="page")
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(f'Model card · {manifest.model_version}')}</title>"
        f"<style>{_CSS}</style></head>\n<body>{page}</body></html>\n"
    )


def write_report(bundle_dir: Path, manifest: Manifest) -> Path:
    """Render the model card of ``manifest`` into ``bundle_dir/report.html`` (atomically:
    written to a temporary file, then renamed) and return its path."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / REPORT_FILE
    text = render_report(manifest)
    fd, tmp = tempfile.mkstemp(prefix=f".{REPORT_FILE}.", dir=bundle_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
