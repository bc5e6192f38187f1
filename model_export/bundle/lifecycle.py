"""Bundle lifecycle: verify a bundle, compare two, promote one behind a ``live`` link, roll back.

Servers read the bundle at one path, ``live``, which is a symbolic link to a versioned bundle
directory. :func:`promote` verifies the candidate with :func:`sdk.bundle.load_bundle` (the checks
serving makes), optionally requires that named metrics did not get worse than the bundle that is
live now, then repoints ``live`` by creating a temporary link and ``os.replace``-ing it over
``live``. ``rename(2)`` is atomic, so a server resolving ``live`` sees the old target or the new
one, never a mixture. The target ``live`` pointed at before is kept in the link
``live.previous``, which :func:`rollback` swaps back. Readers should resolve ``live`` once
(``Path(live).resolve()``) and load every file from that directory. Promote immutable bundle
directories (one per model version), not a directory that training rewrites in place.

Requirements (``--require``) are small expressions over training metrics, compared between the
current live bundle and the candidate (``delta = candidate - current``):

    ``NAME``           must not get worse: ``delta >= 0``, or ``delta <= 0`` when lower is better
    ``NAME>=D``        ``delta >= D``, e.g. ``segments_ari_vs_planted>=-0.01`` allows a 0.01 drop
    ``NAME<=D``        ``delta <= D``, e.g. ``offers_log_loss<=0.02`` allows a 0.02 rise

Lower is better for a metric whose name contains ``loss``, ``mae``, ``brier`` or ``diff``; higher
is better for every other metric. A metric missing from the candidate fails its requirement; one
missing from the current bundle passes (there is nothing to regress from), and so does every
requirement on a first promotion.

Errors::

    LifecycleError            base of this module's errors
    ├── BundleRefused         a bundle to promote, roll back to or diff fails verification
    ├── RegressionRefused     a required metric got worse; ``.checks`` has every check
    ├── RequirementError      a requirement expression is malformed (also a ValueError)
    ├── CurrentBundleError    the current bundle's manifest cannot be read to compare metrics
    ├── LiveLinkError         ``live`` is not a symlink, or there is no ``live.previous``
    └── SampleError           a ``--sample`` file cannot be read or decoded

Must not import server.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from sdk._conditions import check_condition
from sdk._errors import BundleError, ConditionError
from sdk.bundle import Bundle, ParityRow, load_bundle
from sdk.features import build_features
from sdk.manifest import ExperimentDef, ExplorationDef, HoldoutDef, Manifest, manifest_decoder
from sdk.schema import Behavior, DecideRequest

__all__ = [
    "LOWER_IS_BETTER",
    "NOT_PERSONALIZED",
    "BundleDiff",
    "BundleRefused",
    "BundleSide",
    "CatalogueChange",
    "CurrentBundleError",
    "FieldChange",
    "LifecycleError",
    "LiveLinkError",
    "MetricDelta",
    "Migration",
    "PromoteResult",
    "RegressionRefused",
    "Requirement",
    "RequirementCheck",
    "RequirementError",
    "SampleError",
    "VerifyResult",
    "check_requirements",
    "diff",
    "lower_is_better",
    "parse_requirement",
    "previous_link",
    "promote",
    "rollback",
    "verify",
]

#: Substrings of a metric name that mean lower values are better.
LOWER_IS_BETTER = ("loss", "mae", "rmse", "brier", "diff")
#: Label of rows that get no segment because the request gives no personalization consent.
NOT_PERSONALIZED = "(not personalized)"
#: Slack for float noise when comparing metric deltas.
_EPS = 1e-12


# --- errors ----------------------------------------------------------------------------------


class LifecycleError(Exception):
    """Base class of the bundle lifecycle errors."""


class BundleRefused(LifecycleError):
    """A bundle to promote, roll back to or compare fails verification; ``__cause__`` is the
    :class:`sdk.BundleError` that says why."""


class RegressionRefused(LifecycleError):
    """A required metric got worse than in the current bundle."""

    def __init__(self, message: str, checks: list[RequirementCheck]) -> None:
        super().__init__(message)
        self.checks = checks


class RequirementError(LifecycleError, ValueError):
    """A requirement expression is malformed."""


class CurrentBundleError(LifecycleError):
    """The current bundle's manifest cannot be read, so requirements cannot be checked."""


