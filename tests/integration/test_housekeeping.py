"""Housekeeping on both databases (PostgreSQL and SQLite): processed public commands and idle rate
buckets are forgotten once no longer needed, in bounded batches, and what is still needed stays."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.routing import EVENTS_EXCHANGE
from domain.limits import Limits
from domain.outgoing import Outgoing
from infra.db.engine import session_factory
from infra.db.ingress import CommandStatus, ProcessedCommands
from infra.db.outbox import SqlOutbox, stage
from infra.db.repositories import ApiClientRepository
from infra.db.security import RateLimitRepository
from infra.db.tables import OutboxRow, ProcessedCommandRow, RateBucketRow
from infra.housekeeping import Housekeeping
from infra.settings import Settings

DAY = 86_400


@pytest.fixture
async def factory(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield session_factory(engine)


async def _age_command(
    factory: async_sessionmaker[AsyncSession], client_id: str, message_id: str, age_s: float
) -> None:
    async with factory.begin() as session:
        await session.execute(
            update(ProcessedCommandRow)
            .where(ProcessedCommandRow.client_id == client_id, ProcessedCommandRow.message_id == message_id)
            .values(received_at=datetime.now(UTC) - timedelta(seconds=age_s))
        )


async def _commands(factory: async_sessionmaker[AsyncSession], client_id: str) -> set[str]:
    async with factory() as session:
        rows = await session.scalars(
            select(ProcessedCommandRow.message_id).where(ProcessedCommandRow.client_id == client_id)
        )
        return set(rows.all())


async def _buckets(factory: async_sessionmaker[AsyncSession], keys: list[str]) -> set[str]:
    async with factory() as session:
        rows = await session.scalars(
            select(RateBucketRow.client_key).where(RateBucketRow.client_key.in_(keys))
        )
        return set(rows.all())


async def _idle(factory: async_sessionmaker[AsyncSession], key: str, age_s: float) -> None:
    async with factory.begin() as session:
        await session.execute(
            update(RateBucketRow)
            .where(RateBucketRow.client_key == key)
            .values(updated_at=datetime.now(UTC) - timedelta(seconds=age_s))
        )


def _housekeeping(factory: async_sessionmaker[AsyncSession], *, batch: int, max_batches: int) -> Housekeeping:
    return Housekeeping(
        commands=ProcessedCommands(factory),
        buckets=RateLimitRepository(factory),
        keep_commands_s=7 * DAY,
        bucket_idle_s=DAY,
        batch=batch,
        max_batches=max_batches,
    )


async def test_old_processed_commands_are_forgotten_in_bounded_batches(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    processed = ProcessedCommands(factory)
    client = f"client-{uuid.uuid4().hex[:8]}"
    old = [f"old-{n}" for n in range(5)]
    for message_id in [*old, "recent"]:
        assert await processed.claim(client, message_id, "compare.faces", redelivered=False)
        await processed.finish(client, message_id, CommandStatus.DONE)
    for message_id in old:
        await _age_command(factory, client, message_id, 8 * DAY)
    await _age_command(factory, client, "recent", 6 * DAY)
    housekeeping = _housekeeping(factory, batch=2, max_batches=2)

    first = await housekeeping.run(datetime.now(UTC))
    assert first["processed_commands"] >= 4  # two statements of two (other tests' rows may be older)
    assert len(await _commands(factory, client)) == 2  # one old one left for the next run, and "recent"
    await housekeeping.run(datetime.now(UTC))
    assert await _commands(factory, client) == {"recent"}

    # within the window a duplicate is still refused; a forgotten id runs again
    assert not await processed.claim(client, "recent", "compare.faces", redelivered=False)
    assert await processed.claim(client, "old-0", "compare.faces", redelivered=False)


async def test_idle_rate_buckets_are_forgotten_and_come_back_full(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    limiter = RateLimitRepository(factory)
    tag = uuid.uuid4().hex[:8]
    idle_session, busy_session = f"session:idle-{tag}", f"session:busy-{tag}"
    session_limits = Limits(rate_per_second=1.0, burst=3, monthly_quota=None)
    # an API client that refills slower than a day: its bucket must outlive the idle time
    slow, _ = await ApiClientRepository(factory).create(
        f"slow-{tag}", rate_per_second=0.0001, burst=100, monthly_quota=1000
    )
    fast, _ = await ApiClientRepository(factory).create(
        f"fast-{tag}", rate_per_second=10, burst=20, monthly_quota=1000
    )
    now = datetime.now(UTC)
    for key, limits in (
        (idle_session, session_limits),
        (busy_session, session_limits),
        (slow.id, Limits(0.0001, 100, None)),
        (fast.id, Limits(10, 20, None)),
    ):
        for _ in range(3):
            await limiter.take(key, limits, now)
    for key in (idle_session, slow.id, fast.id):
        await _idle(factory, key, 2 * DAY)
    await _idle(factory, busy_session, DAY / 2)

    await _housekeeping(factory, batch=1000, max_batches=1).run(datetime.now(UTC))

    keys = [idle_session, busy_session, slow.id, fast.id]
    assert await _buckets(factory, keys) == {busy_session, slow.id}
    # a forgotten bucket is a full one: the next request finds all of its burst
    again = await limiter.take(idle_session, session_limits, datetime.now(UTC))
    assert again.allowed and again.remaining == session_limits.burst - 1


def test_the_idle_time_covers_the_slowest_refill_of_the_settings() -> None:
    settings = Settings(processed_command_keep_s=3600, rate_bucket_idle_s=120, session_burst=600)
    housekeeping = Housekeeping.for_database(async_sessionmaker(), settings)
    assert housekeeping.keep_commands_s == 3600
    assert housekeeping.bucket_idle_s == 600  # a session's bucket needs 600 s to refill: never less


async def test_unsent_messages_past_their_time_to_live_are_set_aside_without_their_payload(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """A broker down longer than the message time to live left staged messages, a call's reference
    photos among them, in the outbox for as long as it stayed down; the relay would never send them."""
    tag = uuid.uuid4().hex[:8]
    photos = {"references": ["A" * 200]}  # stands for a MatchReferences with the photos inline
    old, recent = (
        Outgoing(EVENTS_EXCHANGE, "references.match", f"{tag}-{name}", f"{tag}-{name}", photos)
        for name in ("old", "recent")
    )
    async with factory.begin() as session:
        stage(session, old, recent)
    async with factory.begin() as session:
        await session.execute(
            update(OutboxRow)
            .where(OutboxRow.message_id == old.message_id)
            .values(created_at=datetime.now(UTC) - timedelta(hours=2))
        )
    housekeeping = Housekeeping(
        commands=ProcessedCommands(factory),
        buckets=RateLimitRepository(factory),
        keep_commands_s=7 * DAY,
        bucket_idle_s=DAY,
        batch=10,
        sent=SqlOutbox(factory),
        keep_sent_s=DAY,
        message_ttl_s=3600,
    )
    done = await housekeeping.run(datetime.now(UTC))
    assert done["outbox_expired"] >= 1
    async with factory() as session:
        rows = {
            row.message_id: row
            for row in await session.scalars(select(OutboxRow).where(OutboxRow.message_id.like(f"{tag}-%")))
        }
    assert rows[old.message_id].payload == {} and rows[old.message_id].sent_at is not None
    assert rows[recent.message_id].payload == photos and rows[recent.message_id].sent_at is None
