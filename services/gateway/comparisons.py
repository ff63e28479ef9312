"""Ask the matcher over the broker (request/reply) and wait for its answer, with a deadline."""

from __future__ import annotations

import asyncio
from typing import Protocol, TypeVar

from aio_pika.exceptions import AMQPError
from faststream.rabbit import RabbitBroker

from contracts.commands import CompareFaces, MatchReferences
from contracts.envelope import Command, Event
from contracts.events import FacesCompared, ReferencesMatched
from contracts.routing import CommandKey
from infra.broker import COMMANDS

Reply = TypeVar("Reply", bound=Event)


class ReplyTimeout(Exception):
    """No worker answered before the deadline."""


class BrokerUnavailable(Exception):
    """The broker cannot be reached; retry later."""


class Comparisons(Protocol):
    async def compare(self, command: CompareFaces, *, deadline_s: float) -> FacesCompared: ...

    async def match_references(self, command: MatchReferences, *, deadline_s: float) -> ReferencesMatched: ...


class BrokerComparisons:
    def __init__(self, broker: RabbitBroker) -> None:
        self._broker = broker

    async def compare(self, command: CompareFaces, *, deadline_s: float) -> FacesCompared:
        return await self._ask(command, CommandKey.COMPARE_FACES, FacesCompared, deadline_s)

    async def match_references(self, command: MatchReferences, *, deadline_s: float) -> ReferencesMatched:
        return await self._ask(command, CommandKey.MATCH_REFERENCES, ReferencesMatched, deadline_s)

    async def _ask(self, command: Command, routing_key: str, reply: type[Reply], deadline_s: float) -> Reply:
        try:
            async with asyncio.timeout(deadline_s):
                answer = await self._broker.request(
                    command,
                    exchange=COMMANDS,
                    routing_key=routing_key,
                    correlation_id=command.correlation_id,
                    message_id=command.message_id,
                    timeout=deadline_s,
                )
        except TimeoutError as error:
            raise ReplyTimeout(f"no reply within {deadline_s:g} s") from error
        except (AMQPError, ConnectionError) as error:
            raise BrokerUnavailable(type(error).__name__) from error
        return reply.model_validate_json(answer.body)
