"""Load a model bundle, verify it, and refuse it with a typed error when anything is off.

:func:`load_bundle` reads a directory written by ``model_export`` (``manifest.json``, the ONNX
models, ``parity.jsonl``) and checks the manifest's versions, every file's sha256, each
model's inputs and outputs, the conditions (none may target a sensitive category or path),
and that replaying ``parity.jsonl`` reproduces what training computed. Given trusted public
keys, it first checks the Ed25519 signature in ``signature.json`` over the bytes of
``manifest.json``; without keys an unsigned bundle loads (the local-development default).

Must not import litestar or sklearn; numpy, onnxruntime and cryptography are loaded lazily.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from sdk._onnx import OnnxModel, require_local
from sdk.conditions import check_condition
from sdk.errors import (
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleParityError,
    BundleSignatureError,
    ConditionError,
    SensitiveRuleError,
)
from sdk.features import FEATURE_SPECS, build_features, feature_names
from sdk.manifest import BUNDLE_FORMAT_VERSION, Manifest, ModelSpec, manifest_decoder
from sdk.schema import SCHEMA_VERSION, Behavior, DecideRequest
from sdk.sensitive import Sensitivity

__all__ = [
    "PARITY_ATOL",
    "PARITY_RTOL",
    "SIGNATURE_ALGORITHM",
    "SIGNATURE_FILE",
    "Bundle",
    "BundleSignature",
    "ParityRow",
    "PublicKeySpec",
    "key_id",
    "load_bundle",
    "load_public_keys",
    "sha256_file",
    "signature_status",
    "verify_signature",
]

#: Tolerance between training's float64 sklearn outputs and onnxruntime's float32 outputs
#: when parity rows are replayed: ``|got - want| <= PARITY_ATOL + PARITY_RTOL * |want|``
#: (the relative term matters for money-valued outputs such as expected value).
PARITY_ATOL = 1e-3
PARITY_RTOL = 1e-5
#: Tolerance on replayed feature values (they are computed by the same code in float64).
FEATURE_ATOL = 1e-9


class ParityRow(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One line of ``parity.jsonl``: a raw request and what training computed for it."""

    request: DecideRequest
    now: datetime
    profile: Behavior | None = None
    features: list[float | None]
    outputs: dict[str, dict[str, list[float]]]


_parity_decoder = msgspec.json.Decoder(ParityRow)

#: The detached signature beside ``manifest.json``; the one file not in the manifest's hashes.
SIGNATURE_FILE = "signature.json"
SIGNATURE_ALGORITHM = "ed25519"
#: A trusted public key: a path to a PEM file, PEM text, or the base64 of the raw 32 bytes.
PublicKeySpec = str | bytes | os.PathLike[str]


