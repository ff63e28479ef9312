"""The outbox table on PostgreSQL and SQLite (infra/db/outbox.py) under the relay (infra/outbox.py):
rows committed with their transaction only, published oldest first, marked sent once confirmed,
a failed one kept with its attempt count and nothing after it sent, sent rows forgotten by the
purge, on PostgreSQL one relay at a time (the advisory lock), and a commit that wrote rows waking
its process's relay at once. The broker side is a recorder:
the real broker is in tests/integration/test_outbox.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

import infra.outbox
from contracts.events import SessionFinished
from contracts.routing import EventKey
from contracts.values import SessionStatus
from domain.outgoing import Outgoing
from infra.db import outbox as outbox_table
from infra.db.engine import create_engine, session_factory
from infra.db.outbox import RELAY_LOCK_KEY, SqlOutbox, stage
from infra.db.tables import OutboxRow
from infra.outbox import OutboxRelay
from infra.publisher import MessageTooLarge, PublishFailed

pytestmark = pytest.mark.integration


def _finished(session_id: str) -> Outgoing:
    event = SessionFinished(
        correlation_id=session_id, session_id=session_id, status=SessionStatus.EXPIRED, reasons=["EXPIRED"]
    )
    return Outgoing.event(event, EventKey.SESSION_FINISHED)


class Recorder:
    """The broker: confirms everything except the correlation ids in ``refuse``."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.refuse: set[str] = set()
        self.too_large: set[str] = set()

    async def send(self, outgoing: Outgoing) -> None:
        if outgoing.correlation_id in self.too_large:
            raise MessageTooLarge("a body of 17000000 bytes is over 16711680")
        if outgoing.correlation_id in self.refuse:
            raise PublishFailed("ConnectionResetError")
        self.sent.append(outgoing.correlation_id)


async def _drain(relay: OutboxRelay) -> None:
    while await relay.relay_once():
        pass


async def test_rows_go_out_in_order_once_and_a_failure_holds_back_the_rest(engine: AsyncEngine) -> None:
    factory = session_factory(engine)
    tag = uuid.uuid4().hex[:8]
    names = [f"{tag}-{n}" for n in range(5)]
    async with factory.begin() as session:  # rolled back: never published
        stage(session, _finished(f"{tag}-rolled-back"))
        await session.rollback()
    for name in names[:3]:
        async with factory.begin() as session:
            stage(session, _finished(name))
    recorder = Recorder()
    relay = OutboxRelay(SqlOutbox(factory), recorder, batch=2)

    await _drain(relay)
    assert [n for n in recorder.sent if n.startswith(tag)] == names[:3]
    await _drain(relay)
    assert [n for n in recorder.sent if n.startswith(tag)] == names[:3]  # nothing twice

    for name in names[3:]:
        async with factory.begin() as session:
            stage(session, _finished(name))
    recorder.refuse = {names[3]}
    with pytest.raises(PublishFailed):
        await _drain(relay)
    assert [n for n in recorder.sent if n.startswith(tag)] == names[:3]  # names[4] waits behind it
    async with factory() as session:
        failed = (await session.scalars(select(OutboxRow).where(OutboxRow.correlation_id == names[3]))).one()
    assert (failed.sent_at, failed.attempts, failed.last_error) == (None, 1, "ConnectionResetError")

    recorder.refuse = set()
    await _drain(relay)
    assert [n for n in recorder.sent if n.startswith(tag)] == names
    # a sent row keeps what went where, not the message (a call's MatchReferences carries photos)
    async with factory() as session:
        sent = (await session.scalars(select(OutboxRow).where(OutboxRow.correlation_id.in_(names)))).all()
    assert [(row.sent_at is not None, row.payload) for row in sent] == [(True, {})] * len(names)


async def test_a_row_no_broker_would_take_is_set_aside_without_its_payload(engine: AsyncEngine) -> None:
    factory = session_factory(engine)
    tag = uuid.uuid4().hex[:8]
    names = [f"{tag}-{n}" for n in range(3)]
    for name in names:
        async with factory.begin() as session:
            stage(session, _finished(name))
    recorder = Recorder()
    recorder.too_large = {names[1]}
    await _drain(OutboxRelay(SqlOutbox(factory), recorder))
    assert [n for n in recorder.sent if n.startswith(tag)] == [names[0], names[2]]  # nothing held back
    async with factory() as session:
        aside = (await session.scalars(select(OutboxRow).where(OutboxRow.correlation_id == names[1]))).one()
    assert aside.sent_at is not None and aside.payload == {} and aside.attempts == 1
    assert aside.last_error == "set aside, not sent: a body of 17000000 bytes is over 16711680"


