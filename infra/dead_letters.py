"""Dead-letter queues: list them, look at their messages (never the bodies), replay them.

A message lands in ``<queue>.dlq`` when its handler failed ``delivery_limit`` times
(infra/broker.py). RabbitMQ records why and where from in the ``x-death`` header.

``replay`` republishes a dead letter to the queue it died in (through the default exchange,
routing key = that queue), not to the original topic exchange: an event there would reach every
other bound queue a second time, and they processed it already. The dead letter is acknowledged
only after the broker confirmed the republished copy, so a crash in between duplicates at worst
(handlers are idempotent) and never loses a message.

Bodies are never printed or returned: a frame event or a compare command may hold images.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelClosed

from contracts.routing import ALL_ROUTES, INGRESS_ROUTES

__all__ = ["DeadLetter", "QueueDepth", "dead_letter_queues", "list_queues", "replay", "show"]

DLQ_SUFFIX: Final = ".dlq"
#: Headers RabbitMQ adds; dropped from the replayed copy (it starts its delivery count afresh).
_BROKER_HEADERS: Final = frozenset(
    {"x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason", "x-delivery-count"}
)


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    messages: int


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    correlation_id: str | None
    source_queue: str | None
    exchange: str | None
    routing_keys: list[str]
    reason: str | None
    deaths: int
    first_death_at: datetime | None
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "correlationId": self.correlation_id,
            "sourceQueue": self.source_queue,
            "exchange": self.exchange,
            "routingKeys": self.routing_keys,
            "reason": self.reason,
            "deaths": self.deaths,
            "firstDeathAt": self.first_death_at.isoformat() if self.first_death_at else None,
            "size": self.size,
        }


def dead_letter_queues() -> list[str]:
    """Every dead-letter queue the services declare."""
    return sorted({route.dead_letter_queue for route in (*ALL_ROUTES, *INGRESS_ROUTES)})


async def list_queues(url: str, queues: Iterable[str] | None = None) -> list[QueueDepth]:
    """Message counts of the dead-letter queues that exist (passive declares: nothing is created)."""
    depths = []
    connection = await aio_pika.connect(url)
    async with connection:
        for name in queues if queues is not None else dead_letter_queues():
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelClosed:  # 404: not declared (that service never ran here)
                continue
            depths.append(QueueDepth(name, int(queue.declaration_result.message_count or 0)))
            await channel.close()
    return depths


def _describe(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    deaths = headers.get("x-death")
    death: dict[str, Any] = {}
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = {str(k): v for k, v in deaths[0].items()}
    keys = death.get("routing-keys")
    first = death.get("time")
    return DeadLetter(
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        source_queue=_text(death.get("queue")),
        exchange=_text(death.get("exchange")),
        routing_keys=[_text(k) or "" for k in keys] if isinstance(keys, list) else [],
        reason=_text(death.get("reason")),
        deaths=int(death.get("count") or 0) if isinstance(death.get("count"), int) else 0,
        first_death_at=first if isinstance(first, datetime) else None,
        size=len(message.body),
    )


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


def _check(queue: str) -> None:
    if not queue.endswith(DLQ_SUFFIX):
        raise ValueError(f"{queue!r} is not a dead-letter queue (its name ends in {DLQ_SUFFIX})")


async def show(url: str, queue: str, *, limit: int = 20) -> list[DeadLetter]:
    """The first ``limit`` dead letters, left in the queue (read unacknowledged, then returned)."""
    _check(queue)
    letters: list[DeadLetter] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(queue, passive=True)
        while len(letters) < limit:
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            letters.append(_describe(message))
        # closing the channel returns every unacknowledged message to the queue
    return letters


async def replay(
    url: str, queue: str, *, limit: int = 100, message_id: str | None = None
) -> list[DeadLetter]:
    """Republish up to ``limit`` dead letters (or only ``message_id``) to the queue each died in;
    returns those replayed. Others read on the way stay in the dead-letter queue."""
    _check(queue)
    replayed: list[DeadLetter] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        dlq = await channel.declare_queue(queue, passive=True)
        scanned = 0
        backlog = int(dlq.declaration_result.message_count or 0)
        while len(replayed) < limit and scanned < backlog:
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            scanned += 1
            letter = _describe(message)
            target = letter.source_queue or queue.removesuffix(DLQ_SUFFIX)
            if (message_id is not None and letter.message_id != message_id) or target == queue:
                continue  # left unacknowledged: back in the queue when the channel closes
            headers = {k: v for k, v in (message.headers or {}).items() if k not in _BROKER_HEADERS}
            copy = aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                type=message.type,
                timestamp=message.timestamp,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            # returns once the broker confirmed it (publisher confirms); raises if refused
            await channel.default_exchange.publish(copy, routing_key=target, mandatory=True)
            await message.ack()
            replayed.append(letter)
    return replayed
