"""A real server with ``TAILOR_BUNDLE_PUBLIC_KEYS`` serves only bundles signed by those keys: an
unsigned or tampered bundle stops it at start, and is refused on reload (409, old one kept)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from model_export.bundle.signing import generate_key_pair, sign_bundle
from server.security import hash_key
from tests.conftest import keyed_server

SECRET = "sk_live_sign_abcdefghijklmnopqrstuvwxyz"
KEYS = {"keys": [{"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)}]}
AUTH = {"authorization": f"Bearer {SECRET}"}


@pytest.fixture
def signed(bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``bundle_copy`` signed by a new key the server process trusts (through its env)."""
    pair = generate_key_pair(tmp_path / "keys")
    sign_bundle(bundle_copy, pair.private_key)
    monkeypatch.setenv("TAILOR_BUNDLE_PUBLIC_KEYS", f"{pair.public_key}, {pair.public_raw_b64}")
    monkeypatch.setenv("TAILOR_RELOAD_INTERVAL", "0")  # reload only when asked
    return bundle_copy


def test_unsigned_bundle_stops_the_server_at_start(signed: Path, tmp_path: Path) -> None:
    (signed / "signature.json").unlink()
    with pytest.raises(RuntimeError, match="unsigned"), keyed_server(signed, tmp_path, KEYS):
        pass


def test_tampered_manifest_stops_the_server_at_start(signed: Path, tmp_path: Path) -> None:
    manifest = signed / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"modelVersion": "', b'"modelVersion": "x'))
    refused = pytest.raises(RuntimeError, match="modified after signing")
    with refused, keyed_server(signed, tmp_path, KEYS):
        pass


def test_reload_refuses_unsigned_and_tampered_bundles_and_keeps_serving(
    signed: Path, tmp_path: Path, bundle_dir: Path
) -> None:
    live = tmp_path / "LIVE"
    live.symlink_to(signed)
    with keyed_server(live, tmp_path, KEYS) as server:
        version = httpx.get(f"{server.url}/readyz").json()["modelVersion"]
        unsigned = tmp_path / "unsigned"
        shutil.copytree(bundle_dir, unsigned)
        live.unlink()
        live.symlink_to(unsigned)
        r = httpx.post(f"{server.url}/v1/admin/reload", headers=AUTH)
        assert r.status_code == 409 and "unsigned" in r.json()["detail"]
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["serving"] == version
        tampered = tmp_path / "tampered"
        shutil.copytree(signed, tampered)
        manifest = tampered / "manifest.json"
        manifest.write_bytes(manifest.read_bytes().replace(b'"name": "', b'"name": "X', 1))
        live.unlink()
        live.symlink_to(tampered)
        r = httpx.post(f"{server.url}/v1/admin/reload", headers=AUTH)
        assert r.status_code == 409 and "modified after signing" in r.json()["detail"]
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200 and ready.json()["modelVersion"] == version
        live.unlink()
        live.symlink_to(signed)
        r = httpx.post(f"{server.url}/v1/admin/reload", headers=AUTH)
        assert r.status_code == 200 and r.json()["modelVersion"] == version
