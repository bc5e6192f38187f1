"""Visitor profiles in Redis, shared by every worker and replica: the
:class:`~server.stores.base.ProfileStore` of ``TAILOR_STATE=redis``.

Keys of a visitor share the hash tag ``{v:<id>}`` (one Redis Cluster slot):

- ``p``: the :class:`~server.stores.base.ProfileRecord`, msgpack-encoded, living
  ``Settings.profile_ttl_days`` after its last write;
- ``d``: the decision pinned to the visitor's current visit (:class:`~server.stores.base.Pinned`,
  its visit key, slots and encoded JSON), living as long as a visit's decision is re-served;
- ``b``: ids of the event updates applied (:data:`APPLIED_TTL`), so that an update replayed
  from the spool after an outage counts once;
- ``a``: the visitor's sticky experiment arms, a hash ``<experiment>:<bucket version>`` ->
  arm key, living as long as ``p`` (every write of ``p`` renews it);
- ``u``: the user the visitor is linked to (identity merge), living as long as the user's record.

A user's keys share the hash tag ``{v:<user id>}``: ``U``, the user's record (every linked
visitor's ``p`` merged into it, :func:`~server.stores.base.merged`), and ``L``, the set of its
linked visitors (for erasure). A decide with a trusted ``userId`` links its visitor in one
``WATCH`` ed ``MULTI`` (:meth:`RedisProfileStore.link`); reads and writes follow ``u``.

A decide reads ``u``, the record (``p``, or the user's ``U``), ``d`` (and ``a`` when the bundle
has a sticky experiment) with one small script, :data:`READ_LUA` (a visitor not yet linked to
the user its visit names reads that user's ``U`` merged with its own, as the visit will link
it); a batch, every visitor's in one pipeline. Order histories pushed by the site's backend
become the base of a user's ``U`` (:mod:`server.stores.redis_history`). The scripts and the
merge touch a visitor's and its user's keys together, which one Redis (or Valkey) allows
and Redis Cluster does not (different slots): see ``docs/deployment.md``, "Identity".
Every write is one Lua script (:data:`WRITE_LUA`) that compares the record with the one the
update was computed from and writes only when it is unchanged: a decide and an event batch of
one visitor landing on two replicas at once are both counted, the loser recomputing on the
winner's record (a few attempts, then :class:`StateUnavailable`). An erasure deletes every key
in one call and publishes the visitor on the ``invalidate`` channel, as does an update with a
decisive event; :class:`~server.stores.redis_invalidation.InvalidationListener` drops those
visitors from each worker's decision cache.

Must not import model_export or litestar.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from sdk.consent import permissions
from sdk.schema import Behavior, DecideRequest, Event
from server.stores.base import (
    DECISIVE_EVENTS,
    History,
    Pinned,
    PipelineWrite,
    ProfileRecord,
    Pushed,
    VisitorProfile,
    VisitState,
    VisitWrite,
    as_utc,
    behavior_at,
    merged,
    snapshot_of,
    updated_by_events,
    updated_by_visit,
)
from server.stores.redis_conn import ATTEMPTS, RedisState, StateUnavailable, lost
from server.stores.redis_history import push as push_histories
from server.stores.redis_links import link as link_user
from server.stores.redis_links import linked as linked_visitors
from server.stores.redis_links import user_key

__all__ = [
    "APPLIED_TTL",
    "PROFILE_EVENTS",
    "WRITE_LUA",
    "RedisProfileStore",
]

log = logging.getLogger("tailor.server.state")

#: Seconds the id of an applied event update is remembered (a spool older than this may count
#: twice when replayed).
APPLIED_TTL = 7 * 86_400
#: Event types that change a stored profile; a batch of only other types writes nothing.
PROFILE_EVENTS = frozenset({"conversion", "not_interested", "dismiss", "pageview"})

#: KEYS: profile (the visitor's ``p`` or its user's ``U``), pin, applied ids, sticky arms, link,
#: the user's linked visitors. ARGV: 1 the record the update was computed from ('' for none),
#: 2 the new record, 3 its time to live (ms), 4 the pin to store ('' none, '-' drop it and
#: publish the visitor), 5 the pin's time to live (ms), 6 the update's id ('' none), 7 how long
#: ids are kept (ms), 8 the invalidation channel, 9 the visitor id, 10 '1' when the profile is
#: the user's, 11... sticky arms to store (field, arm, field, arm...).
#: Returns {1} written, {0, record} changed underneath (the record as it is now), {2} already
#: applied, {3} the visitor was linked to a user meanwhile (read again).
WRITE_LUA = """
local p, d, b, a = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if ARGV[6] ~= '' and redis.call('SISMEMBER', b, ARGV[6]) == 1 then return {2} end
if ARGV[10] == '0' and redis.call('EXISTS', KEYS[5]) == 1 then return {3} end
local cur = redis.call('GET', p) or ''
if cur ~= ARGV[1] then return {0, cur} end
redis.call('SET', p, ARGV[2], 'PX', ARGV[3])
if #ARGV > 10 then redis.call('HSET', a, unpack(ARGV, 11)) end
redis.call('PEXPIRE', a, ARGV[3])
if ARGV[10] == '1' then
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
  redis.call('PEXPIRE', KEYS[6], ARGV[3])
