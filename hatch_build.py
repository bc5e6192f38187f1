"""Hatchling build hook: compile ``sdk/_hashing_c.pyx`` (FNV-1a in C) when Cython and a C
compiler are present. Never fails the build: without them the wheel is pure Python and
``sdk.hashing.IMPLEMENTATION`` says ``"python"``; ``python -m sdk.hashing`` prints the path in
use. Set ``TAILOR_PURE_PYTHON=1`` at install to skip the compilation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("sdk") / "_hashing_c.pyx"


def compile_extension(
    root: Path, out_dir: Path, compiler: str | None = None
) -> tuple[Path | None, str]:
    """Cythonize and compile :data:`SOURCE` under ``root`` into ``out_dir``.

    Returns:
        The built module's path, or None, and what happened in one line.
    """
    try:
        from Cython.Build import cythonize  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None, "Cython is not installed: pure-Python hashing"
    cc = compiler or os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc_argv = cc.split()
    if shutil.which(cc_argv[0]) is None:
        return None, f"no C compiler ({cc_argv[0]!r}): pure-Python hashing"
    with tempfile.TemporaryDirectory() as tmp:
        pyx = Path(tmp) / SOURCE.name
        shutil.copyfile(root / SOURCE, pyx)
        try:
            cythonize([str(pyx)], quiet=True, language_level=3)
        except Exception as exc:  # any Cython failure means the pure path
            return None, f"Cython failed ({exc}): pure-Python hashing"
        target = out_dir / ("_hashing_c" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
        command = [
            *cc_argv, "-shared", "-fPIC", "-O2",
            f"-I{sysconfig.get_paths()['include']}",
            str(pyx.with_suffix(".c")), "-o", str(target),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"the C compiler failed ({tail}): pure-Python hashing"
    return target, f"compiled {target.name}"


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg, unused-ignore]
    """Adds the compiled hashing module to wheels (and to the source tree for editable
    installs, which import from it)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("TAILOR_PURE_PYTHON"):
            return
        root = Path(self.root)
        if version == "editable":
            built, said = compile_extension(root, root / "sdk")
        else:
            out = Path(tempfile.mkdtemp(prefix="tailor-ext-"))
            built, said = compile_extension(root, out)
            if built is not None:
                build_data["force_include"][str(built)] = f"sdk/{built.name}"
                build_data["pure_python"] = False
                build_data["infer_tag"] = True
        sys.stderr.write(f"tailor: {said}\n")
