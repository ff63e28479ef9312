"""The public broker API, typed: publish commands, await answers (request/reply), follow events.

Built on plain aio-pika. The connection's user must be a RabbitMQ user made by
``faceproof broker setup`` (it may publish to ``faceproof.public.v1.commands`` and declare and
read queues named ``upstream.<user>.*``); each command carries that user as the AMQP user_id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from uuid import uuid4

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pydantic import BaseModel

from contracts.envelope import Event
from contracts.events import CallbackDelivered, CallFailed, FacesCompared, LivenessDecided, SessionFinished
from contracts.http import CompareRequest, CreateCallRequest, CreateSessionRequest
from contracts.public import SCHEMA_VERSION_HEADER, CallStarted, CommandRejected, SessionCreated
from contracts.routing import (
    PUBLIC_API_VERSION,
    PUBLIC_COMMANDS_EXCHANGE,
    PUBLIC_EVENTS_EXCHANGE,
    PublicCommandKey,
    PublicEventKey,
)
from faceproof.client.http import image_field

__all__ = ["EVENT_TYPES", "BrokerClient", "CommandRefused"]

Answer = TypeVar("Answer", bound=Event)

#: Each public event key and its contract.
EVENT_TYPES: dict[str, type[Event]] = {
    PublicEventKey.FACES_COMPARED: FacesCompared,
    PublicEventKey.SESSION_CREATED: SessionCreated,
    PublicEventKey.CALL_STARTED: CallStarted,
    PublicEventKey.LIVENESS_DECIDED: LivenessDecided,
    PublicEventKey.SESSION_FINISHED: SessionFinished,
    PublicEventKey.CALL_FAILED: CallFailed,
    PublicEventKey.CALLBACK_DELIVERED: CallbackDelivered,
    PublicEventKey.COMMAND_REJECTED: CommandRejected,
}


class CommandRefused(Exception):
    """The ingress rejected the command (it is dead-lettered): ``reason`` and ``detail``."""

    def __init__(self, rejected: CommandRejected) -> None:
        super().__init__(f"{rejected.reason}: {rejected.detail}")
        self.reason = rejected.reason
        self.detail = rejected.detail
        self.event = rejected


class BrokerClient:
    """``async with await BrokerClient.connect(url, user) as client: await client.compare(a, b)``"""

    def __init__(
        self, connection: AbstractRobustConnection, channel: AbstractRobustChannel, user: str
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._user = user
        self._waiting: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        self._replies: AbstractQueue | None = None

    @classmethod
    async def connect(cls, url: str, user: str) -> BrokerClient:
        """Connect as ``user`` (the user in ``url``) and open the reply queue."""
        connection = await aio_pika.connect_robust(url)
        channel = await connection.channel(publisher_confirms=True)
        client = cls(connection, channel, user)
        client._replies = await channel.declare_queue(
            client.queue_name("replies"), exclusive=True, auto_delete=True
        )
        await client._replies.consume(client._on_reply, no_ack=True)
        return client

    async def __aenter__(self) -> BrokerClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        await self._connection.close()

    def queue_name(self, purpose: str) -> str:
        """A queue name this user may declare: ``upstream.<user>.<purpose>.<random>``."""
        return f"upstream.{self._user}.{purpose}.{uuid4().hex[:12]}"

    # ------------------------------------------------------------------ commands

    async def publish(
        self,
        command: str,
        body: BaseModel | dict[str, Any] | bytes,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Publish a public command (fire and forget); returns its message id."""
        if isinstance(body, BaseModel):
            data = body.model_dump_json(by_alias=True, exclude_none=True).encode()
        elif isinstance(body, dict):
            data = json.dumps(body).encode()
        else:
            data = body
        message_id = message_id or uuid4().hex
        exchange = await self._channel.get_exchange(PUBLIC_COMMANDS_EXCHANGE, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                data,
                content_type="application/json",
                message_id=message_id,
                correlation_id=correlation_id or message_id,
                reply_to=reply_to,
                user_id=self._user,
                headers={SCHEMA_VERSION_HEADER: str(PUBLIC_API_VERSION)},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=command,
        )
        return message_id

    async def request(
        self,
        command: str,
        body: BaseModel | dict[str, Any] | bytes,
        answer: type[Answer],
        *,
        timeout_s: float = 60,
    ) -> Answer:
        """Publish with reply_to and wait for the answer; raises CommandRefused or TimeoutError."""
        assert self._replies is not None
        correlation_id = uuid4().hex
        future: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            await self.publish(command, body, correlation_id=correlation_id, reply_to=self._replies.name)
            async with asyncio.timeout(timeout_s):
                message = await future
        finally:
            self._waiting.pop(correlation_id, None)
        payload = json.loads(message.body)
        if "reason" in payload and "rejected_message_id" in payload:
            raise CommandRefused(CommandRejected.model_validate(payload))
        return answer.model_validate(payload)

    async def compare(
        self, source: bytes | str | Path, target: bytes | str | Path, *, timeout_s: float = 60, **options: Any
    ) -> FacesCompared:
        body = CompareRequest(source=image_field(source), target=image_field(target), **options)
        return await self.request(PublicCommandKey.COMPARE_FACES, body, FacesCompared, timeout_s=timeout_s)

    async def start_session(
        self, request: CreateSessionRequest | None = None, *, timeout_s: float = 60
    ) -> SessionCreated:
        body = request or CreateSessionRequest()
        return await self.request(PublicCommandKey.START_SESSION, body, SessionCreated, timeout_s=timeout_s)

    async def join_call(self, request: CreateCallRequest, *, timeout_s: float = 60) -> CallStarted:
        return await self.request(PublicCommandKey.JOIN_CALL, request, CallStarted, timeout_s=timeout_s)

    # ------------------------------------------------------------------ events

    async def events(self, client_id: str, *event_keys: str) -> AsyncIterator[Event]:
        """Bind a queue to this client's public events (all of them when no key is given) and
        return an iterator of them, typed; events published from now on are in it."""
        queue = await self._channel.declare_queue(self.queue_name("events"), exclusive=True, auto_delete=True)
        exchange = await self._channel.get_exchange(PUBLIC_EVENTS_EXCHANGE, ensure=False)
        for key in event_keys or ("#",):
            await queue.bind(exchange, routing_key=f"{client_id}.{key}")
        return self._follow(queue, client_id)

    async def _follow(self, queue: AbstractQueue, client_id: str) -> AsyncIterator[Event]:
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    key = (message.routing_key or "").removeprefix(f"{client_id}.")
                    model = EVENT_TYPES.get(key)
                    if model is not None:
                        yield model.model_validate_json(message.body)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message)
