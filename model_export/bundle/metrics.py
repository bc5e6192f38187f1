"""Training metrics of two bundles compared: which direction is better, deltas, and the
requirements a promotion checks.

Must not import server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

import msgspec

from model_export.bundle.verify import LifecycleError, RequirementError

__all__ = [
    "LOWER_IS_BETTER",
    "MetricDelta",
    "RegressionRefused",
    "Requirement",
    "RequirementCheck",
    "check_requirements",
    "lower_is_better",
    "metric_deltas",
    "parse_requirement",
]

#: Substrings of a metric name that mean lower values are better.
LOWER_IS_BETTER = ("loss", "mae", "rmse", "brier", "diff")
#: Slack for float noise when comparing metric deltas.
_EPS = 1e-12


class Requirement(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed requirement: ``candidate[metric] - current[metric] <op> bound``."""

    spec: str
    metric: str
    op: Literal[">=", "<="]
    bound: float


class RequirementCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One requirement checked against two metric sets."""

    requirement: Requirement
    current: float | None
    candidate: float | None
    delta: float | None
    ok: bool
    message: str


class MetricDelta(msgspec.Struct, frozen=True, kw_only=True):
    """One metric in the current and candidate bundles."""

    name: str
    current: float | None
    candidate: float | None
    delta: float | None
    lower_is_better: bool
    change: Literal["better", "worse", "same", "added", "removed"]


class RegressionRefused(LifecycleError):
    """A required metric got worse than in the current bundle; ``checks`` has every check."""

    def __init__(self, message: str, checks: list[RequirementCheck]) -> None:
        super().__init__(message)
        self.checks = checks


def lower_is_better(metric: str) -> bool:
    """Whether lower is better for ``metric``: its name has loss, mae, rmse, brier or diff."""
    name = metric.lower()
    return any(word in name for word in LOWER_IS_BETTER)


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:(>=|<=)\s*([^\s]+))?\s*$")


def parse_requirement(spec: str) -> Requirement:
    """Parse a requirement on a metric's ``delta = candidate - current``.

    ``NAME``: must not get worse (``delta >= 0``, or ``<= 0`` when lower is better);
    ``NAME>=D``: ``delta >= D`` (``segments_ari_vs_planted>=-0.01`` allows a 0.01 drop);
    ``NAME<=D``: ``delta <= D`` (``offers_log_loss<=0.02`` allows a 0.02 rise).
    :func:`check_requirements` fails a metric missing from the candidate and passes one missing
    from the current bundle (nothing to regress from).

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


def metric_deltas(current: dict[str, float], candidate: dict[str, float]) -> list[MetricDelta]:
    """Every metric of either bundle, with its delta (candidate minus current) and direction."""
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
