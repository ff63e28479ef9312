"""A message on its way to the broker, as the publisher sends it and the outbox stores it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from contracts.envelope import Command, Event, Message
from contracts.routing import COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE

__all__ = ["REASON_HEADER", "Outgoing"]

#: The header of a dead letter a service wrote itself: why (no payload, at most 200 characters).
REASON_HEADER: Final = "x-faceproof-reason"
_EXCHANGES: Final = frozenset({COMMANDS_EXCHANGE, EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE})


def _known(exchange: str) -> str:
    if exchange not in _EXCHANGES:
        raise ValueError(f"no exchange {exchange!r} is published to")
    return exchange


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message on its way: where it goes and what it is (the envelope's JSON document)."""

    exchange: str
    routing_key: str
    message_id: str
    correlation_id: str
    payload: dict[str, Any]
    headers: dict[str, Any] | None = field(default=None)
    #: When the data it carries came in (an outbox row: its state change; None: now). A message
    #: lives in queues for the message time to live counted from here (infra/publisher.py).
    origin: datetime | None = field(default=None)

    @classmethod
    def of(
        cls, message: Message, exchange: str, routing_key: str, *, headers: dict[str, Any] | None = None
    ) -> Outgoing:
        return cls(
            exchange=_known(exchange),
            routing_key=routing_key,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            payload=message.model_dump(mode="json"),
            headers=headers,
        )

    @classmethod
    def event(cls, event: Event, routing_key: str) -> Outgoing:
        return cls.of(event, EVENTS_EXCHANGE, routing_key)

    @classmethod
    def command(cls, command: Command, routing_key: str) -> Outgoing:
        return cls.of(command, COMMANDS_EXCHANGE, routing_key)

    @classmethod
    def dead_letter(cls, message: Message, queue: str, reason: str) -> Outgoing:
        """A record of ``message`` in ``queue``'s dead-letter queue, with why. Its own message id
        (``<id>.dead-letter``; the message's is in the payload): staged in the outbox beside the
        message itself (the notifier's last DeliverCallback), the same id broke the outbox's
        unique key, and the give-up was rolled back and its PUT repeated."""
        record = cls.of(message, DEAD_LETTER_EXCHANGE, queue, headers={REASON_HEADER: reason[:200]})
        return replace(record, message_id=f"{message.message_id}.dead-letter")
