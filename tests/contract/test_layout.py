"""The shape of the tree: what a new maintainer relies on when changing one thing.

- no import cycles between modules of ``sdk``, ``server`` and ``model_export``;
- no module of another package imported through an underscore name (a module another package
  imports is public);
- no module over about 600 lines;
- one exception root per package: every exception class ``model_export`` defines derives from
  its ``ModelExportError``, itself a ``sdk.TailorError``; every one ``sdk`` defines derives
  from ``TailorError`` (or is the ``ImportError`` that names a missing extra). Private classes
  (a leading underscore) are control flow inside one module and are not counted.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sdk", "server", "model_export")
#: "about 600 lines": a module may run a little past it, not grow into a second module
MAX_LINES = 620


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES)


def _top(module: str) -> str:
    return module.split(".")[0]


def _cycle_from(graph: grimp.ImportGraph, start: str, modules: set[str]) -> list[str] | None:
    """A shortest import cycle through ``start`` (within ``modules``), or None."""
    for nxt in graph.find_modules_directly_imported_by(start):
        if nxt not in modules:
            continue
        if nxt == start:
            return [start, start]
        chain = graph.find_shortest_chain(importer=nxt, imported=start)
        if chain is not None:
            return [start, *chain]
    return None


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    modules = {m for m in graph.modules if _top(m) in PACKAGES}
    # a package's __init__ importing its own children is a re-export, not a cycle of roles
    cycles = []
    for module in sorted(modules):
        cycle = _cycle_from(graph, module, modules)
        if cycle is None:
            continue
        parents = {c for c in cycle if any(o.startswith(c + ".") for o in cycle)}
        if parents:
            continue
        cycles.append(" -> ".join(cycle))
    assert cycles == []


def test_no_private_module_of_another_package_is_imported(graph: grimp.ImportGraph) -> None:
    offending = []
    for module in graph.modules:
        if _top(module) not in PACKAGES:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            other = _top(imported) in PACKAGES and _top(imported) != _top(module)
            if other and any(part.startswith("_") for part in imported.split(".")[1:]):
                offending.append(f"{module} imports {imported}")
    assert offending == []


def test_no_module_is_over_about_600_lines() -> None:
    long = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > MAX_LINES:
                long[str(path.relative_to(ROOT))] = n
    assert long == {}


def _exception_classes(package: str) -> list[type[BaseException]]:
    root = importlib.import_module(package)
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            # private classes are control flow inside one module, never raised to a caller
            if obj.__name__.startswith("_"):
                continue
            if issubclass(obj, BaseException) and obj.__module__.split(".")[0] == package:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_one_exception_root_in_model_export() -> None:
    from model_export.errors import ModelExportError
    from sdk import TailorError

    assert issubclass(ModelExportError, TailorError)
    classes = _exception_classes("model_export")
    assert ModelExportError in classes
    strays = [c.__qualname__ for c in classes if not issubclass(c, ModelExportError)]
    assert strays == []


def test_one_exception_root_in_sdk() -> None:
    from sdk import MissingExtraError, TailorError

    classes = _exception_classes("sdk")
    assert TailorError in classes
    strays = [c.__qualname__ for c in classes if not issubclass(c, TailorError | MissingExtraError)]
    assert strays == []
