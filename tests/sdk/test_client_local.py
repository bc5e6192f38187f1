"""The client's local mode without a server process: a fake ``/v1/bundle`` behind
``httpx.MockTransport``, bundles on disk, refresh, fallbacks, fork and the missing extra."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from model_export.bundle.export import write_bundle
from model_export.inputs.synth import generate
from sdk import (
    APIError,
    AsyncClient,
    Bundle,
    BundleError,
    Client,
    Consent,
    Decider,
    DecideRequest,
    Decision,
    Event,
    Fallback,
    TailorError,
    TransportError,
    load_bundle,
)
from sdk.schema import Content
from tests.conftest import FIXED_NOW, ROOT

FAKE_URL = "https://tailor.test"
REFRESH_THREAD = "tailor-bundle-refresh"


# -- helpers ----------------------------------------------------------------------------------


def _comparable(decision: Decision) -> dict[str, object]:
    data: dict[str, object] = msgspec.to_builtins(decision)
    data.pop("decisionId")
    return data


def _requests(n: int, seed: int) -> list[DecideRequest]:
    """Generated visits at FIXED_NOW, every third one without personalization consent."""
    out = []
    for i, visit in enumerate(generate(n, seed=seed)):
        request = msgspec.structs.replace(visit.request, timestamp=FIXED_NOW)
        if i % 3 == 0:
            request = msgspec.structs.replace(
                request, consent=Consent(personalization=False, storage=False)
            )
        out.append(request)
    return out


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)  # polling a condition, not waiting for a result


def _refresh_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == REFRESH_THREAD}


def _digest(directory: Path) -> str:
    return hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()


class FakeServer:
    """The bundle routes of ``server/routes.py`` (``GET /v1/bundle`` with the manifest digest
    as ETag, ``GET /v1/bundle/files/{name}``) served from a directory that a test may swap,
    take down (connection refused) or make serve altered bytes."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.down = False
        self.tamper: set[str] = set()
        self.edit_info: Callable[[dict[str, object]], None] | None = None  # a hostile server
        self.log: list[tuple[str, str | None, int]] = []  # path, If-None-Match, status (0: none)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=FAKE_URL, transport=self.transport)

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.log]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        status = 0  # no answer: the connection failed
        try:
            response = self._answer(request)
            status = response.status_code
            return response
        finally:
            self.log.append((request.url.path, request.headers.get("if-none-match"), status))

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if self.directory is None:
            return httpx.Response(503, json={"title": "No verified bundle"})
        raw = (self.directory / "manifest.json").read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        manifest = json.loads(raw)
        files = {"manifest.json": digest, **manifest["files"]}
        path = request.url.path
        if path == "/v1/bundle":
            etag = f'"{digest}"'
            if request.headers.get("if-none-match") == etag:
                return httpx.Response(304, headers={"etag": etag})
            info: dict[str, object] = {
                "modelVersion": manifest["modelVersion"],
                "digest": digest,
                "files": files,
            }
            if self.edit_info is not None:
                self.edit_info(info)
            return httpx.Response(200, json=info, headers={"etag": etag})
        prefix = "/v1/bundle/files/"
        if path.startswith(prefix) and path[len(prefix) :] in files:
            name = path[len(prefix) :]
            data = (self.directory / name).read_bytes()
            if name in self.tamper:
                data = data[:-1] + bytes([data[-1] ^ 1])
            return httpx.Response(200, content=data, headers={"etag": f'"{files[name]}"'})
        return httpx.Response(404, json={"title": "Not found"})


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundle B: the test bundle's models, parity rows and catalogue written again by
    model_export's writer under another name, so another model version and digest."""
    manifest = load_bundle(bundle_dir).manifest
    fields = msgspec.structs.asdict(manifest)
    for key in ("format_version", "model_version", "created_at", "models", "producer", "files"):
        del fields[key]
    out = tmp_path_factory.mktemp("other") / "b"
    write_bundle(
        out,
        models={
            name: ((bundle_dir / spec.file).read_bytes(), spec.features)
            for name, spec in manifest.models.items()
        },
        parity=(bundle_dir / "parity.jsonl").read_bytes(),
        manifest_fields=fields,
        name="other",
        created_at=datetime.now(UTC),
    )
    return out