class BundleSignature(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``signature.json``: which key signed the exact bytes of ``manifest.json``, and how."""

    key_id: str
    algorithm: str
    signature: str  # base64


_signature_decoder = msgspec.json.Decoder(BundleSignature)


def key_id(raw_public_key: bytes) -> str:
    """The id of a public key: the first 16 hex of the sha256 of its raw 32 bytes."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def load_public_keys(specs: Sequence[PublicKeySpec]) -> dict[str, Any]:
    """Trusted Ed25519 public keys by key id (imports ``cryptography``).

    Raises:
        BundleSignatureError: a key cannot be read or is not an Ed25519 public key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, Any] = {}
    for spec in specs:
        text = spec if isinstance(spec, bytes) else os.fspath(spec).strip().encode()
        try:
            if b"-----BEGIN" in text:
                key: Any = serialization.load_pem_public_key(text)
            elif len(text) == 44 and not Path(text.decode()).exists():
                key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
            else:
                key = serialization.load_pem_public_key(Path(text.decode()).read_bytes())
        except (OSError, ValueError, TypeError, binascii.Error) as exc:
            raise BundleSignatureError(f"cannot read public key {_short(text)}: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise BundleSignatureError(f"public key {_short(text)} is not an Ed25519 key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys[key_id(raw)] = key
    return keys


def _short(text: bytes) -> str:
    return repr(text[:60].decode(errors="replace")) + ("..." if len(text) > 60 else "")


def signature_status(directory: Path) -> BundleSignature | None:
    """The bundle's signature as written (unchecked), or None when it is unsigned.

    Raises:
        BundleSignatureError: ``signature.json`` exists but is not a valid signature file.
    """
    path = directory / SIGNATURE_FILE
    if not path.exists():
        return None
    if not path.is_file():
        raise BundleSignatureError(f"{SIGNATURE_FILE} is not a regular file")
    try:
        return _signature_decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise BundleSignatureError(f"malformed {SIGNATURE_FILE}: {exc}") from exc


def _check_signature(directory: Path, raw: bytes, trusted: dict[str, Any]) -> BundleSignature:
    from cryptography.exceptions import InvalidSignature

    sig = signature_status(directory)
    if sig is None:
        raise BundleSignatureError(
            f"bundle is unsigned ({SIGNATURE_FILE} missing) and trusted keys are configured"
        )
    if sig.algorithm != SIGNATURE_ALGORITHM:
        raise BundleSignatureError(f"signature algorithm {sig.algorithm!r} is not ed25519")
    key = trusted.get(sig.key_id)
    if key is None:
        raise BundleSignatureError(f"bundle is signed by key {sig.key_id}, which is not trusted")
    try:
        key.verify(base64.b64decode(sig.signature, validate=True), raw)
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise BundleSignatureError(
            f"signature by key {sig.key_id} does not match manifest.json: the manifest was "
            "modified after signing"
        ) from exc
    return sig


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its manifest, loaded models and the column index of each model."""

    path: Path
    manifest: Manifest
    models: dict[str, OnnxModel]
    columns: dict[str, list[int]]
    digest: str
    fused: OnnxModel | None = None

    @property
    def version(self) -> str:
        """The model version (what decisions report as ``modelVersion``)."""
        return self.manifest.model_version

    def run(self, rows: Any) -> dict[str, dict[str, Any]]:
        """Run every model on a float32 matrix of full feature rows: ``{model: {output:
        array}}``, in one onnxruntime call when the bundle has a fused graph."""
        if self.fused is None:
            return self.run_separately(rows)
        out: dict[str, dict[str, Any]] = {name: {} for name in self.models}
        for key, value in self.fused.run(rows).items():
            model, _, output = key.partition("/")
            out[model][output] = value
        return out

    def run_separately(self, rows: Any) -> dict[str, dict[str, Any]]:
        """Run each model on its own (what :meth:`run` does for bundles without a fused
        graph; benchmarks compare the two)."""
        return {name: model.run(rows[:, self.columns[name]]) for name, model in self.models.items()}

    def runner(self, wanted: list[tuple[str, str]]) -> Callable[[Any], list[Any]]:
        """A function of a float32 matrix of full feature rows returning the ``(model,
        output)`` arrays in ``wanted``, in that order: one onnxruntime call computing only
        those outputs with a fused graph, one call per model without."""
        if self.fused is not None:
            session = self.fused.session
            names = [f"{model}/{output}" for model, output in wanted]
            feed = self.fused.input_name

            def fused(rows: Any) -> list[Any]:
                return session.run(names, {feed: rows})  # type: ignore[no-any-return]

            return fused

        def separate(rows: Any) -> list[Any]:
            out = self.run_separately(rows)
            return [out[model][output] for model, output in wanted]

        return separate


def verify_signature(path: str | Path, public_keys: Sequence[PublicKeySpec]) -> BundleSignature:
    """Check only the signature of the bundle at ``path`` against ``public_keys``.

    Raises:
        BundleSignatureError: the bundle is unsigned, or signed wrongly or by another key.
        BundleFormatError: ``manifest.json`` cannot be read.
    """
    trusted = load_public_keys(public_keys)
    directory = Path(path).resolve()
    return _check_signature(directory, _read_manifest_bytes(directory), trusted)


def _read_manifest_bytes(directory: Path) -> bytes:
    path = directory / "manifest.json"
    if path.exists() and not path.is_file():  # a FIFO or device would hang or never end
        raise BundleFormatError(f"{directory}: manifest.json is not a regular file")
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise BundleFormatError(f"{directory} has no manifest.json") from exc
    except OSError as exc:
        raise BundleFormatError(f"cannot read {path}: {exc}") from exc


def _read_manifest(directory: Path) -> tuple[Manifest, bytes]:
    raw = _read_manifest_bytes(directory)
    return _decode_manifest(raw), raw


def _decode_manifest(raw: bytes) -> Manifest:
    try:
        manifest = manifest_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BundleFormatError(f"invalid manifest.json: {exc}") from exc
    if manifest.format_version != BUNDLE_FORMAT_VERSION:
        raise BundleFormatError(
            f"bundle format version {manifest.format_version} is not supported "
            f"(this code reads {BUNDLE_FORMAT_VERSION})"
        )
    if manifest.schema_version != SCHEMA_VERSION:
        raise BundleFormatError(
            f"bundle schema version {manifest.schema_version} != {SCHEMA_VERSION}"
        )
    if manifest.feature_set_version not in FEATURE_SPECS:
        raise BundleFormatError(
            f"bundle feature set version {manifest.feature_set_version} is unknown to this "
            f"code (it builds {sorted(FEATURE_SPECS)}): upgrade Tailor or retrain the bundle"
        )
    if tuple(manifest.feature_names) != feature_names(manifest.feature_set_version):
        raise BundleFormatError(
            f"bundle feature names differ from feature set {manifest.feature_set_version}"
        )
    return manifest


def _verify_files(directory: Path, manifest: Manifest) -> None:
    required = {spec.file for spec in manifest.models.values()} | {"parity.jsonl"}
    if manifest.fused is not None:
        required.add(manifest.fused.file)
    missing = required - manifest.files.keys()
    if missing:
        raise BundleIntegrityError(f"manifest lists no hash for {sorted(missing)}")
    root = directory.resolve()
    for name, expected in sorted(manifest.files.items()):
        path = (directory / name).resolve()
        if root not in path.parents:
            raise BundleIntegrityError(f"file {name!r} lies outside the bundle directory")
        if not path.is_file():
            raise BundleIntegrityError(f"file {name!r} listed in manifest.json is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleIntegrityError(
                f"sha256 of {name!r} is {actual}, manifest.json says {expected}: "
                "the file was modified after export"
            )


def _verify_conditions(manifest: Manifest) -> None:
    try:
        for i, rule in enumerate(manifest.lifecycle.rules):
            check_condition(rule.when, f"$.lifecycle.rules[{i}].when")
        for i, offer in enumerate(manifest.offers):
            check_condition(offer.eligibility, f"$.offers[{i}].eligibility")
        for i, slot in enumerate(manifest.slots):
            ids = {v.id for v in slot.variants}
            if slot.default not in ids:
                raise BundleFormatError(
                    f"slot {slot.id!r}: default variant {slot.default!r} unknown"
                )
            for j, variant in enumerate(slot.variants):
                check_condition(variant.when, f"$.slots[{i}].variants[{j}].when")
        variants = {s.id: {v.id for v in s.variants} for s in manifest.slots}
        for i, exp in enumerate(manifest.experiments):
            check_condition(exp.condition, f"$.experiments[{i}].condition")
            for arm in exp.arms:
                for slot_id, variant_id in arm.variants.items():
                    if variant_id not in variants.get(slot_id, set()):
                        raise BundleFormatError(
                            f"experiment {exp.key!r}, arm {arm.key!r}: slot {slot_id!r} has "
                            f"no variant {variant_id!r}"
                        )
    except ConditionError as exc:
        raise BundleFormatError(f"invalid condition in manifest.json: {exc}") from exc
    personas = {p.id for p in manifest.personas}
    for seg in manifest.segments:
        if seg.persona not in personas:
            raise BundleFormatError(f"segment {seg.id} maps to unknown persona {seg.persona!r}")
    offers = {o.id for o in manifest.offers}
    if set(manifest.offer_classes) - offers:
        raise BundleFormatError("offer model classes are not all in the offer catalogue")
    refused = Sensitivity.from_manifest(manifest).rule_violations(manifest)
    if refused:
        raise SensitiveRuleError(
            "rules target sensitive categories or paths: " + "; ".join(refused)
        )


def _close(a: float | None, b: float, atol: float) -> bool:
    if a is None:
        return math.isnan(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol


def _replay_parity(bundle: Bundle) -> int:
    np, _ = require_local()
    path = bundle.path / "parity.jsonl"
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    if not lines:
        raise BundleParityError("parity.jsonl holds no rows")
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(_parity_decoder.decode(line))
        except msgspec.DecodeError as exc:
            raise BundleParityError(f"parity.jsonl line {n}: {exc}") from exc
    version = bundle.manifest.feature_set_version
    features = [build_features(r.request, r.profile, r.now, version) for r in rows]
    for n, (row, feat) in enumerate(zip(rows, features, strict=True), 1):
        if len(row.features) != len(feat.values) or not all(
            _close(a, b, FEATURE_ATOL) for a, b in zip(row.features, feat.values, strict=True)
        ):
            raise BundleParityError(
                f"parity.jsonl line {n}: features differ from training (feature code changed?)"
            )
    matrix = np.asarray([f.values for f in features], dtype=np.float32)
    if bundle.fused is not None:
        _check_fused(bundle, matrix)
    outputs = bundle.run(matrix)
    for n, row in enumerate(rows, 1):
        for model, expected_outputs in row.outputs.items():
            if model not in outputs:
                raise BundleParityError(f"parity.jsonl line {n}: unknown model {model!r}")
            for out_name, expected in expected_outputs.items():
                got = np.asarray(outputs[model][out_name][n - 1], dtype=np.float64).ravel()
                want = np.asarray(expected, dtype=np.float64)
                if got.shape != want.shape:
                    raise BundleParityError(
                        f"parity.jsonl line {n}: {model}.{out_name} shape {got.shape} "
                        f"!= {want.shape}"
                    )
                excess = np.abs(got - want) - (PARITY_ATOL + PARITY_RTOL * np.abs(want))
                if got.size and not float(np.max(excess)) <= 0:
                    diff = float(np.max(np.abs(got - want)))
                    raise BundleParityError(
                        f"parity.jsonl line {n}: {model}.{out_name} differs from training by "
                        f"{diff:.3g} (tolerance {PARITY_ATOL} + {PARITY_RTOL} x |value|)"
                    )
    return len(rows)


def _load_fused(directory: Path, manifest: Manifest) -> OnnxModel | None:
    """The fused graph, checked to offer every model's outputs under ``"{model}/{output}"``."""
    spec = manifest.fused
    if spec is None:
        return None
    declared = {(o.name, o.dtype) for o in spec.outputs}
    for name, model in manifest.models.items():
        for out in model.outputs:
            if (f"{name}/{out.name}", out.dtype) not in declared:
                raise BundleFormatError(
                    f"fused graph {spec.file!r} lacks output {name}/{out.name} ({out.dtype})"
                )
    as_model = ModelSpec(
        file=spec.file,
        features=list(manifest.feature_names),
        inputs=spec.inputs,
        outputs=spec.outputs,
    )
    return OnnxModel(directory / spec.file, as_model, "fused")


def _check_fused(bundle: Bundle, matrix: Any) -> None:
    """The fused graph computes what the separate models compute, on the parity rows."""
    np, _ = require_local()
    fused = bundle.run(matrix)
    for model, outputs in bundle.run_separately(matrix).items():
        for name, want in outputs.items():
            got = fused[model][name]
            same = (
                np.allclose(got, want, rtol=PARITY_RTOL, atol=PARITY_ATOL, equal_nan=True)
                if np.issubdtype(np.asarray(want).dtype, np.floating)
                else np.array_equal(got, want)
            )
            if not same:
                raise BundleParityError(
                    f"fused graph output {model}/{name} differs from model {model!r} alone"
                )


def load_bundle(
    path: str | Path,
    *,
    verify_parity: bool = True,
    public_keys: Sequence[PublicKeySpec] | None = None,
) -> Bundle:
    """Load and verify the bundle in directory ``path``.

    Args:
        path: the bundle directory.
        verify_parity: replay ``parity.jsonl`` (on by default; turn off only in benchmarks).
        public_keys: trusted Ed25519 public keys (see :data:`PublicKeySpec`). When given, the
            bundle must be signed by one of them, checked before the manifest is decoded;
            when None, a signature is not required (local development).

    Raises:
        BundleFormatError, BundleIntegrityError, BundleModelError, BundleParityError,
            BundleSignatureError: the bundle is refused; the message says which file and why.
    """
    trusted = load_public_keys(public_keys) if public_keys is not None else None
    # resolve a symlinked "live" path once, so a swap during loading cannot mix two bundles
    directory = Path(path).resolve()
    if not directory.is_dir():
        raise BundleFormatError(f"bundle directory {directory} does not exist")
    raw = _read_manifest_bytes(directory)
    if trusted is not None:
        _check_signature(directory, raw, trusted)
    manifest = _decode_manifest(raw)
    _verify_files(directory, manifest)
    _verify_conditions(manifest)
    index = {name: i for i, name in enumerate(manifest.feature_names)}
    columns: dict[str, list[int]] = {}
    models: dict[str, OnnxModel] = {}
    for name, spec in manifest.models.items():
        unknown = [f for f in spec.features if f not in index]
        if unknown:
            raise BundleFormatError(f"model {name!r} uses unknown features {unknown}")
        columns[name] = [index[f] for f in spec.features]
        models[name] = OnnxModel(directory / spec.file, spec, name)
    for required in ("segments", "offers"):
        if required not in models:
            raise BundleFormatError(f"bundle has no {required!r} model")
    fused = _load_fused(directory, manifest)
    bundle = Bundle(
        path=directory,
        manifest=manifest,
        models=models,
        columns=columns,
        digest=hashlib.sha256(raw).hexdigest(),
        fused=fused,
    )
    if verify_parity:
        try:
            _replay_parity(bundle)
        except BundleError:
            raise
        except Exception as exc:  # a malformed parity file must still be a typed refusal
            raise BundleParityError(f"parity replay failed: {exc}") from exc
    return bundle
