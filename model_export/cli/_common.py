"""Helpers shared by the ``tailor`` command groups: JSON output and number formatting.

Must not import server.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

__all__ = ["json_out", "num"]


def num(value: float | None) -> str:
    """A number as the model card shows it, or a dash for None."""
    from model_export.bundle.card import format_number

    return "—" if value is None else format_number(value)


def json_out(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")