class LiveLinkError(LifecycleError):
    """``live`` exists but is not a symlink, or a rollback has no ``live.previous``."""


class SampleError(LifecycleError):
    """A sample file of decide requests cannot be read or decoded."""


# --- results ---------------------------------------------------------------------------------


class _Result(msgspec.Struct, frozen=True, kw_only=True):
    """Base of this module's results: immutable, JSON-encodable with msgspec."""


class VerifyResult(_Result, frozen=True, kw_only=True):
    """Outcome of :func:`verify`: ``ok`` with the bundle's identity, or the refusal."""

    path: str
    ok: bool
    model_version: str | None = None
    feature_set_version: str | None = None
    created_at: datetime | None = None
    error_type: str | None = None
    error: str | None = None


class Requirement(_Result, frozen=True, kw_only=True):
    """A parsed requirement: ``candidate[metric] - current[metric] <op> bound``."""

    spec: str
    metric: str
    op: Literal[">=", "<="]
    bound: float


class RequirementCheck(_Result, frozen=True, kw_only=True):
    """One requirement checked against two metric sets."""

    requirement: Requirement
    current: float | None
    candidate: float | None
    delta: float | None
    ok: bool
    message: str


class MetricDelta(_Result, frozen=True, kw_only=True):
    """One metric in the current and candidate bundles."""

    name: str
    current: float | None
    candidate: float | None
    delta: float | None
    lower_is_better: bool
    change: Literal["better", "worse", "same", "added", "removed"]


class Migration(_Result, frozen=True, kw_only=True):
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


class FieldChange(_Result, frozen=True, kw_only=True):
    """One changed field of a catalogue entry; ``None`` on a side where it does not exist."""

    field: str
    before: Any = None
    after: Any = None


class CatalogueChange(_Result, frozen=True, kw_only=True):
    """An offer, slot, lifecycle rule or persona added, removed, changed or moved."""

    kind: Literal["offer", "slot", "lifecycle", "persona", "experiment"]
    id: str
    change: Literal["added", "removed", "changed", "moved"]
    fields: list[FieldChange] = []


class BundleSide(_Result, frozen=True, kw_only=True):
    """Identity of one side of a diff."""

    path: str
    model_version: str
    created_at: datetime
    feature_set_version: str


class BundleDiff(_Result, frozen=True, kw_only=True):
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


class PromoteResult(_Result, frozen=True, kw_only=True):
    """Outcome of :func:`promote` or :func:`rollback`.

    ``target`` is what ``live`` points at now and ``previous`` what ``live.previous`` points at;
    ``changed`` is False when the candidate already was live."""

    live: str
    target: str
    previous: str | None
    model_version: str
    changed: bool
    checks: list[RequirementCheck] = []
    note: str | None = None


# --- metrics and requirements ----------------------------------------------------------------


def lower_is_better(metric: str) -> bool:
    """Whether lower is better for ``metric``: its name has loss, mae, rmse, brier or diff."""
    name = metric.lower()
    return any(word in name for word in LOWER_IS_BETTER)


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:(>=|<=)\s*([^\s]+))?\s*$")


