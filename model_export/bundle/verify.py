"""Verifying a bundle as serving does, and the errors of the bundle lifecycle.

Errors::

    ModelExportError          (model_export.errors)
    └── LifecycleError        base of the bundle lifecycle's errors
        ├── BundleRefused         a bundle to promote, roll back to or diff fails verification
        ├── RegressionRefused     a required metric got worse; ``.checks`` has every check
        │                         (defined in ``model_export.bundle.metrics``)
        ├── RequirementError      a requirement expression is malformed (also a ValueError)
        ├── CurrentBundleError    the current bundle's manifest cannot be read to compare metrics
        ├── LiveLinkError         ``live`` is not a symlink, or there is no ``live.previous``
        └── SampleError           a ``--sample`` file cannot be read or decoded

Must not import server.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec

from model_export.errors import ModelExportError
from sdk.bundle import Bundle, load_bundle
from sdk.errors import BundleError

__all__ = [
    "BundleRefused",
    "CurrentBundleError",
    "LifecycleError",
    "LiveLinkError",
    "RequirementError",
    "SampleError",
    "VerifyResult",
    "load_verified",
    "verify",
]


class LifecycleError(ModelExportError):
    """Base class of the bundle lifecycle errors."""


class BundleRefused(LifecycleError):
    """A bundle to promote, roll back to or compare fails verification; ``__cause__`` is the
    :class:`sdk.BundleError` that says why."""


class RequirementError(LifecycleError, ValueError):
    """A requirement expression is malformed."""


class CurrentBundleError(LifecycleError):
    """The current bundle's manifest cannot be read, so requirements cannot be checked."""


class LiveLinkError(LifecycleError):
    """``live`` exists but is not a symlink, or a rollback has no ``live.previous``."""


class SampleError(LifecycleError):
    """A sample file of decide requests cannot be read or decoded."""


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of :func:`verify`: ``ok`` with the bundle's identity, or the refusal."""

    path: str
    ok: bool
    model_version: str | None = None
    feature_set_version: str | None = None
    created_at: datetime | None = None
    error_type: str | None = None
    error: str | None = None


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


def load_verified(path: Path, role: str) -> Bundle:
    """The bundle at ``path``, verified; refused as the ``role`` bundle (current, candidate...).

    Raises:
        BundleRefused: the bundle fails verification.
    """
    try:
        return load_bundle(path.resolve())
    except BundleError as exc:
        raise BundleRefused(f"{role} bundle {path} refused: {exc}") from exc
