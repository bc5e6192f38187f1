"""The bundle routes against a real server process: a public key (the one in every page) reads
neither ``/v1/bundle`` nor its files; a secret key does, and local mode needs one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdk import Client
from sdk._local import LocalEngine
from sdk.errors import SecretKeyRequiredError
from server.security import hash_key
from tests.conftest import LiveServer
from tests.conftest import keyed_server as start_keyed_server

PUBLIC = "pk_test_bundle_routes_0123456789abcdef"
SECRET = "sk_test_bundle_routes_0123456789abcdef"
ORIGIN = "https://shop.example.com"
ROUTES = ["/v1/bundle", "/v1/bundle/files/parity.jsonl", "/v1/bundle/files/manifest.json"]


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    keys = {
        "keys": [
            {"id": "site", "kind": "public", "sha256": hash_key(PUBLIC), "origins": [ORIGIN]},
            {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
        ],
    }
    with start_keyed_server(bundle_dir, tmp_path_factory.mktemp("bundle-routes"), keys) as live:
        yield live


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    "how",
    [
        {"authorization": f"Bearer {PUBLIC}"},
        {"authorization": f"Bearer {PUBLIC}", "origin": ORIGIN},
        {"x-tailor-key": PUBLIC, "origin": ORIGIN},
        {"query": PUBLIC, "origin": ORIGIN},
    ],
    ids=["bearer", "bearer-with-origin", "header-with-origin", "query-with-origin"],
)
def test_a_public_key_cannot_read_the_bundle(
    server: LiveServer, path: str, how: dict[str, str]
) -> None:
    headers = {k: v for k, v in how.items() if k != "query"}
    params = {"key": how["query"]} if "query" in how else None
    r = httpx.get(f"{server.url}{path}", headers=headers, params=params)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 403
    assert problem["type"].endswith("/secret-key-required")
    assert "files" not in problem and b"visitorId" not in r.content


@pytest.mark.parametrize("path", ROUTES)
def test_a_secret_key_reads_the_bundle(server: LiveServer, path: str, bundle_dir: Path) -> None:
    r = httpx.get(f"{server.url}{path}", headers={"authorization": f"Bearer {SECRET}"})
    assert r.status_code == 200, r.text
    if path.startswith("/v1/bundle/files/"):
        assert r.content == (bundle_dir / path.rsplit("/", 1)[1]).read_bytes()
    else:
        assert set(r.json()["files"]) >= {"manifest.json", "parity.jsonl"}


def test_local_mode_refuses_a_public_key_up_front(server: LiveServer, tmp_path: Path) -> None:
    with pytest.raises(SecretKeyRequiredError, match=r"secret key \(sk_\.\.\.\)"):
        Client(server.url, mode="local", api_key=PUBLIC, bundle_cache_dir=tmp_path)


def test_local_mode_says_why_the_server_refuses_its_key(server: LiveServer, tmp_path: Path) -> None:
    engine = LocalEngine(
        source=server.url,
        headers={"authorization": f"Bearer {PUBLIC}", "origin": ORIGIN},
        cache_dir=tmp_path / "cache",
    )
    with httpx.Client(base_url=server.url, headers=engine._headers, timeout=10) as http:
        assert engine.refresh(http) is False
    assert engine.last_error is not None
    assert engine.last_error.startswith("SecretKeyRequiredError: GET /v1/bundle answered 403")
    assert engine.bundle is None and not (tmp_path / "cache").exists()
    engine.close()
