"""The exact shortcuts of the decision path (sdk._exact): round6 is round(x, 6) bit for bit,
and the id pool gives version-4 UUID hex ids, distinct across threads and forks."""

from __future__ import annotations

import importlib.util
import math
import os
import random
import re
import struct
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sdk._exact as exact
from sdk._exact import IdPool, round4, round6

UUID4_HEX = re.compile(r"^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$")


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def assert_same(x: float) -> None:
    for got, want in ((round6(x), round(x, 6)), (round4(x), round(x, 4))):
        if math.isnan(want):
            assert math.isnan(got), x
        else:
            assert bits(got) == bits(want), (x, got, want)


EDGES = [
    0.0,
    -0.0,
    1e-7,
    -1e-7,
    4.99999e-7,
    5e-7,
    -5e-7,
    1.5e-6,
    2.5e-6,
    0.1234565,
    0.1234575,
    -0.1234565,
    0.9999995,
    999.9999995,
    1e3 - 5e-7,
    999.9999,
    1000.0,
    1e3 + 0.5e-6,
    1e9,
    -1e9,
    1e300,
    -1e300,
    5e-324,
    -5e-324,
    sys.float_info.max,
    math.inf,
    -math.inf,
    math.nan,
]


@pytest.mark.parametrize("x", EDGES)
def test_round6_equals_round_on_edge_cases(x: float) -> None:
    assert_same(x)


def test_round6_equals_round_near_every_half_way_point() -> None:
    """Values a few ulps around half-way points (k + 0.5 millionths, and ten-thousandths), where
    the shortcut must hand over."""
    rng = random.Random(18)
    for _ in range(20_000):
        k = rng.randrange(-2_000_000, 2_000_000)
        for x in ((k + 0.5) / 1e6, (k + 0.5) / 1e4):
            for _ in range(4):
                assert_same(x)
                x = math.nextafter(x, math.inf if rng.random() < 0.5 else -math.inf)


def test_round6_equals_round_on_float32_probabilities() -> None:
    """What ONNX hands the decision: float32 values widened to float64."""
    rng = random.Random(5)
    for _ in range(200_000):
        x = struct.unpack("<f", struct.pack("<f", rng.random()))[0]
        assert_same(x)
        assert_same(-x)
        assert_same(x * rng.choice([1e-6, 1e-3, 10.0, 1e4]))


@settings(max_examples=3000, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_round6_equals_round_on_any_float(x: float) -> None:
    assert_same(x)


def test_round6_takes_the_shortcut_on_ordinary_values() -> None:
    """Most values never reach the built-in (else the module would save nothing): counted on
    the module's source, loaded apart from the twin in use."""
    spec = importlib.util.spec_from_file_location(
        "_exact_source", Path(exact.__file__).parent / "_exact.py"
    )
    assert spec is not None and spec.loader is not None
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    calls = 0

    def counting(x: float, digits: int) -> float:
        nonlocal calls
        calls += 1
        return round(x, digits)

    source.round = counting  # type: ignore[attr-defined]
    rng = random.Random(3)
    values = [rng.random() for _ in range(10_000)]
    assert [bits(source.round6(x)) for x in values] == [bits(round(x, 6)) for x in values]
    assert calls < 100


def test_id_pool_gives_uuid4_hex_ids_without_repeats() -> None:
    pool = IdPool(batch=64)
    ids = [pool() for _ in range(5_000)]  # many refills
    assert all(UUID4_HEX.match(i) for i in ids)
    assert len(set(ids)) == len(ids)
    # the random nibbles are not stuck: every hex digit shows up in each random position
    for position in (0, 11, 13, 20, 31):
        assert len({i[position] for i in ids}) == 16


def test_id_pool_is_safe_across_threads() -> None:
    pool = IdPool(batch=16)
    out: list[list[str]] = [[] for _ in range(4)]

    def take(bucket: list[str]) -> None:
        for _ in range(2_000):
            bucket.append(pool())

    threads = [threading.Thread(target=take, args=(bucket,)) for bucket in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for bucket in out for i in bucket]
    assert len(every) == 8_000 and len(set(every)) == 8_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    pool = IdPool(batch=256)
    pool()  # the pool now holds 255 ids the parent will hand out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave at once
        os.close(read)
        os.write(write, "".join(pool() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = f.read()
    os.waitpid(pid, 0)
    child_ids = {child[i : i + 32] for i in range(0, len(child), 32)}
    parent_ids = {pool() for _ in range(10)}
    assert len(child_ids) == 10 and all(UUID4_HEX.match(i) for i in child_ids)
    assert not child_ids & parent_ids