@pytest.fixture(scope="module")
def refused_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy whose manifest (its files intact) declares a bundle format nobody reads."""
    out = tmp_path_factory.mktemp("refused") / "c"
    shutil.copytree(bundle_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["formatVersion"] = 999
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture
def requests() -> list[DecideRequest]:
    return _requests(40, seed=77)


# -- deciding like the Decider ----------------------------------------------------------------


def test_local_mode_decides_like_the_decider(bundle_dir: Path, decider: Decider) -> None:
    requests = _requests(150, seed=5) + _requests(150, seed=6)
    with Client(mode="local", bundle=bundle_dir, cache=False) as client:
        assert client.mode == "local"
        for request in requests:
            assert _comparable(client.decide(request)) == _comparable(decider.decide(request))
        many = client.decide_many(requests)  # chunks of 100: 3 batched runs
        assert [_comparable(d) for d in many] == [
            _comparable(d) for d in decider.decide_many(requests)
        ]
        assert client.local is not None and client.local.bundle is not None
        assert client.local.bundle.digest == _digest(bundle_dir)


def test_visit_cache_serves_the_same_decision_for_the_visit(
    bundle: Bundle, requests: list[DecideRequest]
) -> None:
    request = requests[1]  # personalization and storage consent
    with Client(mode="local", bundle=bundle) as client:
        first = client.decide(request)
        assert client.decide(request) is first
        assert client.decide(msgspec.structs.replace(request, slots=["hero"])) is first
        other_session = client.decide(msgspec.structs.replace(request, session_id="s-other"))
        assert other_session.decision_id != first.decision_id
        no_session = msgspec.structs.replace(request, session_id=None)
        assert client.decide(no_session) is not client.decide(no_session)
        assert client.cache is not None and client.cache.hits == 2


def test_async_client_decides_like_the_sync_one(
    bundle_dir: Path, requests: list[DecideRequest]
) -> None:
    with Client(mode="local", bundle=bundle_dir) as sync:
        want_one = [_comparable(sync.decide(r)) for r in requests]
        want_many = [_comparable(d) for d in sync.decide_many(requests)]

    async def run() -> tuple[list[dict[str, object]], list[dict[str, object]], bool]:
        async with AsyncClient(mode="local", bundle=bundle_dir) as client:
            one = [_comparable(await client.decide(r)) for r in requests]
            many = [_comparable(d) for d in await client.decide_many(requests)]
            again = await client.decide(requests[1]) is await client.decide(requests[1])
            return one, many, again

    one, many, cached = asyncio.run(run())
    assert one == want_one
    assert many == want_many
    assert cached


def test_without_a_server_local_mode_cannot_track_and_forgets_locally(
    bundle: Bundle, requests: list[DecideRequest]
) -> None:
    request = requests[1]
    with Client(mode="local", bundle=bundle) as client:
        first = client.decide(request)
        with pytest.raises(TailorError, match="no server"):
            client.track(Event(type="impression", visitor_id=request.visitor_id))
        client.forget(request.visitor_id)  # the visit cache only: there is no server
        assert client.decide(request).decision_id != first.decision_id


# -- no I/O at construction -------------------------------------------------------------------


def test_a_missing_bundle_directory_fails_at_the_first_decision(
    tmp_path: Path, requests: list[DecideRequest]
) -> None:
    with Client(mode="local", bundle=tmp_path / "nowhere") as client:
        assert client.local is not None and client.local.bundle is None
        with pytest.raises(BundleError, match="does not exist"):
            client.decide(requests[0])
        with pytest.raises(BundleError):  # not remembered as "no bundle": raised again
            client.decide_many(requests[:2])


@pytest.mark.parametrize("mode", ["remote", "local"])
def test_constructors_do_no_io_and_start_no_threads(
    mode: str, bundle_dir: Path, tmp_path: Path, requests: list[DecideRequest]
) -> None:
    fake = FakeServer(bundle_dir)
    threads = set(threading.enumerate())
    client = Client(
        FAKE_URL,
        mode=mode,  # type: ignore[arg-type]
        transport=fake.transport,
        bundle_cache_dir=tmp_path / "cache",
        timeout=10,
    )
    try:
        assert fake.log == []
        assert set(threading.enumerate()) == threads
        assert not (tmp_path / "cache").exists()
        if mode == "local":
            decision = client.decide(requests[0])
            assert fake.paths()[0] == "/v1/bundle"
            assert decision.model_version == load_bundle(bundle_dir).version
            assert _refresh_threads() - threads
        else:  # the fake has no decide route: its 404 is the caller's error
            with pytest.raises(APIError, match="404"):
                client.decide(requests[0])
            assert fake.paths() == ["/v1/decide"]
    finally:
        client.close()


# -- bundles from a server --------------------------------------------------------------------


def test_first_decision_downloads_the_bundle_then_refresh_is_304(
    bundle_dir: Path, decider: Decider, tmp_path: Path, requests: list[DecideRequest]
) -> None:
    fake = FakeServer(bundle_dir)
    digest = _digest(bundle_dir)
    cache = tmp_path / "cache"
    with Client(
        FAKE_URL,
        mode="local",
        transport=fake.transport,
        bundle_cache_dir=cache,
        timeout=10,
        refresh_interval=3600,
        cache=False,
    ) as client:
        for request in requests:
            assert _comparable(client.decide(request)) == _comparable(decider.decide(request))
        local = client.local
        assert local is not None and local.bundle is not None
        _wait_for(lambda: local.refreshes == 1, "the refresher's first download counted")
        assert local.bundle.digest == digest
        assert local.bundle.path == (cache / digest).resolve()
        listed = json.loads((bundle_dir / "manifest.json").read_text())["files"]
        assert sorted(p.name for p in (cache / digest).iterdir()) == sorted(
            ["manifest.json", *listed]
        )
        assert [p.name for p in cache.iterdir()] == [digest]  # no temporary left behind
        assert fake.log[0] == ("/v1/bundle", None, 200)
        assert sorted(fake.paths()[1:]) == sorted(
            f"/v1/bundle/files/{name}" for name in ["manifest.json", *listed]
        )

        seen = len(fake.log)
        with fake.http() as http:
            assert local.refresh(http) is False
        assert fake.log[seen:] == [("/v1/bundle", f'"{digest}"', 304)]
        assert local.refreshes == 1 and local.refresh_failures == 0 and local.last_error is None


def test_a_second_client_reuses_the_cached_download(
    bundle_dir: Path, tmp_path: Path, requests: list[DecideRequest]
) -> None:
    fake = FakeServer(bundle_dir)
    kwargs = {"bundle_cache_dir": tmp_path / "cache", "refresh_interval": 3600.0}
    with Client(FAKE_URL, mode="local", transport=fake.transport, timeout=10, **kwargs) as c:
        c.decide(requests[0])
    downloads = [p for p in fake.paths() if p.startswith("/v1/bundle/files/")]
    with Client(FAKE_URL, mode="local", transport=fake.transport, timeout=10, **kwargs) as c:
        c.decide(requests[0])
        assert c.local is not None and c.local.bundle is not None
        assert c.local.bundle.digest == _digest(bundle_dir)
    assert [p for p in fake.paths() if p.startswith("/v1/bundle/files/")] == downloads


def test_a_damaged_cached_download_is_fetched_again(
    bundle_dir: Path, tmp_path: Path, requests: list[DecideRequest]
) -> None:
    """A copy in the cache directory that fails verification (a file deleted by a cache
    cleaner, a disk error) must not stop the client from taking the server's good bytes."""
    digest = _digest(bundle_dir)
    cache = tmp_path / "cache"
    shutil.copytree(bundle_dir, cache / digest)
    (cache / digest / "parity.jsonl").unlink()
    fake = FakeServer(bundle_dir)
    with Client(FAKE_URL, mode="local", transport=fake.transport, bundle_cache_dir=cache) as c:
        local = c.local
        assert local is not None
        with fake.http() as http:
            swapped = local.refresh(http)
        assert local.last_error is None, local.last_error
        assert swapped
        assert c.decide(requests[0]).model_version == load_bundle(bundle_dir).version


