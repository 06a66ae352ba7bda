"""Group commit: many callers' writes in one trip to the database thread.

Every ``database_sync_to_async`` call runs on one shared thread. Under a burst
(a hundred replies starting in a second) each start waiting its turn there,
and handing the GIL back and forth with the event loop at every SQL
statement, is what makes the burst slow. A :class:`Batcher` queues the items
that arrive while its previous batch is on that thread and hands them over
together, to a function that stores them with a few statements for all.

With no contention a batch is one item and nothing waits: the first item
goes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs ``store(items)`` on the database thread, one batch at a time.

    ``store`` returns one result per item, in order; a result that is an
    exception is raised to that item's caller only. If ``store`` itself raises,
    every caller of that batch gets the exception.
    """

    def __init__(self, store: Callable[[list[Item]], Sequence[Result | Exception]], *, max_batch: int = 200):
        self._store = store
        self._max_batch = max_batch
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0  # how many trips to the database thread (for tests and benchmarks)

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests run one per test): start afresh
            self._loop, self._queue, self._runner = loop, [], None
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="batcher")
        return await future

    async def _run(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: len(batch)]
            self.batches += 1
            try:
                results = await database_sync_to_async(self._store)([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch + self._queue:
                    future.cancel()
                self._queue.clear()
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
