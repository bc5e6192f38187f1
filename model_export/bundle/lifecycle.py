"""Which bundle is live: promote a verified bundle behind the ``live`` symlink, atomically, and
roll back to ``live.previous``. Also the one import of the whole lifecycle: verify, diff,
requirements and policy editing live in their own modules and are re-exported here.

Must not import server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import msgspec

from model_export.bundle.diff import (
    NOT_PERSONALIZED,
    BundleDiff,
    BundleSide,
    CatalogueChange,
    FieldChange,
    Migration,
    diff,
)
from model_export.bundle.metrics import (
    LOWER_IS_BETTER,
    MetricDelta,
    RegressionRefused,
    Requirement,
    RequirementCheck,
    check_requirements,
    lower_is_better,
    parse_requirement,
)
from model_export.bundle.policy import PolicyConfig, load_policy, with_policy
from model_export.bundle.verify import (
    BundleRefused,
    CurrentBundleError,
    LifecycleError,
    LiveLinkError,
    RequirementError,
    SampleError,
    VerifyResult,
    load_verified,
    verify,
)
from sdk.manifest import manifest_decoder

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
    "PolicyConfig",
    "PromoteResult",
    "RegressionRefused",
    "Requirement",
    "RequirementCheck",
    "RequirementError",
    "SampleError",
    "VerifyResult",
    "check_requirements",
    "diff",
    "load_policy",
    "lower_is_better",
    "parse_requirement",
    "previous_link",
    "promote",
    "rollback",
    "verify",
    "with_policy",
]


class PromoteResult(msgspec.Struct, frozen=True, kw_only=True):
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

    A temporary link is ``os.replace``-d over ``live``, so a server resolving ``live`` sees the
    old target or the new one, never a mixture; the old target is kept in ``live.previous``.
    Readers should resolve ``live`` once and load every file from that directory; promote
    immutable bundle directories, not one that training rewrites in place.

    Args:
        candidate: the bundle directory to serve (symlinks in its path are resolved, so
            ``live`` never points through another link that could change under it).
        live: the symlink servers load bundles through; created if absent.
        require: requirement expressions (:mod:`model_export.bundle.metrics`) checked
            against ``current``.
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
    bundle = load_verified(target, "candidate")
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
        bundle = load_verified(_resolve_link(prev), "previous")
        forward = os.readlink(live)
        _replace_link(live, back)  # first: a crash here still leaves the rollback done
        _replace_link(prev, forward)
    return PromoteResult(
        live=str(live), target=back, previous=forward, model_version=bundle.version, changed=True
    )
