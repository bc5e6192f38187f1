"""The model card's sections on what a bundle holds: training data, segments, personas,
lifecycle rules, offers and slots.

Must not import server or sklearn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from model_export.bundle._card_charts import _bar_sizes, _heatmap, _per_k_chart, _plotting, _svg
from model_export.bundle._card_data import _Card, _per_k
from model_export.bundle._card_html import (
    _chip,
    _e,
    _Html,
    _is_scalar,
    _join,
    _json,
    _kv,
    _note,
    _pill,
    _scalar,
    _share,
    _signed,
    _table,
    _tag,
    _truncate,
    format_condition,
    format_number,
)

_SIGMA = "\N{GREEK SMALL LETTER SIGMA}"


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
