"""Dead letters on a real RabbitMQ vhost: a poison message is dead-lettered past the delivery
limit, listed, shown (no body), replayed to its queue and consumed there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aio_pika
import pytest

from contracts.routing import LIVENESS_FRAMES, NOTIFIER_SESSIONS
from infra.broker import create_broker, declare_topology
from infra.dead_letters import dead_letter_queues, list_queues, replay, show
from infra.settings import Settings
from tests.support.broker import RabbitVhost, temporary_vhost

pytestmark = pytest.mark.integration

DLQ = LIVENESS_FRAMES.dead_letter_queue
OTHER_QUEUE = "test.other-frame-consumer"
SECRET_BODY = json.dumps({"image": "A" * 500}).encode()  # stands for a body with an image in it


@pytest.fixture
def vhost() -> Iterator[RabbitVhost]:
    with temporary_vhost() as created:
        yield created


async def _topology(url: str) -> None:
    broker = create_broker(Settings(broker_url=url))
    await broker.connect()
    try:
        await declare_topology(broker, (LIVENESS_FRAMES, NOTIFIER_SESSIONS), delivery_limit=1)
    finally:
        await broker.stop()
    connection = await aio_pika.connect(url)
    async with connection:  # another consumer of the same events
        channel = await connection.channel()
        copy = await channel.declare_queue(OTHER_QUEUE)
        await copy.bind(LIVENESS_FRAMES.exchange, routing_key=LIVENESS_FRAMES.routing_key)


async def _poison(url: str, message_id: str) -> None:
    """Publish to the events exchange, then fail it until RabbitMQ dead-letters it."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(LIVENESS_FRAMES.exchange)
        message = aio_pika.Message(
            SECRET_BODY,
            message_id=message_id,
            correlation_id=f"session-{message_id}",
            content_type="application/json",
        )
        await exchange.publish(message, routing_key=LIVENESS_FRAMES.routing_key)
        queue = await channel.get_queue(LIVENESS_FRAMES.queue)
        for _ in range(50):
            incoming = await queue.get(no_ack=False, fail=False)
            if incoming is None:
                if (await channel.get_queue(DLQ)).declaration_result.message_count:
                    return
                await asyncio.sleep(0.1)
                continue
            await incoming.nack(requeue=True)
    raise AssertionError("the poison message was never dead-lettered")


async def _consume_one(
    url: str, queue_name: str, *, attempts: int = 50
) -> aio_pika.abc.AbstractIncomingMessage | None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        for _ in range(attempts):
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.1)
    return None


async def test_a_poison_message_is_listed_shown_replayed_and_consumed(vhost: RabbitVhost) -> None:
    await _topology(vhost.url)
    await _poison(vhost.url, "m-1")
    await _poison(vhost.url, "m-2")

    depths = {d.queue: d.messages for d in await list_queues(vhost.url)}
    assert depths[DLQ] == 2
    assert depths[NOTIFIER_SESSIONS.dead_letter_queue] == 0
    assert await _consume_one(vhost.url, OTHER_QUEUE) is not None
    assert await _consume_one(vhost.url, OTHER_QUEUE) is not None  # it had both, once
    assert MATCHER_DLQ not in depths  # never declared here: skipped, not created

    letters = await show(vhost.url, DLQ, limit=10)
    assert [letter.message_id for letter in letters] == ["m-1", "m-2"]
    first = letters[0]
    assert first.source_queue == LIVENESS_FRAMES.queue
    assert first.exchange == LIVENESS_FRAMES.exchange
    assert first.routing_keys == [LIVENESS_FRAMES.routing_key]
    assert first.correlation_id == "session-m-1"
    assert first.reason in {"delivery_limit", "rejected"}
    assert first.size == len(SECRET_BODY)
    assert "AAAA" not in json.dumps([letter.to_dict() for letter in letters])  # never the body
    assert {d.queue: d.messages for d in await list_queues(vhost.url)}[DLQ] == 2  # show left them

    replayed = await replay(vhost.url, DLQ, message_id="m-2")
    assert [letter.message_id for letter in replayed] == ["m-2"]
    assert {d.queue: d.messages for d in await list_queues(vhost.url)}[DLQ] == 1

    consumed = await _consume_one(vhost.url, LIVENESS_FRAMES.queue)
    assert consumed is not None and consumed.message_id == "m-2" and consumed.body == SECRET_BODY
    assert "x-death" not in (consumed.headers or {})
    # only the queue it died in got it back, not every queue bound to the events exchange
    assert await _consume_one(vhost.url, OTHER_QUEUE, attempts=5) is None

    assert [letter.message_id for letter in await replay(vhost.url, DLQ)] == ["m-1"]
    assert {d.queue: d.messages for d in await list_queues(vhost.url)}[DLQ] == 0


def test_every_route_has_a_dead_letter_queue_name() -> None:
    queues = dead_letter_queues()
    assert DLQ in queues and all(q.endswith(".dlq") for q in queues)


async def test_only_dead_letter_queues_are_replayed(vhost: RabbitVhost) -> None:
    with pytest.raises(ValueError, match="not a dead-letter queue"):
        await replay(vhost.url, LIVENESS_FRAMES.queue)


MATCHER_DLQ = "matcher.compare-faces.dlq"
