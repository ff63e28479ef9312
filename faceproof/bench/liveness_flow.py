"""What the liveness benches share: listening to a stack's session events, and finding, after a
decision, the stored frame that decided the session's last challenge.

``faceproof bench room`` (faceproof/bench/room.py) and ``faceproof bench liveness-capacity``
(faceproof/bench/capacity.py) both time LivenessDecided from that frame: the frame is found by
replaying the worker's stored frames with the worker's own engine (the same replay, readiness and
identity threshold), so it is the frame whose time is the last verdict's ``decided_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika

from contracts.documents import SessionSettingsDocument
from infra.db.liveness import LivenessRepository
from services.liveness.challenges import Challenge
from services.liveness.handlers import session_readiness, to_replay_frame
from services.liveness.readiness import DEFAULT_READINESS
from services.liveness.replay import ReplayFrame, replay

__all__ = ["Replayed", "listening", "replay_stored"]

OnEvent = Callable[[str, dict[str, Any]], None]


@contextlib.asynccontextmanager
async def listening(broker_url: str, keys: Sequence[str], on_event: OnEvent) -> AsyncIterator[None]:
    """Consume ``keys`` from the events exchange (an exclusive queue of its own) and hand each
    message to ``on_event(routing_key, body)``; the queue is bound when the block starts."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def consume() -> None:
        connection = await aio_pika.connect_robust(broker_url)
        async with connection:
            channel = await connection.channel()
            events = await channel.get_exchange("faceproof.events", ensure=False)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            for key in keys:
                await queue.bind(events, routing_key=key)
            ready.set_result(None)
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        on_event(message.routing_key or "", json.loads(message.body))

    task = asyncio.ensure_future(consume())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the consumer failed before it was bound: say why
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True)
class Replayed:
    """A decided session's stored frames (how many) and the one that decided its last challenge."""

    stored: int
    deciding: ReplayFrame | None


async def replay_stored(
    states: LivenessRepository,
    session_id: str,
    *,
    identity_threshold: float,
    settings: SessionSettingsDocument | None = None,
) -> Replayed | None:
    """Replay the session's stored frames; None when it left no state or no frames."""
    state = await states.get(session_id)
    stored = await states.frames_from(session_id, 0)
    if state is None or not stored:
        return None
    frames = [to_replay_frame(f, state.started_at) for f in stored]
    result = replay(
        [Challenge(c.type, c.target) for c in state.challenges],
        frames,
        identity_threshold=identity_threshold,
        readiness=session_readiness(settings or SessionSettingsDocument(), DEFAULT_READINESS),
    )
    last = result.verdicts[-1] if result.verdicts else None
    deciding = next((f for f in frames if last is not None and f.t == last.decided_at), None)
    return Replayed(len(stored), deciding)
