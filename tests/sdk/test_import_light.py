from __future__ import annotations

import json
import subprocess
import sys

import sdk

HEAVY = (
    "numpy",
    "onnxruntime",
    "litestar",
    "sklearn",
    "skl2onnx",
    "ua_parser",
    "maxminddb",
    "cryptography",
)


def test_import_sdk_loads_no_heavy_package() -> None:
    code = (
        "import sys, json; import sdk; from sdk import Client, DecideRequest; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_public_names_are_pinned() -> None:
    assert sorted(sdk.__all__) == sorted(
        [
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
            "DecideRequest",
            "CustomerRow",
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
    )
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
