"""Fixture helpers shared by the model_export tests."""

from __future__ import annotations

from pathlib import Path

from model_export.inputs.synth_shop import ShopExport, generate_shop


def messy_shop(root: Path, customers: int) -> ShopExport:
    """A messy export: mixed formats in folders of 3 parts, mixed time-zone styles and every
    kind of bad row, seed 21."""
    return generate_shop(
        root,
        customers=customers,
        seed=21,
        fmt="mixed",
        files=3,
        messy=True,
        mixed_timezones=True,
    )
