"""The batch spool (:mod:`server.stores.batch_spool`): public batches the shared event guard
could not check wait on disk, are handed back in order, put back when Redis fails again,
and bounded. The whole path (spooled on a paused Redis, replayed by a real server) runs in
``test_replicas_limits.py``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from sdk.schema import Event, EventBatch
from server.stores.batch_spool import BatchSpool, SpooledBatch
from server.stores.redis_conn import StateUnavailable


def item(n: int) -> SpooledBatch:
    event = Event(type="click", visitor_id=f"v{n}", decision_id=f"d{n}", event_id=f"e{n}")
    return SpooledBatch(
        batch_id=f"b{n}", received_at=datetime.now(UTC), batch=EventBatch(events=[event])
    )


def test_batches_come_back_in_order_and_are_counted(tmp_path: Path) -> None:
    spool = BatchSpool(tmp_path)
    assert spool.append([item(1), item(2)]) and spool.append([item(3)])
    assert spool.spooled == 3 and spool.pending_bytes() > 0
    seen: list[str] = []

    async def handle(spooled: SpooledBatch) -> bool:
        seen.append(spooled.batch_id)
        return spooled.batch_id != "b2"  # b2 is refused by the guard

    assert asyncio.run(spool.replay(handle)) == 3
    assert seen == ["b1", "b2", "b3"]
    assert (spool.replayed, spool.refused) == (2, 1)
    assert spool.pending_bytes() == 0 and list(tmp_path.iterdir()) == []


def test_what_redis_did_not_take_is_spooled_again(tmp_path: Path) -> None:
    spool = BatchSpool(tmp_path)
    spool.append([item(1), item(2), item(3)])
    calls: list[str] = []

    async def flaky(spooled: SpooledBatch) -> bool:
        calls.append(spooled.batch_id)
        if spooled.batch_id == "b2":
            raise StateUnavailable("down again")
        return True

    assert asyncio.run(spool.replay(flaky)) == 1
    assert spool.pending_bytes() > 0 and spool.spooled == 3  # put back, not counted anew

    async def ok(spooled: SpooledBatch) -> bool:
        calls.append(spooled.batch_id)
        return True

    assert asyncio.run(spool.replay(ok)) == 2
    assert calls == ["b1", "b2", "b2", "b3"]
    assert spool.replayed == 3 and spool.pending_bytes() == 0


def test_a_full_spool_drops_and_counts(tmp_path: Path) -> None:
    line = len(msgspec.json.encode(item(1))) + 1
    spool = BatchSpool(tmp_path, max_bytes=2 * line)  # room for two lines, not three
    assert spool.append([item(1)])
    assert not spool.append([item(2), item(3)])
    assert (spool.spooled, spool.dropped) == (1, 2)


def test_a_dead_workers_claimed_file_is_taken_over(tmp_path: Path) -> None:
    spool = BatchSpool(tmp_path)
    spool.append([item(1)])
    # as if a worker (a pid that cannot exist) had claimed it and died while replaying
    spool.path.rename(tmp_path / "replaying-batches-999999999-deadbeef.jsonl")
    got: list[str] = []

    async def handle(spooled: SpooledBatch) -> bool:
        got.append(spooled.batch_id)
        return True

    assert asyncio.run(spool.replay(handle)) == 1 and got == ["b1"]
