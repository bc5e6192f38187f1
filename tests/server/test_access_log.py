"""uvicorn's access log: off by default (it costs about a tenth of a worker under load),
on with ``TAILOR_ACCESS_LOG=1`` (or ``python -m server --access-log``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import _start_server


@pytest.mark.parametrize(("env", "logged"), [({}, False), ({"TAILOR_ACCESS_LOG": "1"}, True)])
def test_the_access_log_is_opt_in(
    bundle_dir: Path, tmp_path: Path, env: dict[str, str], logged: bool
) -> None:
    server = _start_server(bundle_dir, tmp_path / "server.log", {"TAILOR_DEMO": "1", **env})
    try:
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)
    text = server.log.read_text()
    assert "Application startup complete" in text  # the server's own log is there either way
    assert ('"GET /healthz HTTP/1.1" 200' in text) is logged
