"""Micro-batching: faces from concurrent messages are embedded together, one model call per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Request(Generic[Item, Result]):
    items: Sequence[Item]
    done: asyncio.Future[list[Result]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MicroBatcher(Generic[Item, Result]):
    """Collects items until ``max_batch`` of them or ``max_wait_s`` after the first, then runs them.

    It waits for company only while some caller has said more items are on the way
    (:meth:`expecting`): with nothing expected, a collected batch goes out at once. A compare
    locates its two photos' faces side by side; the first to finish waits for the second (up to
    ``max_wait_s``) and they share a model call; the last one goes at once.

    ``run`` maps a list of items to a list of results of the same length; it is blocking and runs
    on ``executor``. Up to ``concurrency`` batches run at once (ONNX Runtime sessions take
    concurrent runs; with one intra-op thread per model, one batch per core keeps every core
    busy); the next batch is collected while they run.
    """

    def __init__(
        self,
        run: Callable[[list[Item]], list[Result]],
        *,
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
        concurrency: int = 1,
    ) -> None:
        self._run = run
        self._executor = executor
        self._max_batch = max(1, max_batch)
        self._max_wait_s = max(0.0, max_wait_s)
        self._queue: asyncio.Queue[_Request[Item, Result]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._running: set[asyncio.Task[None]] = set()
        self._expected = 0
        self.batches = 0

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Run the work that prepares a submission inside: while it runs, a collected batch waits
        (up to ``max_wait_s``) for its items. Leave it right before :meth:`submit`, in the same
        step of the event loop, so the batcher never sees it gone and its items not yet queued."""
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        if not items:
            return []
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve(), name="micro-batcher")
        request: _Request[Item, Result] = _Request(items)
        await self._queue.put(request)
        return await request.done

    async def close(self) -> None:
        tasks = [*self._running, *([self._worker] if self._worker is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].items)
            deadline = loop.time() + self._max_wait_s
            while size < self._max_batch:
                if self._expected == 0 and self._queue.empty():
                    break  # no one else is coming
                try:
                    async with asyncio.timeout_at(deadline):  # not wait_for: docs/reliability.md
                        request = await self._queue.get()
                except TimeoutError:
                    break
                batch.append(request)
                size += len(request.items)
            await self._slots.acquire()
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Request[Item, Result]]) -> None:
        try:
            items = [item for request in batch for item in request.items]
            try:
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, items)
            except Exception as error:
                for request in batch:
                    if not request.done.done():
                        request.done.set_exception(error)
                return
            self.batches += 1
            start = 0
            for request in batch:
                end = start + len(request.items)
                if not request.done.done():
                    request.done.set_result(results[start:end])
                start = end
        finally:
            self._slots.release()
