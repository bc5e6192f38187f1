"""Experiment bucketing: FNV-1a reference values, the shared vectors (checked against a second,
differently written implementation), uniformity, independence, stickiness and bucket ranges."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import unicodedata
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk.hashing import (
    FNV_OFFSET_BASIS,
    FNV_PRIME,
    HASH_VERSION,
    bucket_ranges,
    choose,
    fnv1a32,
    hash_unit,
    in_namespace,
    prefix_state,
    unit_after,
)

VECTORS = Path(__file__).resolve().parents[1] / "contract" / "vectors" / "hashing.json"
DOC: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = DOC["cases"]
N_IDS = 100_000


# --- a second implementation, written differently: reduce over the bytes, bytes via a codec
# --- with explicit replacement of lone surrogates, digits via format()


def _fnv_reduce(data: bytes) -> int:
    return reduce(lambda h, byte: ((h ^ byte) * 16777619) % 4294967296, data, 2166136261)


def _utf8_whatwg(text: str) -> bytes:
    fixed = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in _pair_surrogates(text))
    return bytes(fixed, "utf-8")


def _pair_surrogates(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = ord(text[i])
        nxt = ord(text[i + 1]) if i + 1 < len(text) else 0
        if 0xD800 <= c <= 0xDBFF and 0xDC00 <= nxt <= 0xDFFF:
            out.append(chr(0x10000 + ((c - 0xD800) << 10) + (nxt - 0xDC00)))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _reference_unit(seed: str, value: str, version: int) -> float | None:
    if version == 2:
        digits = format(_fnv_reduce(_utf8_whatwg(seed + value)), "d")
        return (_fnv_reduce(digits.encode("utf-8")) % 10_000) / 10_000
    if version == 1:
        return (_fnv_reduce(_utf8_whatwg(value + seed)) % 1_000) / 1_000
    return None


# --- reference values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)],
)
def test_fnv1a32_reference_values(data: bytes, expected: int) -> None:
    assert fnv1a32(data) == expected
    assert _fnv_reduce(data) == expected


def test_fnv_parameters() -> None:
    assert (FNV_OFFSET_BASIS, FNV_PRIME, HASH_VERSION) == (0x811C9DC5, 0x01000193, 2)


@given(st.binary(max_size=200))
def test_fnv1a32_matches_the_second_implementation(data: bytes) -> None:
    h = fnv1a32(data)
    assert h == _fnv_reduce(data)
    assert 0 <= h < 2**32


# --- the shared vectors -----------------------------------------------------------------------


def test_vector_file_shape() -> None:
    assert DOC["version"] == 1
    assert len(CASES) >= 40
    keys = [(c["seed"], c["value"], c["version"]) for c in CASES]
    assert len(keys) == len(set(keys))
    for case in CASES:
        assert set(case) == {"seed", "value", "version", "expected"}
    values = [c["value"] for c in CASES]
    text = "".join(values)
    assert "" in values and "" in [c["seed"] for c in CASES]
    assert {1, 2} <= {c["version"] for c in CASES}
    assert any(c["expected"] is None for c in CASES)  # unknown versions
    assert any(unicodedata.combining(ch) for ch in text)
    assert any("\u0590" <= ch <= "\u06ff" for ch in text)  # Hebrew / Arabic (right-to-left)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)  # CJK ideographs
    assert any(ord(ch) > 0xFFFF for ch in text)  # astral: emoji
    assert "\u200d" in text  # zero-width-joiner sequences
    assert any("\U0001f1e6" <= ch <= "\U0001f1ff" for ch in text)  # flags (regional indicators)
    assert max(map(len, values)) >= 256
    assert any(any(ch in "éïøüóæ" for ch in v) for v in values)  # accented Latin


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"v{c['version']}-{c['seed']!r}-{c['value']!r}"[:60]
)
def test_vectors(case: dict[str, Any]) -> None:
    seed, value, version = case["seed"], case["value"], case["version"]
    assert hash_unit(seed, value, version) == case["expected"]
    assert _reference_unit(seed, value, version) == case["expected"]


def test_vectors_include_normalisation_and_namespace_cases() -> None:
    by_value = {(c["seed"], c["value"], c["version"]): c["expected"] for c in CASES}
    precomposed, decomposed = by_value[("exp-1", "é", 2)], by_value[("exp-1", "e\u0301", 2)]
    assert precomposed != decomposed  # no Unicode normalisation: documented
    n = by_value[("__homepage", "user-42", 1)]
    assert in_namespace("user-42", ("homepage", n, n + 0.001))
    assert not in_namespace("user-42", ("homepage", 0.0, n))


@given(st.text(max_size=40), st.text(max_size=40), st.sampled_from([1, 2]))
def test_any_text_hashes_into_the_unit_interval(seed: str, value: str, version: int) -> None:
    n = hash_unit(seed, value, version)
    assert n is not None
    assert 0.0 <= n < 1.0
    scale = 10_000 if version == 2 else 1_000
    assert round(n * scale) / scale == n
    assert n == _reference_unit(seed, value, version)


def test_lone_surrogates_hash_as_the_replacement_character() -> None:
    assert hash_unit("s", "a\ud800b") == hash_unit("s", "a\ufffdb")
    assert hash_unit("s", "\ud83d\ude00") == hash_unit("s", "\U0001f600")  # a pair is one emoji
    assert hash_unit("s", "\udc00\ud800", 1) == _reference_unit("s", "\udc00\ud800", 1)


def test_a_pair_split_between_seed_and_value_is_one_character() -> None:
    # hash_unit hashes the seed once and continues from its state; a surrogate pair across the
    # join must still hash as the one character JavaScript's seed + value makes of it
    assert hash_unit("s\ud83d", "\ude00x") == _reference_unit("s\ud83d", "\ude00x", 2)
    assert hash_unit("s\ud83d", "\ude00x") == hash_unit("s", "\U0001f600x")


@given(st.binary(max_size=30), st.binary(max_size=30))
def test_fnv_continues_from_a_prefix_state(prefix: bytes, rest: bytes) -> None:
    assert fnv1a32(rest, fnv1a32(prefix)) == fnv1a32(prefix + rest) == _fnv_reduce(prefix + rest)


@given(st.text(max_size=20), st.text(max_size=30), st.text(max_size=20))
def test_a_shared_prefix_hashes_once(seed: str, head: str, suffix: str) -> None:
    prefix = head + "|"
    assert unit_after(prefix_state(seed, prefix), suffix) == hash_unit(seed, prefix + suffix)


def test_a_prefix_must_end_in_ascii() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        prefix_state("seed", "visit\u00e9")
    with pytest.raises(ValueError, match="ASCII"):
        prefix_state("seed", "")


@pytest.mark.parametrize("version", [0, 3, -1, 20])
def test_unknown_versions_give_none(version: int) -> None:
    assert hash_unit("seed", "value", version) is None


def test_default_version_is_2() -> None:
    assert hash_unit("exp-1", "user-42") == hash_unit("exp-1", "user-42", 2)


# --- statistics -------------------------------------------------------------------------------


def _bucket(n: float | None, buckets: int) -> int:
    assert n is not None
    return round(n * 10_000) * buckets // 10_000


def test_sequential_ids_are_uniform_over_10_buckets() -> None:
    stats = pytest.importorskip("scipy.stats")
    counts = [0] * 10
    for i in range(N_IDS):
        counts[_bucket(hash_unit("exp-uniform", f"visitor-{i}"), 10)] += 1
    assert stats.chisquare(counts).pvalue > 0.001, counts


def test_two_seeds_assign_independently() -> None:
    stats = pytest.importorskip("scipy.stats")
    table10 = [[0] * 10 for _ in range(10)]
    table2 = [[0, 0], [0, 0]]
    for i in range(N_IDS):
        a, b = hash_unit("exp-a", f"visitor-{i}"), hash_unit("exp-b", f"visitor-{i}")
        table10[_bucket(a, 10)][_bucket(b, 10)] += 1
        table2[_bucket(a, 2)][_bucket(b, 2)] += 1
    assert stats.chi2_contingency(table10).pvalue > 0.001
    assert stats.chi2_contingency(table2, correction=False).pvalue > 0.001


def test_weighted_arms_get_their_share() -> None:
    stats = pytest.importorskip("scipy.stats")
    ranges = bucket_ranges([0.2, 0.3, 0.5], 0.8)
    counts = [0, 0, 0, 0]  # three arms, then "not in the experiment"
    for i in range(N_IDS):
        counts[choose(hash_unit("exp-w", f"u{i}") or 0.0, ranges)] += 1
    expected = [N_IDS * p for p in (0.16, 0.24, 0.4, 0.2)]
    assert stats.chisquare(counts, expected).pvalue > 0.001, counts


def test_assignment_is_sticky_across_calls_and_processes() -> None:
    sample = [(c["seed"], c["value"], c["version"]) for c in CASES]
    here = [hash_unit(*args) for args in sample]
    assert here == [hash_unit(*args) for args in sample]
    code = (
        "import json, sys; from sdk.hashing import hash_unit; "
        "print(json.dumps([hash_unit(*a) for a in json.load(sys.stdin)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert json.loads(out.stdout) == here


# --- bucket ranges ----------------------------------------------------------------------------


def _close(ranges: list[tuple[float, float]], expected: list[tuple[float, float]]) -> bool:
    return len(ranges) == len(expected) and all(
        math.isclose(a, c, abs_tol=1e-12) and math.isclose(b, d, abs_tol=1e-12)
        for (a, b), (c, d) in zip(ranges, expected, strict=True)
    )


@pytest.mark.parametrize(
    ("weights", "coverage", "expected"),
    [
        ([0.5, 0.5], 1.0, [(0.0, 0.5), (0.5, 1.0)]),
        ([0.5, 0.5], 0.5, [(0.0, 0.25), (0.5, 0.75)]),
        ([0.5, 0.5], 0.0, [(0.0, 0.0), (0.5, 0.5)]),
        ([1, 1, 2], 1.0, [(0.0, 0.25), (0.25, 0.5), (0.5, 1.0)]),
        ([0.2, 0.2], 1.0, [(0.0, 0.5), (0.5, 1.0)]),
        ([3.0], 0.3, [(0.0, 0.3)]),
        ([0, 1], 1.0, [(0.0, 0.0), (0.0, 1.0)]),
        ([-1, 2], 1.0, [(0.0, 0.5), (0.5, 1.0)]),
        ([0, 0, 0], 1.0, [(0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0)]),
        ([float("nan"), 1], 1.0, [(0.0, 0.5), (0.5, 1.0)]),
        ([float("inf"), 1], 1.0, [(0.0, 0.5), (0.5, 1.0)]),
        ([True, False], 1.0, [(0.0, 0.5), (0.5, 1.0)]),
        ([0.5, 0.5], 1.7, [(0.0, 0.5), (0.5, 1.0)]),
        ([0.5, 0.5], -0.2, [(0.0, 0.0), (0.5, 0.5)]),
        ([0.5, 0.5], float("nan"), [(0.0, 0.0), (0.5, 0.5)]),
        ([], 1.0, []),
    ],
)
def test_bucket_ranges(weights: list[Any], coverage: float, expected: Any) -> None:
    assert _close(bucket_ranges(weights, coverage), expected)


def test_weights_summing_to_one_keep_exact_running_sums() -> None:
    ranges = bucket_ranges([0.1, 0.2, 0.7], 1.0)
    assert ranges == [(0.0, 0.1), (0.1, 0.1 + 0.2), (0.1 + 0.2, 0.1 + 0.2 + 0.7)]
    assert ranges[-1][1] == 1.0


def test_raising_coverage_never_moves_an_included_value() -> None:
    small, large = bucket_ranges([1, 1, 1], 0.3), bucket_ranges([1, 1, 1], 0.9)
    for k in range(10_000):
        n = k / 10_000
        if choose(n, small) >= 0:
            assert choose(n, large) == choose(n, small)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0.0, 0), (0.4999, 0), (0.5, 1), (0.9999, 1), (1.0, -1), (-0.1, -1), (float("nan"), -1)],
)
def test_choose_on_and_around_boundaries(n: float, expected: int) -> None:
    assert choose(n, bucket_ranges([0.5, 0.5], 1.0)) == expected


def test_choose_outside_coverage_and_in_empty_ranges() -> None:
    ranges = bucket_ranges([0.5, 0.5], 0.5)
    assert [choose(n, ranges) for n in (0.0, 0.2499, 0.25, 0.4999, 0.5, 0.7499, 0.75)] == [
        0,
        0,
        -1,
        -1,
        1,
        1,
        -1,
    ]
    assert choose(0.3, bucket_ranges([0.5, 0.5], 0.0)) == -1
    assert choose(0.0, bucket_ranges([0, 1], 1.0)) == 1  # a zero-weight arm is never chosen
    assert choose(0.5, []) == -1


# --- namespaces -------------------------------------------------------------------------------


def test_namespace_uses_hash_version_1_with_a_prefixed_seed() -> None:
    for i in range(200):
        value = f"visitor-{i}"
        n = hash_unit("__pricing", value, 1)
        assert n is not None
        assert in_namespace(value, ("pricing", n, 1.0))
        assert not in_namespace(value, ("pricing", 0.0, n))
        assert in_namespace(value, ("pricing", 0.0, 1.0))


def test_disjoint_namespace_ranges_share_no_value() -> None:
    halves = [("checkout", 0.0, 0.4), ("checkout", 0.4, 1.0)]
    for i in range(2_000):
        assert sum(in_namespace(f"u{i}", ns) for ns in halves) == 1
    assert not in_namespace("anyone", ("checkout", 0.5, 0.5))
