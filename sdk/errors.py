"""The SDK's exception tree. Domain errors carry no HTTP status; the server maps them.

    TailorError
    ├── BundleError                 a model bundle cannot be used
    │   ├── BundleFormatError       manifest missing, unreadable, unknown fields or wrong version
    │   ├── BundleIntegrityError    a file is missing or its sha256 does not match the manifest
    │   ├── BundleModelError        an ONNX model's inputs/outputs differ from the manifest
    │   └── BundleParityError       replaying parity.jsonl gives outputs training did not expect
    ├── ConditionError              a targeting/rule condition is malformed
    ├── GeoDatabaseError            a GeoIP database cannot be read
    ├── TransportError              the server could not be reached or timed out (client)
    │   └── CircuitOpenError        the client's circuit breaker refused the call
    └── APIError                    the server answered with a problem (client); has .problem

``MissingExtraError`` is an ``ImportError`` naming the extra that provides a missing package.

Must not import anything but the standard library.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "BundleError",
    "BundleFormatError",
    "BundleIntegrityError",
    "BundleModelError",
    "BundleParityError",
    "CircuitOpenError",
    "ConditionError",
    "GeoDatabaseError",
    "MissingExtraError",
    "TailorError",
    "TransportError",
]


class TailorError(Exception):
    """Base class of every error raised by Tailor."""


class BundleError(TailorError):
    """A model bundle was refused; the message says which file and why."""


class BundleFormatError(BundleError):
    """Raised when the manifest is missing, is not valid JSON, has unknown fields or a format or
    feature-set version this code cannot read."""


class BundleIntegrityError(BundleError):
    """Raised when a file listed in the manifest is missing or its sha256 differs."""


class BundleModelError(BundleError):
    """Raised when an ONNX model cannot be loaded or its input/output names, dtypes or shapes
    differ from what the manifest declares."""


class BundleParityError(BundleError):
    """Raised when replaying ``parity.jsonl`` through features + ONNX differs from training."""


class ConditionError(TailorError):
    """Raised when a condition in the MongoDB-style language is malformed."""


class GeoDatabaseError(TailorError):
    """Raised when a MaxMind database cannot be opened or is corrupt."""


class TransportError(TailorError):
    """Raised by the client when the server cannot be reached, or does not answer in time."""


class CircuitOpenError(TransportError):
    """Raised by the client, without calling the server, while its circuit breaker is open
    (the server failed repeatedly a moment ago)."""


class APIError(TailorError):
    """Raised by the client when the server answers with an RFC 9457 problem."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        title = problem.get("title", "error")
        detail = problem.get("detail")
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))


class MissingExtraError(ImportError):
    """Raised when an optional dependency is missing; the message names the extra."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is required for this feature: install it with 'pip install tailor[{extra}]'"
        )
        self.extra = extra
