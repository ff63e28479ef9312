"""Hand a browser's WebRTC offer to a call agent over the broker (request/reply, with a deadline).

Mirrors :mod:`services.gateway.comparisons`: a small port (:class:`CallAgents`) that route tests
can fake, and its broker adapter.
"""

from __future__ import annotations

from typing import Protocol

from contracts.commands import StartSession
from contracts.events import SessionStarted
from contracts.routing import COMMANDS_EXCHANGE, CommandKey
from infra.rpc import BrokerRpc, ReplyTimeout

__all__ = ["BrokerCallAgents", "CallAgents"]


class CallAgents(Protocol):
    async def start_session(self, command: StartSession, *, deadline_s: float) -> SessionStarted:
        """The call agent's answer; raises ``ReplyTimeout`` or ``BrokerUnavailable``."""
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
