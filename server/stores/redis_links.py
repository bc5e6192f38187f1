"""Identity links in Redis: a visitor identified as a user (a decide with a trusted
``userId``) is linked to the user, so that the same person on two devices, or before and after
logging in, has one profile.

Keys: the visitor's ``u`` (``{v:<visitor>}``) names its user; the user's ``U`` (``{v:<user>}``)
is the merged record (:func:`~server.stores.base.merged`) and ``L`` the set of its linked
visitors, read by an erasure. :func:`link` merges and links in one ``WATCH`` ed ``MULTI`` on
the visitor's and the user's keys, which are in different slots: one Redis (or Valkey), not
Redis Cluster.

Must not import model_export or litestar.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from server.stores.base import ProfileRecord, merged
from server.stores.redis_conn import ATTEMPTS, RedisState, StateUnavailable

__all__ = ["LINKED_LUA", "link", "linked"]

#: KEYS: link. ARGV: what goes before and after a user id in the key of its linked visitors.
#: Returns {} (not linked) or {user id, {visitor...}}.
LINKED_LUA = """
local uid = redis.call('GET', KEYS[1])
if not uid then return {} end
return {uid, redis.call('SMEMBERS', ARGV[1] .. uid .. ARGV[2])}
"""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ProfileRecord)


def user_key(state: RedisState, part: str) -> tuple[str, str]:
    """What goes before and after a user id in the key of its ``part`` (``U`` or ``L``)."""
    before, after = state.visitor_key("\0", part).split("\0")
    return before, after


def _record(raw: bytes | None) -> ProfileRecord | None:
    return _decoder.decode(raw) if raw else None


async def link(state: RedisState, visitor_id: str, user_id: str, ttl_ms: int) -> bool:
    """Link the visitor to the user: its own record merged into the user's, the link and the
    user's set of visitors written (living ``ttl_ms``) and the visitor's own record deleted, in
    one ``WATCH`` ed ``MULTI`` retried on conflict; whether it was linked now (False: it already
    was, to this user or another, which it keeps).

    Raises:
        StateUnavailable: Redis failed, or the keys kept changing.
    """
    own_key, link_key = state.visitor_key(visitor_id, "p"), state.visitor_key(visitor_id, "u")
    record_key, set_key = state.visitor_key(user_id, "U"), state.visitor_key(user_id, "L")

    async def run(c: aioredis.Redis) -> bool:
        async with c.pipeline(transaction=True) as pipe:
            for _ in range(ATTEMPTS):
                try:
                    await pipe.watch(own_key, link_key, record_key)
                    found: Any = await pipe.mget(own_key, record_key, link_key)
                    own, theirs, current = found
                    if current is not None:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return False
                    record = merged(_record(theirs), _record(own))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if record is not None:
                        pipe.set(record_key, _encoder.encode(record), px=ttl_ms)
                    pipe.set(link_key, user_id, px=ttl_ms)
                    pipe.sadd(set_key, visitor_id)
                    pipe.pexpire(set_key, ttl_ms)
                    pipe.delete(own_key)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue
        raise StateUnavailable(f"linking {visitor_id!r} to its user kept conflicting")

    return await state.call(run)


async def linked(state: RedisState, visitor_id: str) -> tuple[str | None, tuple[str, ...]]:
    """The user the visitor is linked to (None: not linked) and the visitors linked to that
    user, the visitor first: one :data:`LINKED_LUA` call."""
    args = (state.visitor_key(visitor_id, "u"), *user_key(state, "L"))
    found: Any = await state.call(lambda c: c.eval(LINKED_LUA, 1, *args))
    if not found:
        return None, (visitor_id,)
    others = sorted({m.decode() for m in found[1]} - {visitor_id})
    return found[0].decode(), (visitor_id, *others)
