"""Calls made in the same turn of the event loop, joined into one call over all their items.

A call to the shared store costs the worker more in the client than in Redis: packing the
command, taking a connection from the pool, two deadlines, parsing the answer and the event
loop's wake-up come to about 150 µs of CPU for one read script, against about 40 per visit when
eight are pipelined in one call (docs/performance.md, "State calls of a loop turn"). Under load,
the fresh decides of a turn each read their visitor's state, then write it; a
:class:`Coalescer` joins the calls of one turn into one call of its function, so that cost is
paid once per turn instead of once per request.

An item joins the batch of its loop turn. The batch starts once the callbacks already scheduled
in that turn have run (``loop.call_soon``), or at once when it holds ``limit`` items. Each caller
gets its own result; when the call fails, every caller of the batch gets its exception, as each
would have alone. A caller cancelled while it waits drops out; the others still get theirs.
``limit = 1`` calls the function at once with the caller's item alone (no batching, no turn
waited).

Must not import litestar (handlers call it with plain values).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

I = TypeVar("I")  # noqa: E741 (the item)
O = TypeVar("O")  # noqa: E741 (its result)


class Coalescer(Generic[I, O]):
    """The calls of a loop turn joined into one (see the module docstring).

    Args:
        run: the joined call: the items of a batch, in the order they came, to their results in
            the same order.
        limit: the most items in one batch (1: no batching).
        on_batch: called with the size of every batch run (the server's metrics).

    Attributes:
        batches: calls of ``run`` so far.
        items: items passed to them; ``items / batches`` is the mean batch size.
    """

    def __init__(
        self,
        run: Callable[[list[I]], Awaitable[list[O]]],
        limit: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.batches = 0
        self.items = 0
        self._run = run
        self._on_batch = on_batch
        self._waiting: list[tuple[I, asyncio.Future[O]]] = []
        self._running: set[asyncio.Task[None]] = set()  # referenced until done

    async def __call__(self, item: I) -> O:
        """The result of ``item`` in the call of its loop turn."""
        if self.limit == 1:
            self._count(1)
            (result,) = await self._run([item])
            return result
        loop = asyncio.get_running_loop()
        future: asyncio.Future[O] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((item, future))
        if len(self._waiting) >= self.limit:
            self._flush()
        return await future

    def _count(self, size: int) -> None:
        self.batches += 1
        self.items += size
        if self._on_batch is not None:
            self._on_batch(size)

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        live = [(item, future) for item, future in waiting if not future.done()]
        if not live:
            return
        self._count(len(live))
        task = asyncio.ensure_future(self._settle(live))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _settle(self, batch: list[tuple[I, asyncio.Future[O]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:  # the worker is stopping
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # every caller's, as its own call would have failed
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
