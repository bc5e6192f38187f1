"""The README's batch-job example runs as written (with the test bundle and a small CSV)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from sdk import load_bundle

ROOT = Path(__file__).resolve().parents[2]


def _block_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_batch_job_example_scores_a_customer_file(bundle_dir: Path, tmp_path: Path) -> None:
    code = _block_after("### In a batch job")
    assert '"var/bundles/live"' in code
    code = code.replace('"var/bundles/live"', repr(str(bundle_dir)))
    (tmp_path / "customers.csv").write_text(
        "customer_id,orders,revenue,days_since_order\nc1,12,2400,5\nc2,1,30,300\nc3,0,0,0\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [line.split() for line in out.stdout.splitlines()]
    assert [line[0] for line in lines] == ["c1", "c2", "c3"]
    manifest = load_bundle(bundle_dir).manifest
    personas = {p.id for p in manifest.personas}
    stages = {r.stage for r in manifest.lifecycle.rules} | {manifest.lifecycle.default}
    offers = {o.id for o in manifest.offers}
    for line in lines:
        assert line[1] in personas
        assert line[2] in stages
        assert len(line) == 3 or line[3] in offers
    # the loyal customer and the one-off customer are told apart
    assert lines[0][1:3] != lines[1][1:3]
