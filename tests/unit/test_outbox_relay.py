"""infra.outbox.OutboxRelay with in-memory fakes of its two ports (the outbox table, the broker):
messages go out in order, each marked sent only once the broker confirmed it; a failure stops the
batch there (nothing overtakes the message that failed) and the next try resumes with it; what
was confirmed before a crash is sent again with the same message id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import SessionFinished
from contracts.routing import EventKey
from contracts.values import SessionStatus
from domain.outgoing import Outgoing
from infra.broker import MAX_MESSAGE_BYTES
from infra.db.outbox import Pending
from infra.outbox import OutboxRelay
from infra.publisher import MessageTooLarge, Publisher, PublishFailed


def _finished(session_id: str) -> Outgoing:
    event = SessionFinished(
        correlation_id=session_id, session_id=session_id, status=SessionStatus.EXPIRED, reasons=["EXPIRED"]
    )
    return Outgoing.event(event, EventKey.SESSION_FINISHED)


@dataclass
class FakeBatch:
    messages: Sequence[Pending]
    sent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    aside: list[tuple[int, str]] = field(default_factory=list)

    async def mark_sent(self, ids: Sequence[int]) -> None:
        self.sent.extend(ids)

    async def mark_failed(self, row_id: int, error: str) -> None:
        self.failed.append((row_id, error))

    async def set_aside(self, row_id: int, error: str) -> None:
        self.aside.append((row_id, error))


class FakeOutbox:
    """Rows in id order; a batch's marks count only when the batch ends without an exception
    (a transaction); ``locked``: another relay holds the lock."""

    def __init__(self, messages: list[Outgoing]) -> None:
        self.rows = {index + 1: message for index, message in enumerate(messages)}
        self.sent_ids: set[int] = set()
        self.attempts: dict[int, int] = {}
        self.locked = False
        self.wakes_on_commit: list[Callable[[], None]] = []

    @asynccontextmanager
    async def batch(self, limit: int) -> AsyncIterator[FakeBatch | None]:
        if self.locked:
            yield None
            return
        unsent = [Pending(i, m) for i, m in sorted(self.rows.items()) if i not in self.sent_ids]
        batch = FakeBatch(unsent[:limit])
        yield batch
        self.sent_ids.update(batch.sent)  # committed
        self.sent_ids.update(row_id for row_id, _ in batch.aside)  # done with, not sent
        for row_id, _ in batch.failed:
            self.attempts[row_id] = self.attempts.get(row_id, 0) + 1

    def add(self, message: Outgoing) -> None:
        """A row committed by a writer of this process: it wakes the running relays."""
        self.rows[max(self.rows, default=0) + 1] = message
        for wake in self.wakes_on_commit:
            wake()

    @contextmanager
    def wakes(self, wake: Callable[[], None]) -> Iterator[None]:
        self.wakes_on_commit.append(wake)
        try:
            yield
        finally:
            self.wakes_on_commit.remove(wake)


class FakeBroker:
    """Confirms every message, except while ``down`` or for the next ``fail_next`` messages."""

    def __init__(self) -> None:
        self.received: list[Outgoing] = []
        self.down = False
        self.fail_next = 0

    async def send(self, outgoing: Outgoing) -> None:
        if self.down:
            raise PublishFailed("ConnectionRefusedError")
        if self.fail_next:
            self.fail_next -= 1
            raise PublishFailed("ChannelInvalidStateError")
        self.received.append(outgoing)


def _ids(messages: list[Outgoing]) -> list[str]:
    return [m.correlation_id for m in messages]


async def test_messages_go_out_in_order_and_are_marked_sent_once() -> None:
    outbox = FakeOutbox([_finished(f"s{n}") for n in range(5)])
    broker = FakeBroker()
    relay = OutboxRelay(outbox, broker, batch=2)

    sent = [await relay.relay_once() for _ in range(4)]

    assert sent == [2, 2, 1, 0]
    assert _ids(broker.received) == ["s0", "s1", "s2", "s3", "s4"]
    assert outbox.sent_ids == {1, 2, 3, 4, 5}


async def test_a_failure_stops_the_batch_and_the_next_try_resumes_in_order() -> None:
    outbox = FakeOutbox([_finished(f"s{n}") for n in range(4)])
    broker = FakeBroker()
    relay = OutboxRelay(outbox, broker)

    async def fail_third(outgoing: Outgoing) -> None:
        if outgoing.correlation_id == "s2" and not failed:
            failed.append(outgoing)
            raise PublishFailed("ConnectionResetError")
        broker.received.append(outgoing)

    failed: list[Outgoing] = []
    broker.send = fail_third  # type: ignore[method-assign]
    with pytest.raises(PublishFailed):
        await relay.relay_once()
    assert _ids(broker.received) == ["s0", "s1"]  # s3 did not overtake s2
    assert outbox.sent_ids == {1, 2} and outbox.attempts == {3: 1}

    assert await relay.relay_once() == 2
    assert _ids(broker.received) == ["s0", "s1", "s2", "s3"]
    assert outbox.sent_ids == {1, 2, 3, 4}


async def test_a_broker_that_is_down_loses_nothing_and_sends_nothing_twice() -> None:
    outbox = FakeOutbox([_finished("s0")])
    broker = FakeBroker()
    relay = OutboxRelay(outbox, broker)
    broker.down = True
    for _ in range(3):
        with pytest.raises(PublishFailed):
            await relay.relay_once()
    outbox.add(_finished("s1"))  # written while the broker was down
    broker.down = False

    assert await relay.relay_once() == 2
    assert await relay.relay_once() == 0
    assert _ids(broker.received) == ["s0", "s1"]
    assert outbox.attempts == {1: 3}


async def test_a_crash_after_the_confirm_sends_the_same_message_again() -> None:
    """The marks of a batch that did not commit are lost: the message goes again, with its id
    (the consumers dedupe by it)."""
    outbox = FakeOutbox([_finished("s0")])
    broker = FakeBroker()
    relay = OutboxRelay(outbox, broker)
    real_batch = outbox.batch

    @asynccontextmanager
    async def crashing(limit: int) -> AsyncIterator[FakeBatch | None]:
        async with real_batch(limit) as batch:
            yield batch
            raise ConnectionResetError("database connection lost before the commit")

    outbox.batch = crashing  # type: ignore[method-assign]
    with pytest.raises(ConnectionResetError):
        await relay.relay_once()
    outbox.batch = real_batch  # type: ignore[method-assign]
    assert await relay.relay_once() == 1

    assert [m.message_id for m in broker.received] == [broker.received[0].message_id] * 2


async def test_a_relay_that_finds_the_lock_taken_sends_nothing() -> None:
    outbox = FakeOutbox([_finished("s0")])
    broker = FakeBroker()
    outbox.locked = True
    assert await OutboxRelay(outbox, broker).relay_once() == 0
    assert broker.received == []


async def test_the_relay_loop_outlives_failures_and_catches_up() -> None:
    outbox = FakeOutbox([_finished("s0"), _finished("s1")])
    broker = FakeBroker()
    broker.fail_next = 3
    relay = OutboxRelay(outbox, broker, poll_s=0.01)
    async with relay.running():
        async with asyncio.timeout(5):
            while len(broker.received) < 2:  # noqa: ASYNC110 - the relay runs in the background
                await asyncio.sleep(0.01)
            outbox.add(_finished("s2"))
            while len(broker.received) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    assert _ids(broker.received) == ["s0", "s1", "s2"]
    assert outbox.attempts == {1: 3}


async def test_a_commit_of_this_process_relays_at_once_not_at_the_next_poll() -> None:
    outbox = FakeOutbox([])
    broker = FakeBroker()
    relay = OutboxRelay(outbox, broker, poll_s=60.0)
    async with relay.running():
        await asyncio.sleep(0.05)  # idle: the next poll is a minute away
        outbox.add(_finished("s0"))  # a writer of this process committed a row: the store wakes it
        async with asyncio.timeout(5):
            while not broker.received:  # noqa: ASYNC110 - the relay runs in the background
                await asyncio.sleep(0.01)
    assert _ids(broker.received) == ["s0"]
    assert outbox.wakes_on_commit == []  # a stopped relay is no longer woken


async def test_a_wake_up_by_hand_relays_at_once() -> None:
    outbox = FakeOutbox([])
    broker = FakeBroker()
    relay = OutboxRelay(outbox, broker, poll_s=60.0)
    async with relay.running():
        await asyncio.sleep(0.05)
        outbox.rows[1] = _finished("s0")  # written by something the store does not see commit
        relay.wake()
        async with asyncio.timeout(5):
            while not broker.received:  # noqa: ASYNC110 - the relay runs in the background
                await asyncio.sleep(0.01)
    assert _ids(broker.received) == ["s0"]


async def test_a_wake_up_that_finds_the_lock_taken_tries_again_soon_not_at_the_next_poll() -> None:
    """Another process's relay held the lock (its own idle look, say): the rows go out a retry
    later, not a poll later."""
    outbox = FakeOutbox([])
    broker = FakeBroker()
    relay = OutboxRelay(outbox, broker, poll_s=60.0)
    async with relay.running():
        await asyncio.sleep(0.05)
        outbox.locked = True
        outbox.add(_finished("s0"))
        await asyncio.sleep(0.05)  # the woken batch found the lock taken
        assert broker.received == []
        outbox.locked = False
        async with asyncio.timeout(5):
            while not broker.received:  # noqa: ASYNC110 - the relay runs in the background
                await asyncio.sleep(0.01)
    assert _ids(broker.received) == ["s0"]


async def test_a_message_no_broker_would_take_is_set_aside_and_the_rest_go_out() -> None:
    """The real Publisher refuses a body over MAX_MESSAGE_BYTES before it reaches the broker; the
    relay sets that row aside (retrying it would hold back every row after it, for ever)."""

    class Broker:
        def __init__(self) -> None:
            self.published: list[str] = []

        async def publish(self, payload: dict[str, object], **options: object) -> None:
            self.published.append(str(options["correlation_id"]))

    huge = _finished("s1")
    huge = Outgoing(
        huge.exchange, huge.routing_key, huge.message_id, "huge", {"blob": "x" * MAX_MESSAGE_BYTES}, None
    )
    outbox = FakeOutbox([_finished("s0"), huge, _finished("s2")])
    broker = Broker()
    publisher = Publisher(broker)  # type: ignore[arg-type]
    with pytest.raises(MessageTooLarge):
        await publisher.send(huge)
    assert broker.published == []  # refused before it was sent

    assert await OutboxRelay(outbox, publisher).relay_once() == 2
    assert broker.published == ["s0", "s2"]
    assert outbox.sent_ids == {1, 2, 3} and outbox.attempts == {}
    assert await OutboxRelay(outbox, publisher).relay_once() == 0  # not tried again


async def test_a_stop_that_meets_a_wake_up_still_stops_the_relay() -> None:
    """The worker stops in the very step a commit wakes its relay: the relay must end (asyncio's
    3.11 ``wait_for`` returned the wake-up and dropped the cancellation; the relay ran on and the
    worker's stop waited forever: a CI teardown stalled 300 s on it)."""
    relay = OutboxRelay(FakeOutbox([]), FakeBroker(), poll_s=60.0)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.05)  # idle, waiting to be woken
    relay.wake()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # not TimeoutError: it ended
        async with asyncio.timeout(2):
            await task


