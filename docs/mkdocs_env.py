"""Loaded by ``mkdocs.yml`` before the theme: Material for MkDocs prints an end-of-life notice
on stderr when its theme is imported, unless ``NO_MKDOCS_2_WARNING`` is set. The notice is an
announcement (Material's support ends on 5 May 2027), not a build warning, and it buried the
build's own output, so every ``mkdocs build`` of this site, bare or through ``make docs``,
sets the variable here. YAML tags are resolved while ``mkdocs.yml`` is read, before the
configuration (and so the theme) is loaded; this module is imported by the tag on
``extra.build_env``.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")

#: What ``extra.build_env`` holds (nothing a template reads).
QUIET = "NO_MKDOCS_2_WARNING"
