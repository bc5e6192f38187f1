"""``tailor profiles push`` as a user runs it (``python -m model_export.cli``), against a real
server on 127.0.0.1: a small order file becomes one stored profile per customer, keyed by the
customer id; running it again changes nothing; an older ``--as-of`` is ignored."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import FIXED_NOW, ROOT, LiveServer, keyed_server
from tests.server.test_state_replicas import KEYS, SECRET

DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("profiles-cli")
    env = {"TAILOR_NEW_PROFILES_PER_MINUTE": "0", "TAILOR_RELOAD_INTERVAL": "0"}
    with keyed_server(bundle_dir, root, KEYS, env) as live:
        yield live


def shop(tmp_path: Path) -> Path:
    """Three orders of ann (two categories), one of bob, one of a customer whose id cannot
    be a user id; a config reading them."""
    day = lambda n: (FIXED_NOW - n * DAY).isoformat()  # noqa: E731
    rows = [
        "customer_id,order_id,timestamp,amount,category",
        f"ann,o1,{day(90)},40.0,shoes",
        f"ann,o2,{day(30)},60.0,bags",
        f"ann,o3,{day(5)},20.0,shoes",
        f"bob,o4,{day(10)},15.5,hats",
        f"not valid id,o5,{day(8)},9.0,hats",
    ]
    (tmp_path / "orders.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "tailor.toml"
    config.write_text(
        '[data]\ntransactions = "orders.csv"\n\n[columns.transactions]\ncategory = "category"\n'
    )
    (tmp_path / "key").write_text(SECRET + "\n")
    return config


def push(
    server: LiveServer, config: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "model_export.cli", "profiles", "push"]
    args = ["--config", str(config), "--url", server.url, *extra]
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def stored(server: LiveServer, user: str) -> dict[str, float]:
    """The stored behaviour of ``user``, read through a visitor the backend identifies."""
    visit = {
        "visitorId": f"web-{user}",
        "userId": user,
        "consent": {"personalization": True, "storage": True},
    }
    auth = {"authorization": f"Bearer {SECRET}"}
    r = httpx.post(f"{server.url}/v1/decide", json=visit, headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    r = httpx.get(f"{server.url}/v1/visitors/web-{user}", headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    behavior: dict[str, float] = r.json()["behavior"]
    return behavior


def test_profiles_push_stores_each_customer_once(server: LiveServer, tmp_path: Path) -> None:
    config = shop(tmp_path)
    key = ["--key-file", str(tmp_path / "key")]
    first = push(server, config, *key)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pushed 2 customer profiles" in first.stdout
    assert "written 2, unchanged 0, stale 0, invalid 0" in first.stdout
    assert "skipped 1 customers" in first.stdout
    ann = stored(server, "ann")
    assert (ann["purchases"], ann["revenue"]) == (3, 120.0)
    assert ann["daysSinceLastPurchase"] == pytest.approx(5, abs=0.01)
    assert {"shoes", "bags"} <= set(ann["categoriesViewed"])
    # the nightly job run twice: nothing changes, nothing counts twice
    again = push(server, config, "--key-env", "TAILOR_TEST_KEY_UNSET")
    assert again.returncode == 1 and "TAILOR_TEST_KEY_UNSET" in again.stdout
    env_run = push(server, config, "--key-env", "SHOP_KEY", env={"SHOP_KEY": SECRET})
    assert env_run.returncode == 0, env_run.stdout + env_run.stderr
    assert "written 0, unchanged 2, stale 0, invalid 0" in env_run.stdout
    assert stored(server, "ann")["purchases"] == 3
    # an older history is ignored
    older = push(server, config, *key, "--as-of", (FIXED_NOW - 20 * DAY).date().isoformat())
    assert older.returncode == 0, older.stdout + older.stderr
    assert "pushed 1 customer profiles" in older.stdout and "stale 1" in older.stdout
    assert stored(server, "ann")["purchases"] == 3
