"""Pushed order histories in Redis (``POST /v1/profiles/import``): each user's record ``U``
(``{v:<user id>}``) gets its history as the base of its purchase counts
(:func:`~server.stores.base.with_history`).

A batch costs two round trips: one pipeline of ``GET`` s of the users' records, then one
pipeline of :data:`PUSH_LUA` calls, a compare-and-set per user as the store's other writes
are (:data:`server.stores.redis.WRITE_LUA`): the record is written only when it is still the
one the new record was computed from, else computed again on the record as it is now (a
decide or a conversion of the same user on another replica is then counted, not lost). A
written record drops the pinned decisions of the user's linked visitors and publishes them on
the ``invalidate`` channel, so every worker decides them again on the new history. A record
erased while its history was being pushed stays erased (the erasure wins; the row is
reported ``stale``).

Must not import model_export or litestar.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis

from server.stores.base import History, ProfileRecord, Pushed, with_history
from server.stores.redis_conn import ATTEMPTS, RedisState, StateUnavailable, lost
from server.stores.redis_links import user_key

__all__ = ["PUSH_LUA", "push"]

#: KEYS: the user's record, its linked visitors. ARGV: 1 the record the new one was computed
#: from ('' none), 2 the new record ('' unchanged: only its life renewed), 3 its time to live
#: (ms), 4 the invalidation channel, 5 and 6 what goes before and after a visitor id in the key
#: of its link, 7 and 8 in the key of its pinned decision. Returns {1, {visitor...}} written,
#: {2} unchanged, {0, record} changed underneath (the record as it is now).
PUSH_LUA = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {0, cur} end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
elseif cur ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
local members = redis.call('SMEMBERS', KEYS[2])
if #members > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
for _, v in ipairs(members) do
  redis.call('PEXPIRE', ARGV[5] .. v .. ARGV[6], ARGV[3])
  if ARGV[2] ~= '' then
    redis.call('DEL', ARGV[7] .. v .. ARGV[8])
    redis.call('PUBLISH', ARGV[4], v)
  end
end
if ARGV[2] == '' then return {2} end
return {1, members}
"""
_PUSH_SHA = hashlib.sha1(PUSH_LUA.encode()).hexdigest()
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ProfileRecord)

#: The store's script runner: (sha, source), argument tuples, key count -> answers in order.
Scripts = Callable[[tuple[str, str], Sequence[tuple[Any, ...]], int], Awaitable[list[Any]]]


def _outcome(current: bytes, history: History, now: datetime) -> tuple[str, bytes]:
    """``stale``, ``unchanged`` or ``written`` for ``history`` on the stored ``current``
    (empty: none), and the record to write (empty unless written)."""
    old = _decoder.decode(current) if current else None
    if old is not None and old.history is not None and history.as_of < old.history.as_of:
        return "stale", b""
    new = with_history(old, history, now)
    if old is not None and new == old:
        return "unchanged", b""
    return "written", _encoder.encode(new)


async def push(
    state: RedisState,
    scripts: Scripts,
    histories: Sequence[tuple[str, History]],
    now: datetime,
    *,
    ttl_ms: str,
    channel: str,
) -> list[Pushed]:
    """Store each (user id, history) as the user's base; see
    :meth:`server.stores.base.ProfileStore.push_histories`.

    Raises:
        StateUnavailable: Redis failed (rows may or may not be written: push them again, which
            is safe), or a record kept changing.
    """
    keys = [(state.visitor_key(u, "U"), state.visitor_key(u, "L")) for u, _ in histories]
    affixes = (*user_key(state, "u"), *user_key(state, "d"))

    async def read(c: aioredis.Redis) -> list[Any]:
        pipe = c.pipeline(transaction=False)
        for record_key, _ in keys:
            pipe.get(record_key)
        return list(await pipe.execute())

    found = await state.call(read) if keys else []
    out: list[Pushed] = [Pushed("stale")] * len(histories)
    pending = [(i, raw or b"") for i, raw in enumerate(found)]
    for attempt in range(ATTEMPTS):
        if attempt:
            await lost(attempt - 1)
        calls: list[tuple[Any, ...]] = []
        sent: list[tuple[int, bytes]] = []
        for i, current in pending:
            status, new = _outcome(current, histories[i][1], now)
            if status == "stale":
                continue
            calls.append((*keys[i], current, new, ttl_ms, channel, *affixes))
            sent.append((i, current))
        answers = await scripts((_PUSH_SHA, PUSH_LUA), calls, 2) if calls else []
        pending = []
        for (i, current), answer in zip(sent, answers, strict=True):
            if answer[0] == 1:
                out[i] = Pushed("written", tuple(sorted(m.decode() for m in answer[1])))
            elif answer[0] == 2:
                out[i] = Pushed("unchanged")
            elif not (current and not answer[1]):  # else erased meanwhile: the erasure wins
                pending.append((i, answer[1]))
        if not pending:
            return out
    raise StateUnavailable("pushed profiles kept changing underneath; push them again")
