"""Comparing two bundles (``tailor bundle diff``): metrics, where the same rows land (segment
and persona migration), and what changed in the catalogue.

Must not import server.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from model_export.bundle.metrics import MetricDelta, metric_deltas
from model_export.bundle.verify import SampleError, load_verified
from sdk.bundle import Bundle, ParityRow
from sdk.features import build_features
from sdk.manifest import Manifest
from sdk.schema import Behavior, DecideRequest

__all__ = [
    "NOT_PERSONALIZED",
    "BundleDiff",
    "BundleSide",
    "CatalogueChange",
    "FieldChange",
    "Migration",
    "diff",
]

#: Label of rows that get no segment because the request gives no personalization consent.
NOT_PERSONALIZED = "(not personalized)"


class Migration(msgspec.Struct, frozen=True, kw_only=True):
    """Where the same rows land under the current and candidate bundles.

    ``counts[i][j]`` is how many rows the current bundle puts in ``rows[i]`` and the candidate
    puts in ``columns[j]``; ``row_ids``/``column_ids`` are the segment or persona ids (or
    ``(not personalized)``). ``same`` counts rows whose id is equal on both sides (meaningful for
    personas, whose ids are stable; segment ids are arbitrary per training run), and ``ari`` is
    the adjusted Rand index of the two labelings (1 = the same partition, whatever the ids).
    """

    rows: list[str]
    columns: list[str]
    row_ids: list[str]
    column_ids: list[str]
    counts: list[list[int]]
    total: int
    same: int
    ari: float


class FieldChange(msgspec.Struct, frozen=True, kw_only=True):
    """One changed field of a catalogue entry; ``None`` on a side where it does not exist."""

    field: str
    before: Any = None
    after: Any = None


class CatalogueChange(msgspec.Struct, frozen=True, kw_only=True):
    """An offer, slot, lifecycle rule or persona added, removed, changed or moved."""

    kind: Literal["offer", "slot", "lifecycle", "persona", "experiment"]
    id: str
    change: Literal["added", "removed", "changed", "moved"]
    fields: list[FieldChange] = []


class BundleSide(msgspec.Struct, frozen=True, kw_only=True):
    """Identity of one side of a diff."""

    path: str
    model_version: str
    created_at: datetime
    feature_set_version: str


class BundleDiff(msgspec.Struct, frozen=True, kw_only=True):
    """What changes when ``candidate`` replaces ``current``."""

    current: BundleSide
    candidate: BundleSide
    rows: int
    rows_source: str
    metrics: list[MetricDelta]
    policy: list[MetricDelta]
    segments: Migration
    personas: Migration
    catalogue: list[CatalogueChange]
    feature_set_changed: bool
    features_added: list[str]
    features_removed: list[str]


class _Row(msgspec.Struct, frozen=True):
    request: DecideRequest
    now: datetime
    profile: Behavior | None


def _parity_rows(bundle: Bundle) -> list[_Row]:
    decoder = msgspec.json.Decoder(ParityRow)
    lines = (bundle.path / "parity.jsonl").read_bytes().splitlines()
    rows = [decoder.decode(line) for line in lines if line.strip()]
    return [_Row(r.request, r.now, r.profile) for r in rows]


def _sample_rows(path: Path, now: datetime) -> list[_Row]:
    decoder = msgspec.json.Decoder(DecideRequest)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise SampleError(f"cannot read sample {path}: {exc}") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(_Row(decoder.decode(line), now, None))
        except msgspec.DecodeError as exc:
            raise SampleError(f"{path} line {n}: {exc}") from exc
    if not rows:
        raise SampleError(f"{path} holds no decide requests")
    return rows


def _union(*groups: list[_Row]) -> list[_Row]:
    seen: set[bytes] = set()
    rows = []
    for group in groups:
        for row in group:
            key = msgspec.json.encode(row)
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def _segments_of(bundle: Bundle, rows: list[_Row]) -> list[int | None]:
    """The nearest segment of each row under ``bundle``, None without personalization consent
    (the decider gives such requests no segment)."""
    import numpy as np

    m = bundle.manifest
    version = m.feature_set_version
    personal = [i for i, r in enumerate(rows) if r.request.consent.personalization]
    labels: list[int | None] = [None] * len(rows)
    if not personal:
        return labels
    matrix = np.asarray(
        [
            build_features(rows[i].request, rows[i].profile, rows[i].now, version).values
            for i in personal
        ],
        dtype=np.float32,
    )
    output = next(o.name for o in m.models["segments"].outputs if o.dtype == "float32")
    distances = np.asarray(bundle.run(matrix)["segments"][output])
    for i, label in zip(personal, np.argmin(distances, axis=1).tolist(), strict=True):
        labels[i] = int(label)
    return labels


def _comb2(n: int) -> float:
    return n * (n - 1) / 2


def _ari(counts: list[list[int]]) -> float:
    total = sum(map(sum, counts))
    if total < 2:
        return 1.0
    index = sum(_comb2(c) for row in counts for c in row)
    rows = sum(_comb2(sum(row)) for row in counts)
    cols = sum(_comb2(sum(col)) for col in zip(*counts, strict=True)) if counts else 0.0
    expected = rows * cols / _comb2(total)
    best = (rows + cols) / 2
    return 1.0 if best == expected else (index - expected) / (best - expected)


def _migration(
    pairs: list[tuple[str, str]],
    row_ids: list[str],
    col_ids: list[str],
    row_names: dict[str, str],
    col_names: dict[str, str],
    *,
    align: bool,
) -> Migration:
    """Contingency table of ``pairs``. With ``align``, columns are ordered greedily so that
    each row's largest count sits on the diagonal (segment ids differ between runs)."""
    for a, b in pairs:
        if a not in row_ids:
            row_ids.append(a)
        if b not in col_ids:
            col_ids.append(b)
    count: dict[tuple[str, str], int] = {}
    for pair in pairs:
        count[pair] = count.get(pair, 0) + 1
    if align:
        ordered: list[str] = []
        for r in row_ids:
            free = [c for c in col_ids if c not in ordered]
            if free:
                best = max(free, key=lambda c: (count.get((r, c), 0), -col_ids.index(c)))
                if count.get((r, best), 0) > 0:
                    ordered.append(best)
        col_ids = ordered + [c for c in col_ids if c not in ordered]
    counts = [[count.get((r, c), 0) for c in col_ids] for r in row_ids]
    return Migration(
        rows=[row_names.get(r, r) for r in row_ids],
        columns=[col_names.get(c, c) for c in col_ids],
        row_ids=row_ids,
        column_ids=col_ids,
        counts=counts,
        total=len(pairs),
        same=sum(1 for a, b in pairs if a == b),
        ari=round(_ari(counts), 6),
    )


