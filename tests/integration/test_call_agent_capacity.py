"""The call agent's connection cap (FACEPROOF_MAX_CONCURRENT_CALLS) with real parts: PostgreSQL leases,
local storage, real aiortc peers. Hosted sessions and video calls share the slots; a full agent
refuses at once with CALL_AGENT_BUSY; a slot comes back when its connection ends, including a peer
that never connects (else one client could hold every slot until its sessions expire)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from aiortc import RTCSessionDescription

from contracts.commands import JoinCall, StartSession
from contracts.envelope import Event, utc_now
from contracts.events import CallFailed
from contracts.routing import EventKey
from contracts.values import ErrorCode
from infra.db.repositories import SessionRepository
from infra.settings import Settings
from infra.storage import LocalObjectStore
from infra.telemetry.metrics import REGISTRY
from services.call_agent.agent import CallAgent
from services.call_agent.capacity import CallSlots
from services.call_agent.connection import StreamConfig
from services.call_agent.room.handler import RoomCalls, call_config
from tests.integration.test_call_agent_session import Client, eventually, load_frames, new_session, repository

pytestmark = pytest.mark.integration
__all__ = ["repository"]  # the fixture, re-used


@dataclass
class Events:
    """The EventPublisher port (domain/ports.py), keeping what the agent publishes."""

    published: list[tuple[str, Event]] = field(default_factory=list)

    async def event(self, event: Event, routing_key: str) -> None:
        self.published.append((routing_key, event))


def refused(kind: str) -> float:
    return REGISTRY.get_sample_value("faceproof_webrtc_refused_total", {"kind": kind}) or 0.0


def start_command(session_id: str, connection_id: str, sdp: str) -> StartSession:
    return StartSession(
        correlation_id=session_id,
        session_id=session_id,
        connection_id=connection_id,
        offer_sdp=sdp,
        expires_at=utc_now() + timedelta(seconds=120),
    )


def join_command(flow: str, session_id: str) -> JoinCall:
    return JoinCall(
        correlation_id=flow,
        flow_id=flow,
        session_id=session_id,
        ws_url="ws://127.0.0.1:9/room",
        callback_base_url="http://127.0.0.1:9/cb",  # type: ignore[arg-type]
        token="t",
        expires_at=utc_now() + timedelta(seconds=120),
    )


async def test_one_slot_is_shared_by_sessions_and_calls_and_comes_back(
    tmp_path: Path, repository: SessionRepository
) -> None:
    slots, events = CallSlots(1), Events()
    store = LocalObjectStore(tmp_path / "objects")
    agent = CallAgent(
        StreamConfig(heartbeat_s=1.0), leases=repository, store=store, events=events, slots=slots
    )
    calls = RoomCalls(call_config(Settings(data_dir=tmp_path)), store=store, events=events, slots=slots)
    expires = utc_now() + timedelta(seconds=120)
    first, _ = await new_session(repository, expires, "conn-1")
    second, _ = await new_session(repository, expires, "conn-2")
    frames = load_frames(8)
    holder, other = Client(), Client()
    busy_sessions, busy_rooms = refused("session"), refused("room")
    try:
        started = await agent.start(start_command(first.id, "conn-1", await holder.offer(frames)))
        assert started.error is None
        await holder.pc.setRemoteDescription(RTCSessionDescription(sdp=started.answer_sdp, type="answer"))
        await eventually(lambda: holder.pc.connectionState == "connected", "connected")

        # a second offer: refused at once, nothing held for it
        busy = await agent.start(start_command(second.id, "conn-2", await other.offer(frames)))
        assert busy.error is not None and busy.error.code is ErrorCode.CALL_AGENT_BUSY and not busy.answer_sdp
        assert set(agent.sessions) == {first.id} and slots.in_use == 1
        assert refused("session") == busy_sessions + 1

        # a video call: one CallFailed(CALL_AGENT_BUSY), and a redelivered JoinCall adds nothing
        call = join_command("flow-busy", second.id)
        await calls.start(call)
        await calls.start(call)
        failures = [event for key, event in events.published if key == EventKey.CALL_FAILED]
        assert len(failures) == 1 and isinstance(failures[0], CallFailed)
        assert failures[0].flow_id == "flow-busy" and failures[0].reason == "CALL_AGENT_BUSY"
        assert not calls.calls and refused("room") == busy_rooms + 1

        # the first browser leaves: its slot comes back, the second session gets an answer
        await holder.pc.close()
        await eventually(lambda: slots.in_use == 0, "the slot given back")
        answered = await agent.start(start_command(second.id, "conn-2", other.pc.localDescription.sdp))
        assert answered.error is None and answered.answer_sdp
    finally:
        await holder.pc.close()
        await other.pc.close()
        await agent.close()
        await calls.close()
    assert slots.in_use == 0


async def test_a_peer_that_never_connects_gives_its_slot_back(
    tmp_path: Path, repository: SessionRepository
) -> None:
    slots, events = CallSlots(1), Events()
    config = StreamConfig(heartbeat_s=1.0, connect_timeout_s=1.5)
    agent = CallAgent(config, leases=repository, store=LocalObjectStore(tmp_path), events=events, slots=slots)
    record, _ = await new_session(repository, utc_now() + timedelta(seconds=120), "conn-silent")
    silent = Client()
    try:
        started = await agent.start(
            start_command(record.id, "conn-silent", await silent.offer(load_frames(4)))
        )
        assert started.error is None and slots.in_use == 1
        # the attacker never applies the answer: no ICE, no DTLS
        await eventually(lambda: slots.in_use == 0, "the slot given back after connect_timeout_s")
        assert not agent.sessions
        after = await repository.fetch(record.id)
        assert after is not None and after.connection_id is None  # the browser may offer again
    finally:
        await silent.pc.close()
        await agent.close()
