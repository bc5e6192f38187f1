"""Local mode with trusted public keys against real server processes on 127.0.0.1: the server
lists and serves ``signature.json`` (secret key only); the SDK checks the signature before it
fetches a model file, refuses unsigned and foreign-signed bundles on first load, and refuses a
swapped-in unsigned or tampered bundle on refresh while the old one keeps deciding."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import msgspec
import pytest

from model_export.bundle.signing import KeyPair, generate_key_pair, sign_bundle
from sdk import BundleSignatureError, Client, DecideRequest, load_bundle
from sdk.bundle import SIGNATURE_FILE
from server.security import hash_key
from tests.conftest import FIXED_NOW, LiveServer, keyed_server

PUBLIC = "pk_test_local_signature_0123456789abcdef"
SECRET = "sk_test_local_signature_0123456789abcdef"
ORIGIN = "https://shop.example.com"
AUTH = {"authorization": f"Bearer {SECRET}"}
KEYS = {
    "keys": [
        {"id": "site", "kind": "public", "sha256": hash_key(PUBLIC), "origins": [ORIGIN]},
        {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
    ],
}
REQUEST = DecideRequest(visitor_id="v-sig-1", timestamp=FIXED_NOW, slots=["hero"])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(directory: Path) -> str:
    return _sha((directory / "manifest.json").read_bytes())


def _server(bundle_path: Path, root: Path) -> AbstractContextManager[LiveServer]:
    """A real server (demo off, keys in ``KEYS``, no signature check of its own, reloads only
    when asked): the SDK's checks are what these tests exercise."""
    root.mkdir(parents=True, exist_ok=True)
    env = {"TAILOR_RELOAD_INTERVAL": "0", "TAILOR_BUNDLE_PUBLIC_KEYS": ""}
    return keyed_server(bundle_path, root, KEYS, env)


