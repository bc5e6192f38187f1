"""Local mode's signature options without a server process: where the trusted keys come from,
a bundle given already loaded, and what a server may not offer as ``signature.json`` (the
attacks against a real server are in ``test_local_signature_live.py``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from model_export.bundle.signing import KeyPair, generate_key_pair, sign_bundle
from sdk import BundleSignatureError, Client, DecideRequest, load_bundle
from sdk._download import SIGNATURE_MAX_BYTES, listed_files
from sdk._local import LocalEngine, public_keys_from_env
from sdk.bundle import SIGNATURE_FILE
from sdk.errors import BundleDownloadError, BundleTooLargeError
from tests.conftest import FIXED_NOW

URL = "https://tailor.test"
REQUEST = DecideRequest(visitor_id="v-sig-2", timestamp=FIXED_NOW, slots=["hero"])


@pytest.fixture
def pair(tmp_path: Path) -> KeyPair:
    return generate_key_pair(tmp_path / "keys")


@pytest.mark.parametrize(
    ("value", "keys"),
    [(None, None), ("", None), (" , ", None), ("a", ["a"]), (" a, /k.pem ,,", ["a", "/k.pem"])],
)
def test_keys_from_the_environment(
    value: str | None, keys: list[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("TAILOR_BUNDLE_PUBLIC_KEYS", raising=False)
    else:
        monkeypatch.setenv("TAILOR_BUNDLE_PUBLIC_KEYS", value)
    assert public_keys_from_env() == keys
    assert LocalEngine(source=URL).public_keys == keys
    assert LocalEngine(source=URL, public_keys=["given"]).public_keys == ["given"]


@pytest.mark.parametrize("keys", ["one-key-not-a-list", b"raw", Path("k.pem"), []])
def test_one_key_or_no_key_is_a_mistake(keys: object) -> None:
    with pytest.raises(ValueError, match="public_keys"):
        LocalEngine(source=URL, public_keys=keys)  # type: ignore[arg-type]


def test_a_bundle_given_loaded_must_be_signed_too(bundle_copy: Path, pair: KeyPair) -> None:
    loaded = load_bundle(bundle_copy)
    keys = [pair.public_raw_b64]
    with (
        Client(mode="local", bundle=loaded, public_keys=keys, fallback=False) as client,
        pytest.raises(BundleSignatureError, match="unsigned"),
    ):
        client.decide(REQUEST)
    sign_bundle(bundle_copy, pair.private_key)
    with Client(mode="local", bundle=loaded, public_keys=keys, fallback=False) as client:
        assert client.decide(REQUEST).model_version == loaded.version
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))  # same data, other bytes
    sign_bundle(bundle_copy, pair.private_key)  # validly signed, but not what was loaded
    with (
        Client(mode="local", bundle=loaded, public_keys=keys, fallback=False) as client,
        pytest.raises(BundleSignatureError, match="changed since the bundle was loaded"),
    ):
        client.decide(REQUEST)


def _serving(
    directory: Path, signature: bytes, listed: str | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    """``/v1/bundle`` and its files from ``directory``, with ``signature`` as signature.json
    (listed with ``listed`` instead of its sha256 when given)."""
    raw = (directory / "manifest.json").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    files = {
        "manifest.json": digest,
        **json.loads(raw)["files"],
        SIGNATURE_FILE: listed or hashlib.sha256(signature).hexdigest(),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        name = request.url.path.removeprefix("/v1/bundle/files/")
        if request.url.path == "/v1/bundle":
            return httpx.Response(200, json={"digest": digest, "files": files})
        if name == SIGNATURE_FILE:
            return httpx.Response(200, content=signature)
        return httpx.Response(200, content=(directory / name).read_bytes())

    return answer


@pytest.mark.parametrize("case", ["not-a-sha256", "oversized"])
def test_what_a_server_may_not_offer_as_a_signature(
    case: str, bundle_copy: Path, pair: KeyPair, tmp_path: Path
) -> None:
    error: type[BundleDownloadError]
    if case == "oversized":
        answer = _serving(bundle_copy, b" " * (SIGNATURE_MAX_BYTES + 1))
        error, why = BundleTooLargeError, "over the cap of 65536"
    else:
        answer = _serving(bundle_copy, b"{}", listed="../../x")
        error, why = BundleDownloadError, "lists signature.json without a sha256"
    engine = LocalEngine(source=URL, cache_dir=tmp_path / "cache", public_keys=[pair.public_key])
    with httpx.Client(base_url=URL, transport=httpx.MockTransport(answer)) as http:
        assert engine.refresh(http) is False
    assert engine.last_error is not None
    assert engine.last_error.startswith(error.__name__) and why in engine.last_error
    assert engine.bundle is None
    assert not list((tmp_path / "cache").glob("*"))  # nothing kept


def test_a_manifest_never_lists_its_own_signature() -> None:
    sha = "0" * 64
    assert listed_files(json.dumps({"files": {"a.onnx": sha}}).encode()) == {"a.onnx": sha}
    with pytest.raises(BundleDownloadError, match=r"signature\.json"):
        listed_files(json.dumps({"files": {"a.onnx": sha, SIGNATURE_FILE: sha}}).encode())
