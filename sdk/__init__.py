"""Tailor SDK: the wire schema, the in-process decision engine and the HTTP client.

``import sdk`` is light: it loads msgspec, cachetools and httpx only. The engine
(:class:`Decider`, :func:`load_bundle`) imports numpy and onnxruntime when a bundle is loaded,
and raises an ImportError naming the ``local`` extra if they are missing.
"""

from __future__ import annotations

from sdk._client import Client
from sdk._decider import Decider
from sdk._errors import (
    APIError,
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleModelError,
    BundleParityError,
    ConditionError,
    GeoDatabaseError,
    MissingExtraError,
    TailorError,
    TransportError,
)
from sdk.bundle import Bundle, load_bundle
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
    "Behavior",
    "Bundle",
    "BundleError",
    "BundleFormatError",
    "BundleIntegrityError",
    "BundleModelError",
    "BundleParityError",
    "Campaign",
    "Client",
    "ConditionError",
    "Consent",
    "Context",
    "DecideRequest",
    "Decider",
    "Decision",
    "Event",
    "EventBatch",
    "GeoDatabaseError",
    "MissingExtraError",
    "Page",
    "Screen",
    "TailorError",
    "TransportError",
    "build_features",
    "load_bundle",
]