class Recording(httpx.HTTPTransport):
    """The real network, with the path of every request the refresher sends."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def _client(server: LiveServer, cache: Path, **kwargs: object) -> Client:
    return Client(
        server.url,
        mode="local",
        api_key=SECRET,
        bundle_cache_dir=cache,
        timeout=30,
        refresh_interval=3600,
        cache=False,
        **kwargs,  # type: ignore[arg-type]
    )


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAILOR_BUNDLE_PUBLIC_KEYS", raising=False)


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return generate_key_pair(tmp_path_factory.mktemp("keys") / "ours")


@pytest.fixture(scope="module")
def theirs(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return generate_key_pair(tmp_path_factory.mktemp("keys") / "theirs")


@pytest.fixture(scope="module")
def signed_dir(bundle_dir: Path, ours: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signed") / "bundle"
    shutil.copytree(bundle_dir, out)
    sign_bundle(out, ours.private_key)
    return out


@pytest.fixture(scope="module")
def signed_server(
    signed_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with _server(signed_dir, tmp_path_factory.mktemp("signed-server")) as server:
        yield server


@pytest.fixture(scope="module")
def unsigned_server(
    bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with _server(bundle_dir, tmp_path_factory.mktemp("unsigned-server")) as server:
        yield server


# -- the server lists and serves signature.json -----------------------------------------------


def test_the_bundle_lists_and_serves_its_signature(
    signed_server: LiveServer, signed_dir: Path, ours: KeyPair
) -> None:
    signature = (signed_dir / SIGNATURE_FILE).read_bytes()
    r = httpx.get(f"{signed_server.url}/v1/bundle", headers=AUTH)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["signed"] is True and info["keyId"] == ours.key_id
    assert info["files"][SIGNATURE_FILE] == _sha(signature)
    assert info["files"]["manifest.json"] == info["digest"] == _digest(signed_dir)
    assert SIGNATURE_FILE not in json.loads((signed_dir / "manifest.json").read_text())["files"]

    url = f"{signed_server.url}/v1/bundle/files/{SIGNATURE_FILE}"
    r = httpx.get(url, headers=AUTH)
    assert r.status_code == 200 and r.content == signature
    assert r.headers["etag"] == f'"{_sha(signature)}"'
    assert r.headers["cache-control"] == "no-cache"  # re-signing in place changes it
    again = httpx.get(url, headers={**AUTH, "if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_an_unsigned_bundle_says_so_and_has_no_signature_file(
    unsigned_server: LiveServer, bundle_dir: Path
) -> None:
    info = httpx.get(f"{unsigned_server.url}/v1/bundle", headers=AUTH).json()
    assert info["signed"] is False and "keyId" not in info
    assert SIGNATURE_FILE not in info["files"] and "parity.jsonl" in info["files"]
    r = httpx.get(f"{unsigned_server.url}/v1/bundle/files/{SIGNATURE_FILE}", headers=AUTH)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("path", ["/v1/bundle", f"/v1/bundle/files/{SIGNATURE_FILE}"])
@pytest.mark.parametrize(
    "how",
    [{"authorization": f"Bearer {PUBLIC}"}, {"x-tailor-key": PUBLIC, "origin": ORIGIN}],
    ids=["bearer", "header-with-origin"],
)
def test_a_public_key_still_reads_neither(
    signed_server: LiveServer, signed_dir: Path, ours: KeyPair, path: str, how: dict[str, str]
) -> None:
    r = httpx.get(f"{signed_server.url}{path}", headers=how)
    assert r.status_code == 403, r.text
    assert r.json()["type"].endswith("/secret-key-required")
    signature = json.loads((signed_dir / SIGNATURE_FILE).read_text())["signature"]
    assert signature.encode() not in r.content and ours.key_id.encode() not in r.content


# -- first load -------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["base64", "pem-path"])
def test_the_right_key_loads_the_signed_bundle_and_decides(
    form: str, signed_server: LiveServer, signed_dir: Path, ours: KeyPair, tmp_path: Path
) -> None:
    key = ours.public_raw_b64 if form == "base64" else ours.public_key
    cache = tmp_path / "cache"
    with _client(signed_server, cache, public_keys=[key], fallback=False) as client:
        decision = client.decide(REQUEST)
        assert decision.model_version == load_bundle(signed_dir).version
        assert not decision.decision_id.startswith("fallback-")
        assert client.local is not None and client.local.bundle is not None
        assert client.local.bundle.digest == _digest(signed_dir)
    kept = cache / _digest(signed_dir)
    assert (kept / SIGNATURE_FILE).read_bytes() == (signed_dir / SIGNATURE_FILE).read_bytes()
    assert _leftovers(cache) == [kept.name]


def test_a_foreign_key_is_refused_before_any_model_file_is_fetched(
    signed_server: LiveServer, theirs: KeyPair, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    recording = Recording()
    with _client(
        signed_server, cache, public_keys=[theirs.public_raw_b64], transport=recording
    ) as client:  # fallbacks on: a refused signature is raised all the same
        with pytest.raises(BundleSignatureError, match="not trusted"):
            client.decide(REQUEST)
        with pytest.raises(BundleSignatureError, match="not trusted"):
            client.decide_many([REQUEST])
        local = client.local
        assert local is not None and local.bundle is None and local.refresh_failures == 1
    assert recording.paths == [
        "/v1/bundle",
        "/v1/bundle/files/manifest.json",
        f"/v1/bundle/files/{SIGNATURE_FILE}",
    ]
    assert _leftovers(cache) == []  # the refused download is gone, no temporary left


def test_an_unsigned_bundle_is_refused_when_keys_are_required(
    unsigned_server: LiveServer, ours: KeyPair, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    recording = Recording()
    with (
        _client(unsigned_server, cache, public_keys=[ours.public_key], transport=recording) as c,
        pytest.raises(BundleSignatureError, match="unsigned"),
    ):
        c.decide(REQUEST)
    assert recording.paths == ["/v1/bundle"]  # nothing downloaded
    assert _leftovers(cache) == []


def test_without_keys_an_unsigned_bundle_still_loads(
    unsigned_server: LiveServer, bundle_dir: Path, tmp_path: Path
) -> None:
    with _client(unsigned_server, tmp_path / "cache", fallback=False) as client:
        assert client.decide(REQUEST).model_version == load_bundle(bundle_dir).version
        assert client.local is not None and client.local.public_keys is None


def test_keys_come_from_the_environment_by_default(
    signed_server: LiveServer,
    signed_dir: Path,
    ours: KeyPair,
    theirs: KeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAILOR_BUNDLE_PUBLIC_KEYS", theirs.public_raw_b64)
    with (
        _client(signed_server, tmp_path / "a") as client,
        pytest.raises(BundleSignatureError, match="not trusted"),
    ):
        client.decide(REQUEST)
    monkeypatch.setenv("TAILOR_BUNDLE_PUBLIC_KEYS", f"{theirs.public_raw_b64}, {ours.public_key}")
    with _client(signed_server, tmp_path / "b", fallback=False) as client:
        assert client.decide(REQUEST).model_version == load_bundle(signed_dir).version


def test_an_unsigned_cached_copy_is_not_trusted_but_fetched_again(
    signed_server: LiveServer, signed_dir: Path, bundle_dir: Path, ours: KeyPair, tmp_path: Path
) -> None:
    """The same bundle cached before keys were required (no ``signature.json``): its hashes
    check out, but it is downloaded again with the signature rather than loaded unsigned."""
    cache = tmp_path / "cache"
    assert _digest(bundle_dir) == _digest(signed_dir)  # signing leaves the manifest as it was
    shutil.copytree(bundle_dir, cache / _digest(bundle_dir))
    recording = Recording()
    with _client(
        signed_server, cache, public_keys=[ours.public_raw_b64], transport=recording
    ) as client:
        assert client.decide(REQUEST).model_version == load_bundle(signed_dir).version
    assert f"/v1/bundle/files/{SIGNATURE_FILE}" in recording.paths
    assert (cache / _digest(signed_dir) / SIGNATURE_FILE).is_file()


# -- refresh ----------------------------------------------------------------------------------


def _variant(source: Path, out: Path, suffix: str) -> Path:
    """A copy of ``source`` with another model version (so another digest), its signature, if
    any, now stale."""
    shutil.copytree(source, out)
    manifest = out / "manifest.json"
    raw = manifest.read_bytes()
    changed = raw.replace(b'"modelVersion": "', f'"modelVersion": "{suffix}-'.encode(), 1)
    assert changed != raw
    manifest.write_bytes(changed)
    return out


def test_a_refresh_refuses_a_tampered_or_unsigned_bundle_and_keeps_deciding(
    signed_dir: Path, bundle_dir: Path, ours: KeyPair, tmp_path: Path
) -> None:
    live = tmp_path / "LIVE"
    live.symlink_to(signed_dir)
    tampered = _variant(signed_dir, tmp_path / "tampered", "tampered")  # stale signature
    unsigned = _variant(bundle_dir, tmp_path / "unsigned", "unsigned")
    resigned = _variant(bundle_dir, tmp_path / "resigned", "resigned")
    sign_bundle(resigned, ours.private_key)
    cache = tmp_path / "cache"
    version = load_bundle(signed_dir).version

    def serve(directory: Path) -> None:
        live.unlink()
        live.symlink_to(directory)
        r = httpx.post(f"{server.url}/v1/admin/reload", headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.json()["changed"] is True, r.text

    with (
        _server(live, tmp_path / "server") as server,
        _client(server, cache, public_keys=[ours.public_raw_b64], fallback=False) as client,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http,
    ):
        before = msgspec.to_builtins(client.decide(REQUEST))
        local = client.local
        assert local is not None and before["modelVersion"] == version
        good = local.bundle
        for directory, why in [
            (tampered, r"BundleSignatureError: signature by key \w+ does not match manifest"),
            (unsigned, r"BundleSignatureError: the server's bundle \w+ is unsigned"),
        ]:
            serve(directory)
            assert httpx.get(f"{server.url}/v1/bundle", headers=AUTH).json()["digest"] == (
                _digest(directory)
            )
            assert local.refresh(http) is False
            assert local.last_error is not None and re.match(why, local.last_error)
            assert local.bundle is good
            after = msgspec.to_builtins(client.decide(REQUEST))
            assert after["modelVersion"] == version
            assert {k: v for k, v in after.items() if k != "decisionId"} == {
                k: v for k, v in before.items() if k != "decisionId"
            }
            assert not (cache / _digest(directory)).exists()
        assert local.refresh_failures == 2 and local.refreshes == 1

        serve(resigned)  # a properly signed new bundle: taken at the next refresh
        assert local.refresh(http) is True
        assert local.last_error is None and local.bundle is not None
        assert local.bundle.digest == _digest(resigned)
        assert client.decide(REQUEST).model_version.startswith("resigned-")
    assert sorted(_leftovers(cache)) == sorted([_digest(signed_dir), _digest(resigned)])