def parse_requirement(spec: str) -> Requirement:
    """Parse ``NAME``, ``NAME>=D`` or ``NAME<=D`` (see the module docstring).

    Raises:
        RequirementError: the expression is malformed.
    """
    match = _REQUIREMENT.match(spec)
    if not match:
        raise RequirementError(
            f"requirement {spec!r} is not NAME, NAME>=DELTA or NAME<=DELTA "
            "(e.g. offers_top1_accuracy or segments_ari_vs_planted>=-0.01)"
        )
    metric, op, bound = match.groups()
    if op is None:
        return Requirement(
            spec=spec, metric=metric, op="<=" if lower_is_better(metric) else ">=", bound=0.0
        )
    try:
        value = float(bound)
    except ValueError:
        raise RequirementError(f"requirement {spec!r}: {bound!r} is not a number") from None
    if not math.isfinite(value):
        raise RequirementError(f"requirement {spec!r}: the bound must be finite")
    return Requirement(spec=spec, metric=metric, op=op, bound=value)  # type: ignore[arg-type]


def check_requirements(
    requirements: Sequence[Requirement],
    current: dict[str, float],
    candidate: dict[str, float],
) -> list[RequirementCheck]:
    """Check every requirement of ``candidate`` metrics against ``current`` metrics."""
    checks = []
    for req in requirements:
        now, new = current.get(req.metric), candidate.get(req.metric)
        delta: float | None = None
        if new is None or math.isnan(new):
            ok, message = False, "missing from the candidate"
        elif now is None or math.isnan(now):
            ok, message = True, "not in the current bundle: nothing to regress from"
        else:
            delta = new - now
            ok = delta >= req.bound - _EPS if req.op == ">=" else delta <= req.bound + _EPS
            message = (
                f"delta {delta:+.6g} {'satisfies' if ok else 'violates'} {req.op} {req.bound:g}"
            )
        checks.append(
            RequirementCheck(
                requirement=req, current=now, candidate=new, delta=delta, ok=ok, message=message
            )
        )
    return checks


def _metric_deltas(current: dict[str, float], candidate: dict[str, float]) -> list[MetricDelta]:
    deltas = []
    for name in sorted(current.keys() | candidate.keys()):
        a, b = current.get(name), candidate.get(name)
        low = lower_is_better(name)
        delta: float | None = None
        change: Literal["better", "worse", "same", "added", "removed"]
        if a is None:
            change = "added"
        elif b is None:
            change = "removed"
        else:
            delta = b - a
            if math.isnan(delta) or abs(delta) <= _EPS:
                change = "same"
            else:
                change = "better" if (delta < 0) == low else "worse"
        deltas.append(
            MetricDelta(
                name=name, current=a, candidate=b, delta=delta, lower_is_better=low, change=change
            )
        )
    return deltas


# --- verify ----------------------------------------------------------------------------------


def verify(path: str | Path) -> VerifyResult:
    """Verify the bundle at ``path`` the way serving does (:func:`sdk.bundle.load_bundle`,
    parity replay included). A refusal is returned, not raised."""
    try:
        bundle = load_bundle(Path(path).resolve())
    except BundleError as exc:
        return VerifyResult(path=str(path), ok=False, error_type=type(exc).__name__, error=str(exc))
    m = bundle.manifest
    return VerifyResult(
        path=str(path),
        ok=True,
        model_version=m.model_version,
        feature_set_version=m.feature_set_version,
        created_at=m.created_at,
    )


def _load(path: Path, role: str) -> Bundle:
    try:
        return load_bundle(path.resolve())
    except BundleError as exc:
        raise BundleRefused(f"{role} bundle {path} refused: {exc}") from exc


# --- diff ------------------------------------------------------------------------------------


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
    of the two ``parity.jsonl`` files (held-out training requests), or the decide requests in
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
    a = _load(cur_path, "current")
    b = _load(cand_path, "candidate")
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
    metrics = _metric_deltas(ma.training.metrics, mb.training.metrics)
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


# --- promote and rollback --------------------------------------------------------------------


def previous_link(live: str | Path) -> Path:
    """Where :func:`promote` records the target ``live`` had before: ``live.previous``."""
    live = Path(live)
    return live.with_name(f"{live.name}.previous")


def _link_target(target: Path, live: Path) -> str:
    """What to store in the link: relative to the link's folder when the target lies under
    it (the tree stays movable), absolute otherwise."""
    base = live.parent.resolve()
    return str(target.relative_to(base)) if base in target.parents else str(target)


