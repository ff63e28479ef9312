"""Messages that carry face images leave RabbitMQ's queues within the retention period, even while
their consumers are down (docs/security.md, "Retention"): compare requests and every message a
process publishes.
Against the real broker and the real topology (quorum queues with bounded dead letters)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from contracts.commands import CompareFaces
from contracts.routing import COMMANDS_EXCHANGE, MATCHER_COMPARE
from contracts.values import ImageData
from infra.broker import DeadLetterLimits, create_broker, declare_topology
from infra.publisher import MessageExpired, Publisher
from infra.rpc import BrokerRpc, ReplyTimeout
from infra.settings import Settings
from tests.paths import PEOPLE
from tests.support.broker import RabbitVhost, temporary_vhost

pytestmark = pytest.mark.integration

LIMITS = DeadLetterLimits(ttl_s=3600, max_messages=100, max_bytes=64 * 1024 * 1024)


@pytest.fixture
def vhost() -> Iterator[RabbitVhost]:
    with temporary_vhost() as vhost:
        yield vhost


@pytest.fixture
async def settings(vhost: RabbitVhost) -> AsyncIterator[Settings]:
    """The matcher's queue declared as a deployment declares it, and no matcher consuming."""
    settings = Settings(broker_url=vhost.url, retention_s=60)
    broker = create_broker(settings)
    await broker.connect()
    try:
        await declare_topology(broker, (MATCHER_COMPARE,), delivery_limit=3, dead_letters=LIMITS)
    finally:
        await broker.stop()
    yield settings


def compare_command() -> CompareFaces:
    photo = ImageData(inline=(PEOPLE / "obama.jpg").read_bytes())
    return CompareFaces(correlation_id="c-1", client_id="client-1", source=photo, target=photo)


async def waiting(vhost: RabbitVhost, queue: str) -> int:
    connection = await aio_pika.connect(vhost.url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def test_a_compare_waits_for_a_matcher_no_longer_than_the_retention_period(
    vhost: RabbitVhost, settings: Settings
) -> None:
    """No matcher is up. The request outlives its deadline (a matcher that comes back soon answers
    nothing anyone waits for, but the images are gone with it), not the retention period (2 s
    here): then it leaves the work queue for its bounded dead-letter queue."""
    rpc = BrokerRpc(settings.broker_url, message_ttl_s=2)
    await rpc.start()
    try:
        with pytest.raises(ReplyTimeout):
            await rpc.request(
                compare_command(),
                exchange=COMMANDS_EXCHANGE,
                routing_key=MATCHER_COMPARE.routing_key,
                deadline_s=0.5,
            )
    finally:
        await rpc.close()
    assert await waiting(vhost, MATCHER_COMPARE.queue) == 1
    await asyncio.sleep(2.0)
    assert await waiting(vhost, MATCHER_COMPARE.queue) == 0
    assert await waiting(vhost, f"{MATCHER_COMPARE.queue}.dlq") == 1  # kept there within the same period


async def test_a_message_lives_in_queues_what_is_left_of_its_time_to_live_counted_from_its_origin(
    vhost: RabbitVhost, settings: Settings
) -> None:
    """FACEPROOF_RETENTION_S 60 here, so dead letters keep 30 s and a message lives 30 s in queues
    counted from when its data came in: a message and its dead letter together stay within 60 s
    (RabbitMQ starts a dead letter's clock again). Before, each hop got the whole period afresh."""
    assert (settings.resolved_dead_letter_ttl_s, settings.message_ttl_s) == (30, 30)
    broker = create_broker(settings)
    await broker.connect()
    now = datetime.now(UTC)
    try:
        publisher = Publisher.for_settings(broker, settings)
        await publisher.command(compare_command(), MATCHER_COMPARE.routing_key)
        await publisher.command(
            compare_command(), MATCHER_COMPARE.routing_key, origin=now - timedelta(seconds=20)
        )
        with pytest.raises(MessageExpired):  # an outbox row staged 40 s ago, say: never sent
            await publisher.command(
                compare_command(), MATCHER_COMPARE.routing_key, origin=now - timedelta(seconds=40)
            )
    finally:
        await broker.stop()
    connection = await aio_pika.connect(vhost.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(MATCHER_COMPARE.queue, ensure=False)
        fresh = await queue.get(no_ack=True, timeout=5)
        older = await queue.get(no_ack=True, timeout=5)
        assert await queue.get(no_ack=True, fail=False) is None
    assert fresh.expiration is not None and 29 <= fresh.expiration <= 30
    assert older.expiration is not None and 9 <= older.expiration <= 10
    assert (
        fresh.timestamp is not None and abs((fresh.timestamp.replace(tzinfo=UTC) - now).total_seconds()) < 5
    )
    assert older.timestamp is not None  # its origin, for a replay of its dead letter
    assert abs((older.timestamp.replace(tzinfo=UTC) - (now - timedelta(seconds=20))).total_seconds()) < 2
