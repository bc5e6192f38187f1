"""k-suppression of what a bundle reports about groups of customers: any group smaller than the
configured ``min_group_size`` is merged into ``"other"`` or left out (see ``docs/training.md``,
"Privacy of bundles").

Must not import server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["OTHER", "merge_small", "suppress_summary"]

#: The key small groups are merged into.
OTHER = "other"
#: Count tables of the input summaries (per input kind) that name groups of customers or rows.
_SUMMARY_COUNTS = {"transactions": ("categories", "channels"), "events": ("types",)}


def merge_small(counts: Mapping[str, int], k: int) -> dict[str, int]:
    """``counts`` with every group under ``k`` merged into :data:`OTHER`; ``"other"`` itself
    is left out when it is still under ``k`` (its size would describe the small groups)."""
    kept = {key: n for key, n in counts.items() if n >= k and key != OTHER}
    rest = sum(n for key, n in counts.items() if key not in kept)
    if rest >= k:
        kept[OTHER] = rest
    return kept


def suppress_summary(data: Mapping[str, Any], k: int) -> dict[str, Any]:
    """The manifest's input summaries with their count tables passed through :func:`merge_small`
    and without the examples of rejected rows (they quote the rows' values; the read report
    on the console keeps them)."""
    out = dict(data)
    for kind in out:
        summary = out[kind]
        if not isinstance(summary, Mapping):
            continue
        summary = {key: v for key, v in summary.items() if key != "examples"}
        out[kind] = summary
        tables = _SUMMARY_COUNTS.get(kind, ())
        for table in tables:
            counts = summary.get(table)
            if isinstance(counts, Mapping):
                summary[table] = merge_small(counts, k)
    return out
