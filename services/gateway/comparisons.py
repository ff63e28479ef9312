"""Send CompareFaces over the broker and wait for FacesCompared, with a deadline."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aio_pika.exceptions import AMQPError
from faststream.rabbit import RabbitBroker

from contracts.commands import CompareFaces
from contracts.events import FacesCompared
from contracts.routing import CommandKey
from infra.broker import COMMANDS


class ReplyTimeout(Exception):
    """No worker answered before the deadline."""


class BrokerUnavailable(Exception):
    """The broker cannot be reached; retry later."""


class Comparisons(Protocol):
    async def compare(self, command: CompareFaces, *, deadline_s: float) -> FacesCompared: ...


class BrokerComparisons:
    def __init__(self, broker: RabbitBroker) -> None:
        self._broker = broker

    async def compare(self, command: CompareFaces, *, deadline_s: float) -> FacesCompared:
        try:
            async with asyncio.timeout(deadline_s):
                reply = await self._broker.request(
                    command,
                    exchange=COMMANDS,
                    routing_key=CommandKey.COMPARE_FACES,
                    correlation_id=command.correlation_id,
                    message_id=command.message_id,
                    timeout=deadline_s,
                )
        except TimeoutError as error:
            raise ReplyTimeout(f"no reply within {deadline_s:g} s") from error
        except (AMQPError, ConnectionError) as error:
            raise BrokerUnavailable(type(error).__name__) from error
        return FacesCompared.model_validate_json(reply.body)
