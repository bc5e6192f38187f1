"""Sticky assignments across two replicas of two workers each sharing one real
``redis-server`` (issue 16): visitors exposed to a sticky experiment keep their arm after its
weights change (a new bundle, reloaded through one replica), whichever replica answers, while
a non-sticky experiment of the same bundles moves some of them; a new bucket version
re-randomises on purpose.

Before: arms were a hash against the current weights, so a weight change moved exposed
visitors on every replica alike.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from model_export.bundle.policy import PolicyConfig, with_policy
from tests.conftest import LiveServer, keyed_server
from tests.server.test_state_replicas import AUTH, KEYS, Alternating, decided, replica_env, visit

N = 40


def policy(generic: float, a: float, bucket_version: int = 1) -> PolicyConfig:
    """A sticky hero experiment and a plain banner one, with these weights of their first
    arms (the second arm weighs 1)."""
    raw = {
        "experiments": [
            {
                "key": "hero_sticky",
                "slots": ["hero"],
                "sticky": True,
                "bucketVersion": bucket_version,
                "arms": [
                    {"key": "generic", "policy": "default", "weight": generic},
                    {"key": "guide", "policy": "variants", "variants": {"hero": "hero_guide"}},
                ],
            },
            {
                "key": "banner_plain",
                "slots": ["banner"],
                "arms": [{"key": "a", "weight": a}, {"key": "b"}],
            },
        ]
    }
    return msgspec.convert(raw, PolicyConfig)


@dataclass
class Replicas:
    servers: list[LiveServer]
    live: Path  # the bundle path both serve: a symlink the test repoints
    bundles: dict[str, tuple[Path, str]]  # name -> (bundle, model version)


@pytest.fixture(scope="module")
def replicas(
    bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory, redis_server: Any
) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("sticky")
    bundles = {}
    for name, config in (
        ("even", policy(1.0, 1.0)),
        ("reweighted", policy(0.02, 0.02)),
        ("rerandomised", policy(0.02, 0.02, bucket_version=2)),
    ):
        manifest = with_policy(bundle_dir, root / name, config, f"sticky-{name}")
        bundles[name] = (root / name, manifest.model_version)
    live = root / "LIVE"
    live.symlink_to(bundles["even"][0], target_is_directory=True)
    prefix = f"sticky-{uuid.uuid4().hex[:6]}"
    with ExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            home = tmp_path_factory.mktemp(f"sticky-{name}")
            env = replica_env(redis_server.url, prefix, home)
            servers.append(
                stack.enter_context(
                    keyed_server(live, home, KEYS, env, extra_args=["--workers", "2"])
                )
            )
        yield Replicas(servers=servers, live=live, bundles=bundles)


def serve(replicas: Replicas, name: str) -> None:
    """Point the bundle path at bundle ``name``, reload through replica A only, and wait
    until every worker of both replicas serves it."""
    path, version = replicas.bundles[name]
    fresh = replicas.live.with_name("LIVE.new")
    fresh.symlink_to(path, target_is_directory=True)
    os.replace(fresh, replicas.live)
    a, b = replicas.servers
    answer = httpx.post(f"{a.url}/v1/admin/reload", headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["modelVersion"] == version
    deadline = time.monotonic() + 30
    for server in (a, b):
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            ready = httpx.get(f"{server.url}/readyz", timeout=5)
            seen[ready.headers["x-tailor-worker"]] = ready.json()["modelVersion"]
            if len(seen) == 2 and set(seen.values()) == {version}:
                break
            time.sleep(0.05)  # polling for the reload, with a deadline
        assert len(seen) == 2 and set(seen.values()) == {version}, seen


def arms(api: Alternating, visitors: list[str], session: str, version: str) -> list[dict[str, str]]:
    """Each visitor's experiment arms in a new session, replicas alternating."""
    out = []
    for vid in visitors:
        body = decided(api.post("/v1/decide", visit(vid, session)))
        assert body["modelVersion"] == version
        out.append(body["experiment"])
    return out


def test_exposed_visitors_keep_sticky_arms_across_weight_changes_and_replicas(
    replicas: Replicas,
) -> None:
    api = Alternating(replicas.servers)
    visitors = [f"sticky-{uuid.uuid4().hex[:8]}-{i}" for i in range(N)]
    before = arms(api, visitors, "s1", replicas.bundles["even"][1])
    hero = [e["hero_sticky"] for e in before]
    banner = [e["banner_plain"] for e in before]
    assert 5 < hero.count("generic") < N - 5 and 5 < banner.count("a") < N - 5

    serve(replicas, "reweighted")  # "generic" and "a" now weigh 0.02 against 1
    version = replicas.bundles["reweighted"][1]
    for session in ("s2", "s3"):  # each visitor is answered by both replicas in turn
        after = arms(api, visitors, session, version)
        assert [e["hero_sticky"] for e in after] == hero  # nobody exposed moved
        moved = sum(e["banner_plain"] != old for e, old in zip(after, banner, strict=True))
        assert moved >= banner.count("a") // 2  # the plain experiment moved most of its "a"s
    newcomers = arms(api, [f"new-{uuid.uuid4().hex[:8]}-{i}" for i in range(N)], "s1", version)
    assert sum(e["hero_sticky"] == "generic" for e in newcomers) <= 5  # new ones follow weights

    serve(replicas, "rerandomised")  # bucket version 2: the stored arms no longer count
    again = arms(api, visitors, "s4", replicas.bundles["rerandomised"][1])
    kept_generic = sum(e["hero_sticky"] == "generic" for e in again)
    assert kept_generic <= 5 < hero.count("generic")