async def test_sent_rows_are_forgotten_and_unsent_ones_kept(engine: AsyncEngine) -> None:
    factory = session_factory(engine)
    tag = uuid.uuid4().hex[:8]
    async with factory.begin() as session:
        stage(session, _finished(f"{tag}-sent"))
    await _drain(OutboxRelay(SqlOutbox(factory), Recorder()))
    async with factory.begin() as session:
        stage(session, _finished(f"{tag}-unsent"))
        await session.execute(
            update(OutboxRow)
            .where(OutboxRow.correlation_id.like(f"{tag}-%"))
            .values(created_at=datetime.now(UTC) - timedelta(days=3))
        )
        await session.execute(
            update(OutboxRow)
            .where(OutboxRow.correlation_id == f"{tag}-sent")
            .values(sent_at=datetime.now(UTC) - timedelta(days=2))
        )

    outbox = SqlOutbox(factory)
    while await outbox.purge(datetime.now(UTC) - timedelta(days=1), limit=1000):
        pass

    assert await outbox.messages(f"{tag}-sent") == []
    [kept] = await outbox.messages(f"{tag}-unsent")
    assert kept.routing_key == EventKey.SESSION_FINISHED


async def test_a_commit_that_wrote_rows_wakes_this_process_relay_at_once(engine: AsyncEngine) -> None:
    """The writer's session factory is not the relay's (as in the gateway: the repositories' and
    the relay's), only the engine is shared; the relay's idle poll is a minute away."""
    tag = uuid.uuid4().hex[:8]
    outbox = SqlOutbox(session_factory(engine))
    recorder = Recorder()
    writers = session_factory(engine)
    async with OutboxRelay(outbox, recorder, poll_s=60.0).running():
        async with asyncio.timeout(10):
            while await outbox.unsent():  # noqa: ASYNC110 - the relay's first look sends what other tests left
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # idle now, until a wake-up or the poll
        async with writers.begin() as session:
            stage(session, _finished(tag))
        async with asyncio.timeout(5):
            while tag not in recorder.sent or await outbox.unsent():  # noqa: ASYNC110 - sent, then marked
                await asyncio.sleep(0.02)


async def test_one_relay_at_a_time_on_postgres(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        factory = session_factory(engine)
        tag = uuid.uuid4().hex[:8]
        async with factory.begin() as session:
            stage(session, _finished(tag))
        recorder = Recorder()
        relay = OutboxRelay(SqlOutbox(factory), recorder)
        async with factory.begin() as other:  # another process's relay, mid-batch
            assert await other.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY)))
            assert await relay.relay_once() == 0
        assert tag not in recorder.sent
        await _drain(relay)
        assert tag in recorder.sent
    finally:
        await engine.dispose()


class SlowRecorder(Recorder):
    """A broker that takes ``delay_s`` to confirm each message."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def send(self, outgoing: Outgoing) -> None:
        await asyncio.sleep(self.delay_s)
        await super().send(outgoing)


async def test_a_batch_slower_than_the_idle_limit_still_gets_its_rows_marked(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose publishing outlasts PostgreSQL's idle-in-transaction limit (60 s; 1 s here)
    lost its marks with its transaction: the same rows went out again on every try, for ever, and
    everything behind them waited. The batch marks its progress as it goes now."""
    monkeypatch.setattr(outbox_table, "_IDLE_LIMIT", "SET LOCAL idle_in_transaction_session_timeout = '1s'")
    monkeypatch.setattr(infra.outbox, "MARK_EVERY_S", 0.3)
    engine = create_engine(postgres_url)
    try:
        factory = session_factory(engine)
        tag = uuid.uuid4().hex[:8]
        names = [f"{tag}-{n}" for n in range(20)]  # 20 x 0.1 s: twice the idle limit
        async with factory.begin() as session:
            for name in names:
                stage(session, _finished(name))
        recorder = SlowRecorder(0.1)
        relay = OutboxRelay(SqlOutbox(factory), recorder, batch=100)
        await relay.relay_once()
        async with factory() as session:
            rows = (await session.scalars(select(OutboxRow).where(OutboxRow.correlation_id.in_(names)))).all()
        assert len(rows) == len(names) and all(row.sent_at is not None for row in rows)
        await _drain(relay)
        assert [n for n in recorder.sent if n.startswith(tag)] == names  # each once
    finally:
        await engine.dispose()