async def test_a_message_past_its_time_to_live_is_set_aside_and_the_others_keep_what_is_left() -> None:
    """A row staged while the broker was down longer than the message time to live is never sent
    (it could hold face images past the retention period, and RabbitMQ would only move it to a
    dead-letter queue whose clock starts again); the others live what is left of it."""

    class Broker:
        def __init__(self) -> None:
            self.published: dict[str, object] = {}

        async def publish(self, payload: dict[str, object], **options: object) -> None:
            self.published[str(options["correlation_id"])] = options["expiration"]

    now = datetime.now(UTC)
    old, young = replace(_finished("old"), origin=now - timedelta(hours=13)), _finished("young")
    recent = replace(_finished("recent"), origin=now - timedelta(hours=2))
    outbox = FakeOutbox([old, young, recent])
    broker = Broker()
    publisher = Publisher(broker, message_ttl_s=12 * 3600)  # type: ignore[arg-type]

    assert await OutboxRelay(outbox, publisher).relay_once() == 2
    assert set(broker.published) == {"young", "recent"}
    assert outbox.sent_ids == {1, 2, 3}  # the old one done with, unsent
    young_ttl, recent_ttl = broker.published["young"], broker.published["recent"]
    assert isinstance(young_ttl, timedelta) and isinstance(recent_ttl, timedelta)
    assert timedelta(hours=11, minutes=59) < young_ttl <= timedelta(hours=12)
    assert timedelta(hours=9, minutes=59) < recent_ttl <= timedelta(hours=10)
