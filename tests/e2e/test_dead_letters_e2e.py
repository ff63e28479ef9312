"""A message the matcher cannot parse ends in the dead-letter queue; the worker keeps serving."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from contracts.routing import COMMANDS_EXCHANGE, MATCHER_COMPARE, CommandKey
from tests.e2e.conftest import Stack, image_b64
from tests.e2e.test_compare_e2e import compare
from tests.paths import PEOPLE

pytestmark = pytest.mark.e2e


async def _poison_and_wait(url: str) -> bytes:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(COMMANDS_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(
                b'{"not": "a CompareFaces"}', content_type="application/json", message_id="poison-1"
            ),
            routing_key=CommandKey.COMPARE_FACES,
        )
        dlq = await channel.get_queue(MATCHER_COMPARE.dead_letter_queue)
        for _ in range(120):
            message = await dlq.get(no_ack=True, fail=False)
            if message is not None and message.message_id == "poison-1":
                return message.body
            await asyncio.sleep(0.25)
    raise AssertionError("the poison message never reached the dead-letter queue")


def test_unparseable_command_is_dead_lettered_and_worker_survives(stack: Stack) -> None:
    body = asyncio.run(_poison_and_wait(stack.vhost.url))
    assert body == b'{"not": "a CompareFaces"}'
    status, result = compare(stack, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"))
    assert status == 200 and result["match"] is True
