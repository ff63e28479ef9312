"""Ask the matcher over the broker (request/reply) and wait for its answer, with a deadline."""

from __future__ import annotations

from typing import Protocol, TypeVar

from contracts.commands import CompareFaces, MatchReferences
from contracts.envelope import Command, Event
from contracts.events import FacesCompared, ReferencesMatched
from contracts.routing import COMMANDS_EXCHANGE, CommandKey
from infra.rpc import BrokerRpc, BrokerUnavailable, MessageTooLarge, ReplyTimeout

__all__ = ["BrokerComparisons", "BrokerUnavailable", "Comparisons", "MessageTooLarge", "ReplyTimeout"]

Reply = TypeVar("Reply", bound=Event)


class Comparisons(Protocol):
    async def compare(self, command: CompareFaces, *, deadline_s: float) -> FacesCompared: ...

    async def match_references(self, command: MatchReferences, *, deadline_s: float) -> ReferencesMatched: ...


class BrokerComparisons:
    def __init__(self, rpc: BrokerRpc) -> None:
        self._rpc = rpc

    async def compare(self, command: CompareFaces, *, deadline_s: float) -> FacesCompared:
        return await self._ask(command, CommandKey.COMPARE_FACES, FacesCompared, deadline_s)

    async def match_references(self, command: MatchReferences, *, deadline_s: float) -> ReferencesMatched:
        return await self._ask(command, CommandKey.MATCH_REFERENCES, ReferencesMatched, deadline_s)

    async def _ask(self, command: Command, routing_key: str, reply: type[Reply], deadline_s: float) -> Reply:
        body = await self._rpc.request(
            command, exchange=COMMANDS_EXCHANGE, routing_key=routing_key, deadline_s=deadline_s
        )
        return reply.model_validate_json(body)
