"""Each worker's subscription to the invalidation channel of the Redis profile store
(:mod:`server.stores.redis`): an erasure or a decisive event publishes the visitor there, and
every worker of every replica drops its cached decisions of that visitor.

Must not import model_export or litestar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.stores.redis_conn import RedisState

__all__ = ["InvalidationListener"]

log = logging.getLogger("tailor.server.state")


class InvalidationListener:
    """Every worker's subscription to the ``invalidate`` channel: each visitor published there
    is passed to ``on_visitor`` (the worker drops its cached decisions); after every
    (re)subscription ``on_subscribed`` runs (the worker drops its whole decision cache, since
    invalidations sent while it was not listening were missed).

    It has its own connection (a subscription blocks it, and waits longer than a call's
    deadline), with a health check every few seconds, and reconnects after a failure.

    Args:
        state: the worker's connection (its URL and channel names are reused).
        on_visitor: called with each invalidated visitor id.
        on_subscribed: called once subscribed (again after each reconnection).
        retry_seconds: pause before reconnecting.
    """

    def __init__(
        self,
        state: RedisState,
        on_visitor: Callable[[str], object],
        on_subscribed: Callable[[], object],
        *,
        retry_seconds: float = 0.5,
    ) -> None:
        self.channel = state.key("invalidate")
        self._client = aioredis.Redis.from_url(
            state.url,
            socket_connect_timeout=max(state.timeout, 1.0),
            socket_timeout=None,
            health_check_interval=5,
        )
        self._on_visitor = on_visitor
        self._on_subscribed = on_subscribed
        self._retry = retry_seconds
        self.subscribed = False
        self.received = 0

    async def run(self) -> None:
        """Listen until cancelled."""
        try:
            while True:
                try:
                    await self._listen()
                except (RedisError, OSError) as exc:
                    if self.subscribed:
                        log.warning(
                            "invalidation channel lost (%s); reconnecting", type(exc).__name__
                        )
                    self.subscribed = False
                await asyncio.sleep(self._retry)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await self._client.aclose()

    async def _listen(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            self.subscribed = True
            self._on_subscribed()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                data = message.get("data")
                if isinstance(data, bytes):
                    self.received += 1
                    self._on_visitor(data.decode("utf-8", "replace"))
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
