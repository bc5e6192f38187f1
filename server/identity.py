"""Visitor identity the server can trust: the token secrets (:class:`Identity`, from
:class:`~server.settings.Settings`), the checks a public-key decide request goes through
(:func:`verify_request`: visitor token against visitor id, user token against user id) and the
view of a decision a public key gets (:func:`public_decision`: its visitor token added,
profile-derived scores removed unless the bundle lists them as public).

Secret keys (the site's backends) are trusted with any visitor and user id and get no tokens;
the SDK's local mode has none at all. The wire format of the tokens is :mod:`sdk.tokens`.

Must not import model_export.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import msgspec

from sdk.consent import permissions
from sdk.schema import DecideRequest, Decision
from sdk.tokens import (
    MIN_SECRET_BYTES,
    TokenCheck,
    issue_visitor_token,
    token_issued_at,
    verify_user_token,
    verify_visitor_token,
)
from server.settings import Settings

__all__ = [
    "MAKE_SECRET",
    "REISSUE_AFTER_SECONDS",
    "Identity",
    "Verified",
    "new_visitor_id",
    "public_decision",
    "read_secrets",
    "verify_request",
]

log = logging.getLogger("tailor.server")

#: A visitor token older than this is replaced by a fresh one in the next decision.
REISSUE_AFTER_SECONDS = 86_400.0
#: The command that prints a good token secret.
MAKE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def new_visitor_id() -> str:
    """A fresh random visitor id (``v`` + 32 hex digits), for a visit whose token failed."""
    return "v" + secrets.token_hex(16)


def read_secrets(values: Sequence[str], path: str | None, setting: str) -> tuple[bytes, ...]:
    """Secrets as bytes: each value's UTF-8 text as it is (no decoding), then the non-blank,
    non-``#`` lines of the file at ``path``.

    Raises:
        ValueError: a secret shorter than :data:`sdk.tokens.MIN_SECRET_BYTES`, or an unreadable
            file; the message names ``setting``, never the secret.
    """
    texts = [v.strip() for v in values if v.strip()]
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"{setting}: cannot read the secret file: {exc.strerror}") from exc
        texts += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    out = tuple(t.encode("utf-8") for t in texts)
    for i, secret in enumerate(out, start=1):
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"{setting}: secret #{i} has {len(secret)} bytes, at least {MIN_SECRET_BYTES} "
                f"are needed; make one with {MAKE_SECRET}"
            )
    return out


@dataclass(frozen=True, slots=True)
class Identity:
    """The token secrets of one server and how old a visitor token may be.

    Attributes:
        visitor_secrets: the first signs visitor tokens, every one verifies them (rotation).
        user_secrets: secrets shared with the site's backend for user tokens; empty: user ids
            from public keys are always dropped.
        max_age_seconds: the oldest visitor token accepted (``Settings.visitor_token_days``).
        clock: unix seconds (injectable for tests).
    """

    visitor_secrets: tuple[bytes, ...]
    user_secrets: tuple[bytes, ...] = ()
    max_age_seconds: float = 395 * 86_400.0
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def __repr__(self) -> str:  # never the secrets
        return (
            f"Identity(visitor_secrets={len(self.visitor_secrets)}, "
            f"user_secrets={len(self.user_secrets)}, max_age_seconds={self.max_age_seconds})"
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, keys: bool) -> Identity:
        """The identity of a server with ``settings``; ``keys``: API keys are configured.

        Without a visitor token secret, a server with keys is refused; the local demo gets a
        random one for this process (``python -m server --demo`` makes one in the parent
        process and passes it to every worker, so that they agree).

        Raises:
            ValueError: no token secret with keys, or a secret too short or unreadable.
        """
        visitor = read_secrets(
            settings.token_secrets, settings.token_secret_file, "TAILOR_TOKEN_SECRETS"
        )
        if not visitor:
            if keys:
                raise ValueError(
                    "no visitor token secret: a server with API keys signs the visitor ids it "
                    "issues; set TAILOR_TOKEN_SECRETS (comma-separated, the first signs) or "
                    f"TAILOR_TOKEN_SECRET_FILE (one per line) to a secret made with {MAKE_SECRET}"
                )
            log.warning(
                "no TAILOR_TOKEN_SECRETS: visitor tokens are signed with a random secret of this "
                "process (demo only; they stop verifying on restart)"
            )
            visitor = (secrets.token_urlsafe(32).encode("ascii"),)
        user = read_secrets(settings.user_token_secrets, None, "TAILOR_USER_TOKEN_SECRETS")
        return cls(
            visitor_secrets=visitor,
            user_secrets=user,
            max_age_seconds=settings.visitor_token_days * 86_400.0,
        )

    def check(self, token: str | None, visitor_id: str) -> TokenCheck:
        """Whether ``token`` proves ``visitor_id`` now."""
        return verify_visitor_token(
            self.visitor_secrets, token, visitor_id, self.clock(), self.max_age_seconds
        )

    def issue(self, visitor_id: str) -> str:
        """A fresh visitor token for ``visitor_id``, signed with the first secret."""
        return issue_visitor_token(self.visitor_secrets[0], visitor_id, self.clock())

    def renewed(self, token: str, visitor_id: str) -> str:
        """A valid ``token`` of ``visitor_id``, or a fresh one when it is older than
        :data:`REISSUE_AFTER_SECONDS` or signed by a secret other than the first (so that a
        returning visitor's token stays young and a rotated-out secret falls out of use)."""
        now = self.clock()
        issued = token_issued_at(token)
        if issued is None or now - issued > REISSUE_AFTER_SECONDS:
            return self.issue(visitor_id)
        if len(self.visitor_secrets) > 1:  # rotating: move it to the signing secret at once
            first = self.visitor_secrets[:1]
            check = verify_visitor_token(first, token, visitor_id, now, self.max_age_seconds)
            if check is not TokenCheck.VALID:
                return self.issue(visitor_id)
        return token

    def user_allowed(self, user_id: str, token: str | None) -> bool:
        """Whether a public key's ``user_id`` is signed by the site's backend."""
        return bool(self.user_secrets) and verify_user_token(self.user_secrets, user_id, token)


class Verified(NamedTuple):
    """A decide request after :func:`verify_request`."""

    #: the request as decided: tokens removed, a minted visitor id, an unsigned user id dropped
    request: DecideRequest
    #: the visitor token the decision carries (None: none is issued)
    token: str | None
    #: the outcome of the visitor token check (None: not checked)
    check: TokenCheck | None

    @property
    def minted(self) -> bool:
        """Whether the visitor id was minted for this request (nothing can be stored for it)."""
        return self.check is not None and self.check is not TokenCheck.VALID


def verify_request(identity: Identity, req: DecideRequest, *, public: bool) -> Verified:
    """Apply the identity rules to a decide request whose consent is already effective.

    For a public key with storage consent, the visitor token must prove ``visitorId``;
    otherwise the visit is a new visitor with a fresh id, so no stored profile of the sent id
    is read or written, and the decision carries a token for the new id. Without storage
    consent nothing is read or stored, so the id is used as sent and no token is issued. A
    public key's ``userId`` is kept only with a valid user token. The tokens themselves never
    go further than this function (the decider, the store and the log never see them).
    """
    updates: dict[str, object] = {}
    if req.visitor_token is not None:
        updates["visitor_token"] = None
    if req.user_token is not None:
        updates["user_token"] = None
    token: str | None = None
    check: TokenCheck | None = None
    if public:
        if permissions(req.consent).store:
            check = identity.check(req.visitor_token, req.visitor_id)
            if check is TokenCheck.VALID and req.visitor_token is not None:
                token = identity.renewed(req.visitor_token, req.visitor_id)
            else:
                updates["visitor_id"] = new_id = new_visitor_id()
                token = identity.issue(new_id)
        if req.user_id is not None and not identity.user_allowed(req.user_id, req.user_token):
            updates["user_id"] = None
    verified = msgspec.structs.replace(req, **updates) if updates else req
    return Verified(verified, token, check)


def public_decision(
    decision: Decision, token: str | None, public_scores: Collection[str]
) -> Decision:
    """What a public key sees of ``decision``: ``visitorToken`` set to ``token``, and the
    profile-derived ``rfm`` and ``scores`` only where the bundle lists them in
    ``public_scores`` (``"rfm"`` and score names)."""
    rfm = decision.rfm if "rfm" in public_scores else None
    scores = decision.scores
    if scores is not None:
        scores = {k: v for k, v in scores.items() if k in public_scores} or None
    if rfm is decision.rfm and scores is decision.scores and token == decision.visitor_token:
        return decision
    return msgspec.structs.replace(decision, rfm=rfm, scores=scores, visitor_token=token)