def test_refresh_swaps_in_a_new_bundle(
    bundle: Bundle, other_bundle: Path, tmp_path: Path, requests: list[DecideRequest]
) -> None:
    fake = FakeServer(bundle.path)
    with Client(
        FAKE_URL,
        mode="local",
        transport=fake.transport,
        bundle_cache_dir=tmp_path / "cache",
        timeout=10,
        refresh_interval=3600,
    ) as client:
        assert client.decide(requests[0]).model_version == bundle.version
        local = client.local
        assert local is not None
        _wait_for(lambda: local.refreshes == 1, "the first download counted")
        fake.directory = other_bundle
        with fake.http() as http:
            assert local.refresh(http) is True
        assert local.bundle is not None and local.bundle.digest == _digest(other_bundle)
        new_version = local.bundle.version
        assert new_version != bundle.version and new_version.startswith("other-")
        assert client.decide(requests[1]).model_version == new_version
        assert local.refreshes == 2 and local.last_error is None


def test_the_background_refresher_picks_up_a_new_bundle(
    bundle: Bundle, other_bundle: Path, tmp_path: Path, requests: list[DecideRequest]
) -> None:
    fake = FakeServer(bundle.path)
    with Client(
        FAKE_URL,
        mode="local",
        transport=fake.transport,
        bundle=bundle,
        bundle_cache_dir=tmp_path / "cache",
        refresh_interval=0.02,
        cache=False,
    ) as client:
        assert client.decide(requests[0]).model_version == bundle.version
        local = client.local
        assert local is not None
        _wait_for(lambda: ("/v1/bundle", f'"{bundle.digest}"', 304) in fake.log, "a 304")
        fake.directory = other_bundle
        digest = _digest(other_bundle)
        _wait_for(lambda: local.bundle is not None and local.bundle.digest == digest, "swap")
        assert client.decide(requests[0]).model_version.startswith("other-")
    assert local.refresh_failures == 0
    assert local._thread is not None and not local._thread.is_alive()  # close() stopped it


