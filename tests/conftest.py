"""Shared fixtures: a small trained bundle, a decider, and a real server process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from model_export.fit.segments import TrainConfig
from model_export.inputs.catalogue import load_catalogue
from model_export.inputs.demo import demo_inputs
from model_export.training import TrainingResult, train
from sdk import Decider, load_bundle
from sdk.bundle import Bundle

ROOT = Path(__file__).resolve().parents[1]
#: "Now" for a test session: fixed for the session, and close to the server's clock (the server
#: refuses request timestamps more than 7 days away).
FIXED_NOW = datetime.now(UTC).replace(second=0, microsecond=0)
#: The persona each planted synthetic persona must be named after by training.
PLANTED_PERSONAS = {
    "loyal": "loyal_big_spenders",
    "bargain": "bargain_hunters",
    "mobile": "mobile_browsers",
    "researcher": "researchers",
    "dormant": "dormant_one_timers",
    "newcomer": "first_time_visitors",
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    """A bundle trained once per test session on 6,000 synthetic visits (seed 11).

    Greedy on purpose: no holdout, no experiment, no exploration, so a test can compare two
    visitors' content. The policy layer is tested with ``policy_bundle_dir``.
    """
    out = tmp_path_factory.mktemp("bundles") / "test"
    greedy = msgspec.structs.replace(
        load_catalogue(), experiments=[], holdout=None, exploration=None
    )
    inputs = demo_inputs(
        n_visitors=6000, config=TrainConfig(seed=11), catalogue=greedy, name="test"
    )
    return train(inputs, out)


@pytest.fixture(scope="session")
def bundle_dir(trained: TrainingResult) -> Path:
    return trained.path


#: The policy of ``policy_bundle_dir``: the demo catalogue's kind of holdout, experiment and
#: exploration, with larger shares so that tests see every path often.
TEST_POLICY: dict[str, Any] = {
    "holdout": {"share": 0.1},
    "exploration": {"epsilon": 0.2, "bySegment": {"0": 0.0}},
    "experiments": [
        {
            "key": "hero_test",
            "slots": ["hero"],
            "arms": [
                {"key": "control"},
                {"key": "generic", "policy": "default"},
                {"key": "guide", "policy": "variants", "variants": {"hero": "hero_guide"}},
            ],
        },
        {
            "key": "banner_prospects",
            "slots": ["banner"],
            "condition": {"lifecycle": "prospect"},
            "namespace": {"name": "banner", "start": 0.0, "end": 0.5},
            "arms": [{"key": "a"}, {"key": "b", "weight": 3}],
        },
        {
            "key": "banner_others",
            "slots": ["banner"],
            "namespace": {"name": "banner", "start": 0.5, "end": 1.0},
            "arms": [{"key": "a"}, {"key": "b"}],
        },
    ],
}


@pytest.fixture(scope="session")
def policy_bundle_dir(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test bundle with :data:`TEST_POLICY` (holdout, three experiments, exploration)."""
    from model_export.bundle.lifecycle import PolicyConfig, with_policy

    out = tmp_path_factory.mktemp("bundles") / "policy"
    with_policy(bundle_dir, out, msgspec.convert(TEST_POLICY, PolicyConfig), "test-policy")
    return out


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle that a test may tamper with."""
    dest = tmp_path / "bundle"
    shutil.copytree(bundle_dir, dest)
    return dest


@pytest.fixture(scope="session")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture(scope="session")
def decider(bundle: Bundle) -> Decider:
    return Decider(bundle, clock=lambda: FIXED_NOW)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def _start_server(
    bundle_path: Path,
    log: Path,
    extra_env: dict[str, str] | None = None,
    *,
    extra_args: Sequence[str] = (),
) -> LiveServer:
    port = free_port()
    env = dict(
        os.environ,
        TAILOR_BUNDLE=str(bundle_path),
        TAILOR_EVENT_LOG_DIR=str(log.parent / f"events-{port}"),
        **(extra_env or {}),
    )
    with log.open("wb") as fh:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return LiveServer(url=url, process=proc, log=log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling for readiness, not waiting for a result
    proc.kill()
    raise RuntimeError(f"server not ready in 30 s:\n{log.read_text()}")


def run_python(args: Sequence[str], extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` from the repository root with ``extra_env`` added, run to its exit."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **extra_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_refused(
    bundle_path: Path, extra_env: dict[str, str], extra_args: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``python -m server`` started with ``extra_env`` and ``extra_args``, run to its exit (for
    configurations it must refuse before listening)."""
    args = ["-m", "server", "--host", "127.0.0.1", "--port", "1", *extra_args]
    return run_python(args, {"TAILOR_BUNDLE": str(bundle_path), **extra_env})


