"""The event guard in Redis: the decisions issued to each visitor, the event ids seen, the
decisions that converted and the order ids counted, shared by every worker and replica.

The tables of :class:`server.stores.guard.MemoryEventGuard` become keys with a time to live:
``{v:<visitor>}:gd:<decision>`` (issued, 24 h), ``{v:<visitor>}:ge:<event>`` (seen, 24 h),
``{v:<visitor>}:gc:<decision>`` (converted, 24 h) and ``order:<order id>`` (30 days). A
decision is issued to one visitor, so keying the other tables by visitor too loses nothing and
keeps a visitor's keys in one Redis Cluster slot. A batch is checked and recorded by ONE Lua
script: every event is checked in order, exactly as the memory guard does, and nothing is
written unless all pass, so a batch retried on two replicas at once passes once.

An ``issue`` that fails (Redis down) is kept in a bounded local buffer and written with the
next successful calls, so that events of decisions made during an outage are not refused as
forged when the spooled batches are replayed. A call made for a request carries at most
:data:`CATCH_UP` of the buffered decisions besides its own, so a backlog costs each request a
bounded amount of work and drains over several calls (and the periodic flush), never in one
pipeline too long to finish within the call's deadline, which would hand the whole backlog
back and make every following call try again with more.

Must not import model_export or litestar.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from sdk.schema import Event
from server.stores.base import PipelineWrite
from server.stores.guard import DECISION_TTL, ORDER_TTL, GuardRefusal, refusal_for
from server.stores.redis_conn import RedisState, StateUnavailable

__all__ = ["CATCH_UP", "CHECK_AND_RECORD_LUA", "CLAIM_ORDERS_LUA", "RedisEventGuard"]

#: The most buffered issued decisions one call writes besides its own (the oldest first).
CATCH_UP = 256

#: KEYS: three per event (issued, seen, converted); ARGV[1]: time to live in ms, ARGV[2]: the
#: batch id ('' none), ARGV[2 + i]: the flags of event i (``d`` has a decision id, ``e`` an
#: event id, ``c`` is a conversion). Seen event ids hold the id of the batch that recorded
#: them. Returns ``{-1, 0}`` when every event passes (and records them), ``{-2, 0}`` when the
#: first event id was recorded by this very batch (it passed before), else ``{index, code}``
#: of the first failure, codes as :data:`server.stores.guard.NO_DECISION` and its neighbours.
CHECK_AND_RECORD_LUA = """
local ttl, batch, n = ARGV[1], ARGV[2], #ARGV - 2
if batch ~= '' and redis.call('GET', KEYS[2]) == batch then return {-2, 0} end
local seen, converting = {}, {}
for i = 1, n do
  local flags, k = ARGV[i + 2], 3 * i - 2
  if not string.find(flags, 'd', 1, true) then return {i - 1, 1} end
  if redis.call('EXISTS', KEYS[k]) == 0 then return {i - 1, 2} end
  if not string.find(flags, 'e', 1, true) then return {i - 1, 3} end
  if seen[KEYS[k + 1]] or redis.call('EXISTS', KEYS[k + 1]) == 1 then return {i - 1, 4} end
  seen[KEYS[k + 1]] = true
  if string.find(flags, 'c', 1, true) then
    if converting[KEYS[k + 2]] or redis.call('EXISTS', KEYS[k + 2]) == 1 then
      return {i - 1, 5}
    end
    converting[KEYS[k + 2]] = true
  end
end
local mark = batch ~= '' and batch or '1'
for key in pairs(seen) do redis.call('SET', key, mark, 'PX', ttl) end
for key in pairs(converting) do redis.call('SET', key, '1', 'PX', ttl) end
return {-1, 0}
"""


#: KEYS: order ids; ARGV[1]: their time to live in ms. 1 for each claimed now, 0 for a duplicate.
CLAIM_ORDERS_LUA = """
local claimed = {}
for i, key in ipairs(KEYS) do
  claimed[i] = redis.call('SET', key, '1', 'NX', 'PX', ARGV[1]) and 1 or 0
