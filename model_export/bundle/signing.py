"""Ed25519 bundle signing: make a key pair (``tailor bundle keygen``) and write
``signature.json`` over the exact bytes of a bundle's ``manifest.json`` (``tailor bundle sign``,
``tailor train --signing-key``). Checking signatures is :func:`sdk.bundle.load_bundle`'s job.

Must not import server.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import msgspec

from model_export.errors import ModelExportError
from sdk.bundle import SIGNATURE_ALGORITHM, SIGNATURE_FILE, BundleSignature, key_id

__all__ = [
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "KeyPair",
    "SigningError",
    "generate_key_pair",
    "load_private_key",
    "public_key_pem",
    "sign_and_check",
    "sign_bundle",
    "sign_manifest",
    "signature_report",
]

PRIVATE_KEY_FILE = "bundle-signing.key"
PUBLIC_KEY_FILE = "bundle-signing.pub"


class SigningError(ModelExportError):
    """Raised when a signing key cannot be read or written, or a bundle cannot be signed."""


class KeyPair(msgspec.Struct, frozen=True, kw_only=True):
    """Where :func:`generate_key_pair` wrote the keys, the public key's id and its raw bytes in
    base64 (the inline form ``TAILOR_BUNDLE_PUBLIC_KEYS`` accepts)."""

    private_key: str
    public_key: str
    key_id: str
    public_raw_b64: str


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def public_key_pem(private_key: Any) -> bytes:
    """The PEM (SubjectPublicKeyInfo) of a private key's public half."""
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate_key_pair(out_dir: str | Path, *, overwrite: bool = False) -> KeyPair:
    """Write a new Ed25519 key pair into ``out_dir``: the private key as unencrypted PKCS#8
    PEM with mode 0600, the public key as PEM.

    Raises:
        SigningError: a key file exists already (and not ``overwrite``).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise SigningError(f"{private_path} or {public_path} exists already")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_path.unlink(missing_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(public_key_pem(key))
    raw = _raw_public(key)
    return KeyPair(
        private_key=str(private_path),
        public_key=str(public_path),
        key_id=key_id(raw),
        public_raw_b64=base64.b64encode(raw).decode(),
    )


def load_private_key(path: str | Path) -> Any:
    """The Ed25519 private key in PEM file ``path``.

    Raises:
        SigningError: the file cannot be read or holds no Ed25519 private key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningError(f"cannot read signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 private key")
    return key


def sign_manifest(manifest_bytes: bytes, private_key: Any) -> bytes:
    """The contents of ``signature.json`` for these exact manifest bytes."""
    signature = BundleSignature(
        key_id=key_id(_raw_public(private_key)),
        algorithm=SIGNATURE_ALGORITHM,
        signature=base64.b64encode(private_key.sign(manifest_bytes)).decode(),
    )
    return msgspec.json.format(msgspec.json.encode(signature), indent=2) + b"\n"


def sign_bundle(directory: str | Path, key_path: str | Path) -> str:
    """Write ``signature.json`` into the bundle ``directory`` (replacing any) with the key in
    ``key_path``; returns the key id. The bundle's hashes are not checked here.

    Raises:
        SigningError: the key or ``manifest.json`` cannot be read.
    """
    key = load_private_key(key_path)
    directory = Path(directory)
    try:
        manifest = (directory / "manifest.json").read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read {directory / 'manifest.json'}: {exc}") from exc
    tmp = directory / f".{SIGNATURE_FILE}.tmp"
    tmp.write_bytes(sign_manifest(manifest, key))
    tmp.replace(directory / SIGNATURE_FILE)
    return key_id(_raw_public(key))


def sign_and_check(directory: str | Path, key_path: str | Path) -> str:
    """:func:`sign_bundle`, then check the new signature as a server given the public key
    would; returns the key id.

    Raises:
        SigningError: the key or ``manifest.json`` cannot be read.
        BundleSignatureError: the written signature does not verify.
    """
    from sdk.bundle import verify_signature

    kid = sign_bundle(directory, key_path)
    verify_signature(directory, [public_key_pem(load_private_key(key_path))])
    return kid


def signature_report(path: str | Path, public_keys: list[str] | None) -> tuple[bool, str]:
    """``(acceptable, one line)`` on the signature of the bundle at ``path``: with
    ``public_keys``, whether one of them signed it; without, which key id it claims (unchecked)
    or that it is unsigned."""
    from sdk.bundle import signature_status, verify_signature
    from sdk.errors import BundleError

    try:
        if public_keys:
            sig = verify_signature(path, public_keys)
            return True, f"signature: valid, signed by trusted key {sig.key_id}"
        claimed = signature_status(Path(path))
    except BundleError as exc:
        return False, f"signature: refused: {exc}"
    if claimed is None:
        return True, "signature: unsigned (no --public-key given, so not required)"
    return True, f"signature: signed by key {claimed.key_id} (not checked: no --public-key given)"