end
if ARGV[6] ~= '' then
  redis.call('SADD', b, ARGV[6])
  redis.call('PEXPIRE', b, ARGV[7])
end
if ARGV[4] == '-' then
  redis.call('DEL', d)
  redis.call('PUBLISH', ARGV[8], ARGV[9])
elseif ARGV[4] ~= '' then
  redis.call('SET', d, ARGV[4], 'PX', ARGV[5])
end
return {1}
"""

#: KEYS: profile, pin, sticky arms, link. ARGV: 1 and 2 what goes before and after a user id
#: in the key of the user's record, 3 '1' to read the sticky arms, 4 the user the visit names
#: ('' none). Returns {profile or false, pin or false, {field, arm...} or false, user id or
#: false, the named user's record or false (only when the visitor is not linked yet)}: a
#: decide's read in one command (following the link reads a key of another slot: one Redis,
#: not Cluster).
READ_LUA = """
local uid = redis.call('GET', KEYS[4])
local rec
local theirs = false
if uid then rec = redis.call('GET', ARGV[1] .. uid .. ARGV[2])
else
  rec = redis.call('GET', KEYS[1])
  if ARGV[4] ~= '' then theirs = redis.call('GET', ARGV[1] .. ARGV[4] .. ARGV[2]) end
end
local arms = false
if ARGV[3] == '1' then arms = redis.call('HGETALL', KEYS[3]) end
return {rec or false, redis.call('GET', KEYS[2]) or false, arms, uid or false, theirs}
"""

_WRITE_SHA = hashlib.sha1(WRITE_LUA.encode()).hexdigest()
_READ_SHA = hashlib.sha1(READ_LUA.encode()).hexdigest()
_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(ProfileRecord)
_pin_decoder = msgspec.msgpack.Decoder(Pinned)
_UNKNOWN = VisitState()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _record(raw: bytes | None) -> ProfileRecord | None:
    return _record_decoder.decode(raw) if raw else None


def _state(found: Sequence[Any], visit: str | None) -> VisitState:
    """The state a :data:`READ_LUA` answer (record, pin, arms, user id, the named user's
    record) gives ``visit``; the version is the visitor's own record as read."""
    raw, pin_raw, flat, user, theirs = found
    arms = None
    if flat is not None:  # an HGETALL answer: field, arm, field, arm...
        arms = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat) - 1, 2)}
    if not raw and not pin_raw and user is None and not theirs:
        return _UNKNOWN if arms is None else VisitState(arms=arms)
    pinned = _pin_decoder.decode(pin_raw) if pin_raw else None
    if pinned is not None and pinned.visit != visit:
        pinned = None  # the pin of another visit (session, consent, key kind, model version)
    record = _record(raw)
    if theirs:  # to be linked to the user it names: read as it will be
        record = merged(_record(theirs), record)
    return VisitState(
        record=record,
        pinned=pinned,
        version=raw or None,
        arms=arms,
        user_id=user.decode() if user is not None else None,
    )