def _segment_names(m: Manifest) -> dict[str, str]:
    personas = {p.id: p.name for p in m.personas}
    names = {str(s.id): f"{s.id} · {personas.get(s.persona, s.persona)}" for s in m.segments}
    names[NOT_PERSONALIZED] = NOT_PERSONALIZED
    return names


def _persona_of(m: Manifest) -> dict[int, str]:
    return {s.id: s.persona for s in m.segments}


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


_LEAVES = frozenset({"eligibility", "when", "content"})


def _field_changes(before: Any, after: Any, prefix: str = "") -> list[FieldChange]:
    """Leaf-level differences of two JSON-like values. Lists of objects with an ``id`` are
    matched by id; conditions and contents are compared whole."""
    if before == after:
        return []
    leaf = prefix.rsplit(".", 1)[-1] in _LEAVES
    if isinstance(before, dict) and isinstance(after, dict) and not leaf:
        changes = []
        for key in list(before) + [k for k in after if k not in before]:
            path = f"{prefix}.{key}" if prefix else str(key)
            changes.extend(_field_changes(before.get(key), after.get(key), path))
        return changes
    by_id = (
        isinstance(before, list)
        and isinstance(after, list)
        and all(isinstance(v, dict) and "id" in v for v in [*before, *after])
    )
    if by_id and not leaf:
        old = {v["id"]: v for v in before}
        new = {v["id"]: v for v in after}
        changes = []
        for key in list(old) + [k for k in new if k not in old]:
            changes.extend(_field_changes(old.get(key), new.get(key), f"{prefix}[{key}]"))
        return changes
    return [FieldChange(field=prefix or "value", before=before, after=after)]


def _keyed_changes(
    kind: Literal["offer", "slot", "persona"],
    before: Sequence[Any],
    after: Sequence[Any],
) -> list[CatalogueChange]:
    old = {item.id: _plain(item) for item in before}
    new = {item.id: _plain(item) for item in after}
    changes = []
    for key in list(old) + [k for k in new if k not in old]:
        if key not in new:
            changes.append(CatalogueChange(kind=kind, id=key, change="removed"))
        elif key not in old:
            changes.append(CatalogueChange(kind=kind, id=key, change="added"))
        elif old[key] != new[key]:
            fields = _field_changes(old[key], new[key])
            changes.append(CatalogueChange(kind=kind, id=key, change="changed", fields=fields))
    return changes


def _lifecycle_changes(a: Manifest, b: Manifest) -> list[CatalogueChange]:
    old = {r.stage: (i, _plain(r.when)) for i, r in enumerate(a.lifecycle.rules)}
    new = {r.stage: (i, _plain(r.when)) for i, r in enumerate(b.lifecycle.rules)}
    changes = []
    for stage in list(old) + [s for s in new if s not in old]:
        if stage not in new:
            changes.append(CatalogueChange(kind="lifecycle", id=stage, change="removed"))
        elif stage not in old:
            when = FieldChange(field="when", after=new[stage][1])
            changes.append(
                CatalogueChange(kind="lifecycle", id=stage, change="added", fields=[when])
            )
        else:
            (i, w0), (j, w1) = old[stage], new[stage]
            fields = []
            if w0 != w1:
                fields.append(FieldChange(field="when", before=w0, after=w1))
            if i != j:
                fields.append(FieldChange(field="position", before=i + 1, after=j + 1))
            if fields:
                change: Literal["changed", "moved"] = "changed" if w0 != w1 else "moved"
                changes.append(
                    CatalogueChange(kind="lifecycle", id=stage, change=change, fields=fields)
                )
    if a.lifecycle.default != b.lifecycle.default:
        field = FieldChange(field="default", before=a.lifecycle.default, after=b.lifecycle.default)
        changes.append(
            CatalogueChange(kind="lifecycle", id="(default)", change="changed", fields=[field])
        )
    return changes


