"""Fixtures the profile-store tests share: a settable clock, and each store (embedded, and
Redis on a real ``redis-server``) on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.stores.memory import MemoryProfileStore
from tests.server.test_stores import Clock, redis_store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Any]:
    """The embedded store, then a Redis store on its own connection and key prefix."""
    if request.param == "memory":
        yield MemoryProfileStore(clock=clock)
        return
    shared = redis_store(request.getfixturevalue("redis_server").url, clock)
    yield shared
    await shared.state.close()
