"""Request/reply over RabbitMQ with many requests in flight at once.

FastStream's ``broker.request`` holds one lock per broker, so a gateway could only wait for one
reply at a time (a compare waiting behind a slow offer). :class:`BrokerRpc` keeps one exclusive
reply queue per process and matches replies to waiting requests by AMQP ``correlation_id``, a
fresh id per request (the command keeps its own ``correlation_id``: the request, session or flow).
Workers answer as usual: FastStream publishes a handler's return value to ``reply_to`` with the
request's ``correlation_id``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from contracts.envelope import Command
from infra.amqp_strings import tolerate_undecodable_strings
from infra.broker import BROKER_DOWN_ERRORS
from infra.publisher import MessageTooLarge, check_size
from infra.telemetry.metrics import MESSAGES_PUBLISH_FAILED, MESSAGES_PUBLISHED
from infra.telemetry.tracing import inject

__all__ = ["BrokerRpc", "BrokerUnavailable", "MessageTooLarge", "ReplyTimeout"]


class ReplyTimeout(Exception):
    """No worker answered before the deadline."""


class BrokerUnavailable(Exception):
    """The broker cannot be reached; retry later."""


class BrokerRpc:
    """One connection, one channel with publisher confirms, one exclusive reply queue."""

    def __init__(self, url: str, *, message_ttl_s: int | None = None) -> None:
        """``message_ttl_s``: how long a request may wait in a queue (a process passes
        ``Settings.message_ttl_s``: a request carries face images, and with its dead letter's time
        none outlives the retention period while the workers are down). Not the request's deadline:
        RabbitMQ dead-letters what expires, and every compare a restarting matcher missed would
        then wait in a dead-letter queue for hours."""
        self._url = url
        self._message_ttl_s = message_ttl_s
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._reply_queue = f"faceproof.rpc.{uuid4().hex}"
        self._waiting: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        tolerate_undecodable_strings()  # a reply's bad bytes must not close the connection
        try:
            self._connection = await aio_pika.connect_robust(self._url)
            self._channel = await self._connection.channel(publisher_confirms=True)
            assert self._channel is not None
            queue = await self._channel.declare_queue(self._reply_queue, exclusive=True, auto_delete=True)
            await queue.consume(self._on_reply, no_ack=True)
        except BROKER_DOWN_ERRORS + (OSError,) as error:  # noqa: RUF005 (mypy refuses `*` here)
            raise BrokerUnavailable(type(error).__name__) from error

    async def close(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        if self._connection is not None:
            await self._connection.close()

    async def request(self, command: Command, *, exchange: str, routing_key: str, deadline_s: float) -> bytes:
        """Publish ``command`` and wait for the reply's body; raises ReplyTimeout, BrokerUnavailable,
        MessageTooLarge (a body the broker would refuse: not sent)."""
        if self._channel is None:
            raise BrokerUnavailable("the RPC client is not started")
        body = command.model_dump_json().encode()
        check_size(len(body))
        request_id = uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            async with asyncio.timeout(deadline_s):
                target = await self._channel.get_exchange(exchange, ensure=False)
                await target.publish(
                    aio_pika.Message(
                        body,
                        content_type="application/json",
                        correlation_id=request_id,
                        message_id=command.message_id,
                        reply_to=self._reply_queue,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        expiration=self._message_ttl_s,
                        timestamp=datetime.now(UTC),  # its origin (infra/publisher.py)
                        headers=dict(inject({})),  # the trace context (traceparent)
                    ),
                    routing_key=routing_key,
                )
                MESSAGES_PUBLISHED.labels(exchange, routing_key).inc()
                return await future
        except TimeoutError as error:
            raise ReplyTimeout(f"no reply within {deadline_s:g} s") from error
        except BROKER_DOWN_ERRORS as error:
            MESSAGES_PUBLISH_FAILED.labels(exchange, routing_key).inc()
            raise BrokerUnavailable(type(error).__name__) from error
        finally:
            self._waiting.pop(request_id, None)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message.body)
