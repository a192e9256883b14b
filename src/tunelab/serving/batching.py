"""Micro-batching for the server: concurrent requests share one forward pass.

A request submits its item and awaits the result. One worker collects items for at most
``max_wait_ms`` after the first arrives (or until ``max_batch_size``), runs the batch function
once in a single model thread, and hands each request its own result. Items carry a key; only
items with the same key share a batch (generation settings such as temperature must match).

A batch that raises is run again one item at a time, so one bad item fails only its own request,
never the requests that happened to share its batch.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable


@dataclass
class _Pending:
    item: Any
    key: Hashable
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list, Hashable], list], executor: ThreadPoolExecutor,
                 max_batch_size: int = 8, max_wait_ms: float = 5.0):
        self.run_batch, self.executor = run_batch, executor
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.queue: asyncio.Queue[_Pending] | None = None
        self.waiting: list[_Pending] = []   # taken from the queue, but with another key than the batch
        self.batches: list[int] = []        # sizes of the batches run (for tests and benchmarks)

    async def submit(self, item: Any, key: Hashable = None) -> Any:
        if self.queue is None:
            self.queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._worker())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(item, key, future))
        return await future

    async def _next(self, timeout: float | None) -> _Pending | None:
        if self.waiting:
            return self.waiting.pop(0)
        try:
            return await (asyncio.wait_for(self.queue.get(), timeout) if timeout is not None else self.queue.get())
        except asyncio.TimeoutError:
            return None

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            batch, deadline, later = [first], time.monotonic() + self.max_wait, []
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                pending = await self._next(remaining)
                if pending is None:
                    break
                (batch if pending.key == first.key else later).append(pending)
            self.waiting = later + self.waiting
            batch = [p for p in batch if not p.future.done()]  # callers that timed out or left
            if not batch:
                continue
            self.batches.append(len(batch))
            try:
                results = await self._run(loop, batch, first.key)
            except Exception as err:
                if len(batch) == 1:
                    _fail(batch[0], err)
                else:
                    await self._one_by_one(loop, batch, first.key)
                continue
            for p, result in zip(batch, results):
                if not p.future.done():
                    p.future.set_result(result)

    async def _run(self, loop, batch: list[_Pending], key: Hashable) -> list:
        results = await loop.run_in_executor(self.executor, self.run_batch, [p.item for p in batch], key)
        if len(results) != len(batch):
            raise RuntimeError(f"the batch function returned {len(results)} results for {len(batch)} items")
        return results

    async def _one_by_one(self, loop, batch: list[_Pending], key: Hashable) -> None:
        """After a failed batch: each item alone, so that only the one that breaks fails."""
        for p in batch:
            if p.future.done():
                continue
            try:
                result = (await self._run(loop, [p], key))[0]
            except Exception as err:
                _fail(p, err)
                continue
            if not p.future.done():
                p.future.set_result(result)


def _fail(pending: _Pending, err: Exception) -> None:
    if not pending.future.done():
        pending.future.set_exception(err)
