"""Version strings and regular expressions as the condition language reads them."""

from __future__ import annotations

import sys
import time

import pytest

from sdk import _patterns
from sdk._patterns import RegexError, compiled_regex, version_key
from sdk.conditions import check_condition, evaluate_condition
from sdk.errors import ConditionError, MissingExtraError

#: Catastrophic for a backtracking engine: on ``/`` + n word characters + ``!`` Python's ``re``
#: tries every split of the run, 2**n of them (measured: 2 s at n = 25, doubling per
#: character), so n = 10,000 would take far longer than 10 s. RE2 answers in linear time.
PATHOLOGICAL = r"^/(\w+\s?)*$"


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.9", "1.10"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.0-a", "1.0-a.1"),
        ("1.0.0-2", "1.0.0-a"),  # numeric identifiers sort below alphanumeric ones
        ("1.0.0-alpha.9", "1.0.0-alpha.10"),
        ("v2", "10"),
        ("999999999999999999999", "1000000000000000000000"),  # any size
    ],
)
def test_versions_order(lower: str, higher: str) -> None:
    low, high = version_key(lower), version_key(higher)
    assert low is not None and high is not None
    assert low < high


@pytest.mark.parametrize(
    ("a", "b"), [("1.2", "1.2.0"), ("01", "1"), ("V1.0", "1.0+build.7"), ("1.0-rc", "1-rc")]
)
def test_equal_versions(a: str, b: str) -> None:
    assert version_key(a) == version_key(b) is not None


@pytest.mark.parametrize("text", ["", "1.", ".1", "1..2", "1.0 ", "a1", "1.0-", "1.0-a_b", 1, None])
def test_what_is_not_a_version(text: object) -> None:
    assert version_key(text) is None


def test_regexes_compile_once() -> None:
    pattern = compiled_regex(r"^/sale/\d+$")
    assert pattern is compiled_regex(r"^/sale/\d+$")
    assert pattern.search("/sale/42") and not pattern.search("/sale/x")
    with pytest.raises(RegexError, match="missing"):
        compiled_regex("(")


def test_a_pathological_pattern_answers_in_linear_time() -> None:
    text = "/" + "a" * 10_000 + "!"
    start = time.perf_counter()
    assert evaluate_condition({"path": text}, {"path": {"$regex": PATHOLOGICAL}}) is False
    assert evaluate_condition({"path": text[:-1]}, {"path": {"$regex": PATHOLOGICAL}}) is True
    elapsed = time.perf_counter() - start
    # RE2 needs ~1 ms here; 1 s leaves room for a loaded machine and is still 10x under
    # what Python's re needs at n = 29 (2 s * 2**4), let alone n = 10,000
    assert elapsed < 1.0, elapsed


@pytest.mark.parametrize(
    ("pattern", "why"),
    [(r"(a)\1", "invalid escape"), (r"a(?=b)", "perl operator"), (r"(?<!a)b", "perl operator")],
    ids=["backreference", "lookahead", "lookbehind"],
)
def test_what_re2_cannot_compile_is_a_malformed_condition(pattern: str, why: str) -> None:
    with pytest.raises(ConditionError, match=rf"RE2 cannot compile.*{why}.*at \$\.u"):
        check_condition({"u": {"$regex": pattern}})
    assert evaluate_condition({"u": "aab"}, {"u": {"$regex": pattern}}) is False


def test_without_re2_regex_conditions_are_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "re2", None)  # import re2 now fails
    _patterns._re2.cache_clear()
    compiled_regex.cache_clear()
    try:
        with pytest.raises(MissingExtraError, match=r"tailor\[local\]"):
            compiled_regex("^a")
        with pytest.raises(ConditionError, match=r"google-re2.*tailor\[local\].*at \$\.u"):
            check_condition({"u": {"$regex": "^a"}})
    finally:
        _patterns._re2.cache_clear()
        compiled_regex.cache_clear()