#: The visitor token secret of keyed test servers (tests forge and age tokens with it).
TEST_TOKEN_SECRET = "test-visitor-token-secret-0123456789abcdef"
#: The user token secret shared with "the site's backend" in tests.
TEST_USER_TOKEN_SECRET = "test-user-token-secret-0123456789abcdefgh"


@contextmanager
def keyed_server(
    bundle_path: Path,
    root: Path,
    keys: dict[str, Any],
    extra_env: dict[str, str] | None = None,
    *,
    extra_args: Sequence[str] = (),
) -> Iterator[LiveServer]:
    """A real server (demo off) with the security config ``keys`` (the JSON of
    :class:`server.security.SecurityConfig`) and the test token secrets, stopped on exit;
    ``extra_args``: more command-line arguments (``["--workers", "2"]``)."""
    (root / "keys.json").write_text(json.dumps(keys))
    server = _start_server(
        bundle_path,
        root / "server.log",
        {
            "TAILOR_DEMO": "0",
            "TAILOR_KEYS_FILE": str(root / "keys.json"),
            "TAILOR_TOKEN_SECRETS": TEST_TOKEN_SECRET,
            "TAILOR_USER_TOKEN_SECRETS": TEST_USER_TOKEN_SECRET,
            **(extra_env or {}),
        },
        extra_args=extra_args,
    )
    try:
        yield server
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def live_server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real uvicorn process serving the test bundle on 127.0.0.1, in demo mode (keyless
    loopback requests; opted in, since the demo is off by default)."""
    server = _start_server(
        bundle_dir, tmp_path_factory.mktemp("logs") / "server.log", {"TAILOR_DEMO": "1"}
    )
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture
def make_request() -> Callable[..., dict[str, object]]:
    """Factory of decide-request JSON objects (camelCase, as a browser would send)."""

    def make(**overrides: object) -> dict[str, object]:
        body: dict[str, object] = {
            "visitorId": "visitor-1",
            "sessionId": "session-1",
            "consent": {"personalization": True, "storage": True},
            "context": {
                "page": {"url": "https://shop.example.com/", "path": "/"},
                "userAgent": (
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
                ),
                "timezone": "Europe/London",
                "locale": "en-GB",
            },
            "behavior": {"pageViews": 3, "sessionCount": 2},
            "slots": ["hero", "banner", "recommendation"],
            "timestamp": FIXED_NOW.isoformat(),
        }
        body.update(overrides)
        return body

    return make


#: Keys the in-process tests authenticate with (only their sha256 is configured).
TEST_SECRET_KEY = "sk_test_0123456789abcdefghijklmnop"
TEST_PUBLIC_KEY = "pk_test_0123456789abcdefghijklmnop"
TEST_ORIGIN = "https://shop.example.com"


def security_for_tests() -> Any:
    """A security config with one secret and one public key (origin TEST_ORIGIN)."""
    from server.security import ApiKey, SecurityConfig, hash_key

    return SecurityConfig(
        keys=[
            ApiKey(id="backend", kind="secret", sha256=hash_key(TEST_SECRET_KEY)),
            ApiKey(
                id="site",
                kind="public",
                sha256=hash_key(TEST_PUBLIC_KEY),
                origins=[TEST_ORIGIN],
            ),
        ]
    )


@contextmanager
def app_client(**settings: Any) -> Iterator[Any]:
    """A Litestar TestClient (lifespan running) on ``create_app(Settings(**settings))``, with
    the test keys configured and the secret key sent on every request; with ``demo=True``,
    keyless (the demo refuses keys)."""
    from litestar.testing import TestClient

    from server.app import create_app
    from server.settings import Settings

    demo = bool(settings.get("demo"))
    if settings.get("security") is None and not demo:
        settings["security"] = security_for_tests()
    if not demo:
        settings.setdefault("token_secrets", [TEST_TOKEN_SECRET])
        settings.setdefault("user_token_secrets", [TEST_USER_TOKEN_SECRET])
    settings.setdefault("reload_interval", 0)
    with tempfile.TemporaryDirectory(prefix="tailor-events-") as events:
        settings.setdefault("event_log_dir", events)
        with TestClient(create_app(Settings(**settings))) as client:
            if not demo:
                client.headers["authorization"] = f"Bearer {TEST_SECRET_KEY}"
            yield client


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real ``redis-server`` on a free loopback port, without persistence, for the session;
    tests that need a blank one ``FLUSHALL`` it or use their own key prefix."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