class RedisProfileStore:
    """Profiles, pins and applied update ids in Redis, through one worker's
    :class:`RedisState` (every call within its deadline and breaker; failures raise
    :class:`StateUnavailable`).

    Args:
        state: the worker's connection.
        ttl_seconds: how long a profile lives after its last write.
        pin_seconds: how long a visit's decision is re-served (the decision cache's TTL).
        clock: timezone-aware current time, for the days in a returned behaviour.
    """

    backend = "redis"

    def __init__(
        self,
        state: RedisState,
        *,
        ttl_seconds: float = 30 * 86_400,
        pin_seconds: float = 1800.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.state = state
        self.channel = state.key("invalidate")
        self._ttl_ms = str(max(1, round(ttl_seconds * 1000)))
        self._pin_ms = str(max(1, round(pin_seconds * 1000)))
        self._applied_ms = str(APPLIED_TTL * 1000)
        self._clock = clock
        #: writes that lost to a concurrent update and were computed again
        self.conflicts = 0
        # one visitor's retried updates queue up in this worker, so that only other workers'
        # contend: a write then succeeds within a few attempts however busy the visitor
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, visitor_id: str) -> asyncio.Lock:
        lock = self._locks.get(visitor_id)
        if lock is None:
            lock = self._locks[visitor_id] = asyncio.Lock()
        return lock

    def _keys(self, visitor_id: str, user_id: str | None = None) -> tuple[str, ...]:
        """The visitor's profile (its user's when linked), pin, applied ids, sticky arms and
        link keys, and the user's linked visitors (the visitor's unused ``L`` when none)."""
        key = self.state.visitor_key
        return (
            key(visitor_id, "p") if user_id is None else key(user_id, "U"),
            key(visitor_id, "d"),
            key(visitor_id, "b"),
            key(visitor_id, "a"),
            key(visitor_id, "u"),
            key(visitor_id if user_id is None else user_id, "L"),
        )

    def _now(self, now: datetime | None) -> datetime:
        return as_utc(now if now is not None else self._clock())

    async def _raw(self, visitor_id: str) -> bytes:
        """The stored record's bytes (empty when none; the user's when linked)."""
        return (await self._resolve(visitor_id))[0]

    async def _resolve(self, visitor_id: str) -> tuple[bytes, str | None]:
        """The stored record's bytes (empty when none), and the user the visitor is linked
        to (its record is then the user's)."""
        state = await self.load_visit(visitor_id, None)
        return state.version or b"", state.user_id

    async def _get(self, visitor_id: str) -> ProfileRecord | None:
        return _record(await self._raw(visitor_id))

    async def load_visit(
        self, visitor_id: str, visit: str | None, *, arms: bool = False
    ) -> VisitState:
        """The record (the user's when the visitor is linked to one) and the decision pinned
        to ``visit`` (and with ``arms`` the sticky arms): one :data:`READ_LUA` call."""
        return (await self.load_visits([(visitor_id, visit)], arms=arms))[0]

    async def load_visits(
        self,
        visits: Sequence[tuple[str, str | None]],
        *,
        arms: bool = False,
        users: Sequence[str | None] | None = None,
    ) -> list[VisitState]:
        """Every visit's record and pin (and sticky arms): one call (a pipeline of
        :data:`READ_LUA` calls when several); a visitor not yet linked to the user its visit
        names reads the user's record merged with its own."""
        before, after = user_key(self.state, "U")
        flag = "1" if arms else "0"
        named = users if users is not None else [None] * len(visits)
        calls = [
            (k[0], k[1], k[3], k[4], before, after, flag, user or "")
            for k, user in zip((self._keys(v) for v, _ in visits), named, strict=True)
        ]
        found = await self._scripts((_READ_SHA, READ_LUA), calls, 4)
        return [_state(f, v) for (_, v), f in zip(visits, found, strict=True)]

    async def get(self, visitor_id: str, *, now: datetime | None = None) -> Behavior | None:
        """The stored behaviour, or None."""
        record = await self._get(visitor_id)
        return None if record is None else behavior_at(record, self._now(now))

    async def snapshot(
        self, visitor_id: str, *, now: datetime | None = None
    ) -> VisitorProfile | None:
        """Everything stored about the visitor, or None."""
        record = await self._get(visitor_id)
        return None if record is None else snapshot_of(visitor_id, record, self._now(now))

    async def suppressed(self, visitor_id: str) -> frozenset[str]:
        """Offers the visitor is not interested in."""
        record = await self._get(visitor_id)
        return frozenset(record.suppressed) if record is not None else frozenset()

    def _args(
        self,
        visitor_id: str,
        old: bytes,
        new: bytes,
        pin: bytes | str = "",
        apply_id: str = "",
        arms: Mapping[str, str] | None = None,
        user_id: str | None = None,
    ) -> tuple[Any, ...]:
        """The arguments of one :data:`WRITE_LUA` call (after its sha and key count)."""
        return (
            *self._keys(visitor_id, user_id),
            old,
            new,
            self._ttl_ms,
            pin,
            self._pin_ms,
            apply_id,
            self._applied_ms,
            self.channel,
            visitor_id,
            "0" if user_id is None else "1",
            *(item for pair in (arms or {}).items() for item in pair),
        )

    async def _writes(
        self, calls: Sequence[tuple[Any, ...]], also: PipelineWrite | None = None
    ) -> list[Any]:
        """Run :data:`WRITE_LUA` once per argument tuple, in one call (pipelined when
        several, or with the writes of ``also``)."""
        return await self._scripts((_WRITE_SHA, WRITE_LUA), calls, 6, also=also)

    async def _scripts(
        self,
        script: tuple[str, str],
        calls: Sequence[tuple[Any, ...]],
        keys: int,
        *,
        also: PipelineWrite | None = None,
    ) -> list[Any]:
        """Run ``script`` (sha, source) once per argument tuple (its ``keys`` keys first), in
        one call (pipelined when several, or followed by the commands of ``also``, whose
        answers are dropped); the script is loaded when Redis does not know it (first use, or
        after a restart)."""
        sha, source = script

        async def run(c: aioredis.Redis) -> list[Any]:
            for attempt in range(2):
                try:
                    if len(calls) == 1 and also is None:
                        return [await c.evalsha(sha, keys, *calls[0])]
                    pipe = c.pipeline(transaction=False)
                    for args in calls:
                        pipe.evalsha(sha, keys, *args)
                    if also is not None:
                        also.queue(pipe)
                    return list(await pipe.execute())[: len(calls)]
                except NoScriptError:  # no script ran (the other commands are idempotent)
                    if attempt:
                        raise
                    await c.script_load(source)
            raise AssertionError("unreachable")

        try:
            return await self.state.call(run)
        except StateUnavailable:
            if also is not None:
                also.failed()
            raise

    async def _retry_visit(
        self, visit: VisitWrite, now: datetime, current: bytes, user_id: str | None
    ) -> None:
        """Record a visit (and its sticky arms) whose first write lost to a concurrent update,
        on the record as it is now (never re-creating an erased one: ``current`` empty)."""
        async with self._lock(visit.visitor_id):
            visitor_id = visit.visitor_id
            for attempt in range(ATTEMPTS):
                if not current:
                    return
                self.conflicts += 1
                await lost(attempt)
                new = updated_by_visit(_record(current), visit.request, now)
                args = self._args(
                    visitor_id,
                    current,
                    _record_encoder.encode(new),
                    arms=visit.arms,
                    user_id=user_id,
                )
                (answer,) = await self._writes([args])
                if answer[0] == 3:  # linked to a user meanwhile
                    await self._revisit(visit, now)
                if answer[0] != 0:
                    return
                current = answer[1]
        raise StateUnavailable(f"the profile of {visitor_id!r} kept changing; visit not recorded")

    async def _revisit(self, visit: VisitWrite, now: datetime) -> None:
        """Record a visit on the record read again (after its visitor was linked to a user);
        the caller holds the visitor's lock."""
        for attempt in range(ATTEMPTS):
            if attempt:
                await lost(attempt - 1)
            state = await self.load_visit(visit.visitor_id, None)
            new = _record_encoder.encode(updated_by_visit(state.record, visit.request, now))
            old = state.version or b""
            args = self._args(visit.visitor_id, old, new, arms=visit.arms, user_id=state.user_id)
            (answer,) = await self._writes([args])
            if answer[0] in (1, 2):
                return
            self.conflicts += 1
        raise StateUnavailable(f"the profile of {visit.visitor_id!r} kept changing")

    async def push_histories(
        self, histories: Sequence[tuple[str, History]], *, now: datetime
    ) -> list[Pushed]:
        """Store each pushed history as its user's base
        (:func:`server.stores.redis_history.push`)."""
        return await push_histories(
            self.state,
            self._scripts,
            histories,
            as_utc(now),
            ttl_ms=self._ttl_ms,
            channel=self.channel,
        )

    async def link(self, visitor_id: str, user_id: str) -> bool:
        """Link the visitor to the user (:func:`server.stores.redis_links.link`)."""
        return await link_user(self.state, visitor_id, user_id, int(self._ttl_ms))

    async def commit_visits(
        self,
        visits: Sequence[VisitWrite],
        *,
        now: datetime,
        also: PipelineWrite | None = None,
    ) -> list[bool]:
        """Record the visits and pin their decisions, with the writes of ``also``: one
        pipeline of scripts (plus one call per visit that lost to a concurrent update). A
        visit with a ``user_id`` of a visitor not yet linked links it first (:meth:`link`;
        its decision is not pinned)."""
        now = as_utc(now)
        calls: list[tuple[int, tuple[Any, ...]]] = []
        pinned = [True] * len(visits)
        relinked: list[int] = []
        for i, visit in enumerate(visits):
            if not permissions(visit.request.consent).store:
                continue
            if visit.request.user_id is not None and visit.read.user_id is None:
                relinked.append(i)
                pinned[i] = False
                continue
            old = visit.read.version or b""
            record = updated_by_visit(visit.read.record, visit.request, now)
            pin = _record_encoder.encode(visit.pin) if visit.pin is not None else ""
            new = _record_encoder.encode(record)
            args = self._args(
                visit.visitor_id, old, new, pin, arms=visit.arms, user_id=visit.read.user_id
            )
            calls.append((i, args))
        answers = await self._writes([args for _, args in calls], also) if calls or also else []
        for i in relinked:  # identified for the first time: link, then record on the merge
            visit = visits[i]
            user_id = visit.request.user_id
            assert user_id is not None
            await self.link(visit.visitor_id, user_id)
            async with self._lock(visit.visitor_id):
                await self._revisit(visit, now)
        for (i, _), answer in zip(calls, answers, strict=True):
            visit = visits[i]
            if answer[0] == 3:
                pinned[i] = False
                async with self._lock(visit.visitor_id):
                    await self._revisit(visit, now)
            elif answer[0] == 0:
                pinned[i] = False
                if visit.read.version and not answer[1]:
                    continue  # erased while it was being decided: the erasure wins
                await self._retry_visit(visit, now, answer[1], visit.read.user_id)
        return pinned

    async def record_visit(
        self, visitor_id: str, request: DecideRequest, *, now: datetime
    ) -> Behavior:
        """Record the visit; see :meth:`ProfileStore.record_visit`."""
        if not permissions(request.consent).store:
            return Behavior()
        now = as_utc(now)
        read = await self.load_visit(visitor_id, None)
        await self.commit_visits(
            [VisitWrite(visitor_id=visitor_id, request=request, read=read)], now=now
        )
        record = await self._get(visitor_id)
        return behavior_at(record, now) if record is not None else Behavior()

    async def apply(
        self,
        visitor_id: str,
        events: Sequence[Event],
        *,
        now: datetime,
        create: bool = True,
        apply_id: str | None = None,
    ) -> Behavior | None:
        """Apply the visitor's events; see :meth:`ProfileStore.apply`.

        Raises:
            ValueError: an event belongs to another visitor.
            StateUnavailable: Redis failed (the update may or may not have been written: apply
                it again with the same ``apply_id``).
        """
        if any(e.visitor_id != visitor_id for e in events):
            raise ValueError(f"events of another visitor given for {visitor_id!r}")
        async with self._lock(visitor_id):
            return await self._apply(visitor_id, events, as_utc(now), create, apply_id)

    async def _apply(
        self,
        visitor_id: str,
        events: Sequence[Event],
        now: datetime,
        create: bool,
        apply_id: str | None,
    ) -> Behavior | None:
        current, user_id = await self._resolve(visitor_id)
        changing = [e for e in events if e.type in PROFILE_EVENTS]
        unpin = "-" if any(e.type in DECISIVE_EVENTS for e in changing) else ""
        for attempt in range(ATTEMPTS):
            if not current and not create:
                return None
            if not changing:
                record = _record(current) or ProfileRecord(first_seen=now, last_seen=now)
                return behavior_at(record, now)
            record = updated_by_events(_record(current), changing, now)
            new = _record_encoder.encode(record)
            args = self._args(visitor_id, current, new, unpin, apply_id or "", user_id=user_id)
            (answer,) = await self._writes([args])
            if answer[0] == 3:  # linked to a user meanwhile: apply to the user's record
                current, user_id = await self._resolve(visitor_id)
                continue
            if answer[0] != 0:  # written, or applied before (then the record as it is now)
                if answer[0] == 2:
                    stored = await self._get(visitor_id)
                    return behavior_at(stored, now) if stored is not None else None
                return behavior_at(record, now)
            if attempt:
                self.conflicts += 1
            current = answer[1]
            await lost(attempt)
        raise StateUnavailable(f"the profile of {visitor_id!r} kept changing; events not applied")

    async def linked(self, visitor_id: str) -> tuple[str, ...]:
        """The visitor and every other visitor linked to its user."""
        return (await linked_visitors(self.state, visitor_id))[1]

    async def delete(self, visitor_id: str) -> bool:
        """Delete every key of the visitor and publish the erasure (one call after the read
        of its links); a visitor linked to a user: the user's keys and every key of every
        visitor linked to it (the person, not one of their browsers)."""
        user_id, visitors = await linked_visitors(self.state, visitor_id)
        keys = [k for v in visitors for k in self._keys(v)[:5]]
        if user_id is not None:
            keys += [self.state.visitor_key(user_id, "U"), self.state.visitor_key(user_id, "L")]
        found = [self._keys(v)[0] for v in visitors] + keys[len(visitors) * 5 :]

        async def run(c: aioredis.Redis) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            pipe.exists(*found)
            pipe.delete(*keys)
            for visitor in visitors:
                pipe.publish(self.channel, visitor)
            return list(await pipe.execute())

        answers = await self.state.call(run)
        return bool(answers[0])

    async def invalidate(self, visitor_id: str) -> None:
        """Drop the visitor's pinned decision and tell every worker to drop theirs."""
        pin = self.state.visitor_key(visitor_id, "d")

        async def run(c: aioredis.Redis) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            pipe.delete(pin)
            pipe.publish(self.channel, visitor_id)
            return list(await pipe.execute())

        await self.state.call(run)
