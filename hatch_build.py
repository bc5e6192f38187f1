"""Hatchling build hook: compile the decision path in C when Cython and a C compiler are present.

Compiles ``sdk/_hashing_c.pyx`` (FNV-1a) and, from their unchanged sources, the pure-Python
modules of ``sdk.native.MODULES`` (conditions, decision plan, features, personas, rules, policy,
variants, decider), and records each source's SHA-256 in ``sdk/_native.json`` so that a source
edited after the build loads instead of its stale twin. Never fails the build: without Cython
or a compiler the package is pure Python, and ``sdk.native.IMPLEMENTATION`` and
``sdk.hashing.IMPLEMENTATION`` say ``"python"`` (``tailor --version`` prints both). Set
``TAILOR_PURE_PYTHON=1`` at install to skip the compilation.

``python hatch_build.py`` compiles into the source tree (what an editable install does; ``make
compile`` runs it after editing a compiled module).
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PACKAGE = Path("sdk")
HASHING = PACKAGE / "_hashing_c.pyx"
#: Cython directives: Python semantics (annotations are not C types), introspectable functions.
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True}


def native_modules(root: Path) -> tuple[str, ...]:
    """``sdk.native.MODULES``, read without importing the package."""
    found = runpy.run_path(str(root / PACKAGE / "native.py"), run_name="tailor_build")
    return tuple(found["MODULES"])


def compile_extensions(
    root: Path, out_dir: Path, compiler: str | None = None
) -> tuple[list[Path], str]:
    """Cythonize and compile the hashing module and the native modules under ``root`` into
    ``out_dir``, with ``_native.json`` recording the sources compiled.

    Returns:
        The files written (empty when nothing was compiled), and what happened in one line.
    """
    try:
        from Cython.Build import cythonize  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return [], "Cython is not installed: pure Python"
    cc = compiler or os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc_argv = cc.split()
    if shutil.which(cc_argv[0]) is None:
        return [], f"no C compiler ({cc_argv[0]!r}): pure Python"
    modules = native_modules(root)
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / PACKAGE
        package.mkdir()
        (package / "__init__.py").write_text("")  # so that Cython names them sdk.<module>
        sources = [package / HASHING.name, *(package / f"{m}.py" for m in modules)]
        shutil.copyfile(root / HASHING, sources[0])
        for m in modules:
            shutil.copyfile(root / PACKAGE / f"{m}.py", package / f"{m}.py")
        try:
            cythonize(
                [str(s) for s in sources],
                quiet=True,
                compiler_directives=DIRECTIVES,
                nthreads=os.cpu_count() or 1,
            )
        except Exception as exc:  # any Cython failure means the pure path
            return [], f"Cython failed ({exc}): pure Python"

        def build(source: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
            target = out_dir / (source.stem + suffix)
            command = [
                *cc_argv, "-shared", "-fPIC", "-O2",
                f"-I{sysconfig.get_paths()['include']}",
                str(source.with_suffix(".c")), "-o", str(target),
            ]  # fmt: skip
            return target, subprocess.run(command, capture_output=True, text=True, check=False)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            built = list(pool.map(build, sources))
        for target, done in built:
            if done.returncode != 0:
                for path, _ in built:
                    path.unlink(missing_ok=True)
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                return [], f"the C compiler failed on {target.name} ({tail}): pure Python"
    record = {
        m: hashlib.sha256((root / PACKAGE / f"{m}.py").read_bytes()).hexdigest() for m in modules
    }
    (out_dir / "_native.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    written = [target for target, _ in built] + [out_dir / "_native.json"]
    return written, f"compiled {len(built)} modules in C"


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script outside a build: the hook class is not needed
    BuildHookInterface = object  # type: ignore[assignment, misc]


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg, unused-ignore, misc, valid-type]
    """Adds the compiled modules to wheels (and to the source tree for editable installs,
    which import from it)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("TAILOR_PURE_PYTHON"):
            return
        root = Path(self.root)
        if version == "editable":
            _, said = compile_extensions(root, root / PACKAGE)
        else:
            out = Path(tempfile.mkdtemp(prefix="tailor-ext-"))
            built, said = compile_extensions(root, out)
            for path in built:
                build_data["force_include"][str(path)] = f"sdk/{path.name}"
            if built:
                build_data["pure_python"] = False
                build_data["infer_tag"] = True
        sys.stderr.write(f"tailor: {said}\n")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    _, said = compile_extensions(here, here / PACKAGE)
    sys.stdout.write(f"tailor: {said}\n")
