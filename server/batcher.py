"""Fresh decides that reach the decider in the same turn of the event loop, decided back to back.

In a worker, the work around a decision (routing, identity, state, the event log) evicts the
decision's code and data from the CPU's caches, so one decision costs the server two to three
times what it costs in a loop (docs/performance.md, "Cold caches"). Under load, several requests
reach the decider in one turn of the event loop: :class:`DecideBatcher` decides them one after
the other, with nothing in between, so every decision after the first finds the code and data
warm, and hands each request its own decision and feature row.

Each request is decided by ``Decider.decide``, exactly as alone, not by ``decide_many``:
onnxruntime's batched kernels may round a score's last float32 digit differently from a run on
one row, and a visitor's decision must not depend on who else was deciding at that moment.

A request joins the batch of its loop turn; the batch runs once the requests already scheduled
in that turn have had their go (``loop.call_soon``), or at once when it holds ``limit``. A request
whose decision fails gets the error; the others of its batch are not affected. ``limit = 1``
decides every request at once, alone (no batching).

A lone request pays that turn of the loop (about 30 microseconds in ``benchmarks.asgi``, one
request at a time). Waiting only when another request is in flight was tried and gives up the
gain: a handler that does not suspend before its decision (the in-process state store) has no
other request in flight, while the requests that would join it are already scheduled, not yet
started.

Must not import litestar (handlers call it with plain values).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import NamedTuple

from sdk import Decider
from sdk.features import FeatureRow
from sdk.schema import Behavior, DecideRequest, Decision

__all__ = ["DecideBatcher"]


class _Waiting(NamedTuple):
    decider: Decider
    request: DecideRequest
    profile: Behavior | None
    suppressed: frozenset[str]
    sticky: Mapping[str, str] | None
    future: asyncio.Future[tuple[Decision, FeatureRow]]


class DecideBatcher:
    """The fresh decides of a loop turn, decided back to back (see the module docstring).

    Args:
        limit: the most requests in one batch (1: no batching).
        on_batch: called with the size of every batch run (the server's metrics).

    Attributes:
        batches: batches run so far (a lone request counts as a batch of one).
        decided: requests decided so far; ``decided / batches`` is the mean batch size.
    """

    def __init__(self, limit: int = 32, on_batch: Callable[[int], None] | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.batches = 0
        self.decided = 0
        self._on_batch = on_batch
        self._waiting: list[_Waiting] = []

    async def decide(
        self,
        decider: Decider,
        request: DecideRequest,
        *,
        profile: Behavior | None,
        suppressed: frozenset[str],
        sticky: Mapping[str, str] | None,
    ) -> tuple[Decision, FeatureRow]:
        """The decision of ``request`` (arguments as ``Decider.decide``'s) and the feature row
        it was made from."""
        if self.limit == 1:
            rows: list[FeatureRow] = []
            decision = decider.decide(
                request, profile=profile, suppressed=suppressed, sticky=sticky, rows=rows
            )
            self._count(1)
            return decision, rows[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Decision, FeatureRow]] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append(_Waiting(decider, request, profile, suppressed, sticky, future))
        if len(self._waiting) >= self.limit:
            self._flush()
        return await future

    def _count(self, size: int) -> None:
        self.batches += 1
        self.decided += size
        if self._on_batch is not None:
            self._on_batch(size)

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        live = [w for w in waiting if not w.future.done()]  # a cancelled request drops out
        # one run per decider: a bundle reload may swap it within a turn
        by_decider: dict[int, list[_Waiting]] = {}
        for w in live:
            by_decider.setdefault(id(w.decider), []).append(w)
        for group in by_decider.values():
            self._run(group)

    def _run(self, group: list[_Waiting]) -> None:
        decider = group[0].decider
        for w in group:
            rows: list[FeatureRow] = []
            try:
                decision = decider.decide(
                    w.request,
                    profile=w.profile,
                    suppressed=w.suppressed,
                    sticky=w.sticky,
                    rows=rows,
                )
            except Exception as exc:  # handed to the request it belongs to
                w.future.set_exception(exc)
            else:
                w.future.set_result((decision, rows[0]))
        self._count(len(group))
