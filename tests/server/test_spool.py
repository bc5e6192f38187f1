"""The generic local spool (:mod:`server.stores.spool`): spools sharing a directory keep to
their own files, a put-back is not refused by the file it comes from, torn lines are counted,
a live worker's claimed file is left alone, and profile updates are applied to a real store.
The batch spool's own behaviour is in ``test_event_guard_spool.py``, the whole path through
real servers in ``test_state_faults.py`` and ``test_replicas_limits.py``."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from sdk.schema import Event, EventBatch
from server.stores.batch_spool import BatchSpool, SpooledBatch
from server.stores.memory import MemoryProfileStore
from server.stores.redis_conn import StateUnavailable
from server.stores.spool import JsonlSpool, ProfileSpool, SpooledUpdate


class Line(msgspec.Struct, frozen=True):
    n: int


def update(visitor_id: str, n: int) -> SpooledUpdate:
    event = Event(type="conversion", visitor_id=visitor_id, event_id=f"e{n}")
    return SpooledUpdate(
        visitor_id=visitor_id, apply_id=f"a{n}", received_at=datetime.now(UTC), events=[event]
    )


def batch(n: int) -> SpooledBatch:
    event = Event(type="click", visitor_id=f"v{n}", decision_id=f"d{n}", event_id=f"e{n}")
    return SpooledBatch(
        batch_id=f"b{n}", received_at=datetime.now(UTC), batch=EventBatch(events=[event])
    )


def test_two_spools_in_one_directory_keep_to_their_own_files(tmp_path: Path) -> None:
    profiles, batches = ProfileSpool(tmp_path), BatchSpool(tmp_path)
    assert profiles.append([update("v1", 1)]) and batches.append([batch(1), batch(2)])
    assert profiles.pending_bytes() == profiles.path.stat().st_size
    got: list[str] = []

    async def handle(item: SpooledBatch) -> bool:
        got.append(item.batch_id)
        return True

    assert asyncio.run(batches.replay(handle)) == 2 and got == ["b1", "b2"]
    assert batches.pending_bytes() == 0
    assert [p.name for p in tmp_path.iterdir()] == [profiles.path.name]  # untouched


def test_a_put_back_is_not_refused_by_the_file_it_comes_from(tmp_path: Path) -> None:
    line = len(msgspec.json.encode(Line(1))) + 1
    spool = JsonlSpool(tmp_path, "lines", Line, max_bytes=3 * line)
    assert spool.append([Line(1), Line(2), Line(3)])  # the spool is full

    async def down(item: Line) -> bool:
        raise StateUnavailable("still down")

    assert asyncio.run(spool.replay(down)) == 0
    assert (spool.spooled, spool.dropped) == (3, 0)  # all three back, none lost
    assert spool.pending_bytes() == 3 * line
    seen: list[int] = []

    async def up(item: Line) -> bool:
        seen.append(item.n)
        return True

    assert asyncio.run(spool.replay(up)) == 3 and seen == [1, 2, 3]


def test_a_torn_line_is_dropped_and_counted_the_rest_replayed(tmp_path: Path) -> None:
    spool = JsonlSpool(tmp_path, "lines", Line)
    spool.append([Line(1), Line(2)])
    with spool.path.open("ab") as fh:
        fh.write(b'{"n": 3')  # a worker crashed in the middle of a line
    seen: list[int] = []

    async def handle(item: Line) -> bool:
        seen.append(item.n)
        return item.n == 1

    assert asyncio.run(spool.replay(handle)) == 2 and seen == [1, 2]
    assert (spool.replayed, spool.refused, spool.dropped) == (1, 1, 1)


def test_a_live_workers_claimed_file_is_left_to_it(tmp_path: Path) -> None:
    spool = JsonlSpool(tmp_path, "lines", Line)
    spool.append([Line(1)])
    claimed = tmp_path / f"replaying-lines-{os.getppid()}-cafe0000.jsonl"  # pytest's parent
    spool.path.rename(claimed)

    async def handle(item: Line) -> bool:
        raise AssertionError("another worker is replaying it")

    assert asyncio.run(spool.replay(handle)) == 0
    assert claimed.exists() and spool.pending_bytes() == claimed.stat().st_size


def test_profile_updates_are_applied_once_to_visitors_that_still_have_a_profile(
    tmp_path: Path,
) -> None:
    store = MemoryProfileStore()
    now = datetime.now(UTC)
    asyncio.run(store.apply("v1", [Event(type="pageview", visitor_id="v1")], now=now))
    spool = ProfileSpool(tmp_path)
    assert spool.append([update("v1", 1), update("gone", 2), update("v1", 3)])

    assert asyncio.run(spool.replay_into(store)) == 2
    assert (spool.replayed, spool.refused, spool.pending_bytes()) == (2, 1, 0)
    behavior = asyncio.run(store.get("v1", now=now))
    assert behavior is not None and behavior.purchases == 2
    assert asyncio.run(store.get("gone", now=now)) is None  # not created by a replay