def _experiment_changes(a: Manifest, b: Manifest) -> list[CatalogueChange]:
    if a.experiments == b.experiments:
        return []
    fields = _field_changes(a.experiments, b.experiments, "experiments")
    return [CatalogueChange(kind="experiment", id="experiments", change="changed", fields=fields)]


def _side(bundle: Bundle, path: Path) -> BundleSide:
    m = bundle.manifest
    return BundleSide(
        path=str(path),
        model_version=m.model_version,
        created_at=m.created_at,
        feature_set_version=m.feature_set_version,
    )


def diff(
    current: str | Path,
    candidate: str | Path,
    sample: str | Path | None = None,
    *,
    now: datetime | None = None,
) -> BundleDiff:
    """Compare two bundles: metrics, where the same visitors land, and the catalogue.

    Both bundles are verified first. The rows run through both segment models are the union
    of the two ``parity.jsonl`` files (synthetic requests), or the decide requests in
    ``sample`` (JSON lines). Each bundle builds its own feature rows with its own feature set
    version, so bundles with different feature sets compare fine.

    Args:
        current: the bundle serving now.
        candidate: the bundle that would replace it.
        sample: JSON lines of decide requests to use instead of the parity rows.
        now: the time for sample requests without a ``timestamp`` (default: now, UTC).

    Raises:
        BundleRefused: either bundle fails verification.
        SampleError: the sample file cannot be read or decoded.
    """
    cur_path, cand_path = Path(current), Path(candidate)
    a = load_verified(cur_path, "current")
    b = load_verified(cand_path, "candidate")
    ma, mb = a.manifest, b.manifest
    if sample is not None:
        rows = _sample_rows(Path(sample), now or datetime.now(UTC))
        source = str(sample)
    else:
        rows = _union(_parity_rows(a), _parity_rows(b))
        source = "parity.jsonl of both bundles"
    seg_a, seg_b = _segments_of(a, rows), _segments_of(b, rows)

    def sid(label: int | None) -> str:
        return NOT_PERSONALIZED if label is None else str(label)

    seg_pairs = [(sid(x), sid(y)) for x, y in zip(seg_a, seg_b, strict=True)]
    pa, pb = _persona_of(ma), _persona_of(mb)
    persona_pairs = [
        (
            NOT_PERSONALIZED if x is None else pa[x],
            NOT_PERSONALIZED if y is None else pb[y],
        )
        for x, y in zip(seg_a, seg_b, strict=True)
    ]
    segments = _migration(
        seg_pairs,
        [str(s.id) for s in sorted(ma.segments, key=lambda s: s.id)],
        [str(s.id) for s in sorted(mb.segments, key=lambda s: s.id)],
        _segment_names(ma),
        _segment_names(mb),
        align=True,
    )
    cand_personas = [p.id for p in mb.personas]
    persona_cols = [p.id for p in ma.personas if p.id in cand_personas]
    persona_cols += [p for p in cand_personas if p not in persona_cols]
    personas = _migration(
        persona_pairs,
        [p.id for p in ma.personas],
        persona_cols,
        {p.id: p.name for p in ma.personas},
        {p.id: p.name for p in mb.personas},
        align=False,
    )
    metrics = metric_deltas(ma.training.metrics, mb.training.metrics)
    has_policy = [any(k.startswith("policy_value") for k in m.training.metrics) for m in (ma, mb)]
    policy = (
        [d for d in metrics if d.name.startswith("policy_value") and d.delta is not None]
        if all(has_policy)
        else []
    )
    catalogue = [
        *_keyed_changes("offer", ma.offers, mb.offers),
        *_keyed_changes("slot", ma.slots, mb.slots),
        *_lifecycle_changes(ma, mb),
        *_keyed_changes("persona", ma.personas, mb.personas),
        *_experiment_changes(ma, mb),
    ]
    names_a, names_b = set(ma.feature_names), set(mb.feature_names)
    return BundleDiff(
        current=_side(a, cur_path),
        candidate=_side(b, cand_path),
        rows=len(rows),
        rows_source=source,
        metrics=metrics,
        policy=policy,
        segments=segments,
        personas=personas,
        catalogue=catalogue,
        feature_set_changed=ma.feature_set_version != mb.feature_set_version,
        features_added=[f for f in mb.feature_names if f not in names_a],
        features_removed=[f for f in ma.feature_names if f not in names_b],
    )
