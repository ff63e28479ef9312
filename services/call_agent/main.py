"""Composition root of the call agent."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import uuid4

from faststream import AckPolicy, FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage, RabbitQueue

from contracts.commands import JoinCall, StartSession
from contracts.events import SessionStarted
from contracts.routing import CALL_AGENT_CALLS, CALL_AGENT_SESSION_EVENTS, CALL_AGENT_SESSIONS
from domain.ports import LeasedSessions
from infra.broker import COMMANDS, EVENTS, create_broker, declare_topology, queue_for
from infra.db.engine import create_engine, session_factory
from infra.db.repositories import SessionRepository
from infra.erasure import ErasureGuardedStore
from infra.publisher import Publisher
from infra.safe_fetch import FetchPolicy
from infra.settings import Settings
from infra.storage import ObjectStore, open_store
from infra.telemetry.metrics import WEBRTC_CONNECTIONS
from services.call_agent.agent import CallAgent
from services.call_agent.capacity import CallSlots
from services.call_agent.connection import StreamConfig, parse_ice_servers
from services.call_agent.room.handler import RoomCalls, call_config

__all__ = ["CallAgentApp", "build_app", "serve", "stream_config"]

log = logging.getLogger("faceproof.call_agent")


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        frame_rate=settings.frame_rate,
        jpeg_quality=settings.frame_jpeg_quality,
        heartbeat_s=settings.heartbeat_s,
        ice_servers=parse_ice_servers(settings.ice_servers),
        address_policy=FetchPolicy.from_settings(settings),
    )


def session_events_queue() -> RabbitQueue:
    """This process's own queue of session events: exclusive, deleted when the process goes."""
    return RabbitQueue(
        f"call-agent.session-events.{uuid4().hex[:12]}",
        exclusive=True,
        auto_delete=True,
        routing_key=CALL_AGENT_SESSION_EVENTS[0],
    )


@dataclass(frozen=True)
class CallAgentApp:
    app: FastStream
    broker: RabbitBroker
    agent: CallAgent
    calls: RoomCalls


def _subscribe(broker: RabbitBroker, settings: Settings, agent: CallAgent, calls: RoomCalls) -> RabbitQueue:
    """Subscribe the agent and the room calls to their commands and to session events; the events
    queue (exclusive to this instance, bound in ``build_app``'s start-up)."""

    @broker.subscriber(
        queue_for(CALL_AGENT_SESSIONS, delivery_limit=settings.delivery_limit),
        COMMANDS,
        title="StartSession",
        description="Answer a session's WebRTC offer; reply SessionStarted (RPC) and publish it.",
    )
    async def on_start_session(command: StartSession) -> SessionStarted:
        return await agent.start(command)

    @broker.subscriber(
        queue_for(CALL_AGENT_CALLS, delivery_limit=settings.delivery_limit),
        COMMANDS,
        title="JoinCall",
        description="Join a controller's mediasoup room and run the call's liveness session (background).",
    )
    async def on_join_call(command: JoinCall) -> None:
        await calls.start(command)

    events_queue = session_events_queue()

    @broker.subscriber(
        events_queue,
        EVENTS,
        # One at a time, in the order published: the client must see a challenge's verdict before
        # the next challenge (a verdict that comes after it is stale and is not shown). With the
        # broker's prefetch, each delivery is a task of its own, and on an event loop busy with
        # media a later event's task overtook an earlier one's (the verdict was lost, CI).
        channel=Channel(prefetch_count=1),
        ack_policy=AckPolicy.ACK,  # after the handler; an event it cannot use is dropped, not redelivered
        title="SessionEvents",
        description="ChallengeIssued, ChallengeVerdict, LivenessDecided, SessionFinished of held sessions.",
    )
    async def on_session_event(body: object, message: RabbitMessage) -> None:
        await agent.on_event(str(message.raw_message.routing_key), message.body)
        await calls.on_event(str(message.raw_message.routing_key), message.body)

    return events_queue


def build_app(settings: Settings, *, leases: LeasedSessions, store: ObjectStore) -> CallAgentApp:
    """Wire the handlers to the broker; resources are created by the caller. Frames are written
    through the erasure guard: nothing is stored for an erased session (``infra.erasure``)."""
    broker = create_broker(settings)
    store = ErasureGuardedStore(store, leases, writer="call_agent")
    slots = CallSlots(settings.max_concurrent_calls)  # hosted sessions and video calls share the cap
    # the one publisher (infra/publisher.py; raises its PublishFailed)
    events = Publisher.for_settings(broker, settings)
    agent = CallAgent(stream_config(settings), leases=leases, store=store, events=events, slots=slots)
    calls = RoomCalls(call_config(settings), store=store, events=events, slots=slots)
    WEBRTC_CONNECTIONS.labels("session").set_function(lambda: len(agent.sessions))
    WEBRTC_CONNECTIONS.labels("room").set_function(lambda: len(calls.calls))
    events_queue = _subscribe(broker, settings, agent, calls)

    app = FastStream(broker, logger=logging.getLogger("faceproof.app"))

    @app.after_startup
    async def declare() -> None:
        routes = (CALL_AGENT_SESSIONS, CALL_AGENT_CALLS)
        await declare_topology(broker, routes, delivery_limit=settings.delivery_limit)
        exchange = await broker.declare_exchange(EVENTS)
        queue = await broker.declare_queue(events_queue)
        for key in CALL_AGENT_SESSION_EVENTS[1:]:
            await queue.bind(exchange, routing_key=key)

    @app.on_shutdown
    async def hang_up() -> None:
        await agent.close()
        await calls.close()

    return CallAgentApp(app, broker, agent, calls)


async def serve(settings: Settings) -> None:
    """Consume StartSession commands and session events until stopped; hang up everything on stop."""
    store = open_store(settings.resolved_storage_url)
    await store.ensure_buckets()
    engine = create_engine(settings.resolved_database_url)
    try:
        built = build_app(settings, leases=SessionRepository(session_factory(engine)), store=store)
        log.info("call agent ready")
        await built.app.run()
    finally:
        await engine.dispose()
