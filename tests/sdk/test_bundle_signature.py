"""Ed25519 bundle signatures, checked by :func:`sdk.load_bundle` before the bundle is used."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from model_export.bundle.signing import generate_key_pair, sign_bundle
from sdk import BundleError, BundleSignatureError, Client, DecideRequest, load_bundle
from sdk.bundle import SIGNATURE_FILE, load_public_keys, verify_signature


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(our key pair's directory, another key pair's directory)."""
    ours = tmp_path_factory.mktemp("ours")
    theirs = tmp_path_factory.mktemp("theirs")
    generate_key_pair(ours)
    generate_key_pair(theirs)
    return ours, theirs


def _pub(directory: Path) -> str:
    return str(directory / "bundle-signing.pub")


def _key(directory: Path) -> Path:
    return directory / "bundle-signing.key"


def test_signed_bundle_loads_with_its_public_key(
    bundle_copy: Path, keys: tuple[Path, Path]
) -> None:
    ours, _ = keys
    kid = sign_bundle(bundle_copy, _key(ours))
    signature = json.loads((bundle_copy / SIGNATURE_FILE).read_text())
    assert signature["keyId"] == kid and signature["algorithm"] == "ed25519"
    assert load_bundle(bundle_copy, public_keys=[_pub(ours)]).manifest.model_version
    assert verify_signature(bundle_copy, [_pub(ours)]).key_id == kid
    # the inline form: base64 of the raw key, as keygen prints it
    pair = generate_key_pair(bundle_copy.parent / "inline")
    sign_bundle(bundle_copy, pair.private_key)
    assert load_bundle(bundle_copy, public_keys=[pair.public_raw_b64]).digest


def test_tampered_manifest_byte_is_refused_before_decoding(
    bundle_copy: Path, keys: tuple[Path, Path]
) -> None:
    ours, _ = keys
    sign_bundle(bundle_copy, _key(ours))
    manifest = bundle_copy / "manifest.json"
    raw = bytearray(manifest.read_bytes())
    raw[raw.index(b'"modelVersion"') + 17] ^= 1  # one bit of the model version
    manifest.write_bytes(bytes(raw))
    with pytest.raises(BundleSignatureError, match="modified after signing"):
        load_bundle(bundle_copy, public_keys=[_pub(ours)])
    manifest.write_bytes(b"not json at all")  # refused for the signature, not the format
    with pytest.raises(BundleSignatureError):
        load_bundle(bundle_copy, public_keys=[_pub(ours)])


def test_signature_by_another_key_is_refused(bundle_copy: Path, keys: tuple[Path, Path]) -> None:
    ours, theirs = keys
    sign_bundle(bundle_copy, _key(theirs))
    with pytest.raises(BundleSignatureError, match="not trusted"):
        load_bundle(bundle_copy, public_keys=[_pub(ours)])
    # a forged signature file claiming our key id, signed by theirs
    sig = json.loads((bundle_copy / SIGNATURE_FILE).read_text())
    sig["keyId"] = next(iter(load_public_keys([_pub(ours)])))
    (bundle_copy / SIGNATURE_FILE).write_text(json.dumps(sig))
    with pytest.raises(BundleSignatureError, match="does not match"):
        load_bundle(bundle_copy, public_keys=[_pub(ours)])


def test_unsigned_or_malformed_signature_is_refused_when_keys_are_given(
    bundle_copy: Path, keys: tuple[Path, Path]
) -> None:
    ours, _ = keys
    with pytest.raises(BundleSignatureError, match="unsigned"):
        load_bundle(bundle_copy, public_keys=[_pub(ours)])
    (bundle_copy / SIGNATURE_FILE).write_text('{"keyId": 1}')
    with pytest.raises(BundleSignatureError, match="malformed"):
        load_bundle(bundle_copy, public_keys=[_pub(ours)])
    with pytest.raises(BundleSignatureError, match="cannot read public key"):
        load_bundle(bundle_copy, public_keys=[str(bundle_copy / "missing.pub")])
    assert issubclass(BundleSignatureError, BundleError)


def test_without_keys_an_unsigned_bundle_loads_as_before(bundle_copy: Path) -> None:
    assert not (bundle_copy / SIGNATURE_FILE).exists()
    assert load_bundle(bundle_copy).manifest.model_version


def test_local_mode_passes_public_keys_through(
    bundle_copy: Path, keys: tuple[Path, Path], make_request: Callable[..., dict[str, object]]
) -> None:
    ours, _ = keys
    request = msgspec.convert(make_request(), DecideRequest)
    refusing = Client(mode="local", bundle=bundle_copy, public_keys=[_pub(ours)], fallback=False)
    with refusing, pytest.raises(BundleSignatureError):
        refusing.decide(request)
    sign_bundle(bundle_copy, _key(ours))
    with Client(mode="local", bundle=bundle_copy, public_keys=[_pub(ours)], fallback=False) as c:
        assert c.decide(request).model_version
