"""The shared UTM vectors: ``campaign_from_query`` reads a query string as the tag's ``parseUtm``.

``js_snippet/test/vectors.test.mjs`` runs the same file through the tag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk.referrer import campaign_from_query
from sdk.schema import Campaign

VECTORS = Path(__file__).resolve().parent / "vectors" / "utm.json"
DOC: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = DOC["cases"]

# the query-string characters that matter, mixed into arbitrary text
_QUERY_TEXT = st.text(st.sampled_from("%&=+?;# utm_sourcemdiaE9C3A0FF") | st.characters())


def _fields(campaign: Campaign | None) -> dict[str, str] | None:
    if campaign is None:
        return None
    return {k: v for k, v in msgspec.structs.asdict(campaign).items() if v is not None}


def test_vector_file_shape() -> None:
    assert DOC["version"] == 1
    assert len(CASES) >= 25
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert set(case) == {"name", "search", "campaign"}
        if case["campaign"] is not None:
            msgspec.convert(case["campaign"], Campaign)  # known fields, within the wire limits


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors(case: dict[str, Any]) -> None:
    assert _fields(campaign_from_query(case["search"])) == case["campaign"]


@given(st.text())
def test_any_value_round_trips_cut_to_256_code_points(value: str) -> None:
    campaign = campaign_from_query("?" + urlencode({"utm_source": value}))
    if value:
        assert campaign is not None
        assert campaign.source == value[:256]
        assert len(campaign.source) <= 256
    else:
        assert campaign is None


@given(_QUERY_TEXT)
def test_never_raises_on_any_query(query: str) -> None:
    fields = _fields(campaign_from_query(query))
    assert fields is None or all(0 < len(v) <= 256 for v in fields.values())
