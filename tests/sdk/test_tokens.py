"""Visitor and user tokens (sdk.tokens): round trip, every part tampered, rotation, expiry,
issue times in the future, user tokens."""

from __future__ import annotations

import base64

import pytest

from sdk.tokens import (
    MIN_SECRET_BYTES,
    TokenCheck,
    issue_visitor_token,
    token_issued_at,
    token_visitor_id,
    user_token,
    verify_user_token,
    verify_visitor_token,
)

SECRET = b"s" * 32
OTHER = b"o" * 32
NOW = 1_760_000_000.0
DAY = 86_400.0
MAX_AGE = 395 * DAY


def check(token: str | None, visitor: str = "v-1", now: float = NOW, *secrets: bytes) -> TokenCheck:
    return verify_visitor_token(secrets or (SECRET,), token, visitor, now, MAX_AGE)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_token_proves_its_visitor() -> None:
    token = issue_visitor_token(SECRET, "v-1", NOW)
    assert token.startswith("t1.") and token.count(".") == 3
    assert check(token) is TokenCheck.VALID
    assert token_visitor_id(token) == "v-1" and token_issued_at(token) == int(NOW)
    # non-ASCII ids (not valid wire ids, but the format must not care) round-trip too
    unicode = issue_visitor_token(SECRET, "été-🙂", NOW)
    assert check(unicode, "été-🙂") is TokenCheck.VALID


def test_missing_and_malformed_tokens() -> None:
    assert check(None) is TokenCheck.MISSING
    assert check("") is TokenCheck.MISSING
    token = issue_visitor_token(SECRET, "v-1", NOW)
    version, vid, issued, mac = token.split(".")
    for bad in (
        "garbage",
        "t2." + ".".join((vid, issued, mac)),  # unknown version
        ".".join((version, vid, issued)),  # a part missing
        ".".join((version, vid, "12ab", mac)),  # a time that is not a number
        ".".join((version, vid, "1" * 13, mac)),  # a time with too many digits
        ".".join((version, vid, issued, mac[:-4])),  # a short MAC
        ".".join((version, "%%%", issued, mac)),  # not base64url
        ".".join((version, vid[:1] + "%" + vid[1:], issued, mac)),  # a foreign character
        ".".join((version, vid + "=", issued, mac)),  # padded: not the one spelling
        ".".join((version, vid, issued, mac[:-1] + "_")),  # other trailing bits
        token + ".x",
    ):
        assert check(bad) is TokenCheck.MALFORMED, bad
        assert token_visitor_id(bad) is None and token_issued_at(bad) is None


def test_each_tampered_part_breaks_the_signature() -> None:
    token = issue_visitor_token(SECRET, "v-1", NOW)
    version, vid, issued, mac = token.split(".")
    victim = _b64(b"victim")
    # another id signed with the original MAC, another time, a flipped MAC byte
    assert check(".".join((version, victim, issued, mac)), "victim") is TokenCheck.BAD_SIGNATURE
    earlier = str(int(issued) - 10)
    assert check(".".join((version, vid, earlier, mac))) is TokenCheck.BAD_SIGNATURE
    raw = bytearray(base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)))
    raw[0] ^= 1
    assert check(".".join((version, vid, issued, _b64(bytes(raw))))) is TokenCheck.BAD_SIGNATURE
    # signed by a secret this server does not have
    assert check(issue_visitor_token(OTHER, "v-1", NOW)) is TokenCheck.BAD_SIGNATURE


def test_a_token_for_another_visitor_is_refused() -> None:
    assert check(issue_visitor_token(SECRET, "v-2", NOW), "v-1") is TokenCheck.OTHER_VISITOR
    # a prefix or extension of the id is another visitor too
    assert check(issue_visitor_token(SECRET, "v-1", NOW), "v-10") is TokenCheck.OTHER_VISITOR


def test_rotation_the_first_secret_signs_every_secret_verifies() -> None:
    old = issue_visitor_token(OTHER, "v-1", NOW)
    new = issue_visitor_token(SECRET, "v-1", NOW)
    assert check(old, "v-1", NOW, SECRET, OTHER) is TokenCheck.VALID
    assert check(new, "v-1", NOW, SECRET, OTHER) is TokenCheck.VALID
    assert check(old, "v-1", NOW, SECRET) is TokenCheck.BAD_SIGNATURE  # the old one removed


def test_expiry_and_issue_times_in_the_future() -> None:
    token = issue_visitor_token(SECRET, "v-1", NOW)
    assert check(token, "v-1", NOW + MAX_AGE) is TokenCheck.VALID
    assert check(token, "v-1", NOW + MAX_AGE + 1) is TokenCheck.EXPIRED
    assert check(token, "v-1", NOW - 60) is TokenCheck.VALID  # a minute of clock skew
    assert check(token, "v-1", NOW - 61) is TokenCheck.EXPIRED  # issued "in the future"


def test_short_secrets_are_refused() -> None:
    short = b"x" * (MIN_SECRET_BYTES - 1)
    with pytest.raises(ValueError, match="32 bytes"):
        issue_visitor_token(short, "v-1", NOW)
    with pytest.raises(ValueError, match="32 bytes"):
        user_token(short, "u-1")


def test_user_tokens() -> None:
    token = user_token("k" * 32, "user-42")
    assert len(token) == 64 and int(token, 16) >= 0
    assert user_token(b"k" * 32, "user-42") == token  # text and bytes secrets agree
    secrets = (b"k" * 32,)
    assert verify_user_token(secrets, "user-42", token)
    assert not verify_user_token(secrets, "user-43", token)
    assert not verify_user_token(secrets, "user-42", None)
    assert not verify_user_token(secrets, "user-42", "")
    assert not verify_user_token(
        secrets, "user-42", token[:-1] + ("0" if token[-1] != "0" else "1")
    )
    assert not verify_user_token(secrets, "user-42", token + "00")
    assert not verify_user_token((b"z" * 32,), "user-42", token)
    assert verify_user_token((b"z" * 32, b"k" * 32), "user-42", token)  # rotation
    # a visitor token's MAC is not a user token and vice versa (separate domains)
    assert token not in issue_visitor_token(b"k" * 32, "user-42", NOW)
