"""KeyedSerializer (services/liveness/serial.py): one holder per key, in order; keys at once; nothing kept."""

from __future__ import annotations

import asyncio

import pytest

from services.liveness.serial import KeyedSerializer

GUARD_S = 5.0  # a deadlock fails the test instead of hanging it; nothing waits for it to pass


async def _let_tasks_reach_their_wait() -> None:
    await asyncio.sleep(0)  # one turn of the loop: each new task runs up to its first wait


async def test_a_keys_holders_go_one_at_a_time_lowest_order_first() -> None:
    serializer: KeyedSerializer[str] = KeyedSerializer()
    entered: list[int] = []
    inside = 0
    most_inside = 0
    release_first = asyncio.Event()

    async def holder(order: int, wait_for: asyncio.Event | None = None) -> None:
        nonlocal inside, most_inside
        async with serializer.hold("session", order):
            entered.append(order)
            inside += 1
            most_inside = max(most_inside, inside)
            if wait_for is not None:
                await wait_for.wait()
            await asyncio.sleep(0)  # give a second holder its chance to get in
            inside -= 1

    first = asyncio.create_task(holder(5, release_first))
    await asyncio.sleep(0)
    later = [asyncio.create_task(holder(order)) for order in (8, 6, 7)]  # arrived out of order
    await _let_tasks_reach_their_wait()
    assert serializer.waiting("session") == 3
    release_first.set()
    await asyncio.wait_for(asyncio.gather(first, *later), GUARD_S)

    assert entered == [5, 6, 7, 8]
    assert most_inside == 1
    assert len(serializer) == 0


async def test_different_keys_are_held_at_once() -> None:
    serializer: KeyedSerializer[str] = KeyedSerializer()
    a_holds, b_holds = asyncio.Event(), asyncio.Event()

    async def hold(key: str, mine: asyncio.Event, theirs: asyncio.Event) -> None:
        async with serializer.hold(key, 1):
            mine.set()
            await theirs.wait()  # only returns if the other key is held at the same time

    await asyncio.wait_for(asyncio.gather(hold("a", a_holds, b_holds), hold("b", b_holds, a_holds)), GUARD_S)
    assert len(serializer) == 0


async def test_a_failing_or_cancelled_holder_passes_the_key_on_and_nothing_is_kept() -> None:
    serializer: KeyedSerializer[str] = KeyedSerializer()
    release = asyncio.Event()
    entered: list[str] = []

    async def holder(name: str, order: int, wait_for: asyncio.Event | None = None) -> None:
        async with serializer.hold("session", order):
            entered.append(name)
            if wait_for is not None:
                await wait_for.wait()
            if name == "fails":
                raise RuntimeError("the handler failed")

    first = asyncio.create_task(holder("first", 1, release))
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(holder("cancelled", 2))
    fails = asyncio.create_task(holder("fails", 3))
    last = asyncio.create_task(holder("last", 4))
    await _let_tasks_reach_their_wait()
    assert serializer.waiting("session") == 3
    cancelled.cancel()
    release.set()
    await asyncio.wait_for(first, GUARD_S)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    with pytest.raises(RuntimeError):
        await fails
    await asyncio.wait_for(last, GUARD_S)

    assert entered == ["first", "fails", "last"]
    assert len(serializer) == 0
    assert serializer.waiting("session") == 0


async def test_a_holder_cancelled_as_it_is_handed_the_key_passes_it_on() -> None:
    serializer: KeyedSerializer[str] = KeyedSerializer()
    release = asyncio.Event()
    entered: list[str] = []
    tasks: dict[str, asyncio.Task[None]] = {}

    async def holder(name: str, order: int) -> None:
        async with serializer.hold("session", order):
            entered.append(name)

    async def first() -> None:
        async with serializer.hold("session", 1):
            entered.append("first")
            await release.wait()
        tasks["handed"].cancel()  # its turn came (on leaving above); it has not resumed yet

    tasks["first"] = asyncio.create_task(first())
    await _let_tasks_reach_their_wait()
    tasks["handed"] = asyncio.create_task(holder("handed", 2))
    tasks["last"] = asyncio.create_task(holder("last", 3))
    await _let_tasks_reach_their_wait()
    assert serializer.waiting("session") == 2
    release.set()
    await asyncio.wait_for(tasks["first"], GUARD_S)
    with pytest.raises(asyncio.CancelledError):
        await tasks["handed"]
    await asyncio.wait_for(tasks["last"], GUARD_S)

    assert entered == ["first", "last"]
    assert len(serializer) == 0
