"""Hand a browser's WebRTC offer to a call agent over the broker (request/reply, with a deadline).

Mirrors :mod:`services.gateway.comparisons`: a small port (:class:`CallAgents`) that route tests
can fake, and its broker adapter.
"""

from __future__ import annotations

from typing import Protocol

from aio_pika.exceptions import AMQPError
from faststream.rabbit import RabbitBroker

from contracts.commands import StartSession
from contracts.events import SessionFinished, SessionStarted
from contracts.routing import COMMANDS_EXCHANGE, CommandKey, EventKey
from infra.broker import EVENTS
from infra.rpc import BrokerRpc, BrokerUnavailable, ReplyTimeout

__all__ = ["BrokerCallAgents", "BrokerSessionEvents", "CallAgents", "SessionEvents"]


class CallAgents(Protocol):
    async def start_session(self, command: StartSession, *, deadline_s: float) -> SessionStarted:
        """The call agent's answer; raises ``ReplyTimeout`` or ``BrokerUnavailable``."""
        ...


class SessionEvents(Protocol):
    async def finished(self, event: SessionFinished) -> None:
        """Publish that a session reached its terminal status."""
        ...


class BrokerCallAgents:
    def __init__(self, rpc: BrokerRpc) -> None:
        self._rpc = rpc

    async def start_session(self, command: StartSession, *, deadline_s: float) -> SessionStarted:
        try:
            body = await self._rpc.request(
                command,
                exchange=COMMANDS_EXCHANGE,
                routing_key=CommandKey.START_SESSION,
                deadline_s=deadline_s,
            )
        except ReplyTimeout as error:
            raise ReplyTimeout(f"no call agent answered within {deadline_s:g} s") from error
        return SessionStarted.model_validate_json(body)


class BrokerSessionEvents:
    def __init__(self, broker: RabbitBroker) -> None:
        self._broker = broker

    async def finished(self, event: SessionFinished) -> None:
        try:
            await self._broker.publish(
                event,
                exchange=EVENTS,
                routing_key=EventKey.SESSION_FINISHED,
                correlation_id=event.correlation_id,
                message_id=event.message_id,
            )
        except (AMQPError, ConnectionError) as error:
            raise BrokerUnavailable(type(error).__name__) from error
