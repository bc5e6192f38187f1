"""Order-history profiles pushed by the site's backend (issue 17, "profiles for known customers
at decision time"), against real servers on 127.0.0.1: the embedded store (one server), and
Redis (two replicas sharing one ``redis-server``: pushed to one, decided on the other).

A customer logs in on a new device (a public-key decide with a signed user token) and is
decided with the history pushed for their user id; live conversions after the push count on
top, a re-push with a later ``asOf`` replaces the base without counting them twice, the same
push again changes nothing and an older one is ignored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk import AsyncClient, Client
from sdk.errors import APIError
from sdk.schema import CustomerProfile
from sdk.tokens import user_token
from tests.conftest import FIXED_NOW, TEST_USER_TOKEN_SECRET, LiveServer, keyed_server
from tests.server.test_identity_live import rfm_bundle
from tests.server.test_state_replicas import BROWSER, KEYS, PUBLIC, SECRET, replica_env

DAY = timedelta(days=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Replicas:
    """Push to the first server, read and decide on the last (the same one for memory)."""

    def __init__(self, servers: list[LiveServer]) -> None:
        self.push_url = servers[0].url
        self.read_url = servers[-1].url

    def client(self) -> Client:
        return Client(self.push_url, api_key=SECRET, timeout=10, breaker=False)

    def stored(self, visitor: str) -> dict[str, Any]:
        r = httpx.get(
            f"{self.read_url}/v1/visitors/{visitor}",
            headers={"authorization": f"Bearer {SECRET}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        behavior: dict[str, Any] = r.json()["behavior"]
        return behavior

    def login(self, user: str, session: str, visitor: str = "anyone", **extra: Any) -> Any:
        """A public-key decide of a visitor logged in as ``user`` (signed user token)."""
        body = {
            "visitorId": visitor,
            "sessionId": session,
            "userId": user,
            "userToken": user_token(TEST_USER_TOKEN_SECRET, user),
            "consent": {"personalization": True, "storage": True},
            "context": {"page": {"url": "https://shop.example.com/", "path": "/"}},
            "slots": ["hero"],
            "timestamp": FIXED_NOW.isoformat(),
            **extra,
        }
        r = httpx.post(
            f"{self.read_url}/v1/decide?key={PUBLIC}",
            content=json.dumps(body),
            headers=BROWSER,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        decision = r.json()
        assert not any(x["code"] == "state.unavailable" for x in decision["reasons"])
        return decision

    def convert(self, visitor: str, value: float, when: Any) -> None:
        order = {
            "visitorId": visitor,
            "orderId": uuid.uuid4().hex,
            "value": value,
            "timestamp": when.isoformat(),
        }
        r = httpx.post(
            f"{self.push_url}/v1/conversions",
            json={"conversions": [order]},
            headers={"authorization": f"Bearer {SECRET}"},
            timeout=10,
        )
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text


@pytest.fixture(scope="module", params=["memory", "redis"])
def api(
    request: pytest.FixtureRequest,
    bundle_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp(f"profiles-{request.param}")
    bundle = rfm_bundle(bundle_dir, root / "bundle", public_scores=["rfm"])
    with ExitStack() as stack:
        servers: list[LiveServer] = []
        if request.param == "memory":
            env = {"TAILOR_NEW_PROFILES_PER_MINUTE": "0", "TAILOR_RELOAD_INTERVAL": "0"}
            servers.append(stack.enter_context(keyed_server(bundle, root, KEYS, env)))
        else:
            redis = request.getfixturevalue("redis_server")
            prefix = f"profiles-{uuid.uuid4().hex[:6]}"
            for name in ("a", "b"):
                here = root / name
                here.mkdir()
                env = replica_env(redis.url, prefix, here)
                server = keyed_server(bundle, here, KEYS, env, extra_args=["--workers", "2"])
                servers.append(stack.enter_context(server))
        yield Replicas(servers)


def history(user: str, as_of: Any, purchases: int, revenue: float, **extra: Any) -> CustomerProfile:
    times = {"first_purchase_at": FIXED_NOW - 300 * DAY, "last_purchase_at": FIXED_NOW - 3 * DAY}
    return CustomerProfile(
        user_id=user, as_of=as_of, purchases=purchases, revenue=revenue, **(times | extra)
    )


def test_a_customer_logging_in_on_a_new_device_is_decided_with_their_history(
    api: Replicas,
) -> None:
    user, stranger = f"cust-{uuid.uuid4().hex[:8]}", f"cust-{uuid.uuid4().hex[:8]}"
    # a customer the shop knows nothing about: no purchase, so no or a low RFM code
    unknown = api.login(stranger, "s0")
    assert unknown["rfm"] is None or unknown["rfm"]["f"] == 1
    row = history(user, FIXED_NOW - 2 * DAY, 12, 1200.0, categories=["shoes", "bags"])
    with api.client() as client:
        pushed = client.push_profiles([row])
    assert (pushed.written, pushed.unchanged, pushed.stale, pushed.invalid) == (1, 0, 0, 0)
    assert [(r.user_id, r.status) for r in pushed.results] == [(user, "written")]
    # the first decide on a new device (minted visitor) already reads the pushed history
    first = api.login(user, "s1")
    assert first["rfm"]["f"] == 5 and first["rfm"]["m"] == 5
    assert first["lifecycle"]["stage"] != unknown["lifecycle"]["stage"] or first["rfm"]
    behavior = api.stored(first["visitorId"])
    assert (behavior["purchases"], behavior["revenue"]) == (12, 1200.0)
    assert behavior["daysSinceLastPurchase"] == pytest.approx(3, abs=0.01)
    assert behavior["daysSinceFirstPurchase"] == pytest.approx(300, abs=0.01)
    assert {"shoes", "bags"} <= set(behavior["categoriesViewed"])
    # a second device of the same person reads the same profile
    other = api.login(user, "s2", visitor="anyone-else")
    assert other["visitorId"] != first["visitorId"] and other["rfm"] == first["rfm"]
    # a public key naming the user without its signed token, or without storage consent,
    # reads nothing of the pushed history
    forged = api.login(user, "s3", visitor="intruder", userToken="u1.forged")
    assert forged["rfm"] is None or forged["rfm"]["f"] == 1
    no_storage = api.login(
        user, "s4", visitor="careful", consent={"personalization": True, "storage": False}
    )
    assert no_storage["rfm"] is None or no_storage["rfm"]["f"] == 1


def test_live_conversions_and_re_pushes_never_count_twice(api: Replicas) -> None:
    user = f"cust-{uuid.uuid4().hex[:8]}"
    base = FIXED_NOW - 2 * DAY
    with api.client() as client:
        assert client.push_profiles([history(user, base, 5, 500.0)]).written == 1
        visitor = api.login(user, "s1")["visitorId"]
        assert api.stored(visitor)["purchases"] == 5
        # a purchase after asOf counts on top; one dated before it is in the history already
        api.convert(visitor, 50.0, FIXED_NOW - DAY)
        api.convert(visitor, 70.0, FIXED_NOW - 3 * DAY)
        assert (api.stored(visitor)["purchases"], api.stored(visitor)["revenue"]) == (6, 550.0)
        # the same push again (a retried nightly job): unchanged, nothing counted twice
        again = client.push_profiles([history(user, base, 5, 500.0)])
        assert (again.written, again.unchanged) == (0, 1)
        assert api.stored(visitor)["purchases"] == 6
        # the next night's history has the live purchase in it: it replaces the base
        later = FIXED_NOW - timedelta(hours=1)
        nightly = history(user, later, 6, 550.0, last_purchase_at=FIXED_NOW - DAY)
        assert client.push_profiles([nightly]).written == 1
        assert (api.stored(visitor)["purchases"], api.stored(visitor)["revenue"]) == (6, 550.0)
        assert api.stored(visitor)["daysSinceLastPurchase"] == pytest.approx(1, abs=0.01)
        # an older history arriving late is ignored
        old = client.push_profiles([history(user, base, 5, 500.0)])
        assert old.stale == 1 and old.results[0].reason is not None
        assert api.stored(visitor)["purchases"] == 6
        # and a purchase now still counts once on top of the newest base
        api.convert(visitor, 10.0, FIXED_NOW)
        assert (api.stored(visitor)["purchases"], api.stored(visitor)["revenue"]) == (7, 560.0)


@pytest.mark.anyio
async def test_the_async_client_reports_each_row(api: Replicas) -> None:
    good = history(f"cust-{uuid.uuid4().hex[:8]}", FIXED_NOW - DAY, 2, 20.0)
    bad = msgspec_replace(good, user_id="cust-bad", first_purchase_at=FIXED_NOW - DAY / 2)
    async with AsyncClient(api.push_url, api_key=SECRET, timeout=10, breaker=False) as client:
        pushed = await client.push_profiles([good, bad])
    assert (pushed.written, pushed.invalid) == (1, 1)
    assert pushed.results[1].status == "invalid"
    assert "firstPurchaseAt" in (pushed.results[1].reason or "")


def test_a_public_key_cannot_push_and_a_bad_row_is_a_422(api: Replicas) -> None:
    row = {"userId": "u1", "asOf": FIXED_NOW.isoformat(), "purchases": 1, "revenue": 1.0}
    browser = {**BROWSER, "content-type": "application/json"}
    r = httpx.post(
        f"{api.push_url}/v1/profiles/import?key={PUBLIC}",
        json={"profiles": [row]},
        headers=browser,
        timeout=10,
    )
    assert r.status_code in (401, 403)
    assert r.headers["content-type"].startswith("application/problem+json")
    with (
        Client(api.push_url, api_key=PUBLIC, timeout=10, breaker=False) as client,
        pytest.raises(APIError) as refused,
    ):
        client.push_profiles([history("u1", FIXED_NOW, 1, 1.0)])
    assert refused.value.status in (401, 403)
    bad = {**row, "purchases": -1}
    r = httpx.post(
        f"{api.push_url}/v1/profiles/import",
        json={"profiles": [bad]},
        headers={"authorization": f"Bearer {SECRET}"},
        timeout=10,
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "$.profiles[0].purchases" in r.json()["detail"]


def msgspec_replace(row: CustomerProfile, **changes: Any) -> CustomerProfile:
    import msgspec

    return msgspec.structs.replace(row, **changes)
