"""The documentation builds in strict mode, every page is in the nav and built, and a broken
link fails the build (so CI, which runs ``make test``, catches a broken doc)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _mkdocs_build(cwd: Path, site: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    # as a bare `mkdocs build` runs: mkdocs.yml itself quiets the theme's notice
    env = {k: v for k, v in os.environ.items() if k != "NO_MKDOCS_2_WARNING"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)


class _ConfigLoader(yaml.SafeLoader):
    """mkdocs.yml read safely: a ``!!python/name:`` tag gives its name, nothing is imported."""


_ConfigLoader.add_multi_constructor(
    "tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix
)


def _nav_pages() -> list[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_ConfigLoader)
    pages: list[str] = []
    for entry in config["nav"]:
        ((_, page),) = entry.items()
        pages.append(page)
    return pages


def test_docs_build_in_strict_mode_with_every_page(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = _mkdocs_build(ROOT, site)
    assert result.returncode == 0, result.stderr
    # nothing but the build's own lines: no theme announcement (docs/mkdocs_env.py)
    assert "end of life" not in result.stderr and "NO_MKDOCS_2_WARNING" not in result.stderr
    pages = _nav_pages()
    # every Markdown page of docs/ is in the nav, and every nav page was built
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md"))
    for page in pages:
        built = site / "index.html" if page == "index.md" else site / page[:-3] / "index.html"
        assert built.is_file(), f"{page} was not built"
        assert "<h1" in built.read_text(encoding="utf-8"), f"{page} has no title"
    # docs/ is also a Python package: its modules are not published
    assert not list(site.rglob("*.py"))
    # the tag page includes the tag's guide (js_snippet/README.md) rather than a copy of it
    tag = (site / "tag" / "index.html").read_text(encoding="utf-8")
    assert 'id="single-page-apps"' in tag and "data-tailor-slot" in tag
    # the screenshots the tag page shows are published with it
    assert (site / "img" / "demo-loyal.png").is_file()


def test_a_broken_link_or_a_page_missing_from_the_nav_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "js_snippet").mkdir()
    shutil.copy(ROOT / "js_snippet" / "README.md", copy / "js_snippet" / "README.md")
    assert _mkdocs_build(copy, tmp_path / "ok").returncode == 0
    with (copy / "docs" / "contract.md").open("a", encoding="utf-8") as f:
        f.write(
            "\nSee [the missing page](no-such-page.md) and [an anchor](sdk.md#no-such-anchor).\n"
        )
    (copy / "docs" / "orphan.md").write_text("# A page missing from the nav\n", encoding="utf-8")
    result = _mkdocs_build(copy, tmp_path / "broken")
    assert result.returncode != 0
    for problem in ("no-such-page.md", "no-such-anchor", "orphan.md"):
        assert problem in result.stderr, problem


def test_the_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)(?:#[\w-]+)?\)", readme))
    assert linked == {p.name for p in DOCS.glob("*.md")}
    assert len(readme.splitlines()) <= 250