@pytest.mark.parametrize("failure", ["down", "tampered", "refused"])
def test_a_failed_refresh_keeps_the_last_good_bundle(
    failure: str,
    bundle: Bundle,
    other_bundle: Path,
    refused_bundle: Path,
    tmp_path: Path,
    requests: list[DecideRequest],
) -> None:
    fake = FakeServer(refused_bundle if failure == "refused" else other_bundle)
    fake.down = failure == "down"
    if failure == "tampered":
        fake.tamper.add("parity.jsonl")
    cache = tmp_path / "cache"
    # no base_url: the engine has no refresher thread; the test drives refresh() itself
    with Client(mode="local", bundle=bundle, bundle_cache_dir=cache, cache=False) as client:
        before = client.decide(requests[0])
        local = client.local
        assert local is not None
        with fake.http() as http:
            assert local.refresh(http) is False
            assert local.refresh(http) is False
        assert local.refresh_failures == 2 and local.refreshes == 0
        why = {
            "down": "ConnectError: [Errno 111] Connection refused",
            "tampered": "BundleDownloadError: bundle file parity.jsonl does not match its sha256",
            "refused": "BundleFormatError: bundle format version 999 is not supported",
        }[failure]
        assert local.last_error is not None and local.last_error.startswith(why)
        assert local.bundle is bundle
        after = client.decide(requests[0])
        assert after.model_version == bundle.version
        assert _comparable(after) == _comparable(before)
        if failure == "tampered":
            assert not (cache / _digest(other_bundle)).exists()
            assert not [p for p in cache.iterdir() if p.name.startswith(".")]

        fake.down = False  # the server recovers: the next refresh takes the new bundle
        fake.tamper.clear()
        fake.directory = other_bundle
        with fake.http() as http:
            assert local.refresh(http) is True
        assert local.last_error is None and local.bundle is not None
        assert local.bundle.digest == _digest(other_bundle)


