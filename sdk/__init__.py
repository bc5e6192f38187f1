"""Tailor SDK: the wire schema, the in-process decision engine and the clients.

``import sdk`` loads msgspec, cachetools and httpx only; the engine (:class:`Decider`,
:func:`load_bundle`) imports numpy and onnxruntime when a bundle is loaded, and raises an
ImportError naming the ``local`` extra if they are missing.

Must not import server or model_export.
"""

from __future__ import annotations

import sdk.native  # noqa: F401  first: chooses compiled or pure-Python modules before they load
from sdk._cache import VisitCache
from sdk._client import AsyncClient, Client
from sdk._decider import CustomerRow, Decider
from sdk._fallback import Fallback
from sdk._resilience import CircuitBreaker, Retry
from sdk.bundle import Bundle, load_bundle
from sdk.conditions import evaluate_condition
from sdk.errors import (
    APIError,
    BundleDownloadError,
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleModelError,
    BundleParityError,
    BundleSignatureError,
    BundleTimeoutError,
    BundleTooLargeError,
    CircuitOpenError,
    ConditionError,
    GeoDatabaseError,
    InsecureURLError,
    MissingExtraError,
    SecretKeyRequiredError,
    SensitiveRuleError,
    TailorError,
    TransportError,
    UnsafeBundleFileError,
)
from sdk.features import FEATURE_SET_VERSION, build_features
from sdk.schema import (
    SCHEMA_VERSION,
    Behavior,
    Campaign,
    Consent,
    Context,
    DecideRequest,
    Decision,
    Event,
    EventBatch,
    Page,
    Screen,
)

__all__ = [
    "FEATURE_SET_VERSION",
    "SCHEMA_VERSION",
    "APIError",
    "AsyncClient",
    "Behavior",
    "Bundle",
    "BundleDownloadError",
    "BundleError",
    "BundleFormatError",
    "BundleIntegrityError",
    "BundleModelError",
    "BundleParityError",
    "BundleSignatureError",
    "BundleTimeoutError",
    "BundleTooLargeError",
    "Campaign",
    "CircuitBreaker",
    "CircuitOpenError",
    "Client",
    "ConditionError",
    "Consent",
    "Context",
    "CustomerRow",
    "DecideRequest",
    "Decider",
    "Decision",
    "Event",
    "EventBatch",
    "Fallback",
    "GeoDatabaseError",
    "InsecureURLError",
    "MissingExtraError",
    "Page",
    "Retry",
    "Screen",
    "SecretKeyRequiredError",
    "SensitiveRuleError",
    "TailorError",
    "TransportError",
    "UnsafeBundleFileError",
    "VisitCache",
    "build_features",
    "evaluate_condition",
    "load_bundle",
]
