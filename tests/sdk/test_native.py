"""The compiled decision path (``sdk.native``, built by ``hatch_build.py``) against the
pure-Python modules it is compiled from: the same decisions byte for byte, each path in its own
process; the right twin loads (never a stale one); the pure path is what
``TAILOR_PURE_PYTHON=1`` runs (``make test`` runs the SDK and contract tests on it too)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

from sdk import native
from sdk.native import MODULES, RECORD, origins, source_digest
from tests.conftest import ROOT

PURE_RUN = bool(os.environ.get("TAILOR_PURE_PYTHON"))

#: Decides generated visits with every kind of consent, slot list and suppression, one by one
#: and in a batch, and profiles them; writes one encoded line per answer.
SCRIPT = """
import random, sys
from datetime import UTC, datetime
import msgspec
from model_export.inputs.synth import generate
from sdk import Decider, load_bundle, native
from sdk.schema import Consent

bundle_dir, out, expected = sys.argv[1:4]
assert native.IMPLEMENTATION == expected, native.IMPLEMENTATION
for name in native.MODULES:
    origin = sys.modules.get("sdk." + name)
    assert origin is not None and origin.__file__.endswith(".py") == (expected == "python"), name
count = iter(range(10**9))
now = datetime(2026, 6, 15, 12, tzinfo=UTC)
decider = Decider(load_bundle(bundle_dir), clock=lambda: now, new_id=lambda: f"d{next(count)}")
rng = random.Random(5)
requests, hidden = [], []
for v in generate(1500, seed=11):
    consent = Consent(personalization=rng.random() > 0.15, storage=rng.random() > 0.3)
    slots = rng.choice([None, ["hero"], ["banner", "hero", "nowhere"]])
    requests.append(msgspec.structs.replace(v.request, consent=consent, slots=slots))
    hidden.append(frozenset(["coupon_15"]) if rng.random() < 0.2 else frozenset())
encode = msgspec.json.encode
with open(out, "wb") as f:
    for request, suppressed in zip(requests, hidden):
        f.write(encode(decider.decide(request, suppressed=suppressed)) + b"\\n")
    for d in decider.decide_many(requests[:300], suppressed=hidden[:300]):
        f.write(encode(d) + b"\\n")
    for row in decider.profile_many(requests[:300]):
        f.write(encode(list(row)) + b"\\n")
"""


def test_the_installed_package_runs_the_compiled_decision_path() -> None:
    """This environment has Cython and a C compiler, so the install compiled every module of
    the decision path (the pure run of the suite loads every source instead)."""
    expected = "python" if PURE_RUN else "compiled"
    assert expected == native.IMPLEMENTATION
    for name in MODULES:
        loaded = sys.modules[f"sdk.{name}"].__file__
        assert loaded is not None and loaded.endswith(".py") == PURE_RUN, name


def _decide_in_a_process(bundle_dir: Path, out: Path, pure: bool) -> bytes:
    env = {k: v for k, v in os.environ.items() if k != "TAILOR_PURE_PYTHON"}
    if pure:
        env["TAILOR_PURE_PYTHON"] = "1"
    expected = "python" if pure else "compiled"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle_dir), str(out), expected],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_bytes()


def test_compiled_and_pure_modules_decide_alike_byte_for_byte(
    policy_bundle_dir: Path, tmp_path: Path
) -> None:
    compiled = _decide_in_a_process(policy_bundle_dir, tmp_path / "compiled.jsonl", pure=False)
    pure = _decide_in_a_process(policy_bundle_dir, tmp_path / "pure.jsonl", pure=True)
    mine, theirs = compiled.splitlines(), pure.splitlines()
    assert len(mine) == len(theirs) == 2100
    differing = [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]
    assert differing == []
    # the run covered exploration, experiments, the holdout and contextual decisions
    decisions = [json.loads(line) for line in mine[:1500]]
    reasons = {r["code"] for d in decisions for r in d["reasons"]}
    assert {"consent.not_given", "persona.nearest_segment", "experiment.holdout"} <= reasons
    assert any(s.get("candidates") for d in decisions for s in d["slots"].values())


def test_a_twin_loads_only_when_built_from_the_source_on_disk(tmp_path: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    source = tmp_path / "rules.py"
    source.write_text("X = 1\n")
    twin = tmp_path / f"rules{suffix}"
    # no twin: the source
    assert origins(tmp_path, ["rules"], pure=False) == {"rules": (source, "python")}
    twin.write_bytes(b"a compiled module")
    (tmp_path / RECORD).write_text(json.dumps({"rules": source_digest(source)}))
    assert origins(tmp_path, ["rules"], pure=False) == {"rules": (twin, "compiled")}
    # the pure path asked for
    assert origins(tmp_path, ["rules"], pure=True) == {"rules": (source, "python")}
    # the source edited since the build: the stale twin is not loaded
    source.write_text("X = 2\n")
    assert origins(tmp_path, ["rules"], pure=False) == {"rules": (source, "stale")}
    # no record, or a broken one: nothing proves the twin matches
    (tmp_path / RECORD).write_text("{not json")
    assert origins(tmp_path, ["rules"], pure=False) == {"rules": (source, "stale")}


def test_the_summary_names_what_runs_as_python() -> None:
    here, py, stale = Path("x.so"), Path("x.py"), Path("y.py")
    assert native._summary({"a": (here, "compiled")}) == "compiled"
    assert native._summary({"a": (py, "python")}) == "python"
    assert native._summary({"a": (here, "compiled"), "b": (stale, "stale")}) == (
        "partly compiled (python: b)"
    )
    assert native._summary({"a": (py, "python"), "b": (stale, "stale")}) == (
        "python (stale builds: b)"
    )
