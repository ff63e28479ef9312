"""Dead letters on a real RabbitMQ vhost: a poison message is dead-lettered past the delivery
limit, listed, shown (no body), replayed to its queue and consumed there."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from contracts.routing import DEAD_LETTER_EXCHANGE, LIVENESS_FRAMES, NOTIFIER_SESSIONS
from infra.broker import DeadLetterLimits, DeadLetterQueueState, create_broker, declare_topology
from infra.dead_letters import RedactedLetter, dead_letter_queues, list_queues, replay, show, upgrade
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


async def _poison(url: str, message_id: str, *, origin: datetime | None = None) -> None:
    """Publish to the events exchange (``origin``: its AMQP timestamp, as infra/publisher.py sets
    it), then fail it until RabbitMQ dead-letters it."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(LIVENESS_FRAMES.exchange)
        message = aio_pika.Message(
            SECRET_BODY,
            message_id=message_id,
            correlation_id=f"session-{message_id}",
            content_type="application/json",
            timestamp=origin,
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


# --------------------------------------------------------------------------- limits (issue 13, item 4)

LIMITS = DeadLetterLimits(ttl_s=2, max_messages=3, max_bytes=1024 * 1024)
FACE = b"\xff\xd8\xff\xe0 a face image " + b"F" * 400


def queue_arguments(vhost: RabbitVhost) -> dict[str, dict[str, object]]:
    """Each queue's arguments, as RabbitMQ holds them."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost.name, "name", "arguments", "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {
        queue["name"]: {name: value for name, _, value in queue["arguments"]} for queue in json.loads(listing)
    }


async def _declare(url: str, limits: DeadLetterLimits | None = LIMITS) -> None:
    broker = create_broker(Settings(broker_url=url))
    await broker.connect()
    try:
        await declare_topology(
            broker, (LIVENESS_FRAMES, NOTIFIER_SESSIONS), delivery_limit=1, dead_letters=limits
        )
    finally:
        await broker.stop()


async def _dead_letter(url: str, route_queue: str, count: int, body: bytes = FACE) -> None:
    """Letters as RabbitMQ dead-letters them: to the dead-letter exchange, keyed by their queue."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
        for n in range(count):
            await exchange.publish(aio_pika.Message(body, message_id=f"letter-{n}"), routing_key=route_queue)


async def _depth(url: str, queue: str) -> int:
    return {d.queue: d.messages for d in await list_queues(url, [queue])}.get(queue, -1)


async def test_every_dead_letter_queue_expires_its_letters_and_keeps_the_newest(vhost: RabbitVhost) -> None:
    await _declare(vhost.url)
    arguments = queue_arguments(vhost)
    for route in (LIVENESS_FRAMES, NOTIFIER_SESSIONS):
        assert arguments[route.dead_letter_queue] == {
            "x-queue-type": "quorum",
            "x-message-ttl": 2000,
            "x-max-length": 3,
            "x-max-length-bytes": 1024 * 1024,
            "x-overflow": "drop-head",
        }

    await _dead_letter(vhost.url, LIVENESS_FRAMES.queue, 5)
    letters = await show(vhost.url, DLQ)
    assert [letter.message_id for letter in letters] == ["letter-2", "letter-3", "letter-4"]  # oldest dropped
    for _ in range(50):  # the 2 s TTL, then nothing of the images is left
        if await _depth(vhost.url, DLQ) == 0:
            break
        await asyncio.sleep(0.2)
    assert await _depth(vhost.url, DLQ) == 0


async def test_queues_from_before_the_limits_are_replaced_or_kept_for_the_operator(
    vhost: RabbitVhost,
) -> None:
    connection = await aio_pika.connect(vhost.url)
    async with connection:  # as an older version declared them: no TTL, no length
        channel = await connection.channel()
        for route in (LIVENESS_FRAMES, NOTIFIER_SESSIONS):
            await channel.declare_queue(
                route.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
        await channel.default_exchange.publish(aio_pika.Message(FACE, message_id="old"), routing_key=DLQ)

    # two services starting at once: no PRECONDITION_FAILED, no NOT_FOUND, no letter lost
    await asyncio.gather(_declare(vhost.url), _declare(vhost.url))
    arguments = queue_arguments(vhost)
    assert arguments[NOTIFIER_SESSIONS.dead_letter_queue]["x-message-ttl"] == 2000  # empty: replaced
    assert "x-message-ttl" not in arguments[DLQ]  # holds a letter: kept as it was
    assert await _depth(vhost.url, DLQ) == 1

    report = {queue.queue: queue for queue in await upgrade(vhost.url, LIMITS)}
    assert report[DLQ].state is DeadLetterQueueState.KEPT and report[DLQ].messages == 1
    assert report[NOTIFIER_SESSIONS.dead_letter_queue].state is DeadLetterQueueState.DECLARED

    report = {queue.queue: queue for queue in await upgrade(vhost.url, LIMITS, discard=True)}
    assert report[DLQ].state is DeadLetterQueueState.DISCARDED
    assert queue_arguments(vhost)[DLQ]["x-message-ttl"] == 2000
    await _dead_letter(vhost.url, LIVENESS_FRAMES.queue, 1)  # still bound to the dead-letter exchange
    assert await _depth(vhost.url, DLQ) == 1


async def test_a_redacted_letter_is_shown_without_a_body_and_never_replayed(vhost: RabbitVhost) -> None:
    await _declare(vhost.url, DeadLetterLimits(ttl_s=600, max_messages=10, max_bytes=1024 * 1024))
    letter = RedactedLetter.of(
        source_queue=LIVENESS_FRAMES.queue,
        exchange="faceproof.public.v1.commands",
        routing_key="compare.faces",
        message_id="refused-1",
        correlation_id="corr-1",
        user_id="up-user",
        client_id="client-1",
        headers={"x-schema-version": "1", "x-image": FACE.decode(errors="replace")},
        body=FACE,
        reason="INVALID_REQUEST",
        detail="the body does not match the schema (target: Field required)",
        at=datetime.now(UTC),
    )
    connection = await aio_pika.connect(vhost.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
        message = aio_pika.Message(
            b"", headers=letter.headers(), message_id="refused-1", correlation_id="corr-1"
        )
        await exchange.publish(message, routing_key=LIVENESS_FRAMES.queue)

    (shown,) = await show(vhost.url, DLQ)
    assert shown.redacted and shown.reason == "INVALID_REQUEST" and shown.message_id == "refused-1"
    assert shown.size == len(FACE) and shown.sha256 == hashlib.sha256(FACE).hexdigest()
    assert shown.source_queue == LIVENESS_FRAMES.queue and shown.routing_keys == ["compare.faces"]
    assert "FFFF" not in json.dumps(shown.to_dict()) and "FFFF" not in json.dumps(letter.headers())
    assert await replay(vhost.url, DLQ) == []  # nothing to run again: it stays
    assert await _depth(vhost.url, DLQ) == 1


async def test_a_replay_gives_a_letter_only_what_is_left_of_its_time_to_live(vhost: RabbitVhost) -> None:
    """A replayed copy had no time to live at all: a letter holding images went back to its queue
    for good, and into the dead-letter queue again with a fresh clock. Now it lives what is left of
    the message time to live counted from its origin, and one with nothing left stays (to expire)."""
    await _topology(vhost.url)
    now = datetime.now(UTC)
    await _poison(vhost.url, "young", origin=now - timedelta(minutes=10))
    await _poison(vhost.url, "old", origin=now - timedelta(hours=2))
    await _poison(vhost.url, "unstamped")  # from before timestamps: as if it waited it all

    replayed = await replay(vhost.url, DLQ, message_ttl_s=3600)
    assert [letter.message_id for letter in replayed] == ["young"]
    consumed = await _consume_one(vhost.url, LIVENESS_FRAMES.queue)
    assert consumed is not None and consumed.message_id == "young"
    assert consumed.expiration is not None and 3000 - 10 <= consumed.expiration <= 3000
    left = [letter.message_id for letter in await show(vhost.url, DLQ, limit=10)]
    assert sorted(left) == ["old", "unstamped"]
