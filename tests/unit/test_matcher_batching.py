"""Micro-batching groups concurrent requests, keeps each caller's results, and passes errors on."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.matcher.batching import MicroBatcher


def doubled(items: list[int]) -> list[int]:
    calls.append(len(items))
    return [2 * item for item in items]


calls: list[int] = []


@pytest.fixture
def executor() -> ThreadPoolExecutor:
    calls.clear()
    return ThreadPoolExecutor(max_workers=1)


async def test_concurrent_requests_share_a_batch(executor: ThreadPoolExecutor) -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(doubled, executor=executor, max_batch=16, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(5)))
    assert results == [[2 * i, 2 * (i + 100)] for i in range(5)]
    assert calls == [10] and batcher.batches == 1
    await batcher.close()


async def test_batches_are_capped(executor: ThreadPoolExecutor) -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(doubled, executor=executor, max_batch=4, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit([i]) for i in range(10)))
    assert [r[0] for r in results] == [2 * i for i in range(10)]
    assert max(calls) <= 4 and sum(calls) == 10
    await batcher.close()


async def test_a_lone_request_waits_at_most_the_deadline(executor: ThreadPoolExecutor) -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(doubled, executor=executor, max_batch=64, max_wait_s=0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await batcher.submit([3]) == [6]
    assert loop.time() - started < 0.5
    await batcher.close()


async def test_errors_reach_every_caller_of_the_batch_and_the_batcher_goes_on(
    executor: ThreadPoolExecutor,
) -> None:
    def fails(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(fails, executor=executor, max_batch=8, max_wait_s=0.05)
    outcomes = await asyncio.gather(batcher.submit([13]), batcher.submit([1]), return_exceptions=True)
    assert all(isinstance(outcome, ValueError) for outcome in outcomes)
    assert await batcher.submit([2]) == [2]
    await batcher.close()


async def test_empty_submission(executor: ThreadPoolExecutor) -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(doubled, executor=executor, max_batch=8, max_wait_s=0.01)
    assert await batcher.submit([]) == []
    assert calls == []


async def test_batches_run_side_by_side_up_to_the_concurrency() -> None:
    """Two batches overlap in time with concurrency 2 (one core each), never with 1."""
    import threading
    import time

    running, peak, lock = [0], [0], threading.Lock()

    def slow(items: list[int]) -> list[int]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        return items

    for concurrency, expected in ((1, 1), (2, 2)):
        running[0] = peak[0] = 0
        pool = ThreadPoolExecutor(max_workers=2)
        batcher: MicroBatcher[int, int] = MicroBatcher(
            slow, executor=pool, max_batch=1, max_wait_s=0.0, concurrency=concurrency
        )
        assert await asyncio.gather(*(batcher.submit([i]) for i in range(4))) == [[i] for i in range(4)]
        assert peak[0] == expected
        await batcher.close()
        pool.shutdown()


async def test_with_nothing_expected_a_lone_request_goes_at_once(executor: ThreadPoolExecutor) -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(doubled, executor=executor, max_batch=64, max_wait_s=5.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await batcher.submit([3]) == [6]
    assert loop.time() - started < 1.0  # not the 5 s of max_wait_s
    await batcher.close()


async def test_a_batch_waits_for_items_on_their_way_and_shares_the_call(executor: ThreadPoolExecutor) -> None:
    """A compare's two photos: the first face located waits for the second, which is still being
    located, and both are embedded in one call; the second does not wait out ``max_wait_s``."""
    batcher: MicroBatcher[int, int] = MicroBatcher(doubled, executor=executor, max_batch=64, max_wait_s=5.0)
    loop = asyncio.get_running_loop()

    async def photo(item: int, locating_s: float) -> list[int]:
        with batcher.expecting():
            await asyncio.sleep(locating_s)
        return await batcher.submit([item])

    started = loop.time()
    assert await asyncio.gather(photo(1, 0.0), photo(2, 0.1)) == [[2], [4]]
    assert calls == [2] and batcher.batches == 1
    assert loop.time() - started < 1.0
    await batcher.close()


async def test_an_expected_caller_that_brings_nothing_costs_at_most_the_deadline(
    executor: ThreadPoolExecutor,
) -> None:
    """A photo without a face submits nothing: the batch waiting for it goes at the deadline."""
    batcher: MicroBatcher[int, int] = MicroBatcher(doubled, executor=executor, max_batch=64, max_wait_s=0.2)
    loop = asyncio.get_running_loop()

    async def faceless() -> list[int]:
        with batcher.expecting():
            await asyncio.sleep(0.01)
        return await batcher.submit([])

    started = loop.time()
    assert await asyncio.gather(batcher.submit([5]), faceless()) == [[10], []]
    assert 0.2 <= loop.time() - started < 1.5 and calls == [1]
    await batcher.close()


async def test_closing_as_an_item_arrives_still_closes(executor: ThreadPoolExecutor) -> None:
    """The batcher waits for company; a request lands in the very step the worker closes it: the
    close must end (asyncio's 3.11 ``wait_for`` returned the item and dropped the cancellation,
    and the batcher went back to waiting, forever)."""
    batcher: MicroBatcher[int, int] = MicroBatcher(doubled, executor=executor, max_batch=64, max_wait_s=60.0)
    with batcher.expecting():  # a second photo on its way: the first waits for it
        first = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit([2]))
        await asyncio.sleep(0)  # the second request is queued in this step, and the close comes
        async with asyncio.timeout(2):
            await batcher.close()
    for task in (first, second):
        task.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