def _claim_other_digest(info: dict[str, object]) -> None:
    info["digest"] = "0" * 64


def _add_unsafe_file(info: dict[str, object]) -> None:
    info["files"] = {**info["files"], "../escape": "0" * 64}  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (
            lambda info: info.pop("digest"),
            "BundleDownloadError: GET /v1/bundle answered without a digest",
        ),
        (
            lambda info: info.pop("files"),
            "BundleDownloadError: GET /v1/bundle answered without a digest",
        ),
        (_claim_other_digest, "BundleDownloadError: bundle file manifest.json does not match"),
        (_add_unsafe_file, "UnsafeBundleFileError: unsafe bundle file name '../escape'"),
        (None, "HTTPStatusError: Server error '503 Service Unavailable'"),
    ],
    ids=["no-digest", "no-files", "wrong-digest", "unsafe-name", "no-bundle-yet"],
)
def test_a_refresh_refuses_what_a_server_should_not_answer(
    answer: Callable[[dict[str, object]], None] | None,
    why: str,
    bundle: Bundle,
    other_bundle: Path,
    tmp_path: Path,
    requests: list[DecideRequest],
) -> None:
    fake = FakeServer(other_bundle if answer is not None else None)
    fake.edit_info = answer
    with Client(mode="local", bundle=bundle, bundle_cache_dir=tmp_path / "cache") as client:
        assert client.decide(requests[0]).model_version == bundle.version
        local = client.local
        assert local is not None
        with fake.http() as http:
            assert local.refresh(http) is False
        assert local.last_error is not None and local.last_error.startswith(why)
        assert local.refresh_failures == 1 and local.bundle is bundle
        assert client.decide(requests[1]).model_version == bundle.version
    assert not (tmp_path / "escape").exists()


# -- fallbacks --------------------------------------------------------------------------------


def test_no_bundle_and_the_server_down_gives_a_fallback_within_the_timeout(
    tmp_path: Path, requests: list[DecideRequest]
) -> None:
    fake = FakeServer(None)
    fake.down = True
    with Client(
        FAKE_URL,
        mode="local",
        transport=fake.transport,
        bundle_cache_dir=tmp_path / "cache",
        timeout=0.3,
    ) as client:
        start = time.monotonic()
        decision = client.decide(requests[0])
        assert time.monotonic() - start < 0.3 + 0.5
        assert decision.model_version == "fallback"
        assert decision.decision_id.startswith("fallback-")
        assert [r.code for r in decision.reasons] == ["fallback.bundle_loading"]
        many = client.decide_many(requests[:3])
        assert [d.reasons[0].code for d in many] == ["fallback.bundle_loading"] * 3
        assert client.local is not None and client.local.refresh_failures >= 1


def test_after_a_failed_download_the_fallback_does_not_wait_again(
    tmp_path: Path, requests: list[DecideRequest]
) -> None:
    """The refresher tried, failed and sleeps ``refresh_interval`` (60 s): no download is in
    flight, so waiting ``timeout`` on every decision only delays the page's default content."""
    fake = FakeServer(None)
    fake.down = True
    with Client(
        FAKE_URL,
        mode="local",
        transport=fake.transport,
        bundle_cache_dir=tmp_path / "cache",
        timeout=0.5,
    ) as client:
        client.decide(requests[0])
        local = client.local
        assert local is not None
        _wait_for(lambda: local.refresh_failures >= 1, "the first download failed")
        start = time.monotonic()
        decision = client.decide(requests[1])
        elapsed = time.monotonic() - start
        assert decision.reasons[0].code == "fallback.bundle_loading"
        assert elapsed < 0.1, f"decide waited {elapsed:.2f} s with no download in flight"


