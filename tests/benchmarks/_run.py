"""Run a benchmark module the way it is used, as ``python -m``, and fail with its output."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def run_module(module: str, *args: str, timeout: float) -> str:
    """``python -m module args`` from the repository root; its stdout, once it exited 0."""
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout
