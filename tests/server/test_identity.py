"""Visitor identity in process (server.identity): the token settings, the rules a decide
request goes through per key kind, what a public key sees of a decision, and the decision
cache's key. The attacks themselves run against a real server in test_identity_live.py."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from sdk.schema import Consent, DecideRequest, Decision, RfmResult
from sdk.tokens import TokenCheck, issue_visitor_token, token_issued_at, user_token
from server.decisions import DecisionCache
from server.identity import (
    REISSUE_AFTER_SECONDS,
    Identity,
    public_decision,
    read_secrets,
    verify_request,
)
from server.settings import Settings
from tests.conftest import (
    TEST_PUBLIC_KEY,
    TEST_TOKEN_SECRET,
    TEST_USER_TOKEN_SECRET,
    app_client,
    security_for_tests,
)
from tests.server.test_identity_live import rfm_bundle

NOW = 1_790_000_000.0
DAY = 86_400.0
SIGNING = b"a" * 32
RETIRED = b"b" * 32
USERS = b"u" * 32
STORE = Consent(personalization=True, storage=True)
PERSONAL = Consent(personalization=True, storage=False)
MINTED = re.compile(r"^v[0-9a-f]{32}$")


def identity(*visitor: bytes, clock: float = NOW) -> Identity:
    return Identity(
        visitor_secrets=visitor or (SIGNING,),
        user_secrets=(USERS,),
        max_age_seconds=395 * DAY,
        clock=lambda: clock,
    )


def request(**fields: object) -> DecideRequest:
    base: dict[str, object] = {"visitor_id": "v-1", "session_id": "s-1", "consent": STORE}
    return DecideRequest(**(base | fields))  # type: ignore[arg-type]


# --- settings --------------------------------------------------------------------------------


def test_settings_read_the_token_variables_and_never_show_the_secrets() -> None:
    env = {
        "TAILOR_TOKEN_SECRETS": f" {TEST_TOKEN_SECRET} , {'z' * 40} ",
        "TAILOR_TOKEN_SECRET_FILE": "/etc/tailor/tokens",
        "TAILOR_VISITOR_TOKEN_DAYS": "30",
        "TAILOR_USER_TOKEN_SECRETS": TEST_USER_TOKEN_SECRET,
    }
    settings = Settings.from_env(env)
    assert settings.token_secrets == [TEST_TOKEN_SECRET, "z" * 40]
    assert settings.token_secret_file == "/etc/tailor/tokens"
    assert settings.visitor_token_days == 30.0
    assert settings.user_token_secrets == [TEST_USER_TOKEN_SECRET]
    shown = repr(settings)
    assert TEST_TOKEN_SECRET not in shown and TEST_USER_TOKEN_SECRET not in shown
    assert "visitor_token_days=30.0" in shown and "token_secrets=[...]" in shown
    with pytest.raises(msgspec.ValidationError, match="visitor_token_days"):
        Settings.from_env({"TAILOR_VISITOR_TOKEN_DAYS": "0"})


def test_keys_without_a_token_secret_are_refused_with_how_to_make_one() -> None:
    with pytest.raises(ValueError, match="TAILOR_TOKEN_SECRETS") as refused:
        Identity.from_settings(Settings(), keys=True)
    assert "secrets.token_urlsafe(32)" in str(refused.value)
    # the demo gets a random secret of its own
    demo = Identity.from_settings(Settings(demo=True), keys=False)
    assert len(demo.visitor_secrets) == 1 and len(demo.visitor_secrets[0]) >= 32
    assert demo.user_secrets == ()
    assert (
        demo.visitor_secrets
        != Identity.from_settings(Settings(demo=True), keys=False).visitor_secrets
    )


def test_secrets_come_from_the_setting_then_the_file(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# rotated 2026-01\n{'n' * 32}\n\n{'o' * 32}\n")
    settings = Settings(token_secrets=["f" * 32], token_secret_file=str(file), visitor_token_days=2)
    ident = Identity.from_settings(settings, keys=True)
    assert ident.visitor_secrets == (b"f" * 32, b"n" * 32, b"o" * 32)
    assert ident.max_age_seconds == 2 * DAY
    assert "f" * 32 not in repr(ident)
    only_file = Identity.from_settings(Settings(token_secret_file=str(file)), keys=True)
    assert only_file.visitor_secrets[0] == b"n" * 32


@pytest.mark.parametrize(
    ("values", "path", "message"),
    [
        (["short-secret"], None, "secret #1 has 12 bytes"),
        (["x" * 32, "tiny"], None, "secret #2 has 4 bytes"),
        ([], "/nonexistent/tokens", "cannot read the secret file"),
    ],
)
def test_bad_secrets_are_refused_without_showing_them(
    values: list[str], path: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        read_secrets(values, path, "TAILOR_TOKEN_SECRETS")
    assert "short-secret" not in str(refused.value) and "tiny" not in str(refused.value)
    assert "TAILOR_TOKEN_SECRETS" in str(refused.value)


def test_an_app_with_keys_and_no_token_secret_is_refused() -> None:
    from server.app import create_app

    with pytest.raises(ValueError, match="visitor token secret"):
        create_app(Settings(security=security_for_tests()))
    create_app(Settings(demo=True))  # the demo makes one


# --- the rules -------------------------------------------------------------------------------


def test_secret_keys_keep_their_ids_and_get_no_token() -> None:
    forged = request(visitor_id="crm-1", user_id="u-1", visitor_token="t1.x", user_token="u")
    verified = verify_request(identity(), forged, public=False)
    assert verified.request.visitor_id == "crm-1" and verified.request.user_id == "u-1"
    assert verified.request.visitor_token is None and verified.request.user_token is None
    assert verified.token is None and verified.check is None


def test_a_valid_young_token_keeps_the_visitor_and_is_sent_back() -> None:
    token = issue_visitor_token(SIGNING, "v-1", NOW - 3600)
    verified = verify_request(identity(), request(visitor_token=token), public=True)
    assert verified.check is TokenCheck.VALID
    assert verified.request.visitor_id == "v-1" and verified.token == token
    assert verified.request.visitor_token is None  # never reaches the decider or the log


def test_a_day_old_token_is_renewed() -> None:
    old = issue_visitor_token(SIGNING, "v-1", NOW - REISSUE_AFTER_SECONDS - 1)
    verified = verify_request(identity(), request(visitor_token=old), public=True)
    assert verified.request.visitor_id == "v-1"
    assert verified.token != old and token_issued_at(verified.token or "") == int(NOW)


def test_a_token_of_a_retired_secret_is_renewed_with_the_signing_one() -> None:
    rotated = identity(SIGNING, RETIRED)
    old = issue_visitor_token(RETIRED, "v-1", NOW - 60)
    verified = verify_request(rotated, request(visitor_token=old), public=True)
    assert verified.check is TokenCheck.VALID and verified.request.visitor_id == "v-1"
    assert verified.token == issue_visitor_token(SIGNING, "v-1", NOW)


@pytest.mark.parametrize(
    ("token", "outcome"),
    [
        (None, TokenCheck.MISSING),
        ("t1.garbage", TokenCheck.MALFORMED),
        (issue_visitor_token(b"f" * 32, "v-1", NOW), TokenCheck.BAD_SIGNATURE),
        (issue_visitor_token(SIGNING, "v-2", NOW), TokenCheck.OTHER_VISITOR),
        (issue_visitor_token(SIGNING, "v-1", NOW - 400 * DAY), TokenCheck.EXPIRED),
    ],
)
def test_without_a_valid_token_the_visit_is_a_new_visitor(
    token: str | None, outcome: TokenCheck
) -> None:
    verified = verify_request(identity(), request(visitor_token=token), public=True)
    assert verified.check is outcome
    new_id = verified.request.visitor_id
    assert new_id != "v-1" and MINTED.match(new_id)
    assert verified.token == issue_visitor_token(SIGNING, new_id, NOW)
    again = verify_request(identity(), request(visitor_token=token), public=True)
    assert again.request.visitor_id != new_id  # random, not derived from what was sent


def test_without_storage_consent_nothing_is_checked_or_issued() -> None:
    for consent in (PERSONAL, Consent()):
        verified = verify_request(identity(), request(consent=consent), public=True)
        assert verified.request.visitor_id == "v-1"
        assert verified.token is None and verified.check is None


@pytest.mark.parametrize(
    ("token", "kept"),
    [
        (None, False),
        (user_token(b"x" * 32, "u-1"), False),
        (user_token(USERS, "u-2"), False),
        (user_token(USERS, "u-1"), True),
    ],
)
def test_a_public_keys_user_id_needs_the_backends_signature(token: str | None, kept: bool) -> None:
    for consent in (STORE, PERSONAL):
        req = request(user_id="u-1", user_token=token, consent=consent)
        verified = verify_request(identity(), req, public=True)
        assert verified.request.user_id == ("u-1" if kept else None)
        assert verified.request.user_token is None
    no_secrets = Identity(visitor_secrets=(SIGNING,), clock=lambda: NOW)
    signed = request(user_id="u-1", user_token=user_token(USERS, "u-1"))
    assert verify_request(no_secrets, signed, public=True).request.user_id is None


# --- what a public key sees ------------------------------------------------------------------


def _decision(**fields: object) -> Decision:
    from sdk.schema import Lifecycle, Signals

    signals = Signals(
        device_type="desktop",
        os=None,
        browser=None,
        touch=False,
        referrer_class="direct",
        referrer_source=None,
        search_terms=None,
        country=None,
        local_hour=12,
        local_weekday=1,
    )
    base: dict[str, object] = {
        "decision_id": "d-1",
        "model_version": "m",
        "visitor_id": "v-1",
        "session_id": "s-1",
        "personalized": True,
        "persona": None,
        "segment": None,
        "lifecycle": Lifecycle(stage="new", rule="default"),
        "offers": [],
        "slots": {},
        "signals": signals,
        "reasons": [],
        "rfm": RfmResult(code="R5F5M5", r=5, f=5, m=5, score=5.0),
        "scores": {"churnProbability": 0.9, "expectedValue": 1200.0},
    }
    return Decision(**(base | fields))  # type: ignore[arg-type]


def test_public_decisions_hide_profile_scores_unless_the_bundle_lists_them() -> None:
    full = _decision()
    hidden = public_decision(full, "tok", ())
    assert hidden.rfm is None and hidden.scores is None and hidden.visitor_token == "tok"
    some = public_decision(full, None, ("rfm", "expectedValue"))
    assert some.rfm == full.rfm and some.scores == {"expectedValue": 1200.0}
    assert some.visitor_token is None
    plain = _decision(rfm=None, scores=None)
    assert public_decision(plain, None, ()) is plain  # nothing to change: no copy


def test_the_cache_key_tells_public_from_secret() -> None:
    req = request()
    public = DecisionCache.key(req, "m1", public=True)
    secret = DecisionCache.key(req, "m1")
    assert public is not None and secret is not None and public != secret
    cache = DecisionCache()
    cache.put(secret, ["hero"], b"secret-decision")
    assert cache.get(public, ["hero"]) is None
    cache.put(public, ["hero"], b"public-decision")
    assert cache.invalidate("v-1") == 2  # erasure drops both


def test_public_scores_listed_by_the_bundle_reach_public_keys(
    bundle_dir: Path, tmp_path: Path
) -> None:
    bundle = rfm_bundle(bundle_dir, tmp_path / "bundle", public_scores=["rfm"])
    body = {
        "visitorId": "v-1",
        "sessionId": "s-1",
        "consent": {"personalization": True, "storage": True},
        "behavior": {"purchases": 3, "revenue": 900.0, "daysSinceLastPurchase": 2},
    }
    with app_client(bundle_path=str(bundle)) as client:
        backend = client.post("/v1/decide", json=body).json()
        browser = client.post(
            f"/v1/decide?key={TEST_PUBLIC_KEY}",
            json=body,
            headers={"authorization": "", "origin": "https://shop.example.com"},
        )
        assert browser.status_code == 200, browser.text
    assert backend["rfm"] is not None and backend["visitorToken"] is None
    shown = browser.json()
    assert shown["rfm"] == backend["rfm"] and shown["visitorToken"]
    assert MINTED.match(shown["visitorId"])
