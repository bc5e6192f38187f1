"""Signed identity tokens: the visitor token the server issues with a decision, and the user
token a site's backend signs for ``identify(userId, userToken)``.

A **visitor token** is ``t1.<visitor id, base64url>.<issued at, unix seconds>.<MAC>``, the MAC
being the first 20 bytes of HMAC-SHA256 over the version, the id and the issue time with a
server secret. It proves that the holder was given ``visitorId`` by the server; it carries no
other data, and a server verifies it without any lookup (any worker or replica with the same
secret). Secrets rotate: the first one signs, every one listed verifies.

A **user token** is the hex HMAC-SHA256 of the user id with a secret shared by the site's
backend and the Tailor server (identity verification, as support-chat widgets do it): the
backend computes :func:`user_token` when it renders the page, the tag sends it with the id.

Must not import server or model_export.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from enum import Enum

__all__ = [
    "MIN_SECRET_BYTES",
    "TokenCheck",
    "issue_visitor_token",
    "token_issued_at",
    "token_visitor_id",
    "user_token",
    "verify_user_token",
    "verify_visitor_token",
]

#: Shortest secret accepted for signing either kind of token (256 bits).
MIN_SECRET_BYTES = 32
_VERSION = "t1"
_MAC_BYTES = 20
_VISITOR_DOMAIN = b"tailor-visitor-token"
_USER_DOMAIN = b"tailor-user-token"


class TokenCheck(Enum):
    """The outcome of :func:`verify_visitor_token`."""

    VALID = "valid"
    #: no token was sent
    MISSING = "missing"
    #: not a token of this format (or of an unknown version)
    MALFORMED = "malformed"
    #: well-formed, but no secret signed it (forged or altered)
    BAD_SIGNATURE = "bad-signature"
    #: signed, but for another visitor id
    OTHER_VISITOR = "other-visitor"
    #: signed, but older than the maximum age (or issued in the future)
    EXPIRED = "expired"


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"a token secret needs at least {MIN_SECRET_BYTES} bytes")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:  # the decoder skips foreign characters: one spelling per token
        raise ValueError("not canonical base64url")
    return raw


def _visitor_mac(secret: bytes, visitor_id: str, issued: int) -> bytes:
    message = b"|".join((_VISITOR_DOMAIN, _VERSION.encode(), visitor_id.encode(), b"%d" % issued))
    return hmac.digest(secret, message, "sha256")[:_MAC_BYTES]  # the one-call C path


def issue_visitor_token(secret: bytes, visitor_id: str, now: float) -> str:
    """A token proving ``visitor_id`` was issued at ``now`` (unix seconds) by this secret."""
    _check_secret(secret)
    issued = int(now)
    mac = _visitor_mac(secret, visitor_id, issued)
    return f"{_VERSION}.{_b64(visitor_id.encode())}.{issued}.{_b64(mac)}"


def _parse(token: str) -> tuple[str, int, bytes] | None:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != _VERSION or not parts[2].isdigit() or len(parts[2]) > 12:
        return None
    try:
        visitor_id = _unb64(parts[1]).decode("utf-8")
        mac = _unb64(parts[3])
    except (binascii.Error, ValueError):
        return None
    if len(mac) != _MAC_BYTES:
        return None
    return visitor_id, int(parts[2]), mac


def token_issued_at(token: str) -> int | None:
    """The issue time (unix seconds) written in a well-formed token, unverified; else None."""
    parsed = _parse(token)
    return parsed[1] if parsed else None


def token_visitor_id(token: str) -> str | None:
    """The visitor id written in a well-formed token, unverified; else None (a data request
    names its visitor only by its token)."""
    parsed = _parse(token)
    return parsed[0] if parsed else None


def verify_visitor_token(
    secrets: Sequence[bytes],
    token: str | None,
    visitor_id: str,
    now: float,
    max_age_seconds: float,
) -> TokenCheck:
    """Whether ``token`` is a token for ``visitor_id`` signed by one of ``secrets``, issued no
    more than ``max_age_seconds`` before ``now`` (and not after it, but for a minute's skew
    between replicas' clocks)."""
    if not token:
        return TokenCheck.MISSING
    parsed = _parse(token)
    if parsed is None:
        return TokenCheck.MALFORMED
    signed_id, issued, mac = parsed
    if not any(
        hmac.compare_digest(mac, _visitor_mac(secret, signed_id, issued)) for secret in secrets
    ):
        return TokenCheck.BAD_SIGNATURE
    if not hmac.compare_digest(signed_id.encode(), visitor_id.encode()):
        return TokenCheck.OTHER_VISITOR
    if issued > now + 60 or now - issued > max_age_seconds:
        return TokenCheck.EXPIRED
    return TokenCheck.VALID


def user_token(secret: bytes | str, user_id: str) -> str:
    """The user token of ``user_id``: what the site's backend computes and puts in the page
    for ``tailor.identify(userId, userToken)`` (hex HMAC-SHA256)."""
    key = secret.encode() if isinstance(secret, str) else secret
    _check_secret(key)
    message = _USER_DOMAIN + b"|" + user_id.encode()
    return hmac.digest(key, message, "sha256").hex()


def verify_user_token(secrets: Sequence[bytes], user_id: str, token: str | None) -> bool:
    """Whether ``token`` is :func:`user_token` of ``user_id`` under one of ``secrets``."""
    if not token or len(token) != 64:
        return False
    return any(hmac.compare_digest(user_token(s, user_id), token) for s in secrets)
