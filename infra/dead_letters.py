"""Dead-letter queues: list them, look at their messages (never the bodies), replay them.

A message lands in ``<queue>.dlq`` when its handler failed ``delivery_limit`` times
(infra/broker.py). RabbitMQ records why and where from in the ``x-death`` header.

``replay`` republishes a dead letter to the queue it died in (through the default exchange,
routing key = that queue), not to the original topic exchange: an event there would reach every
other bound queue a second time, and they processed it already. The dead letter is acknowledged
only after the broker confirmed the republished copy, so a crash in between duplicates at worst
(handlers are idempotent) and never loses a message.

Bodies are never printed or returned: a frame event or a compare command may hold images. Every
dead-letter queue is bounded (TTL within retention, a length and a size: infra/broker.py), and
``upgrade`` declares those limits on queues created before them.

A public command the ingress refuses never reaches its dead-letter queue with its body: the ingress
acknowledges it and dead-letters a :class:`RedactedLetter` instead (empty body; the envelope, the
reason, the body's size and SHA-256 in ``x-faceproof-*`` headers). ``show`` describes both kinds;
``replay`` leaves redacted letters where they are (there is no command left to run).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import ChannelClosed

from contracts.routing import ALL_ROUTES, DEAD_LETTER_EXCHANGE, INGRESS_ROUTES
from infra.amqp_strings import tolerate_undecodable_strings
from infra.broker import DeadLetterLimits, DeadLetterQueueState, ensure_dead_letter_queue
from infra.publisher import MessageExpired, remaining_ttl

__all__ = [
    "DeadLetter",
    "QueueDepth",
    "RedactedLetter",
    "dead_letter_queues",
    "list_queues",
    "replay",
    "show",
    "upgrade",
]

DLQ_SUFFIX: Final = ".dlq"
#: Headers RabbitMQ adds; dropped from the replayed copy (it starts its delivery count afresh).
_BROKER_HEADERS: Final = frozenset(
    {"x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason", "x-delivery-count"}
)


#: Headers of a redacted letter (the ingress's refused commands).
REDACTED: Final = "x-faceproof-redacted"
_PREFIX: Final = "x-faceproof-"
#: Longest text kept from anything the publisher chose (ids, routing key, header names).
_TEXT: Final = 128


def _bounded(value: object, limit: int = _TEXT) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text[:limit]


@dataclass(frozen=True)
class RedactedLetter:
    """What is kept of a refused public command: its envelope, why, and its body's size and
    SHA-256 (to match it with the publisher's copy), never the body or a header's value."""

    source_queue: str
    exchange: str
    routing_key: str
    message_id: str | None
    correlation_id: str | None
    user_id: str | None
    client_id: str | None
    reason: str
    detail: str
    size: int
    sha256: str
    header_names: list[str]
    rejected_at: datetime

    @classmethod
    def of(
        cls,
        *,
        source_queue: str,
        exchange: str,
        routing_key: str,
        message_id: str | None,
        correlation_id: str | None,
        user_id: str | None,
        client_id: str | None,
        headers: Mapping[str, object],
        body: bytes,
        reason: str,
        detail: str,
        at: datetime,
    ) -> RedactedLetter:
        return cls(
            source_queue=source_queue,
            exchange=exchange,
            routing_key=_bounded(routing_key, 64),
            message_id=None if message_id is None else _bounded(message_id),
            correlation_id=None if correlation_id is None else _bounded(correlation_id),
            user_id=None if user_id is None else _bounded(user_id),
            client_id=client_id,
            reason=_bounded(reason, 64),
            detail=_bounded(detail, 500),
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            header_names=sorted(_bounded(name, 64) for name in headers)[:32],
            rejected_at=at,
        )

    def headers(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            REDACTED: 1,
            f"{_PREFIX}queue": self.source_queue,
            f"{_PREFIX}exchange": self.exchange,
            f"{_PREFIX}routing-key": self.routing_key,
            f"{_PREFIX}user-id": self.user_id,
            f"{_PREFIX}client-id": self.client_id,
            f"{_PREFIX}reason": self.reason,
            f"{_PREFIX}detail": self.detail,
            f"{_PREFIX}body-size": self.size,
            f"{_PREFIX}body-sha256": self.sha256,
            f"{_PREFIX}header-names": ",".join(self.header_names),
            f"{_PREFIX}rejected-at": self.rejected_at.isoformat(),
        }
        return {name: value for name, value in fields.items() if value is not None}


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
    #: The body's size (a redacted letter: the size of the body that was not kept).
    size: int
    #: A redacted letter (a refused public command): no body, nothing to replay.
    redacted: bool = False
    #: SHA-256 of the refused body (redacted letters).
    sha256: str | None = None

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
            "redacted": self.redacted,
            "sha256": self.sha256,
        }


def dead_letter_queues() -> list[str]:
    """Every dead-letter queue the services declare."""
    return sorted({route.dead_letter_queue for route in (*ALL_ROUTES, *INGRESS_ROUTES)})


async def list_queues(url: str, queues: Iterable[str] | None = None) -> list[QueueDepth]:
    """Message counts of the dead-letter queues that exist (passive declares: nothing is created)."""
    depths = []
    connection = await _connect(url)
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
    if headers.get(REDACTED):
        return _describe_redacted(message, headers)
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


def _describe_redacted(message: AbstractIncomingMessage, headers: Mapping[str, Any]) -> DeadLetter:
    def field(name: str) -> str | None:
        return _text(headers.get(f"{_PREFIX}{name}"))

    at = field("rejected-at")
    size = headers.get(f"{_PREFIX}body-size")
    return DeadLetter(
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        source_queue=field("queue"),
        exchange=field("exchange"),
        routing_keys=[key] if (key := field("routing-key")) else [],
        reason=field("reason"),
        deaths=1,
        first_death_at=datetime.fromisoformat(at) if at else None,
        size=size if isinstance(size, int) else 0,
        redacted=True,
        sha256=field("body-sha256"),
    )


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


async def _connect(url: str) -> AbstractConnection:
    tolerate_undecodable_strings()  # a letter whose properties are not UTF-8 must still be shown
    return await aio_pika.connect(url)


def _origin(message: AbstractIncomingMessage, letter: DeadLetter, message_ttl_s: int) -> datetime:
    """When a letter's data came in: its AMQP timestamp (infra/publisher.py sets it), else as if it
    had waited its whole time to live before it died."""
    if message.timestamp is not None:
        stamp = message.timestamp
        return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    died = letter.first_death_at or datetime.now(UTC)
    return died - timedelta(seconds=message_ttl_s)


def _check(queue: str) -> None:
    if not queue.endswith(DLQ_SUFFIX):
        raise ValueError(f"{queue!r} is not a dead-letter queue (its name ends in {DLQ_SUFFIX})")


async def show(url: str, queue: str, *, limit: int = 20) -> list[DeadLetter]:
    """The first ``limit`` dead letters, left in the queue (read unacknowledged, then returned)."""
    _check(queue)
    letters: list[DeadLetter] = []
    connection = await _connect(url)
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
    url: str,
    queue: str,
    *,
    limit: int = 100,
    message_id: str | None = None,
    message_ttl_s: int | None = None,
) -> list[DeadLetter]:
    """Republish up to ``limit`` dead letters (or only ``message_id``) to the queue each died in;
    returns those replayed. Others read on the way stay in the dead-letter queue. With
    ``message_ttl_s`` (``Settings.message_ttl_s``) a copy lives in its queue only for what is left
    of that time counted from the letter's origin (its AMQP timestamp; a letter without one is taken
    to have waited the whole time before it died), and a letter with nothing left is not replayed:
    it stays until the dead-letter queue's own time to live ends (it may hold face images)."""
    _check(queue)
    replayed: list[DeadLetter] = []
    connection = await _connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        dlq = await channel.declare_queue(queue, passive=True)
        scanned, now = 0, datetime.now(UTC)
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
            if letter.redacted:
                continue  # a refused command's record: no body to run again, it stays
            expiration = None
            if message_ttl_s is not None:
                try:
                    expiration = remaining_ttl(message_ttl_s, _origin(message, letter, message_ttl_s), now)
                except MessageExpired:
                    continue  # past its time to live: left to the dead-letter queue's own
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
                expiration=expiration,
            )
            # returns once the broker confirmed it (publisher confirms); raises if refused
            await channel.default_exchange.publish(copy, routing_key=target, mandatory=True)
            await message.ack()
            replayed.append(letter)
    return replayed


@dataclass(frozen=True)
class UpgradedQueue:
    queue: str
    state: DeadLetterQueueState
    messages: int


async def upgrade(url: str, limits: DeadLetterLimits, *, discard: bool = False) -> list[UpgradedQueue]:
    """Give every dead-letter queue the current limits (TTL, length, size). A queue declared
    before them (or with other limits) is declared again when empty; one holding letters is kept
    and reported, unless ``discard`` (its letters are deleted with it: look at them first)."""
    routes = {route.dead_letter_queue: route for route in (*ALL_ROUTES, *INGRESS_ROUTES)}
    upgraded = []
    connection = await _connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        for depth in await list_queues(url, sorted(routes)):  # only those that exist
            state, held = await ensure_dead_letter_queue(
                connection, routes[depth.queue], limits, discard=discard
            )
            upgraded.append(UpgradedQueue(depth.queue, state, held))
    return upgraded
