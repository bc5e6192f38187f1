"""Compiled twins of the decision path's pure-Python modules, optional and safe.

When Cython and a C compiler are present at install, ``hatch_build.py`` compiles every module of
:data:`MODULES` from its unchanged source (Cython's pure-Python mode, with annotations *not*
turned into C types, so the semantics stay Python's: the same objects, exceptions and rounding)
and records the SHA-256 of each source it compiled in ``sdk/_native.json``.

Importing this module (``import sdk`` does it first) puts a finder in front of the import system
that, for these modules only, loads the compiled twin when it was built from the source now on
disk, and the source otherwise: a module edited after its build is never shadowed by a stale
binary (``make compile`` rebuilds them). ``TAILOR_PURE_PYTHON=1`` loads every source, the
reference path: ``make test`` runs the SDK and contract tests on it too, and
``tests/sdk/test_native.py`` pins the decisions of both paths equal, byte for byte.
:data:`IMPLEMENTATION` says which path is in use (``tailor --version`` and ``/readyz``).

Must import only the standard library (the build hook reads :data:`MODULES` without
installing the package).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["IMPLEMENTATION", "MODULES", "RECORD", "install", "origins", "source_digest"]

#: The modules compiled when a compiler is present: the decision path after decoding, from
#: conditions and features to the decision (names inside the ``sdk`` package).
MODULES: tuple[str, ...] = (
    "_operators",
    "_condition_compile",
    "_plan",
    "features",
    "_persona",
    "_rules",
    "_policy",
    "_variants",
    "_decider",
    "_exact",
    "consent",
    "hashing",
    "referrer",
    "rfm",
    "sensitive",
)
#: The file, next to the modules, holding the SHA-256 of each source the build compiled.
RECORD = "_native.json"
#: Whether ``TAILOR_PURE_PYTHON`` asks for the pure-Python reference.
PURE = bool(os.environ.get("TAILOR_PURE_PYTHON"))

_HERE = Path(__file__).resolve().parent


def source_digest(path: Path) -> str:
    """The SHA-256 of a module's source, as the build records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def origins(
    directory: Path, modules: Sequence[str] = MODULES, *, pure: bool = PURE
) -> dict[str, tuple[Path, str]]:
    """Where each of ``modules`` in ``directory`` loads from, and why: ``"compiled"`` (a twin
    built from the source on disk), ``"python"`` (no twin, or ``pure``) or ``"stale"`` (a
    twin built from another source: the source loads)."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    try:
        record = json.loads((directory / RECORD).read_text())
    except (OSError, ValueError):
        record = {}
    out: dict[str, tuple[Path, str]] = {}
    for name in modules:
        source = directory / f"{name}.py"
        twins = [directory / f"{name}{suffix}" for suffix in suffixes]
        twin = next((t for t in twins if t.is_file()), None)
        if pure or twin is None or not isinstance(record, dict):
            out[name] = (source, "python")
        elif record.get(name) == source_digest(source):
            out[name] = (twin, "compiled")
        else:
            out[name] = (source, "stale")
    return out


class _Finder(importlib.abc.MetaPathFinder):
    """Loads each module of :data:`MODULES` from the origin :func:`origins` chose."""

    def __init__(self, package: str, chosen: dict[str, tuple[Path, str]]) -> None:
        self._paths = {f"{package}.{name}": path for name, (path, _) in chosen.items()}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        where = self._paths.get(fullname)
        if where is None:
            return None
        return importlib.util.spec_from_file_location(fullname, where)


def _summary(chosen: dict[str, tuple[Path, str]]) -> str:
    kinds = {kind for _, kind in chosen.values()}
    if kinds == {"compiled"}:
        return "compiled"
    if "compiled" not in kinds:
        stale = sorted(n for n, (_, kind) in chosen.items() if kind == "stale")
        return "python" + (f" (stale builds: {', '.join(stale)})" if stale else "")
    pure = sorted(n for n, (_, kind) in chosen.items() if kind != "compiled")
    return f"partly compiled (python: {', '.join(pure)})"


_CHOSEN = origins(_HERE)
#: ``"compiled"`` (every module of :data:`MODULES` runs its compiled twin), ``"python"`` (the
#: reference: no compiler at install, or ``TAILOR_PURE_PYTHON``; stale builds are named), or
#: ``"partly compiled (python: ...)"``.
IMPLEMENTATION = _summary(_CHOSEN)


def install() -> None:
    """Put the finder in front of the import system (once; before any of :data:`MODULES` is
    imported)."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder(__package__ or "sdk", _CHOSEN))


install()
