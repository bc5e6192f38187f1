"""The SDK's exception tree. Domain errors carry no HTTP status; the server maps them.

    TailorError
    ├── BundleError                 a model bundle cannot be used
    │   ├── BundleFormatError       manifest missing, unreadable, unknown fields or wrong version
    │   │   └── SensitiveRuleError  a rule targets a sensitive category or page path
    │   ├── BundleIntegrityError    a file is missing or its sha256 does not match the manifest
    │   ├── BundleModelError        an ONNX model's inputs/outputs differ from the manifest
    │   ├── BundleParityError       replaying parity.jsonl gives outputs training did not expect
    │   ├── BundleSignatureError    trusted keys were given and the signature is missing or wrong
    │   └── BundleDownloadError     local mode refused what a server offered as a bundle
    │       ├── UnsafeBundleFileError   a file name or cached file that is not a plain file
    │       ├── BundleTooLargeError     a file or the whole bundle is over its size cap
    │       └── BundleTimeoutError      a download took longer than its deadline
    ├── ConditionError              a targeting/rule condition is malformed
    ├── GeoDatabaseError            a GeoIP database cannot be read
    ├── InsecureURLError            local mode would fetch bundles over plain http:// (not loopback)
    ├── SecretKeyRequiredError      local mode was given a public key to fetch bundles with
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
    "BundleDownloadError",
    "BundleError",
    "BundleFormatError",
    "BundleIntegrityError",
    "BundleModelError",
    "BundleParityError",
    "BundleSignatureError",
    "BundleTimeoutError",
    "BundleTooLargeError",
    "CircuitOpenError",
    "ConditionError",
    "GeoDatabaseError",
    "InsecureURLError",
    "MissingExtraError",
    "SecretKeyRequiredError",
    "SensitiveRuleError",
    "TailorError",
    "TransportError",
    "UnsafeBundleFileError",
]


class TailorError(Exception):
    """Base class of every error raised by Tailor."""


class BundleError(TailorError):
    """A model bundle was refused; the message says which file and why."""


class BundleFormatError(BundleError):
    """Raised when the manifest is missing, is not valid JSON, has unknown fields or a format or
    feature-set version this code cannot read."""


class SensitiveRuleError(BundleFormatError):
    """Raised when a rule of the manifest (lifecycle, offer eligibility or category, slot
    variant, experiment) targets a category or page path the manifest marks sensitive; the
    message names every such rule (see :meth:`sdk.sensitive.Sensitivity.rule_violations`)."""


class BundleIntegrityError(BundleError):
    """Raised when a file listed in the manifest is missing or its sha256 differs."""


class BundleModelError(BundleError):
    """Raised when an ONNX model cannot be loaded or its input/output names, dtypes or shapes
    differ from what the manifest declares."""


class BundleParityError(BundleError):
    """Raised when replaying ``parity.jsonl`` through features + ONNX differs from training."""


class BundleSignatureError(BundleError):
    """Raised when trusted public keys are given and ``signature.json`` is missing, malformed,
    made by another key or does not match the bytes of ``manifest.json`` (checked before
    anything else in the bundle is read), or when a trusted key cannot be read."""


class BundleDownloadError(BundleError):
    """Raised by local mode when a server's ``/v1/bundle`` answer is malformed or its files
    do not match the digests it announced; the subclasses name the sharper refusals."""


class UnsafeBundleFileError(BundleDownloadError):
    """Raised when a server offers a file name that is not one plain file name listed in the
    manifest, or a cached file is not a regular file (checked before anything is opened)."""


class BundleTooLargeError(BundleDownloadError):
    """Raised when one downloaded file, or the bundle in total, exceeds local mode's size cap."""


class BundleTimeoutError(BundleDownloadError):
    """Raised when downloading one bundle file takes longer than local mode's deadline."""


class InsecureURLError(TailorError):
    """Raised when local mode is pointed at a plain ``http://`` server that is not loopback:
    a bundle decides what visitors see, so it is fetched over HTTPS."""


class SecretKeyRequiredError(TailorError):
    """Raised when local mode would fetch a bundle with a public key (or none) and the server
    answers that ``/v1/bundle`` needs a secret key."""


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
