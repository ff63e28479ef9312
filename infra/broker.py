"""RabbitMQ wiring shared by every process: exchanges, queues with dead-lettering, the broker.

Consuming queues are quorum queues: RabbitMQ counts redeliveries itself and, past
``delivery_limit``, moves the message to the queue's dead-letter queue. A handler that raises
is nacked and retried there; nothing a worker cannot process blocks or crashes it.
"""

from __future__ import annotations

import logging

from faststream import AckPolicy
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import Channel

from contracts.routing import COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, Route
from infra.settings import Settings
from infra.telemetry.broker import broker_middlewares

COMMANDS = RabbitExchange(COMMANDS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
EVENTS = RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
DEAD_LETTERS = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.TOPIC, durable=True)

#: What a subscriber does when its handler raises: nack and let the quorum queue count.
ACK_POLICY = AckPolicy.NACK_ON_ERROR


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


def dead_letter_queue_for(route: Route) -> RabbitQueue:
    return RabbitQueue(
        route.dead_letter_queue,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=route.queue,
    )


def create_broker(settings: Settings, *, prefetch: int | None = None) -> RabbitBroker:
    """A broker with publisher confirms and a small prefetch, so a slow worker hoards little."""
    return RabbitBroker(
        settings.broker_url,
        default_channel=Channel(prefetch_count=prefetch or settings.broker_prefetch, publisher_confirms=True),
        ack_policy=ACK_POLICY,
        graceful_timeout=30.0,
        fail_fast=True,
        # our JSON logs; a line per message received/processed only at DEBUG
        logger=logging.getLogger("faceproof.broker"),
        log_level=logging.DEBUG,
        middlewares=broker_middlewares(),  # metrics, trace context in headers, log ids
    )


async def declare_topology(broker: RabbitBroker, routes: tuple[Route, ...], *, delivery_limit: int) -> None:
    """Declare exchanges, each route's queue and its dead-letter queue (idempotent)."""
    exchanges = {
        COMMANDS_EXCHANGE: await broker.declare_exchange(COMMANDS),
        EVENTS_EXCHANGE: await broker.declare_exchange(EVENTS),
    }
    dead_letters = await broker.declare_exchange(DEAD_LETTERS)
    for route in routes:
        queue = await broker.declare_queue(queue_for(route, delivery_limit=delivery_limit))
        await queue.bind(exchanges[route.exchange], routing_key=route.routing_key)
        dlq = await broker.declare_queue(dead_letter_queue_for(route))
        await dlq.bind(dead_letters, routing_key=route.queue)