end
return claimed
"""


class RedisEventGuard:
    """The shared :class:`~server.stores.guard.EventGuard`.

    Args:
        state: the worker's Redis handle (deadline, breaker, key layout).
        decision_ttl: seconds decisions, event ids and conversions are remembered.
        order_ttl: seconds order ids are remembered.
        max_pending: issued decisions buffered while Redis is down (oldest dropped first).
    """

    def __init__(
        self,
        state: RedisState,
        *,
        decision_ttl: float = DECISION_TTL,
        order_ttl: float = ORDER_TTL,
        max_pending: int = 100_000,
    ) -> None:
        self.state = state
        self._ttl_ms = round(decision_ttl * 1000)
        self._order_ttl_ms = round(order_ttl * 1000)
        self._script = state.client.register_script(CHECK_AND_RECORD_LUA)
        self._orders = state.client.register_script(CLAIM_ORDERS_LUA)
        #: (decision id, visitor id, monotonic time issued) not yet written
        self._pending: deque[tuple[str, str, float]] = deque(maxlen=max_pending)
        #: issued decisions dropped from a full buffer (their events will be refused)
        self.pending_dropped = 0

    def _issued_key(self, visitor_id: str, decision_id: str) -> str:
        return self.state.visitor_key(visitor_id, "gd:" + decision_id)

    async def issue(self, decision_id: str, visitor_id: str) -> None:
        """Write the issued decision (with up to :data:`CATCH_UP` buffered ones); never raises:
        with Redis down it is buffered and written by a later call that gets through."""
        batch = self._take([(decision_id, visitor_id, time.monotonic())])
        with contextlib.suppress(StateUnavailable):  # else given back to the buffer
            await self._write(batch)

    @property
    def pending(self) -> int:
        """Issued decisions waiting for Redis."""
        return len(self._pending)

    def issuing(self, issued: Sequence[tuple[str, str]]) -> PipelineWrite:
        """The issued decisions (and any buffered ones) as writes for the caller's pipeline;
        if that pipeline fails they go back to the buffer."""
        batch = self._take([(d, v, time.monotonic()) for d, v in issued])

        return PipelineWrite(
            queue=lambda pipe: self._queue(pipe, batch), failed=lambda: self._give_back(batch)
        )

    def _take(self, new: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
        """The oldest buffered issued decisions (at most :data:`CATCH_UP`) followed by ``new``,
        taken out of the buffer (a concurrent call writes the ones after them)."""
        pending = self._pending
        batch = [pending.popleft() for _ in range(min(len(pending), CATCH_UP))]
        batch.extend(new)
        return batch

    def _give_back(self, batch: list[tuple[str, str, float]]) -> None:
        """Put a batch whose call failed back at the front of the buffer; when that overfills
        it, the oldest entries are dropped (and counted)."""
        pending = self._pending
        assert pending.maxlen is not None
        over = len(pending) + len(batch) - pending.maxlen
        if over > 0:
            self.pending_dropped += over
            batch = batch[over:]
        pending.extendleft(reversed(batch))

    async def _write(self, batch: list[tuple[str, str, float]]) -> None:
        """One pipelined call writing ``batch``; given back to the buffer when it fails.

        Raises:
            StateUnavailable: Redis did not take them.
        """

        async def write(client: aioredis.Redis) -> Any:
            pipe = client.pipeline(transaction=False)
            self._queue(pipe, batch)
            return await pipe.execute()

        try:
            await self.state.call(write)
        except StateUnavailable:
            self._give_back(batch)
            raise

    def _queue(self, pipe: Any, batch: Sequence[tuple[str, str, float]]) -> None:
        """Add a ``SET`` per issued decision, each with what is left of its time to live."""
        now = time.monotonic()
        for decision_id, visitor_id, at in batch:
            left = self._ttl_ms - round((now - at) * 1000)
            if left > 0:
                pipe.set(self._issued_key(visitor_id, decision_id), b"1", px=left)

    async def flush(self) -> None:
        """Write every buffered issued decision, each with what is left of its time to live,
        :data:`CATCH_UP` per call.

        Raises:
            StateUnavailable: Redis did not take them (what is not written stays buffered).
        """
        while self._pending:
            await self._write(self._take([]))

    async def check_and_record(
        self, events: Sequence[Event], *, batch_id: str | None = None
    ) -> GuardRefusal | None:
        """Check and record a public-key batch atomically (one script call); with a
        ``batch_id``, a batch that passed under that id passes again (a retried check whose
        first answer was lost).

        Raises:
            StateUnavailable: Redis did not answer; nothing is known to be recorded.
        """
        if not events:
            return None
        if self._pending:  # this batch may name a decision issued during an outage
            await self.flush()
        keys: list[str] = []
        flags: list[str] = []
        for event in events:
            visitor, decision = event.visitor_id, event.decision_id or ""
            keys.append(self._issued_key(visitor, decision))
            keys.append(self.state.visitor_key(visitor, "ge:" + (event.event_id or "")))
            keys.append(self.state.visitor_key(visitor, "gc:" + decision))
            flags.append(
                ("d" if event.decision_id is not None else "")
                + ("e" if event.event_id is not None else "")
                + ("c" if event.type == "conversion" else "")
            )
        args: list[Any] = [self._ttl_ms, batch_id or "", *flags]
        result = await self.state.call(lambda c: self._script(keys=keys, args=args, client=c))
        index, code = int(result[0]), int(result[1])
        return None if index < 0 else refusal_for(index, code)

    async def claim_orders(self, order_ids: Sequence[str]) -> list[bool]:
        """``SET NX`` each order id for 30 days, in one script (all or none are claimed):
        True the first time.

        Raises:
            StateUnavailable: Redis did not answer (no order is known to be counted).
        """
        if not order_ids:
            return []
        keys = [self.state.key("order", order_id) for order_id in order_ids]
        args = [self._order_ttl_ms]
        claimed = await self.state.call(lambda c: self._orders(keys=keys, args=args, client=c))
        return [bool(c) for c in claimed]