def test_local_fallback_content_comes_from_the_callers_defaults(
    bundle_dir: Path, tmp_path: Path, requests: list[DecideRequest]
) -> None:
    """Local mode falls back only while it has no bundle, so the catalogue's defaults come
    from a Fallback the caller builds from a bundle directory (manifest only, no ONNX)."""
    fake = FakeServer(None)
    fake.down = True
    catalogue = load_bundle(bundle_dir).manifest
    defaults = {slot.id: slot.default for slot in catalogue.slots}
    hero = Content(type="text", text="Welcome")
    cases: list[tuple[object, dict[str, str]]] = [
        (Fallback.from_bundle(bundle_dir), defaults),
        ({"hero": hero}, {"hero": "default"}),
    ]
    for fallback, want in cases:
        with Client(
            FAKE_URL,
            mode="local",
            transport=fake.transport,
            bundle_cache_dir=tmp_path / "cache",
            fallback=fallback,  # type: ignore[arg-type]
            timeout=0.05,
        ) as client:
            decision = client.decide(requests[1])  # asks for hero, banner, recommendation
        assert {s: d.variant_id for s, d in decision.slots.items()} == want
        assert decision.reasons[0].code == "fallback.bundle_loading"
        assert not decision.personalized and decision.offers == []
    assert decision.slots["hero"].content == hero
    with (
        Client(
            FAKE_URL,
            mode="local",
            transport=fake.transport,
            bundle_cache_dir=tmp_path / "cache",
            fallback=False,
            timeout=0.05,
        ) as client,
        pytest.raises(TransportError, match="no bundle loaded yet"),
    ):
        client.decide(requests[1])


# -- fork, missing extra ----------------------------------------------------------------------


def test_a_forked_child_decides_and_restarts_its_own_refresher(
    bundle: Bundle, tmp_path: Path, requests: list[DecideRequest]
) -> None:
    fake = FakeServer(bundle.path)
    client = Client(
        FAKE_URL,
        mode="local",
        bundle=bundle,
        transport=fake.transport,
        bundle_cache_dir=tmp_path / "cache",
        refresh_interval=3600,
    )
    try:
        parent_decision = client.decide(requests[0])
        assert _refresh_threads()
        pid = os.fork()
        if pid == 0:  # the child: no pytest from here on, and never more than 20 s
            code = 10
            try:
                signal.alarm(20)
                code = 11
                if any(t.name == REFRESH_THREAD for t in threading.enumerate()):
                    os._exit(12)  # threads do not survive fork: none may be seen yet
                decision = client.decide(requests[2])
                code = 13
                if decision.model_version != bundle.version:
                    os._exit(14)
                if client.decide(requests[0]) is not parent_decision:  # the inherited cache
                    os._exit(15)
                if not any(t.name == REFRESH_THREAD for t in threading.enumerate()):
                    os._exit(16)
                client.close()
                code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the forked child did not finish in 30 s")
            time.sleep(0.01)  # polling the child's exit
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.decide(requests[1]).model_version == bundle.version  # parent unharmed
    finally:
        client.close()


def test_local_mode_without_the_extra_names_it(bundle_dir: Path) -> None:
    script = f"""
import json, sys
sys.modules["onnxruntime"] = None  # as if the local extra were not installed
import sdk
out = {{}}
try:
    sdk.Client(mode="local", bundle={str(bundle_dir)!r})
except sdk.MissingExtraError as exc:
    out["error"] = [type(exc).__name__, isinstance(exc, ImportError), exc.extra, str(exc)]
remote = sdk.Client("http://x")
out["remote"] = remote.mode
remote.close()
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    name, is_import_error, extra, message = out["error"]
    assert (name, is_import_error, extra) == ("MissingExtraError", True, "local")
    assert "onnxruntime" in message and "tailor[local]" in message
    assert out["remote"] == "remote"