def _resolve_link(link: Path) -> Path:
    target = Path(os.readlink(link))
    return (link.parent / target).resolve() if not target.is_absolute() else target.resolve()


def _fsync_dir(directory: Path) -> None:
    with suppress(OSError):  # not every platform/filesystem can fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: a new link under a temporary name, then
    ``os.replace`` (``rename(2)``) over ``link``."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.symlink(target, tmp, target_is_directory=True)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(link.parent)


@contextmanager
def _locked(live: Path) -> Iterator[None]:
    """Serialise promotions of one ``live`` link across processes (POSIX ``flock``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    lock = live.with_name(f".{live.name}.lock")
    with lock.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_live(live: Path) -> None:
    if live.exists() and not live.is_symlink():
        raise LiveLinkError(
            f"{live} exists and is not a symlink: move that bundle to its own directory "
            f"and promote it, so that {live} can become a link"
        )


def _current_metrics(current: Path) -> dict[str, float]:
    try:
        manifest = manifest_decoder.decode((current / "manifest.json").read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise CurrentBundleError(
            f"cannot read the metrics of the current bundle {current}: {exc}; "
            "promote without requirements to replace it"
        ) from exc
    return dict(manifest.training.metrics)


def promote(
    candidate: str | Path,
    live: str | Path,
    *,
    require: Sequence[str] = (),
    current: str | Path | None = None,
) -> PromoteResult:
    """Verify ``candidate`` and make the symlink ``live`` point at it atomically.

    Args:
        candidate: the bundle directory to serve (symlinks in its path are resolved, so
            ``live`` never points through another link that could change under it).
        live: the symlink servers load bundles through; created if absent.
        require: requirement expressions (see the module docstring) checked against
            ``current``.
        current: the bundle to compare metrics with; default: what ``live`` points at.

    Raises:
        RequirementError: a requirement expression is malformed.
        BundleRefused: the candidate fails verification; ``live`` is untouched.
        RegressionRefused: a requirement is violated; ``live`` is untouched.
        CurrentBundleError: requirements were given but the current metrics are unreadable.
        LiveLinkError: ``live`` exists and is not a symlink.
    """
    requirements = [parse_requirement(spec) for spec in require]
    live = Path(live)
    _check_live(live)
    target = Path(candidate).resolve()
    bundle = _load(target, "candidate")
    with _locked(live):
        old = _resolve_link(live) if live.is_symlink() else None
        base = Path(current).resolve() if current is not None else old
        checks: list[RequirementCheck] = []
        note = None
        if requirements and base is not None:
            checks = check_requirements(
                requirements, _current_metrics(base), dict(bundle.manifest.training.metrics)
            )
            failed = [c for c in checks if not c.ok]
            if failed:
                detail = "; ".join(f"{c.requirement.spec}: {c.message}" for c in failed)
                raise RegressionRefused(
                    f"candidate {bundle.version} regresses against {base}: {detail}", checks
                )
        elif requirements:
            note = "no current bundle: this is the first promotion, requirements not checked"
        prev = previous_link(live)
        if old == target:
            return PromoteResult(
                live=str(live),
                target=os.readlink(live),
                previous=os.readlink(prev) if prev.is_symlink() else None,
                model_version=bundle.version,
                changed=False,
                checks=checks,
                note="the candidate already is live",
            )
        previous = None
        if live.is_symlink():
            previous = os.readlink(live)
            _replace_link(prev, previous)  # first: a crash here leaves live as it was
        link = _link_target(target, live)
        _replace_link(live, link)
    return PromoteResult(
        live=str(live),
        target=link,
        previous=previous,
        model_version=bundle.version,
        changed=True,
        checks=checks,
        note=note,
    )


def rollback(live: str | Path) -> PromoteResult:
    """Point ``live`` back at ``live.previous`` (verified first); ``live.previous`` then points
    at the bundle that was rolled back, so a second rollback rolls forward again.

    Raises:
        LiveLinkError: ``live`` is not a symlink or no previous target is recorded.
        BundleRefused: the previous bundle fails verification; nothing is changed.
    """
    live = Path(live)
    prev = previous_link(live)
    if not live.is_symlink():
        raise LiveLinkError(f"{live} is not a symlink made by promote")
    if not prev.is_symlink():
        raise LiveLinkError(f"no previous bundle recorded ({prev} does not exist)")
    with _locked(live):
        back = os.readlink(prev)
        bundle = _load(_resolve_link(prev), "previous")
        forward = os.readlink(live)
        _replace_link(live, back)  # first: a crash here still leaves the rollback done
        _replace_link(prev, forward)
    return PromoteResult(
        live=str(live), target=back, previous=forward, model_version=bundle.version, changed=True
    )


# --- policy ------------------------------------------------------------------------------------


class PolicyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bundle's policy: the global holdout, the experiments and exploration (TOML or JSON;
    the keys of :class:`sdk.manifest.ExperimentDef` and friends, camelCase)."""

    experiments: list[ExperimentDef] = []
    holdout: HoldoutDef | None = None
    exploration: ExplorationDef | None = None


