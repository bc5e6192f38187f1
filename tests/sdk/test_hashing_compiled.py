"""The compiled FNV-1a (``sdk/_hashing_c.pyx``, built at install by ``hatch_build.py``) against
the pure-Python reference it replaces: equal on the contract vectors and on random bytes and
strings of every kind of Unicode; the pure path still works on its own; the build hook falls
back without a compiler."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sdk import hashing
from tests.conftest import ROOT

VECTORS = ROOT / "tests" / "contract" / "vectors" / "hashing.json"
#: Every kind of code point: letters, marks, digits, symbols, spaces, controls, private use and
#: lone surrogates (hashed as U+FFFD, as the browser's TextEncoder does).
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=40)


def test_the_installed_package_hashes_in_c() -> None:
    """This environment has Cython and a C compiler, so the install compiled the module (the
    suite's pure run, ``TAILOR_PURE_PYTHON=1``, takes the reference instead)."""
    expected = "python" if os.environ.get("TAILOR_PURE_PYTHON") else "compiled"
    assert expected == hashing.IMPLEMENTATION
    assert (hashing.fnv1a32 is hashing.fnv1a32_py) == (expected == "python")
    version = subprocess.run(
        [sys.executable, "-m", "model_export.cli", "--version"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"(hashing: {expected}, decision path: {expected})" in version.stdout


@contextmanager
def _pure() -> Iterator[None]:
    """The module's functions on the pure-Python reference for the duration."""
    saved = hashing.fnv1a32, hashing._unit
    hashing.fnv1a32, hashing._unit = hashing.fnv1a32_py, hashing.unit_py
    try:
        yield
    finally:
        hashing.fnv1a32, hashing._unit = saved


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 2**32 - 1))
def test_fnv_and_the_unit_equal_the_reference_on_any_bytes(data: bytes, basis: int) -> None:
    assert hashing.fnv1a32(data, basis) == hashing.fnv1a32_py(data, basis)
    assert hashing.fnv1a32(data) == hashing.fnv1a32_py(data)
    assert hashing._unit(data, basis) == hashing.unit_py(data, basis)


@settings(max_examples=400, deadline=None)
@given(ANY_TEXT, ANY_TEXT, st.sampled_from([1, 2]))
def test_hash_unit_equals_the_reference_on_any_text(seed: str, value: str, version: int) -> None:
    compiled = hashing.hash_unit(seed, value, version)
    state = hashing.prefix_state(seed, "v|")
    after = hashing.unit_after(state, value)
    with _pure():
        assert hashing.hash_unit(seed, value, version) == compiled
        assert hashing.unit_after(state, value) == after


def test_both_paths_pass_the_contract_vectors() -> None:
    cases = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]
    for case in cases:
        got = hashing.hash_unit(case["seed"], case["value"], case["version"])
        assert got == case["expected"], case
    # the pure path on its own, as a package installed without a compiler runs it
    script = (
        "import json, sys; from sdk import hashing; "
        "assert hashing.IMPLEMENTATION == 'python', hashing.IMPLEMENTATION; "
        f"cases = json.loads(open({str(VECTORS)!r}, encoding='utf-8').read())['cases']; "
        "bad = [c for c in cases if hashing.hash_unit(c['seed'], c['value'], c['version']) "
        "!= c['expected']]; print(len(cases), len(bad))"
    )
    pure = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "TAILOR_PURE_PYTHON": "1"},
    )  # fmt: skip
    assert pure.stdout.split() == [str(len(cases)), "0"]


def test_the_build_hook_compiles_the_module_or_says_why_not(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        import hatch_build
    finally:
        sys.path.remove(str(ROOT))
    written, said = hatch_build.compile_extensions(ROOT, tmp_path)
    native = hatch_build.native_modules(ROOT)
    assert said == f"compiled {len(native) + 1} modules in C"
    built = next(p for p in written if p.name.startswith("_hashing_c."))
    assert {p.name.split(".")[0] for p in written} == {"_hashing_c", *native, "_native"}
    spec = importlib.util.spec_from_file_location("_hashing_c", built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.fnv1a32(b"tailor") == hashing.fnv1a32_py(b"tailor")
    assert module.unit_from(b"x", 12345) == hashing.unit_py(b"x", 12345)
    nothing = tmp_path / "none"
    nothing.mkdir()
    missing, said = hatch_build.compile_extensions(ROOT, nothing, compiler="/nonexistent/cc")
    assert missing == [] and said == "no C compiler ('/nonexistent/cc'): pure Python"
    assert list(nothing.iterdir()) == []
