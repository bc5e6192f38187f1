"""Deterministic hashing for experiment assignment: FNV-1a 32-bit, as GrowthBook's SDKs bucket.

:func:`hash_unit` maps a seed and a value (a visitor id) to a number in [0, 1) that is the same
in every process, machine and release; :func:`bucket_ranges` and :func:`choose` turn arm
weights and a coverage into arms; :func:`in_namespace` keeps experiments of one namespace apart.
``tests/contract/vectors/hashing.json`` holds the vectors any other implementation must pass.

The FNV loops run in C (``sdk/_hashing_c.pyx``) when that module was compiled at install
(``hatch_build.py``, with Cython and a C compiler); the pure-Python functions here
(:func:`fnv1a32_py`, :func:`unit_py`) are the reference and the fallback, and a parity test
pins both equal. :data:`IMPLEMENTATION` says which is in use (``tailor --version`` and the
server's ``/readyz`` show it); ``TAILOR_PURE_PYTHON=1`` forces the pure path.

Must not import anything but the standard library (and its own compiled twin).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Final

__all__ = [
    "FNV_OFFSET_BASIS",
    "FNV_PRIME",
    "HASH_VERSION",
    "IMPLEMENTATION",
    "bucket_ranges",
    "choose",
    "fnv1a32",
    "fnv1a32_py",
    "hash_unit",
    "in_namespace",
    "prefix_state",
    "unit_after",
    "unit_py",
]

#: The hash version :func:`hash_unit` uses unless told otherwise.
HASH_VERSION: Final = 2
#: FNV-1a 32-bit parameters (Fowler, Noll and Vo).
FNV_OFFSET_BASIS: Final = 0x811C9DC5
FNV_PRIME: Final = 0x01000193
_MASK: Final = 0xFFFFFFFF


def fnv1a32_py(data: bytes, basis: int = FNV_OFFSET_BASIS) -> int:
    """The FNV-1a 32-bit hash of ``data``: for each byte, XOR it in, then multiply by the prime
    (the reference; :func:`fnv1a32` is the compiled twin when there is one).

    Args:
        data: the bytes to hash.
        basis: the starting state; passing ``fnv1a32(prefix)`` hashes ``prefix + data``.

    Returns:
        An unsigned 32-bit integer; ``fnv1a32(b"") == 0x811C9DC5``.
    """
    h = basis
    prime = FNV_PRIME
    mask = _MASK
    for byte in data:
        h = ((h ^ byte) * prime) & mask
    return h


def unit_py(data: bytes, basis: int) -> float:
    """Hash version 2's number in [0, 1) for ``data`` from the FNV state ``basis`` (after the
    seed): ``fnv1a32(str(fnv1a32(data, basis)).encode()) % 10000 / 10000`` (the reference)."""
    first = fnv1a32_py(data, basis)
    return (fnv1a32_py(str(first).encode("ascii")) % 10000) / 10000


def _compiled() -> tuple[Callable[..., int], Callable[[bytes, int], float], str]:
    if os.environ.get("TAILOR_PURE_PYTHON"):
        return fnv1a32_py, unit_py, "python"
    try:
        from sdk import _hashing_c  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return fnv1a32_py, unit_py, "python"
    return _hashing_c.fnv1a32, _hashing_c.unit_from, "compiled"


#: ``fnv1a32(data, basis=FNV_OFFSET_BASIS)``: :func:`fnv1a32_py`, in C when compiled.
fnv1a32: Callable[..., int]
_unit: Callable[[bytes, int], float]
#: ``"compiled"`` (the C twin of the FNV loops) or ``"python"`` (the reference).
IMPLEMENTATION: str
fnv1a32, _unit, IMPLEMENTATION = _compiled()


#: FNV state after each seed :func:`hash_unit` was called with (seeds come from bundles, so
#: they are few; the cache stops growing at ``_SEED_CACHE_SIZE``).
_seed_states: dict[str, int] = {}
_SEED_CACHE_SIZE: Final = 1024


def _seed_state(seed: str) -> int:
    state = _seed_states.get(seed)
    if state is None:
        state = fnv1a32(_utf8(seed))
        if len(_seed_states) < _SEED_CACHE_SIZE:
            _seed_states[seed] = state
    return state


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: U+FFFD each, as WHATWG TextEncoder does
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()


def hash_unit(seed: str, value: str, version: int = HASH_VERSION) -> float | None:
    """A deterministic number in [0, 1) for ``value`` under ``seed``.

    Version 2: ``fnv1a32(str(fnv1a32(utf8(seed + value))).encode()) % 10000 / 10000``;
    version 1: ``fnv1a32(utf8(value + seed)) % 1000 / 1000``. Strings are hashed as their
    UTF-8 bytes (a lone surrogate as U+FFFD, no Unicode normalisation), which equals
    GrowthBook's SDKs for ASCII input only.

    Args:
        seed: what makes two experiments' assignments independent (an experiment key or seed).
        value: what is assigned (a visitor id); the same value always gets the same number.
        version: 2 (10,000 buckets, double hash) or 1 (1,000 buckets, single hash).

    Returns:
        The number, or None for an unknown version.
    """
    if version == 2:
        if seed and "\ud800" <= seed[-1] <= "\udfff":  # may pair with the value's first char
            return _unit(_utf8(seed + value), FNV_OFFSET_BASIS)
        return _unit(_utf8(value), _seed_state(seed))
    if version == 1:
        return (fnv1a32(_utf8(value + seed)) % 1000) / 1000
    return None


def prefix_state(seed: str, prefix: str) -> int:
    """The FNV state after hashing ``seed + prefix`` (hash version 2), for
    :func:`unit_after`. ``prefix`` must end in an ASCII character, so that no character can
    span the join with what follows."""
    if not prefix or not prefix[-1].isascii():
        raise ValueError("prefix must end in an ASCII character")
    if seed and "\ud800" <= seed[-1] <= "\udfff":
        return fnv1a32(_utf8(seed + prefix))
    return fnv1a32(_utf8(prefix), _seed_state(seed))


def unit_after(state: int, suffix: str) -> float:
    """``hash_unit(seed, prefix + suffix)`` (version 2) from ``prefix_state(seed, prefix)``:
    many values sharing a prefix (one visit's slots) hash only their suffixes."""
    return _unit(_utf8(suffix), state)


def _valid_weights(weights: Sequence[float]) -> bool:
    return (
        all(
            isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
            for w in weights
        )
        and sum(weights) > 0
    )


def bucket_ranges(weights: Sequence[float], coverage: float) -> list[tuple[float, float]]:
    """The range of [0, 1) that selects each arm, in order.

    Arm ``i`` owns the slice of [0, 1) proportional to its weight; the first ``coverage`` share
    of that slice is its range, so a visitor's arm does not change when coverage grows.
    Weights that do not sum to 1 (within 1e-9) are normalised; weights that cannot be (negative,
    not finite, all zero) are replaced by equal weights. Coverage is clamped to [0, 1]; NaN
    counts as 0.

    Args:
        weights: one non-negative weight per arm.
        coverage: the share of values included in the experiment.

    Returns:
        ``(start, end)`` per arm: ``start <= n < end`` selects it (see :func:`choose`).
    """
    if not weights:
        return []
    if not _valid_weights(weights):
        weights = [1.0] * len(weights)
    coverage = 0.0 if math.isnan(coverage) else min(max(float(coverage), 0.0), 1.0)
    total = 0.0
    for w in weights:
        total += w
    if abs(total - 1.0) <= 1e-9:
        total = 1.0  # already a distribution: keep GrowthBook's boundaries exactly
    ranges = []
    cumulative = 0.0
    for w in weights:
        ranges.append((cumulative / total, (cumulative + coverage * w) / total))
        cumulative += w
    return ranges


def choose(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """The index of the first range with ``start <= n < end``, or -1 when none contains ``n``.

    Args:
        n: a number from :func:`hash_unit`.
        ranges: from :func:`bucket_ranges`.
    """
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def in_namespace(value: str, namespace: tuple[str, float, float]) -> bool:
    """Whether ``value`` falls in a namespace's range: ``start <= hash_unit("__" + name, value,
    1) < end``.

    Args:
        value: what is assigned (a visitor id).
        namespace: ``(name, start, end)``; experiments in one namespace with disjoint ranges
            share no value.
    """
    name, start, end = namespace
    n = hash_unit("__" + name, value, 1)
    return n is not None and start <= n < end
