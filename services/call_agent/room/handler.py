"""What the call agent's broker wiring registers for video calls: JoinCall in, calls by flow id.

``RoomCalls.start`` is the JoinCall handler (it returns at once; the call runs in the background,
so the command is acked and a redelivery of a running flow is ignored); ``RoomCalls.on_event``
takes the session events the agent already follows and routes them to the call of that session.

A call takes one of the agent's connection slots (FACEPROOF_MAX_CONCURRENT_CALLS, shared with hosted
sessions). When none is free the flow ends at once: CallFailed(CALL_AGENT_BUSY), so the controller
gets exactly one failure callback and may ask again, rather than a call that waits unseen in a queue
until the flow's deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from contracts.commands import JoinCall
from contracts.envelope import Event
from domain.ports import EventPublisher
from infra.safe_fetch import FetchPolicy
from infra.settings import Settings
from infra.storage import ObjectStore
from services.call_agent.agent import parse_session_event
from services.call_agent.capacity import CallSlots
from services.call_agent.connection import StreamConfig, parse_ice_servers
from services.call_agent.room.call import CallConfig, CallOutcome, RoomCall, publish_call_failed
from services.call_agent.room.errors import CallAgentBusy
from services.call_agent.room.mediasoup import RoomConfig

__all__ = ["RoomCalls", "call_config"]

log = logging.getLogger("faceproof.call_agent.room")

#: Flow ids of calls that ended here, remembered so a redelivered JoinCall does not rejoin.
_REMEMBERED = 1024


def call_config(settings: Settings) -> CallConfig:
    ice_servers = parse_ice_servers(settings.ice_servers)
    return CallConfig(
        room=RoomConfig(
            request_timeout_s=settings.protoo_request_timeout_s,
            address_policy=FetchPolicy.from_settings(settings),
            relay_only=settings.room_relay_only,
            ice_servers=ice_servers,
        ),
        stream=StreamConfig(
            frame_rate=settings.frame_rate,
            jpeg_quality=settings.frame_jpeg_quality,
            heartbeat_s=settings.heartbeat_s,
            ice_servers=ice_servers,
        ),
        no_video_timeout_s=settings.no_video_timeout_s,
    )


class RoomCalls:
    """This process's video calls, by flow id."""

    def __init__(
        self,
        config: CallConfig,
        *,
        store: ObjectStore,
        events: EventPublisher,
        slots: CallSlots | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._events = events
        self._slots = slots if slots is not None else CallSlots(0)
        self._calls: dict[str, RoomCall] = {}
        self._tasks: dict[str, asyncio.Task[CallOutcome]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()

    @property
    def calls(self) -> dict[str, RoomCall]:
        return dict(self._calls)

    async def start(self, command: JoinCall) -> None:
        """Handle JoinCall: start the call in the background (idempotent on ``flow_id``), or end
        the flow with CallFailed(CALL_AGENT_BUSY) when every connection slot is held."""
        if command.flow_id in self._calls or command.flow_id in self._ended:
            log.info("JoinCall for a flow already handled here", extra={"flow_id": command.flow_id})
            return
        slot = self._slots.take("room")
        if slot is None:
            self._remember(command.flow_id)
            busy = f"the call agent holds its {self._slots.limit} connections; ask again later"
            await publish_call_failed(self._events, command, CallAgentBusy(busy))
            return
        try:
            call = RoomCall(
                command, config=self._config, store=self._store, events=self._events, on_closed=self._forget
            )
        except BaseException:
            slot.release()
            raise
        self._calls[command.flow_id] = call
        task = asyncio.create_task(call.run(), name=f"room-call-{command.flow_id}")
        task.add_done_callback(lambda _: slot.release())  # however the call ends
        self._tasks[command.flow_id] = task

    async def wait(self, flow_id: str) -> CallOutcome:
        """The outcome of a call started here (tests, shutdown)."""
        return await self._tasks[flow_id]

    def apply(self, event: Event) -> None:
        session_id = getattr(event, "session_id", None)
        for call in list(self._calls.values()):
            if call.session_id == session_id and not call.done:
                call.apply(event)

    async def on_event(self, routing_key: str, body: bytes) -> None:
        """A session event from the agent's own events queue (the same keys as hosted sessions)."""
        event = parse_session_event(routing_key, body)
        if event is not None:
            self.apply(event)

    async def close(self) -> None:
        """Leave every room (shutdown); no CallFailed is published for these."""
        calls = list(self._calls.values())
        for call in calls:
            await call.stop("the call agent is stopping")
        tasks = [self._tasks[c.flow_id] for c in calls if c.flow_id in self._tasks]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, call: RoomCall) -> None:
        if self._calls.get(call.flow_id) is call:
            del self._calls[call.flow_id]
        self._remember(call.flow_id)

    def _remember(self, flow_id: str) -> None:
        self._ended[flow_id] = None
        while len(self._ended) > _REMEMBERED:
            flow_id, _ = self._ended.popitem(last=False)
            self._tasks.pop(flow_id, None)
