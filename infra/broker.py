"""RabbitMQ wiring shared by every process: exchanges, queues with dead-lettering, the broker.

Consuming queues are quorum queues: RabbitMQ counts redeliveries itself and, past
``delivery_limit``, moves the message to the queue's dead-letter queue. A handler that raises
is nacked and retried there; nothing a worker cannot process blocks or crashes it.

A dead letter can hold face images (a compare command, a frame event), so every dead-letter queue
is bounded (:class:`DeadLetterLimits`): its letters expire after the retention period at the
latest (``x-message-ttl``), and past ``x-max-length`` letters or ``x-max-length-bytes`` the oldest
are dropped (``x-overflow: drop-head``). See docs/operations.md, "Dead letters".
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from aio_pika.abc import AbstractConnection, AbstractQueue
from aiormq.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from faststream import AckPolicy
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import Channel

from contracts.routing import COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, Route
from infra.amqp_strings import tolerate_undecodable_strings
from infra.settings import Settings, load_settings
from infra.telemetry.broker import broker_middlewares

COMMANDS = RabbitExchange(COMMANDS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
EVENTS = RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
DEAD_LETTERS = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.TOPIC, durable=True)

#: What a subscriber does when its handler raises: nack and let the quorum queue count.
ACK_POLICY = AckPolicy.NACK_ON_ERROR

#: What a publish raises while the broker cannot take it (down, restarting, the connection being
#: re-established): retryable, a 503 at the gateway. aiormq's ChannelInvalidStateError ("channel
#: closed") is a RuntimeError, not an AMQPError: a RabbitMQ restart under load answered 500 without it.
BROKER_DOWN_ERRORS: Final[tuple[type[Exception], ...]] = (
    AMQPError,
    ConnectionError,
    ChannelInvalidStateError,
)

#: The largest message body a process publishes: RabbitMQ 4's default ``max_message_size`` (16 MiB;
#: 3.x took 128 MiB) less room for the properties and headers. The broker refuses a larger one,
#: and would again on every retry: publishers check first (``MessageTooLarge``).
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024 - 64 * 1024

log = logging.getLogger("faceproof.broker")

#: What a full dead-letter queue does: drop its oldest letters. Not ``reject-publish``: RabbitMQ
#: would then drop the *new* dead letter (at-most-once dead-lettering) or, for the ingress's own
#: redacted records, refuse the publish and make the command loop until its delivery limit; the
#: newest failures are the ones an operator looks into, and the oldest are nearest to expiring.
DEAD_LETTER_OVERFLOW: Final = "drop-head"
_DECLARE_ATTEMPTS: Final = 3


@dataclass(frozen=True, slots=True)
class DeadLetterLimits:
    """How long and how much every ``<queue>.dlq`` keeps (the queue's arguments)."""

    ttl_s: int
    max_messages: int
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> DeadLetterLimits:
        return cls(
            ttl_s=settings.resolved_dead_letter_ttl_s,
            max_messages=settings.dead_letter_max_messages,
            max_bytes=settings.dead_letter_max_bytes,
        )

    def arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": QueueType.QUORUM.value,
            "x-message-ttl": self.ttl_s * 1000,
            "x-max-length": self.max_messages,
            "x-max-length-bytes": self.max_bytes,
            "x-overflow": DEAD_LETTER_OVERFLOW,
        }


class DeadLetterQueueState(StrEnum):
    DECLARED = "declared"  # created, or there already with these limits
    REPLACED = "replaced"  # there with other arguments (an older version), empty: deleted, declared again
    DISCARDED = "discarded"  # there with other arguments, holding letters: deleted with them (asked for)
    KEPT = "kept"  # there with other arguments, holding letters: left as it is (no limits yet)


def exchange_for(route: Route) -> RabbitExchange:
    return {COMMANDS_EXCHANGE: COMMANDS, EVENTS_EXCHANGE: EVENTS}[route.exchange]


def queue_for(route: Route, *, delivery_limit: int) -> RabbitQueue:
    return RabbitQueue(
        route.queue,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=route.routing_key,
        arguments={
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": route.queue,
            "x-delivery-limit": delivery_limit,
        },
    )


async def ensure_dead_letter_queue(
    connection: AbstractConnection, route: Route, limits: DeadLetterLimits, *, discard: bool = False
) -> tuple[DeadLetterQueueState, int]:
    """Declare ``route``'s dead-letter queue with ``limits``, bound to the dead-letter exchange;
    the state and how many letters it holds.

    RabbitMQ refuses to redeclare a queue with other arguments (PRECONDITION_FAILED), as a queue
    from before the limits: an empty one is deleted and declared again; one holding letters is
    kept as it is and logged (never a letter lost on a service's start) unless ``discard``
    (``faceproof dlq upgrade --discard``: the operator looked at them first)."""
    for _ in range(_DECLARE_ATTEMPTS):
        try:
            return await _ensure_dead_letter_queue(connection, route, limits, discard=discard)
        except ChannelNotFoundEntity:  # another service replaced the same queue meanwhile: again
            continue
    raise RuntimeError(f"dead-letter queue {route.dead_letter_queue} kept changing while declaring it")


