"""The batch spool: public-key event batches the shared event guard could not check, kept on
local disk and checked when Redis answers again.

A browser's batch must pass the event guard before anything of it is applied or logged. When
the guard's Redis is down, accepting the batch unchecked would let forged and replayed events
in, and refusing it would lose real ones; so the batch is appended (as received, after the
sensitive categories were scrubbed) to ``batches-<pid>.jsonl`` in ``Settings.spool_dir``,
fsynced, and answered 202. The replay loop hands each batch back under the id it was first
checked with (a check that reached Redis before its answer was lost is recognised, not
refused as a replay); the events handler records those that pass, and those the guard
refuses are counted and dropped. Claiming, ordering, the size cap and the counters are
:class:`server.stores.spool.JsonlSpool`'s.

Must not import model_export or litestar.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec

from sdk.schema import EventBatch
from server.stores.spool import JsonlSpool

__all__ = ["BatchSpool", "SpooledBatch"]


class SpooledBatch(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A public-key batch waiting for the event guard, as a spool line."""

    batch_id: str
    received_at: datetime
    batch: EventBatch


class BatchSpool(JsonlSpool[SpooledBatch]):
    """Spooled event batches of one worker; ``replay(handle)``'s handler answers True when it
    recorded a batch and False when the guard refused it (counted in ``refused``).

    Args:
        directory: the spool directory (shared by the workers of one machine).
        max_bytes: most bytes of batch files in the directory; past it batches are dropped.
    """

    def __init__(self, directory: str | Path, max_bytes: int = 64 << 20) -> None:
        super().__init__(directory, "batches", SpooledBatch, max_bytes)
