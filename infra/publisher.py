"""The one broker publisher every process uses (services keep their small ports; this is the one
implementation behind them).

Every message is persistent and, as the processes' brokers open their channels with publisher
confirms (:func:`infra.broker.create_broker`), a publish returns once RabbitMQ took it. A broker
that cannot take it raises :class:`PublishFailed`, the one error each service translates at its
edge (a 503, a nack, a retry later).

Events that follow a state change are not published here directly: they are written to the
outbox in the state change's transaction, and the relay sends them through :meth:`Publisher.send`
(infra/outbox.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Final

from aiormq.exceptions import DeliveryError
from faststream.rabbit import RabbitBroker, RabbitExchange

from contracts.envelope import Command, Event, Message
from contracts.routing import COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE
from domain.outgoing import Outgoing
from infra.broker import BROKER_DOWN_ERRORS, COMMANDS, DEAD_LETTERS, EVENTS, MAX_MESSAGE_BYTES
from infra.settings import Settings

__all__ = [
    "MessageExpired",
    "MessageTooLarge",
    "Outgoing",
    "PublishFailed",
    "Publisher",
    "body_size",
    "check_size",
    "exchange_named",
    "remaining_ttl",
    "to_client",
]

log = logging.getLogger("faceproof.broker")

#: How long one publish (and its confirm) may take before it counts as failed.
PUBLISH_TIMEOUT_S: Final = 10.0

_EXCHANGES: Final = {
    COMMANDS_EXCHANGE: COMMANDS,
    EVENTS_EXCHANGE: EVENTS,
    DEAD_LETTER_EXCHANGE: DEAD_LETTERS,
}


class PublishFailed(Exception):
    """The broker did not take a message (retryable); the message is the error's type name."""


class MessageTooLarge(PublishFailed):
    """The message's body is over ``MAX_MESSAGE_BYTES``: never sent, and retrying cannot help."""


class MessageExpired(PublishFailed):
    """The data the message carries came in longer ago than the message time to live: never sent
    (it could hold face images past the retention period), and retrying cannot help."""


def remaining_ttl(ttl_s: float, origin: datetime, now: datetime) -> timedelta:
    """What is left of a message's time to live ``ttl_s``, counted from ``origin``; raises
    :class:`MessageExpired` when nothing is (a message is never sent to expire at once: RabbitMQ
    would move it to a dead-letter queue, whose clock starts again)."""
    left = timedelta(seconds=ttl_s) - (now - origin)
    if left < timedelta(seconds=1):
        raise MessageExpired(
            f"its data came in {(now - origin).total_seconds():.0f} s ago (time to live {ttl_s:g} s)"
        )
    return left


async def to_client(publishing: Awaitable[object], what: str) -> None:
    """Await a publish to a queue an upstream client controls (its ``reply_to``, the queues it binds
    to its public events). RabbitMQ refusing it there (a nack: the client's queue is full with
    ``x-overflow: reject-publish``, or refuses otherwise) is the client's business: it is logged
    and dropped. Raised, it held the shared queue's slot through paced retries while
    every other client's messages waited, and redelivery ended in the dead-letter queue with the
    command's whole body. Any other failure (the broker down) still raises."""
    try:
        await publishing
    except DeliveryError:
        log.warning("%s refused by the broker at the client's queue: dropped", what)


def check_size(body_bytes: int) -> None:
    """Raise :class:`MessageTooLarge` for a body the broker would refuse."""
    if body_bytes > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"a body of {body_bytes} bytes is over {MAX_MESSAGE_BYTES}")


def encode_body(outgoing: Outgoing) -> bytes:
    """``outgoing``'s body as :meth:`Publisher.send` publishes it: compact JSON."""
    return json.dumps(outgoing.payload, separators=(",", ":")).encode()


def body_size(outgoing: Outgoing) -> int:
    """The bytes of ``outgoing``'s body as :meth:`Publisher.send` publishes it."""
    return len(encode_body(outgoing))


def exchange_named(name: str) -> RabbitExchange:
    """The declared exchange called ``name`` (commands, events or dead letters)."""
    try:
        return _EXCHANGES[name]
    except KeyError:
        raise ValueError(f"no exchange {name!r} is published to") from None


class Publisher:
    """Events to the events exchange, commands to the commands exchange, records to the
    dead-letter exchange: persistent, confirmed, with the message id and correlation id, the AMQP
    timestamp of its origin and (from :meth:`for_settings`) what is left of the message time to live
    counted from that origin: a message can hold face images, and none outlives the retention period
    in a queue whose consumers are down (RabbitMQ moves it to the queue's dead letters, whose time
    to live makes up the rest of the period; ``Settings.message_ttl_s``)."""

    def __init__(
        self, broker: RabbitBroker, *, timeout_s: float = PUBLISH_TIMEOUT_S, message_ttl_s: int | None = None
    ) -> None:
        self._broker = broker
        self._timeout_s = timeout_s
        self._ttl_s = message_ttl_s

    @classmethod
    def for_settings(cls, broker: RabbitBroker, settings: Settings) -> Publisher:
        """A process's publisher: its messages live in queues for ``message_ttl_s`` at most."""
        return cls(broker, message_ttl_s=settings.message_ttl_s)

    async def event(self, event: Event, routing_key: str) -> None:
        await self.send(Outgoing.event(event, routing_key))

    async def command(
        self,
        command: Command,
        routing_key: str,
        *,
        reply_to: str | None = None,
        origin: datetime | None = None,
    ) -> None:
        outgoing = Outgoing.command(command, routing_key)
        await self.send(outgoing if origin is None else replace(outgoing, origin=origin), reply_to=reply_to)

    async def dead_letter(self, message: Message, queue: str, reason: str) -> None:
        await self.send(Outgoing.dead_letter(message, queue, reason))

    async def send(self, outgoing: Outgoing, *, reply_to: str | None = None) -> None:
        """Publish ``outgoing`` and wait for the broker's confirm; raises :class:`PublishFailed`
        (:class:`MessageTooLarge` and :class:`MessageExpired` without trying: a body the broker
        would refuse, data past its time to live)."""
        body = encode_body(outgoing)  # once: measured, then sent as it is
        check_size(len(body))
        now = datetime.now(UTC)
        origin = outgoing.origin or now
        expiration = None if self._ttl_s is None else remaining_ttl(self._ttl_s, origin, now)
        try:
            async with asyncio.timeout(self._timeout_s):  # not wait_for: docs/reliability.md
                await self._broker.publish(
                    body,
                    content_type="application/json",
                    exchange=exchange_named(outgoing.exchange),
                    routing_key=outgoing.routing_key,
                    persist=True,
                    correlation_id=outgoing.correlation_id,
                    message_id=outgoing.message_id,
                    headers=outgoing.headers,
                    reply_to=reply_to,
                    expiration=expiration,
                    timestamp=origin,
                )
        except BROKER_DOWN_ERRORS + (TimeoutError,) as error:  # noqa: RUF005 (mypy refuses `*` here)
            raise PublishFailed(type(error).__name__) from error
