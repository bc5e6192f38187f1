"""API keys and the security configuration: public keys (``pk_…``, embedded in pages, limited
to their origins and the public routes) and secret keys (``sk_…``, servers), stored only as
SHA-256 digests, with the demo rule and the rate limits.

Must not import litestar or model_export.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Annotated, Literal, TypeAlias

import msgspec
from msgspec import Meta

from server.security.origins import OriginRules

__all__ = [
    "DEMO_KEY_ID",
    "ApiKey",
    "KeyKind",
    "SecurityConfig",
    "SecurityConfigError",
    "generate_key",
    "hash_key",
]

KeyKind: TypeAlias = Literal["public", "secret"]
#: The id of the implicit public key of keyless loopback demo requests (reserved).
DEMO_KEY_ID = "demo"
_KEY_PREFIX: dict[KeyKind, str] = {"public": "pk_", "secret": "sk_"}


def hash_key(raw: str) -> str:
    """The hex SHA-256 of an API key: what :class:`ApiKey` stores instead of the key."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def generate_key(kind: KeyKind) -> tuple[str, str]:
    """A new random key (``pk_…`` or ``sk_…``, 256 bits) and its digest for the config.

    Hand the key to its owner once; keep only the digest.
    """
    raw = _KEY_PREFIX[kind] + secrets.token_urlsafe(32)
    return raw, hash_key(raw)


class SecurityConfigError(ValueError):
    """Raised by :meth:`SecurityConfig.from_file` when the file is not a valid configuration."""


class ApiKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One API key, stored by digest.

    Attributes:
        id: a name for logs, metrics and ``scope["state"]``; not secret.
        kind: ``public`` (browsers, public routes only) or ``secret`` (servers, every route).
        sha256: lowercase hex SHA-256 of the key (:func:`hash_key`).
        origins: for public keys, the sites allowed to use it (required; see the module
            :mod:`server.security.origins` for the grammar); secret keys must not list any.
        rate_per_minute: this key's limit instead of ``per_key_per_minute``.
    """

    id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    kind: KeyKind
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
    origins: list[str] = []
    rate_per_minute: Annotated[int, Meta(ge=1)] | None = None

    def __post_init__(self) -> None:
        if self.kind == "public" and not self.origins:
            raise ValueError(
                f"public key {self.id!r} lists no origins: add the sites that embed it, "
                "e.g. 'https://shop.example.com', or '*' for any"
            )
        if self.kind == "secret" and self.origins:
            raise ValueError(
                f"secret key {self.id!r} lists origins, but secret keys are for servers "
                "and never get CORS access; use a public key in browsers"
            )
        OriginRules.compile(self.origins)


class SecurityConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Keys, the demo rule and rate limits of :class:`SecurityMiddleware`.

    A TOML file::

        per_ip_per_minute = 600

        [[keys]]
        id = "shop-web"
        kind = "public"
        sha256 = "…"            # hash_key("pk_…")
        origins = ["https://shop.example.com", "https://*.shop.example.com"]

    Attributes:
        keys: the accepted keys; ids and digests are unique and ``demo`` is reserved.
        demo_keyless_loopback: accept keyless loopback requests to public routes as the
            implicit public key ``demo`` (the local demo only).
        per_key_per_minute: default limit of each key (0: none): of each client (address, or
            /64 for IPv6) of a public key, of a secret key as a whole.
        per_ip_per_minute: limit of each client address, or /64 for IPv6, for requests not
            authenticated by a secret key (0: none).
        burst_seconds: a full bucket holds this many seconds' worth of its rate (at least one
            request), so a client idle for that long may send that much at once.
        trusted_proxy_hops: as ``Settings.trusted_proxy_hops``: reverse proxies that append to
            ``X-Forwarded-For``; 0 uses the socket peer and ignores the header.
        max_tracked_clients: most rate-limit buckets kept in memory per process.
    """

    keys: list[ApiKey]
    demo_keyless_loopback: bool = False
    per_key_per_minute: Annotated[int, Meta(ge=0)] = 6000
    per_ip_per_minute: Annotated[int, Meta(ge=0)] = 600
    burst_seconds: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    trusted_proxy_hops: Annotated[int, Meta(ge=0, le=10)] = 0
    max_tracked_clients: Annotated[int, Meta(ge=1)] = 100_000

    def __post_init__(self) -> None:
        ids: set[str] = set()
        digests: set[str] = set()
        for key in self.keys:
            if key.id == DEMO_KEY_ID:
                raise ValueError(f"key id {DEMO_KEY_ID!r} is reserved for the keyless demo")
            if key.id in ids:
                raise ValueError(f"key id {key.id!r} is used twice")
            if key.sha256 in digests:
                raise ValueError(f"key {key.id!r} has the same sha256 as another key")
            ids.add(key.id)
            digests.add(key.sha256)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SecurityConfig:
        """Read a ``.json`` or ``.toml`` file.

        Raises:
            SecurityConfigError: the file is not valid JSON/TOML or not a valid config; the
                message names the file and the field (``… - at `$.keys[0].origins```).
            OSError: the file cannot be read.
        """
        file = Path(path)
        suffix = file.suffix.lower()
        if suffix not in (".json", ".toml"):
            raise SecurityConfigError(f"{file}: expected a .json or .toml file")
        data = file.read_bytes()
        try:
            if suffix == ".json":
                return msgspec.json.decode(data, type=cls)
            return msgspec.toml.decode(data, type=cls)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise SecurityConfigError(f"{file}: {exc}") from exc
