"""``Client.record_conversions`` and ``AsyncClient.record_conversions`` against a real keyed
server on 127.0.0.1: confirmed orders counted once, in calls of 100, with typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdk import APIError, AsyncClient, Client, TailorError
from sdk.schema import Conversion
from server.security import hash_key
from tests.conftest import LiveServer, keyed_server

PUBLIC = "pk_conversions_test_abcdefghijklmnopqrstuvwxyz"
SECRET = "sk_conversions_test_abcdefghijklmnopqrstuvwxyz"
KEYS: dict[str, Any] = {
    "per_key_per_minute": 0,
    "per_ip_per_minute": 0,
    "keys": [
        {
            "id": "site",
            "kind": "public",
            "sha256": hash_key(PUBLIC),
            "origins": ["https://shop.example.com"],
        },
        {"id": "backend", "kind": "secret", "sha256": hash_key(SECRET)},
    ],
}


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with keyed_server(bundle_dir, tmp_path_factory.mktemp("conversions"), KEYS) as live:
        yield live


def orders(prefix: str, n: int, value: float = 25.0) -> list[Conversion]:
    return [
        Conversion(visitor_id=f"{prefix}-visitor-{i}", order_id=f"{prefix}-{i}", value=value)
        for i in range(n)
    ]


def test_orders_are_counted_once(server: LiveServer) -> None:
    with Client(server.url, api_key=SECRET, timeout=5) as client:
        first = client.record_conversions(orders("sync", 2))
        assert (first.accepted, first.duplicates) == (2, 0)
        again = client.record_conversions(orders("sync", 3))  # a retry, and one more
        assert (again.accepted, again.duplicates) == (1, 2)
        empty = client.record_conversions([])
        assert (empty.accepted, empty.duplicates) == (0, 0)


def test_long_lists_go_in_calls_of_100(server: LiveServer) -> None:
    with Client(server.url, api_key=SECRET, timeout=5) as client:
        recorded = client.record_conversions(orders("long", 250))
    assert (recorded.accepted, recorded.duplicates) == (250, 0)


def test_refusals_are_typed_errors(server: LiveServer) -> None:
    with (
        Client(server.url, api_key=SECRET, timeout=5) as client,
        pytest.raises(APIError) as invalid,
    ):
        client.record_conversions(orders("bad", 1, value=-5.0))
    assert invalid.value.status == 422 and "$.conversions[0].value" in str(invalid.value)
    with Client(server.url, api_key=PUBLIC, timeout=5) as key, pytest.raises(APIError) as public:
        key.record_conversions(orders("public", 1))
    assert public.value.status == 403
    with Client(server.url, api_key=SECRET, timeout=5) as client:  # nothing was counted
        recorded = client.record_conversions(orders("public", 1))
        assert recorded.accepted == 1
        with pytest.raises(TypeError, match="Conversion"):
            client.record_conversions([{"orderId": "x"}])  # type: ignore[list-item]


def test_a_local_client_without_a_server_refuses(bundle_dir: Path) -> None:
    client = Client(mode="local", bundle=bundle_dir)
    with client, pytest.raises(TailorError, match="no server"):
        client.record_conversions(orders("none", 1))


def test_the_async_client_records_conversions(server: LiveServer) -> None:
    async def run() -> tuple[int, int, int]:
        async with AsyncClient(server.url, api_key=SECRET, timeout=5) as client:
            first = await client.record_conversions(orders("async", 120))
            again = await client.record_conversions(orders("async", 1))
            return first.accepted, again.accepted, again.duplicates

    assert asyncio.run(run()) == (120, 0, 1)
