"""Identity merge across replicas (issue 16): two server processes of two workers each, sharing
one real ``redis-server``, requests alternating between them. A person browses anonymously on a
phone (the tag: public key) and on a laptop (the site's backend: secret key), then logs in on
both; the profile read through either visitor on either replica then has both pasts, and an
erasure of either visitor erases the person."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk.tokens import user_token
from tests.conftest import TEST_USER_TOKEN_SECRET, LiveServer, keyed_server
from tests.server.test_state_replicas import (
    BROWSER,
    KEYS,
    PUBLIC,
    Alternating,
    decided,
    replica_env,
    sale,
    visit,
)


@pytest.fixture(scope="module")
def api(
    bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory, redis_server: Any
) -> Iterator[Alternating]:
    prefix = f"merge-{uuid.uuid4().hex[:6]}"
    with ExitStack() as stack:
        servers: list[LiveServer] = []
        for name in ("a", "b"):
            root = tmp_path_factory.mktemp(f"merge-replica-{name}")
            env = replica_env(redis_server.url, prefix, root)
            servers.append(
                stack.enter_context(
                    keyed_server(bundle_dir, root, KEYS, env, extra_args=["--workers", "2"])
                )
            )
        yield Alternating(servers)


def phone_decide(api: Alternating, body: dict[str, Any]) -> dict[str, Any]:
    return decided(api.post(f"/v1/decide?key={PUBLIC}", body, BROWSER))


def test_phone_and_laptop_are_one_profile_on_every_replica_until_erased(api: Alternating) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    # the phone, anonymous: a minted visitor, 3 sessions
    first = phone_decide(api, visit("anyone", "p0"))
    phone, token = first["visitorId"], first["visitorToken"]
    for i in (1, 2):
        phone_decide(api, visit(phone, f"p{i}", visitorToken=token))
    # the laptop, anonymous: 2 sessions and 2 purchases (the backend reports them)
    laptop = f"laptop-{uuid.uuid4().hex[:8]}"
    for i in range(2):
        decided(api.post("/v1/decide", visit(laptop, f"l{i}")))
    for value in (10.0, 5.0):
        assert api.post("/v1/events", {"events": [sale(laptop, value)]}).status_code == 202
    assert api.get(f"/v1/visitors/{phone}").json()["behavior"]["purchases"] == 0

    # both log in: the phone with a user token signed by the site's backend, the laptop's
    # backend with its secret key
    signed = user_token(TEST_USER_TOKEN_SECRET, user)
    phone_decide(api, visit(phone, "p3", visitorToken=token, userId=user, userToken=signed))
    decided(api.post("/v1/decide", visit(laptop, "l2", userId=user)))

    for _ in range(4):  # every worker of both replicas, through either visitor
        for visitor in (phone, laptop):
            behavior = api.get(f"/v1/visitors/{visitor}").json()["behavior"]
            # 4 phone sessions + 3 laptop sessions, the laptop's purchases
            assert behavior["sessionCount"] == 7
            assert (behavior["purchases"], behavior["revenue"]) == (2, 15.0)
    # a purchase on the phone now counts for the laptop too
    assert api.post("/v1/events", {"events": [sale(phone, 7.0)]}).status_code == 202
    for _ in range(2):
        behavior = api.get(f"/v1/visitors/{laptop}").json()["behavior"]
        assert (behavior["purchases"], behavior["revenue"]) == (3, 22.0)

    # erasing the phone erases the person: the user's profile and the laptop's too
    assert api.delete(f"/v1/visitors/{phone}").status_code == 204
    for _ in range(4):
        assert api.get(f"/v1/visitors/{phone}").status_code == 404
        assert api.get(f"/v1/visitors/{laptop}").status_code == 404
    mine = httpx.post(
        f"{api.url()}/v1/me?key={PUBLIC}", json={"visitorToken": token}, headers=BROWSER
    )
    assert mine.status_code == 200 and mine.json()["stored"] is False


def test_a_visitor_forgetting_itself_erases_the_linked_laptop(api: Alternating) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    signed = user_token(TEST_USER_TOKEN_SECRET, user)
    first = phone_decide(api, visit("anyone", "p0", userId=user, userToken=signed))
    phone, token = first["visitorId"], first["visitorToken"]
    laptop = f"laptop-{uuid.uuid4().hex[:8]}"
    decided(api.post("/v1/decide", visit(laptop, "l0", userId=user)))
    assert api.get(f"/v1/visitors/{laptop}").json()["behavior"]["sessionCount"] == 2
    forget = api.post(f"/v1/me/forget?key={PUBLIC}", {"visitorToken": token}, BROWSER)
    assert forget.status_code == 200 and forget.json() == {"erased": True}
    for _ in range(4):
        assert api.get(f"/v1/visitors/{laptop}").status_code == 404
        assert api.get(f"/v1/visitors/{phone}").status_code == 404
