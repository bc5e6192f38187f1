"""Version strings and regular expressions as the condition language reads them."""

from __future__ import annotations

import re

import pytest

from sdk._patterns import compiled_regex, version_key


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
    with pytest.raises(re.error):
        compiled_regex("(")
