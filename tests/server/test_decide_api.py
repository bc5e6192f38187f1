"""Per-visit stability, batch decisions, the bundle endpoints and hot reload."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from model_export.fit.segments import TrainConfig
from model_export.inputs.demo import demo_inputs
from model_export.training import train
from server.settings import Settings
from tests.conftest import _start_server, app_client

MakeRequest = Callable[..., dict[str, object]]


@pytest.fixture
def client(bundle_dir: Path) -> Iterator[TestClient]:  # type: ignore[type-arg]
    with app_client(bundle_path=str(bundle_dir), reload_interval=0) as c:
        yield c


def test_same_visit_gets_the_same_decision(client: TestClient, make_request: MakeRequest) -> None:  # type: ignore[type-arg]
    first = client.post("/v1/decide", json=make_request())
    again = client.post("/v1/decide", json=make_request())
    assert first.headers["x-tailor-cache"] == "miss" and again.headers["x-tailor-cache"] == "hit"
    assert again.json() == first.json()
    other_visit = client.post("/v1/decide", json=make_request(sessionId="session-2"))
    assert other_visit.json()["decisionId"] != first.json()["decisionId"]
    no_session = make_request(sessionId=None)
    a = client.post("/v1/decide", json=no_session).json()
    b = client.post("/v1/decide", json=no_session).json()
    assert a["decisionId"] != b["decisionId"]  # backend calls without a session: fresh


def test_consent_change_is_a_new_decision(client: TestClient, make_request: MakeRequest) -> None:  # type: ignore[type-arg]
    granted = client.post("/v1/decide", json=make_request()).json()
    revoked = client.post(
        "/v1/decide", json=make_request(consent={"personalization": False})
    ).json()
    assert granted["personalized"] and not revoked["personalized"]


def test_server_timing_header(client: TestClient, make_request: MakeRequest) -> None:  # type: ignore[type-arg]
    """Every stage of a fresh decide, in order, then a repeat answered from the visit cache;
    the stages fit in the total."""
    body = make_request()
    for expected in (
        [
            "auth",
            "read",
            "decode",
            "state-read",
            "decide",
            "encode",
            "state-write",
            "log",
            "metrics",
        ],
        ["auth", "read", "decode"],  # the same visit again: the worker's visit cache answers
    ):
        timing = client.post("/v1/decide", json=body).headers["server-timing"]
        parts = [part.strip().split(";dur=") for part in timing.split(",")]
        names = [name for name, _ in parts]
        assert names == [*expected, "total"]
        ms = [float(value) for _, value in parts]
        assert all(v >= 0 for v in ms) and sum(ms[:-1]) <= ms[-1] + 0.01 * len(ms)


def test_batch_matches_single_decisions(client: TestClient, make_request: MakeRequest) -> None:  # type: ignore[type-arg]
    bodies = [
        make_request(visitorId=f"b{i}", sessionId=None, behavior={"purchases": i}) for i in range(5)
    ]
    batch = client.post("/v1/decide/batch", json=bodies)
    assert batch.status_code == 200
    decisions = batch.json()
    assert [d["visitorId"] for d in decisions] == [f"b{i}" for i in range(5)]
    for body, d in zip(bodies, decisions, strict=True):
        single = client.post("/v1/decide", json=body).json()
        assert single["persona"]["id"] == d["persona"]["id"]
        assert [o["id"] for o in single["offers"]] == [o["id"] for o in d["offers"]]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"[]", 422, "length >= 1"),
        (b"{}", 422, "Expected `array`"),
        (json.dumps([{"visitorId": "v"}] * 101).encode(), 422, "at most 100"),
        (b'[{"visitorId": 1}]', 422, "$[0].visitorId"),
        (b"[", 400, "malformed"),
    ],
)
def test_bad_batches_are_problems(
    client: TestClient,
    body: bytes,
    status: int,
    needle: str,  # type: ignore[type-arg]
) -> None:
    r = client.post("/v1/decide/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/problem+json")
    assert needle.lower() in (r.json()["detail"] + r.json()["type"]).lower()


def test_bundle_metadata_and_files_with_etags(client: TestClient, bundle_dir: Path) -> None:  # type: ignore[type-arg]
    info = client.get("/v1/bundle")
    assert info.status_code == 200
    meta = info.json()
    assert (
        meta["modelVersion"].startswith("test-") and info.headers["etag"] == f'"{meta["digest"]}"'
    )
    assert (
        client.get("/v1/bundle", headers={"if-none-match": info.headers["etag"]}).status_code == 304
    )
    for name, digest in meta["files"].items():
        f = client.get(f"/v1/bundle/files/{name}")
        assert f.status_code == 200 and f.content == (bundle_dir / name).read_bytes()
        assert f.headers["etag"] == f'"{digest}"'
    missing = client.get("/v1/bundle/files/..%2Fsecrets")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_admin_reload_swaps_a_good_bundle_and_keeps_the_old_on_refusal(
    bundle_dir: Path, tmp_path: Path, make_request: MakeRequest
) -> None:
    live = tmp_path / "live"
    os.symlink(bundle_dir, live)
    inputs = demo_inputs(n_visitors=1500, config=TrainConfig(seed=5, k=5), name="next")
    candidate = train(inputs, tmp_path / "candidate").path
    broken = tmp_path / "broken"
    shutil.copytree(candidate, broken)
    with (broken / "offers.onnx").open("ab") as fh:
        fh.write(b"x")
    settings = Settings(bundle_path=str(live), reload_interval=0)
    with app_client(**_explicit(settings)) as c:
        before = c.get("/readyz").json()["modelVersion"]
        assert before.startswith("test-")
        _swap(live, broken)
        refused = c.post("/v1/admin/reload")
        assert refused.status_code == 409 and "offers.onnx" in refused.json()["detail"]
        assert refused.json()["serving"] == before
        ready = c.get("/readyz").json()
        assert ready["modelVersion"] == before and "offers.onnx" in ready["lastReloadRefused"]
        assert c.post("/v1/decide", json=make_request()).json()["modelVersion"] == before
        _swap(live, candidate)
        ok = c.post("/v1/admin/reload").json()
        assert ok["changed"] is True and ok["modelVersion"].startswith("next-")
        assert "lastReloadRefused" not in c.get("/readyz").json()
        decision = c.post("/v1/decide", json=make_request(sessionId="after")).json()
        assert decision["modelVersion"] == ok["modelVersion"]


def _swap(live: Path, target: Path) -> None:
    tmp = live.with_name(live.name + ".tmp")
    os.symlink(target, tmp)
    os.replace(tmp, live)


def test_real_server_hot_reloads_by_polling(
    bundle_dir: Path, tmp_path: Path, make_request: MakeRequest
) -> None:
    live = tmp_path / "live"
    os.symlink(bundle_dir, live)
    server = _start_server(
        live, tmp_path / "server.log", {"TAILOR_RELOAD_INTERVAL": "0.2", "TAILOR_DEMO": "1"}
    )
    try:
        old = httpx.get(f"{server.url}/readyz").json()["modelVersion"]
        broken = tmp_path / "broken"
        shutil.copytree(bundle_dir, broken)
        (broken / "parity.jsonl").write_text("{}\n")
        _swap(live, broken)
        refused = _wait_for(server.url, lambda r: "lastReloadRefused" in r)
        assert refused["modelVersion"] == old
        # the reason names the file, never the path (that stays in the server log)
        assert "parity" in refused["lastReloadRefused"]
        assert str(tmp_path) not in refused["lastReloadRefused"]
        assert str(live) in server.log.read_text()
        decided = httpx.post(f"{server.url}/v1/decide", json=make_request()).json()
        assert decided["modelVersion"] == old  # the old bundle keeps serving
        inputs = demo_inputs(n_visitors=1500, config=TrainConfig(seed=9, k=5), name="fresh")
        fresh = train(inputs, tmp_path / "fresh").path
        _swap(live, fresh)
        ready = _wait_for(server.url, lambda r: r["modelVersion"].startswith("fresh-"))
        assert "lastReloadRefused" not in ready
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)


def _wait_for(url: str, done: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """Poll /readyz until ``done`` (bounded at 30 s); polling a live server, not sleeping to
    pass: the assertion is on what /readyz reports."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/readyz").json()
        if done(body):
            return body  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"server never reported the expected state: {body}")


def test_tailor_serve_runs_several_workers(bundle_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "model_export.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                "2",
                "--demo",
                "--bundle",
                str(bundle_dir),
            ],
            cwd=ROOT,
            env={**os.environ, "TAILOR_STATE": "per-worker"},  # memory state needs the opt-in
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        pids: set[str] = set()
        while time.monotonic() < deadline and len(pids) < 2:
            try:
                r = httpx.get(f"{url}/readyz", timeout=2)
                if r.status_code == 200:
                    pids.add(r.headers["x-tailor-worker"])
            except httpx.HTTPError:
                pass
            time.sleep(0.02)  # polling a starting server
        assert len(pids) == 2, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _explicit(settings: Settings) -> dict[str, object]:
    """The fields of ``settings`` that differ from the defaults (so test defaults still apply)."""
    default = Settings()
    return {
        f: getattr(settings, f)
        for f in settings.__struct_fields__
        if getattr(settings, f) != getattr(default, f)
    }
