"""RoomPeer's newConsumer rules on their edges (the attacks themselves run against a real mediasoup
room in tests/integration/test_room_media_limits.py): a consumer the room closes while it is being
created, and the cap on consumers over a call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from infra.safe_fetch import FetchPolicy
from services.call_agent.room.errors import SignallingError
from services.call_agent.room.mediasoup import MAX_CONSUMERS, RoomConfig, RoomPeer
from services.call_agent.room.protoo import ProtooClient


class Consumer:
    kind = "video"
    track = None

    def __init__(self, consumer_id: str) -> None:
        self.id = consumer_id
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class Receiving:
    """The receive transport: ``consume`` waits for ``gate`` when one is set."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.made: list[Consumer] = []

    async def consume(self, *, id: str, **_: Any) -> Consumer:
        if self.gate is not None:
            await self.gate.wait()
        self.made.append(Consumer(id))
        return self.made[-1]


def peer() -> tuple[RoomPeer, Receiving]:
    room = RoomPeer(
        ProtooClient(policy=FetchPolicy(), request_timeout_s=1.0),
        RoomConfig(),
        on_track=lambda track: None,
        on_failure=lambda error: None,
    )
    receiving = Receiving()
    room._recv = receiving
    room._resume = lambda consumer_id: asyncio.sleep(0)  # type: ignore[method-assign,assignment]
    return room, receiving


def offer(consumer_id: str, kind: str = "video") -> dict[str, Any]:
    return {"id": consumer_id, "producerId": f"p-{consumer_id}", "kind": kind, "rtpParameters": {}}


async def test_a_consumer_the_room_closes_while_it_is_created_is_closed_and_the_next_accepted() -> None:
    room, receiving = peer()
    receiving.gate = asyncio.Event()
    creating = asyncio.create_task(room.handle_request("newConsumer", offer("c1")))
    await asyncio.sleep(0)
    with pytest.raises(SignallingError, match="already consumed"):  # one at a time, even now
        await room.handle_request("newConsumer", offer("c2"))
    room._on_notification("consumerClosed", {"consumerId": "c1"})
    receiving.gate.set()
    with pytest.raises(SignallingError, match="closed the consumer while it was created"):
        await creating
    await asyncio.sleep(0)
    assert receiving.made[0].closed and room._consumers == {}
    await room.handle_request("newConsumer", offer("c3"))
    assert list(room._consumers) == ["c3"]


async def test_audio_is_refused_and_consumers_are_capped_over_the_call() -> None:
    room, _ = peer()
    with pytest.raises(SignallingError, match="audio is not consumed"):
        await room.handle_request("newConsumer", offer("a1", kind="audio"))
    for n in range(MAX_CONSUMERS):
        await room.handle_request("newConsumer", offer(f"c{n}"))
        room._on_notification("consumerClosed", {"consumerId": f"c{n}"})
    with pytest.raises(SignallingError, match=f"{MAX_CONSUMERS} consumers already accepted"):
        await room.handle_request("newConsumer", offer("one-more"))
