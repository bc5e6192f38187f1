"""Bundle reloads across replicas, over Redis pub/sub.

``POST /v1/admin/reload`` on one worker checks its own bundle and :meth:`ReloadBus.publish`\\es
on the channel ``<prefix>:reload``; every worker of every replica runs
:meth:`ReloadBus.listen` in its lifespan and checks its bundle path at once (forced) when a
message arrives from another worker. A replica that refuses the bundle keeps serving the one
it has and says so in ``/readyz`` (``lastReloadRefused``), like a local reload.

The subscription has its own connection (a blocking read would trip the store's short
deadline). When Redis goes away the listener reconnects with a capped backoff, and after
each reconnect checks the bundle path (not forced: a changed bundle is loaded, an unchanged
one costs a ``stat``), so a reload published while it was disconnected is not missed for
long; the periodic poll (``TAILOR_RELOAD_INTERVAL``) stays as the last resort.

Must not import model_export or litestar.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.stores.redis_conn import RedisState, StateUnavailable

__all__ = ["ReloadBus", "publish_reload"]

log = logging.getLogger("tailor.server")


class ReloadBus:
    """One worker's end of the reload channel.

    Args:
        state: the worker's Redis handle (URL, key prefix, deadline for publishing).
        retry: first pause before reconnecting, in seconds; doubled up to ``max_retry``.
        max_retry: longest pause between reconnection attempts.
    """

    def __init__(self, state: RedisState, *, retry: float = 0.2, max_retry: float = 5.0) -> None:
        self.state = state
        self.channel = state.key("reload")
        self.sender = uuid.uuid4().hex.encode()
        self.retry = retry
        self.max_retry = max_retry
        #: reload messages received from other workers, and reconnections after a failure
        self.received = 0
        self.reconnects = 0
        #: whether the subscription is live now
        self.subscribed = False

    async def publish(self) -> int:
        """Tell every other worker to reload; the number of subscribers that got it.

        Raises:
            StateUnavailable: Redis did not take the message.
        """
        published = await self.state.call(lambda c: c.publish(self.channel, self.sender))
        return int(published)

    def _client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.state.url,
            socket_connect_timeout=max(self.state.timeout, 1.0),
            socket_keepalive=True,
            health_check_interval=10,
            decode_responses=False,
        )

    async def listen(
        self,
        on_reload: Callable[[bool], Awaitable[object]],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Subscribe and call ``on_reload(True)`` for every message of another worker, and
        ``on_reload(False)`` after each reconnection; runs until cancelled."""
        pause = self.retry
        started = False
        first = True
        while True:
            client = self._client()
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                self.subscribed = True
                if not started:
                    started = True
                    task_status.started()
                if not first:
                    self.reconnects += 1
                    log.info("reload channel subscribed again")
                    await on_reload(False)
                first, pause = False, self.retry
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    if message.get("data") == self.sender:
                        continue  # this worker published it and has reloaded already
                    self.received += 1
                    await on_reload(True)
            except (RedisError, OSError) as exc:
                if self.subscribed:
                    log.warning("reload channel lost (%s); reconnecting", type(exc).__name__)
                self.subscribed = False
                first = False
                if not started:
                    started = True
                    task_status.started()
            finally:
                self.subscribed = False
                with anyio.CancelScope(shield=True):
                    await client.aclose()
            await anyio.sleep(pause)
            pause = min(pause * 2, self.max_retry)


async def publish_reload(bus: ReloadBus | None) -> int | None:
    """Tell the other workers and replicas to reload: how many workers listen, or None when
    there is no shared state or Redis did not take the message (logged; each replica's
    periodic poll remains)."""
    if bus is None:
        return None
    try:
        return await bus.publish()
    except StateUnavailable as exc:
        log.warning("reload not broadcast to the other replicas: %s", exc)
        return None