async def _ensure_dead_letter_queue(
    connection: AbstractConnection, route: Route, limits: DeadLetterLimits, *, discard: bool
) -> tuple[DeadLetterQueueState, int]:
    name = route.dead_letter_queue
    channel = await connection.channel()
    try:
        try:
            queue: AbstractQueue = await channel.declare_queue(
                name, durable=True, arguments=limits.arguments()
            )
            state = DeadLetterQueueState.DECLARED
        except ChannelPreconditionFailed:  # the channel is closed by the broker: take another
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            held = int(queue.declaration_result.message_count or 0)
            if held and not discard:
                log.error(
                    "dead-letter queue %s predates the dead-letter limits and holds %d letters, kept "
                    "without expiry: look at them (faceproof dlq show), then run faceproof dlq upgrade "
                    "--discard",
                    name,
                    held,
                )
                state = DeadLetterQueueState.KEPT
            else:
                # (a letter dead-lettered between the count and the delete is lost with the queue)
                await channel.queue_delete(name)
                await _until_gone(connection, name)
                queue = await channel.declare_queue(name, durable=True, arguments=limits.arguments())
                state = DeadLetterQueueState.DISCARDED if held else DeadLetterQueueState.REPLACED
                log.warning("dead-letter queue %s declared again with its limits (%s)", name, state.value)
        await queue.bind(DEAD_LETTER_EXCHANGE, routing_key=route.queue)
        return state, int(queue.declaration_result.message_count or 0)
    finally:
        if not channel.is_closed:
            await channel.close()


async def _until_gone(connection: AbstractConnection, name: str, *, within_s: float = 10.0) -> None:
    """Wait until a deleted quorum queue is really gone: declaring it again while RabbitMQ still
    tears down its Raft cluster fails with INTERNAL_ERROR, which closes the whole connection."""
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        probe = await connection.channel()
        try:
            await probe.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            return
        finally:
            if not probe.is_closed:
                await probe.close()
        await asyncio.sleep(0.2)


def create_broker(settings: Settings, *, prefetch: int | None = None) -> RabbitBroker:
    """A broker with publisher confirms and a small prefetch, so a slow worker hoards little; a
    message whose properties are not UTF-8 costs it nothing (infra/amqp_strings.py)."""
    tolerate_undecodable_strings()
    return RabbitBroker(
        settings.broker_url,
        default_channel=Channel(prefetch_count=prefetch or settings.broker_prefetch, publisher_confirms=True),
        ack_policy=ACK_POLICY,
        graceful_timeout=30.0,
        fail_fast=True,
        # our JSON logs; a line per message received/processed only at DEBUG
        logger=logging.getLogger("faceproof.broker"),
        log_level=logging.DEBUG,
        # metrics, trace context in headers, log ids; then a pause before a retryable failure's nack
        middlewares=(*broker_middlewares(), _paced_redelivery()),
    )


def _paced_redelivery() -> Any:
    from infra.redelivery import PacedRedelivery  # (it imports BROKER_DOWN_ERRORS from here)

    return PacedRedelivery


async def declare_topology(
    broker: RabbitBroker,
    routes: tuple[Route, ...],
    *,
    delivery_limit: int,
    dead_letters: DeadLetterLimits | None = None,
    exchanges: tuple[RabbitExchange, ...] = (COMMANDS, EVENTS),
) -> None:
    """Declare ``exchanges``, each route's queue and its bounded dead-letter queue (idempotent).
    ``dead_letters``: the limits; ``None``: from the environment's settings (every process of a
    deployment reads the same, and they must agree: RabbitMQ keeps the first declaration)."""
    limits = dead_letters or DeadLetterLimits.from_settings(load_settings())
    declared = {exchange.name: await broker.declare_exchange(exchange) for exchange in exchanges}
    await broker.declare_exchange(DEAD_LETTERS)
    connection = broker._connection  # a channel of its own: a refused declare closes it
    if connection is None:
        raise RuntimeError("connect the broker before declaring the topology")
    for route in routes:
        queue = await broker.declare_queue(queue_for(route, delivery_limit=delivery_limit))
        await queue.bind(declared[route.exchange], routing_key=route.routing_key)
        await ensure_dead_letter_queue(connection, route, limits)
