"""The call agent's JoinCall wiring with real parts: RabbitMQ (throw-away vhost), the app from
services/call_agent/main.py, a real mediasoup 3.8.4 room as the controller's (the subject a
pymediasoup peer playing a real face video). The dropped socket, a fault a real room cannot be made
to commit, is the stand-in's (tests/support/test_sfu.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aio_pika
import pytest
from faststream import TestApp
from faststream.rabbit import RabbitBroker

from contracts.commands import JoinCall
from contracts.documents import SessionSettingsDocument
from contracts.envelope import utc_now
from contracts.events import CallFailed, CallJoined, FrameCaptured, SessionFinished, SessionStarted
from contracts.routing import EVENTS_EXCHANGE, CommandKey, EventKey
from contracts.values import SessionStatus
from faceproof.testing.mediasoup_room import MediasoupRoom, RoomSubject
from faceproof.testing.scripted_subject import Media
from faceproof.testing.webrtc_subject import PlaybackSource, SourceTrack
from infra.broker import COMMANDS, EVENTS
from infra.db.engine import create_engine, session_factory
from infra.db.repositories import SessionRepository
from infra.settings import Settings
from infra.storage import LocalObjectStore
from services.call_agent.main import build_app
from tests.integration.test_room_calls import LOOPBACK
from tests.paths import DATA_DIR
from tests.support.broker import temporary_vhost
from tests.support.test_sfu import TestSfu

#: The first run on a machine builds mediasoup's worker in the room_server fixture (~7-13 min).
pytestmark = pytest.mark.timeout(1800)

WAIT_S = 60.0


@dataclass
class Observed:
    by_key: dict[str, list[bytes]] = field(default_factory=dict)

    async def handle(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.by_key.setdefault(str(message.routing_key), []).append(message.body)

    def count(self, key: str) -> int:
        return len(self.by_key.get(key, []))


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():  # noqa: ASYNC110 - polls state other components own
            await asyncio.sleep(0.1)


@dataclass
class Agent:
    broker: RabbitBroker
    observed: Observed
    sessions: SessionRepository

    async def join(self, url: str, flow_id: str) -> str:
        """Publish JoinCall for a new session (the call agent stores frames only for a session that
        exists and is not erased); returns the session id."""
        session, _ = await self.sessions.create(
            "static",
            client_request_token=None,
            settings=SessionSettingsDocument(),
            expires_at=utc_now() + timedelta(minutes=2),
        )
        command = JoinCall(
            correlation_id=flow_id,
            flow_id=flow_id,
            session_id=session.id,
            ws_url=url,
            callback_base_url="https://controller.example/cb",  # type: ignore[arg-type]
            token="controller-token",
            expires_at=utc_now() + timedelta(minutes=2),
        )
        await self.broker.publish(command, exchange=COMMANDS, routing_key=CommandKey.JOIN_CALL)
        return session.id


@pytest.fixture
async def agent(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Agent]:
    with temporary_vhost() as vhost:
        settings = Settings(
            data_dir=tmp_path,
            broker_url=vhost.url,
            no_video_timeout_s=30.0,
            fetch_allow_hosts="127.0.0.1",  # the rooms are on loopback
        )
        engine = create_engine(sqlite_url)
        sessions = SessionRepository(session_factory(engine))
        built = build_app(settings, leases=sessions, store=LocalObjectStore(tmp_path))
        observed = Observed()
        connection = await aio_pika.connect(vhost.url)
        client = RabbitBroker(vhost.url)
        try:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(exclusive=True)
            for key in (
                EventKey.CALL_JOINED,
                EventKey.CALL_FAILED,
                EventKey.SESSION_STARTED,
                EventKey.FRAME_CAPTURED,
            ):
                await queue.bind(exchange, routing_key=key)
            await queue.consume(observed.handle)
            await client.start()
            async with TestApp(built.app):
                yield Agent(client, observed, sessions)
        finally:
            await client.stop()
            await connection.close()
            await engine.dispose()


@pytest.mark.usefixtures("room_server")
async def test_join_call_over_the_broker_streams_and_leaves_on_session_finished(agent: Agent) -> None:
    media = Media.from_path(DATA_DIR / "video" / "liveportrait_d3.mp4", max_seconds=4.0)
    subject = RoomSubject(SourceTrack(PlaybackSource(media)), policy=LOOPBACK)
    async with MediasoupRoom() as room:
        try:
            session_id = await agent.join(room.url("broker", "faceproof"), "flow-a")
            await room.wait_for(lambda: bool(room.of("produced", peerId="faceproof")), WAIT_S)
            await subject.join(room.url("broker", "subject"))
            await until(lambda: agent.observed.count(EventKey.FRAME_CAPTURED) >= 2)
            joined = CallJoined.model_validate_json(agent.observed.by_key[EventKey.CALL_JOINED][0])
            assert (joined.flow_id, joined.session_id) == ("flow-a", session_id)
            started = SessionStarted.model_validate_json(agent.observed.by_key[EventKey.SESSION_STARTED][0])
            assert started.session_id == session_id
            frame = FrameCaptured.model_validate_json(agent.observed.by_key[EventKey.FRAME_CAPTURED][0])
            assert frame.storage_key.startswith(f"sessions/{session_id}/frames/")
            await until(lambda: subject.received_frames > 0)  # the agent's instruction video

            finished = SessionFinished(
                correlation_id=session_id, session_id=session_id, status=SessionStatus.FAILED
            )
            await agent.broker.publish(finished, exchange=EVENTS, routing_key=EventKey.SESSION_FINISHED)
            await room.wait_for(lambda: bool(room.of("peerClosed", peerId="faceproof")), WAIT_S)
        finally:
            await subject.leave()
    assert room.of("request", peerId="faceproof", method="leaveRoom")
    assert agent.observed.count(EventKey.CALL_FAILED) == 0


async def test_socket_dropped_over_the_broker_publishes_call_failed(agent: Agent) -> None:
    """Injected fault (the stand-in): the socket is cut while the room stays up."""
    async with TestSfu() as sfu:
        session_id = await agent.join(sfu.url(), "flow-b")
        await until(lambda: agent.observed.count(EventKey.CALL_JOINED) == 1)
        await sfu.drop()
        await until(lambda: agent.observed.count(EventKey.CALL_FAILED) == 1)
    failed = CallFailed.model_validate_json(agent.observed.by_key[EventKey.CALL_FAILED][0])
    assert (failed.flow_id, failed.session_id, failed.reason) == (
        "flow-b",
        session_id,
        "SOCKET_DROPPED",
    )