def load_policy(path: str | Path) -> PolicyConfig:
    """Read a policy file (``.toml`` or ``.json``).

    Raises:
        RequirementError: the file is not valid or names unknown fields (the message says
            where).
    """
    file = Path(path)
    try:
        data = file.read_bytes()
        if file.suffix.lower() == ".toml":
            return msgspec.toml.decode(data, type=PolicyConfig)
        return msgspec.json.decode(data, type=PolicyConfig)
    except (OSError, msgspec.DecodeError) as exc:
        raise RequirementError(f"{file}: {exc}") from exc


def with_policy(src: str | Path, out: str | Path, policy: PolicyConfig, name: str) -> Manifest:
    """Write a copy of the bundle at ``src`` to ``out`` with ``policy`` in its manifest.

    The models and parity rows are the source's; the manifest, the model card and the hashes
    are new, and the model version is ``{name}-{hash of the models}``, so decisions say which
    policy made them. Experiment slots, arm variants and conditions are checked against the
    catalogue before anything is written.

    Raises:
        BundleRefused: the source bundle is refused.
        RequirementError: the policy names an unknown slot or variant.
    """
    from model_export.bundle.card import render_report
    from model_export.bundle.export import write_bundle  # onnx/sklearn only when writing

    source = _load(Path(src), "source")
    m = source.manifest
    variants = {s.id: {v.id for v in s.variants} for s in m.slots}
    for exp in policy.experiments:
        for slot in exp.slots:
            if slot not in variants:
                raise RequirementError(f"experiment {exp.key}: unknown slot {slot!r}")
        for arm in exp.arms:
            for slot, variant in arm.variants.items():
                if variant not in variants.get(slot, set()):
                    raise RequirementError(
                        f"experiment {exp.key}, arm {arm.key}: slot {slot!r} has no variant "
                        f"{variant!r}"
                    )
        try:
            check_condition(exp.condition, f"experiments.{exp.key}.condition")
        except ConditionError as exc:
            raise RequirementError(str(exc)) from exc
    keep = {
        f: getattr(m, f)
        for f in m.__struct_fields__
        if f
        not in (
            "format_version",
            "model_version",
            "created_at",
            "models",
            "fused",
            "producer",
            "files",
            "experiments",
            "holdout",
            "exploration",
        )
    }
    models: dict[str, tuple[bytes, Sequence[str]]] = {
        key: ((source.path / spec.file).read_bytes(), list(spec.features))
        for key, spec in m.models.items()
    }
    return write_bundle(
        Path(out),
        models=models,
        parity=(source.path / "parity.jsonl").read_bytes(),
        manifest_fields={
            **keep,
            "experiments": policy.experiments,
            "holdout": policy.holdout,
            "exploration": policy.exploration,
        },
        name=name,
        created_at=datetime.now(UTC),
        render_report=render_report,
    )
