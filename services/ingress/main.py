"""Composition root of the public broker ingress (docs/public-api.md).

- Consumes ``ingress.public-commands`` (bound to ``faceproof.public.v1.commands`` with ``#``):
  identifies the publisher from the AMQP ``user_id`` (RabbitMQ refuses a user_id that is not the
  connection's user, so it cannot be forged), runs each message id once, validates the body as the
  HTTP gateway does and forwards it inside. A refused command gets a CommandRejected event, then is
  acknowledged; what lands in ``ingress.public-commands.dlq`` is a redacted record of it (envelope,
  reason, the body's size and SHA-256), never its body (a face image, infra/dead_letters.py).
- Relays the public subset of internal events to ``faceproof.public.v1.events`` with the routing
  key ``<client id>.<event key>`` (the client that owns the session, flow or comparison).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream import FastStream
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitMessage, RabbitQueue

from contracts.commands import CompareFaces
from contracts.envelope import Event
from contracts.events import CallbackDelivered, CallFailed, FacesCompared, LivenessDecided, SessionFinished
from contracts.public import SCHEMA_VERSION_HEADER, CallStarted, CommandRejected, SessionCreated
from contracts.routing import (
    INGRESS_CALL_FAILED,
    INGRESS_CALLBACK_DELIVERED,
    INGRESS_COMMANDS,
    INGRESS_FACES_COMPARED,
    INGRESS_LIVENESS_DECIDED,
    INGRESS_ROUTES,
    INGRESS_SESSION_FINISHED,
    PUBLIC_API_VERSION,
    PUBLIC_COMMANDS_EXCHANGE,
    PUBLIC_EVENTS_EXCHANGE,
    CommandKey,
    PublicEventKey,
    Route,
    public_event_key,
)
from infra.broker import (
    COMMANDS,
    DEAD_LETTERS,
    EVENTS,
    DeadLetterLimits,
    create_broker,
    declare_topology,
    queue_for,
)
from infra.db.engine import create_engine, session_factory
from infra.db.flows import CallFlowRepository
from infra.db.ingress import BrokerUsers, ProcessedCommands
from infra.db.ingress import Owners as OwnerRows
from infra.db.repositories import SessionRepository
from infra.db.security import LivenessFailures, RateLimitRepository
from infra.dead_letters import RedactedLetter
from infra.publisher import Publisher, to_client
from infra.settings import Settings
from infra.storage import open_store
from services.ingress.handlers import CommandDeps, Delivery, Outbox, Owners, receive, relay
from services.intake.calls import BrokerCallCommands, CallStarter
from services.intake.sessions import SessionCreator

__all__ = [
    "PUBLIC_COMMANDS",
    "PUBLIC_EVENTS",
    "build_app",
    "dead_letter_redacted",
    "declare_public_topology",
    "serve",
]

log = logging.getLogger("faceproof.ingress")

PUBLIC_COMMANDS = RabbitExchange(PUBLIC_COMMANDS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
PUBLIC_EVENTS = RabbitExchange(PUBLIC_EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
_HEADERS: dict[str, Any] = {SCHEMA_VERSION_HEADER: str(PUBLIC_API_VERSION)}


async def _raw_body(message: RabbitMessage) -> bytes:
    """Decoder of the command queue: the body as it came (parsed and checked by the handler)."""
    return bytes(message.body)


async def declare_public_topology(
    broker: RabbitBroker, *, delivery_limit: int, dead_letters: DeadLetterLimits | None = None
) -> None:
    """The public exchanges, the ingress queues (with bounded dead-letter queues), their bindings."""
    await declare_topology(
        broker,
        INGRESS_ROUTES,
        delivery_limit=delivery_limit,
        dead_letters=dead_letters,
        exchanges=(PUBLIC_COMMANDS, PUBLIC_EVENTS, COMMANDS, EVENTS),
    )


async def dead_letter_redacted(broker: RabbitBroker, letter: RedactedLetter) -> None:
    """Dead-letter the record of a refused command (returns once the broker confirmed it)."""
    await broker.publish(
        b"",
        exchange=DEAD_LETTERS,
        routing_key=INGRESS_COMMANDS.queue,
        headers=letter.headers(),
        message_id=letter.message_id,
        correlation_id=letter.correlation_id,
        persist=True,
    )


class BrokerOutbox:
    """Publishes inside (CompareFaces), to reply queues, and to the public events exchange."""

    def __init__(self, broker: RabbitBroker, commands: Publisher, *, waited_s: int) -> None:
        """``waited_s``: how long a command may have waited in the ingress's queue
        (``Settings.public_command_ttl_s``): a compare is forwarded with its photos as if it had."""
        self._broker = broker
        self._commands = commands  # with the message time to live, counted from the origin
        self._waited = timedelta(seconds=waited_s)
        self._events = {
            PublicEventKey.COMMAND_REJECTED: broker.publisher(
                exchange=PUBLIC_EVENTS,
                routing_key="{client_id}." + PublicEventKey.COMMAND_REJECTED,
                title="CommandRejected",
                description="A public command was refused (and dead-lettered): reason code and detail.",
                schema=CommandRejected,
            ),
            PublicEventKey.SESSION_CREATED: broker.publisher(
                exchange=PUBLIC_EVENTS,
                routing_key="{client_id}." + PublicEventKey.SESSION_CREATED,
                title="SessionCreated",
                description="Answer to session.start (also sent to reply_to when set).",
                schema=SessionCreated,
            ),
            PublicEventKey.CALL_STARTED: broker.publisher(
                exchange=PUBLIC_EVENTS,
                routing_key="{client_id}." + PublicEventKey.CALL_STARTED,
                title="CallStarted",
                description="Answer to call.join (also sent to reply_to when set).",
                schema=CallStarted,
            ),
        }
        self._relayed = broker.publisher(
            exchange=PUBLIC_EVENTS,
            routing_key="{client_id}.{event key}",
            title="PublicEvents",
            description="FacesCompared, LivenessDecided, SessionFinished, CallFailed, CallbackDelivered "
            "of the client's own comparisons, sessions and call flows.",
        )

    async def compare(self, command: CompareFaces, *, reply_to: str | None, correlation_id: str) -> None:
        origin = datetime.now(UTC) - self._waited
        await self._commands.command(
            command, CommandKey.COMPARE_FACES, reply_to=reply_to or None, origin=origin
        )

    async def reply(self, event: Event, *, reply_to: str, correlation_id: str) -> None:
        publishing = self._broker.publish(
            event,
            routing_key=reply_to,
            correlation_id=correlation_id,
            message_id=event.message_id,
            headers=_HEADERS,
        )
        await to_client(publishing, f"the answer {event.message_id}")

    async def public(self, event: Event, *, client_id: str, key: str) -> None:
        publisher = self._events.get(key, self._relayed)
        publishing = publisher.publish(
            event,
            routing_key=public_event_key(client_id, key),
            correlation_id=event.correlation_id,
            message_id=event.message_id,
            headers=_HEADERS,
            persist=True,
        )
        await to_client(publishing, f"the public event {event.message_id}")


def _delivery(message: RabbitMessage) -> Delivery:
    raw = message.raw_message
    return Delivery(
        routing_key=raw.routing_key or "",
        message_id=raw.message_id,
        correlation_id=raw.correlation_id,
        reply_to=raw.reply_to,
        user_id=raw.user_id,
        exchange=raw.exchange or "",
        headers=dict(raw.headers or {}),
        redelivered=bool(raw.redelivered),
    )


def _subscribe_commands(broker: RabbitBroker, settings: Settings, deps: CommandDeps) -> None:
    async def dead_letter(letter: RedactedLetter) -> None:
        await dead_letter_redacted(broker, letter)

    @broker.subscriber(
        queue_for(INGRESS_COMMANDS, delivery_limit=settings.delivery_limit),
        PUBLIC_COMMANDS,
        decoder=_raw_body,
        no_reply=True,
        title="PublicCommands",
        description="Upstream commands (routing key compare.faces, session.start or call.join; body: "
        "the HTTP request body). AMQP message_id required, user_id required (checked by RabbitMQ), "
        "correlation_id and reply_to optional, header x-schema-version 1.",
    )
    async def on_command(body: bytes, message: RabbitMessage) -> None:
        await receive(_delivery(message), body, deps=deps, dead_letter=dead_letter)


def _subscribe_relays(broker: RabbitBroker, settings: Settings, owners: Owners, outbox: Outbox) -> None:
    def queue(route: Route) -> RabbitQueue:
        return queue_for(route, delivery_limit=settings.delivery_limit)

    @broker.subscriber(
        queue(INGRESS_FACES_COMPARED),
        EVENTS,
        title="RelayFacesCompared",
        description="A comparison's result without reply_to, to its client's public events.",
    )
    async def on_faces_compared(event: FacesCompared) -> None:
        await relay(event, event.client_id, PublicEventKey.FACES_COMPARED, outbox)

    @broker.subscriber(
        queue(INGRESS_LIVENESS_DECIDED),
        EVENTS,
        title="RelayLivenessDecided",
        description="A session's liveness decision, to the session owner's public events.",
    )
    async def on_liveness_decided(event: LivenessDecided) -> None:
        owner = await owners.of_session(event.session_id)
        await relay(event, owner, PublicEventKey.LIVENESS_DECIDED, outbox)

    @broker.subscriber(
        queue(INGRESS_SESSION_FINISHED),
        EVENTS,
        title="RelaySessionFinished",
        description="A session's terminal status, to the session owner's public events.",
    )
    async def on_session_finished(event: SessionFinished) -> None:
        owner = await owners.of_session(event.session_id)
        await relay(event, owner, PublicEventKey.SESSION_FINISHED, outbox)

    @broker.subscriber(
        queue(INGRESS_CALL_FAILED),
        EVENTS,
        title="RelayCallFailed",
        description="A call agent could not run a call, to the flow owner's public events.",
    )
    async def on_call_failed(event: CallFailed) -> None:
        await relay(event, await owners.of_flow(event.flow_id), PublicEventKey.CALL_FAILED, outbox)

    @broker.subscriber(
        queue(INGRESS_CALLBACK_DELIVERED),
        EVENTS,
        title="RelayCallbackDelivered",
        description="A call flow's callback was delivered (or given up), to the flow owner's public events.",
    )
    async def on_callback_delivered(event: CallbackDelivered) -> None:
        await relay(event, await owners.of_flow(event.flow_id), PublicEventKey.CALLBACK_DELIVERED, outbox)


def build_app(settings: Settings, *, deps: CommandDeps, owners: Owners, broker: RabbitBroker) -> FastStream:
    """Wire the handlers to ``broker``; resources are created by the caller."""
    _subscribe_commands(broker, settings, deps)
    _subscribe_relays(broker, settings, owners, deps.outbox)
    app = FastStream(broker, logger=logging.getLogger("faceproof.app"))

    @app.after_startup
    async def declare() -> None:
        limits = DeadLetterLimits.from_settings(settings)
        await declare_public_topology(broker, delivery_limit=settings.delivery_limit, dead_letters=limits)

    return app


async def serve(settings: Settings) -> None:
    """Consume public commands and relay events until stopped."""
    database = create_engine(settings.resolved_database_url)
    factory = session_factory(database)
    store = open_store(settings.resolved_storage_url)
    await store.ensure_buckets()
    broker = create_broker(settings)
    sessions = SessionRepository(factory)
    deps = CommandDeps(
        settings=settings,
        identities=BrokerUsers(factory),
        processed=ProcessedCommands(factory),
        limiter=RateLimitRepository(factory),
        sessions=SessionCreator(settings, sessions, store, LivenessFailures(factory)),
        calls=CallStarter(
            settings,
            sessions,
            CallFlowRepository(factory),
            BrokerCallCommands(Publisher.for_settings(broker, settings)),
        ),
        outbox=BrokerOutbox(
            broker, Publisher.for_settings(broker, settings), waited_s=settings.public_command_ttl_s
        ),
    )
    try:
        await build_app(settings, deps=deps, owners=OwnerRows(factory), broker=broker).run()
    finally:
        await database.dispose()
