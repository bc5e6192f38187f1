"""The README's examples (the tag, the SDK, training) and the docs' batch-job example run as
written, against the test bundle or a small training run."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from sdk import load_bundle
from tests.conftest import app_client

ROOT = Path(__file__).resolve().parents[2]
TAILOR = Path(sys.executable).with_name("tailor")


def _block_after(doc: str, heading: str, lang: str) -> str:
    """The first ``lang`` code block after ``heading`` in ``doc`` (a path from the root)."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert heading in text, f"{doc} has no {heading!r}"
    section = text[text.index(heading) :]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match, f"no {lang} block after {heading!r} in {doc}"
    return match.group(1)


def _run_python(code: str, cwd: Path) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [line.split() for line in out.stdout.splitlines()]


def test_batch_job_example_scores_a_customer_file(bundle_dir: Path, tmp_path: Path) -> None:
    code = _block_after("docs/sdk.md", "## In a batch job", "python")
    assert '"var/bundles/live"' in code
    code = code.replace('"var/bundles/live"', repr(str(bundle_dir)))
    (tmp_path / "customers.csv").write_text(
        "customer_id,orders,revenue,days_since_order\nc1,12,2400,5\nc2,1,30,300\nc3,0,0,0\n",
        encoding="utf-8",
    )
    lines = _run_python(code, tmp_path)
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


def test_sdk_example_decides_in_local_mode(bundle_dir: Path, tmp_path: Path) -> None:
    code = _block_after("README.md", "### The Python SDK", "python")
    assert 'bundle="var/bundles/demo"' in code
    code = code.replace('"var/bundles/demo"', repr(str(bundle_dir)))
    lines = _run_python(code, tmp_path)
    assert len(lines) == 1
    persona, stage, hero = lines[0]
    manifest = load_bundle(bundle_dir).manifest
    assert persona in {p.id for p in manifest.personas}
    # six purchases, the last three days ago: the demo's lifecycle rules say loyal
    assert stage == "loyal"
    (slot,) = (s for s in manifest.slots if s.id == "hero")
    assert hero in {v.id for v in slot.variants}


def test_tag_example_loads_the_tag_the_server_serves(bundle_dir: Path) -> None:
    html = _block_after("README.md", "### The tag", "html")
    script = re.search(r"<script async src=\"([^\"]+)\"(.*?)></script>", html, re.S)
    assert script, "no async script tag in the example"
    src = urlsplit(script.group(1))
    attributes = dict(re.findall(r"(data-[\w-]+)=\"([^\"]*)\"", script.group(2)))
    # a public key (never a secret one) and the API at the origin that serves the tag
    assert attributes["data-key"].startswith("pk_")
    endpoint = urlsplit(attributes["data-endpoint"])
    assert (endpoint.scheme, endpoint.netloc) == (src.scheme, src.netloc)
    slots = set(re.findall(r"data-tailor-slot=\"([\w-]+)\"", html))
    commands = set(re.findall(r"tailor\.push\(\[\"(\w+)\"", html))
    assert slots and commands
    assert slots <= {s.id for s in load_bundle(bundle_dir).manifest.slots}
    with app_client(bundle_path=str(bundle_dir)) as client:
        tag = client.get(src.path)
    assert tag.status_code == 200
    assert tag.headers["content-type"].startswith("text/javascript")
    for command in commands:  # the commands the example pushes are the tag's API
        assert re.search(rf"[{{,]{command}:", tag.text), command


def test_training_example_trains_verifies_and_promotes(tmp_path: Path) -> None:
    commands = [
        shlex.split(line, comments=True)
        for line in _block_after("README.md", "### Training", "sh").splitlines()
        if line.strip()
    ]
    assert [c[:2] for c in commands] == [
        [".venv/bin/tailor", "train"],
        [".venv/bin/tailor", "inspect"],
        [".venv/bin/tailor", "bundle"],
    ]
    outputs = []
    for command in commands:
        argv = [str(TAILOR)]
        for before, arg in itertools.pairwise(command):
            if before == "--visitors":
                arg = "1200"  # a small run; the example's size is for a real demo
            elif arg.startswith("var/"):
                arg = str(tmp_path / arg)
            argv.append(arg)
        done = subprocess.run(
            argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=True
        )
        outputs.append(done.stdout)
    trained = tmp_path / "var" / "bundles" / "demo-7"
    live = tmp_path / "var" / "bundles" / "LIVE"
    assert "verified" in outputs[1]
    assert live.is_symlink() and live.resolve() == trained.resolve()
    assert load_bundle(live).manifest.model_version == load_bundle(trained).manifest.model_version
