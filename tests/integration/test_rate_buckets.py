"""The rate-limit bucket on PostgreSQL and SQLite (infra/db/security.py ``RateLimitRepository``):
two replicas (each its own engine and repository) share one bucket and never hand out more tokens
than it holds, however their takes interleave or race; a replica whose remembered row another
replica changed, or the purge forgot, takes from the row as it is; and the common case costs one
statement and the month's count. The replicas' engines are made as the gateway makes its rate
limit's: commits that do not wait for the disk."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.limits import Limits
from infra.db.engine import create_engine, session_factory
from infra.db.security import RateLimitRepository

pytestmark = pytest.mark.integration

T0 = datetime(2031, 1, 1, tzinfo=UTC)
NO_REFILL = Limits(rate_per_second=0.001, burst=10, monthly_quota=None)


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[tuple[RateLimitRepository, RateLimitRepository]]:
    engines = [create_engine(database_url, wait_for_disk=False) for _ in range(2)]
    try:
        a, b = (RateLimitRepository(session_factory(engine)) for engine in engines)
        yield a, b
    finally:
        for engine in engines:
            await engine.dispose()


async def _commit_setting(engine: AsyncEngine) -> str:
    sqlite = engine.dialect.name == "sqlite"
    async with engine.connect() as connection:
        value = (
            await connection.execute(text("PRAGMA synchronous" if sqlite else "SHOW synchronous_commit"))
        ).scalar_one()
    return {0: "off", 1: "normal", 2: "full", 3: "extra"}[value] if sqlite else str(value)


async def test_the_rate_limit_engine_commits_without_waiting_for_the_disk(database_url: str) -> None:
    fast, default = create_engine(database_url, wait_for_disk=False), create_engine(database_url)
    try:
        if database_url.startswith("sqlite"):  # WAL: a commit is in the log, flushed at checkpoints
            assert (await _commit_setting(fast), await _commit_setting(default)) == ("normal", "full")
        else:
            assert (await _commit_setting(fast), await _commit_setting(default)) == ("off", "on")
        # and what it commits, the other engine reads at once
        repository = RateLimitRepository(session_factory(fast))
        key = _key()
        await repository.take(key, NO_REFILL, T0)
        assert (await RateLimitRepository(session_factory(default)).take(key, NO_REFILL, T0)).remaining == 8
    finally:
        await fast.dispose()
        await default.dispose()


def _key() -> str:
    return f"bucket-{uuid.uuid4().hex[:12]}"


async def test_replicas_racing_for_one_bucket_hand_out_exactly_what_it_holds(
    replicas: tuple[RateLimitRepository, RateLimitRepository], database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share a bucket on PostgreSQL; SQLite serves one process")
    key = _key()
    a, b = replicas
    await a.take(key, NO_REFILL, T0)  # both replicas know the row, so both race on the fast path
    await b.take(key, NO_REFILL, T0)
    takes = [(a if n % 2 else b).take(key, NO_REFILL, T0 + timedelta(milliseconds=n)) for n in range(24)]
    decisions = await asyncio.gather(*takes)
    assert sum(decision.allowed for decision in decisions) == 8  # 10 less the two before
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(8))


async def test_a_replica_takes_from_the_row_another_replica_changed(
    replicas: tuple[RateLimitRepository, RateLimitRepository],
) -> None:
    key = _key()
    a, b = replicas
    remaining = []
    for replica in (a, a, b, b, a, b):
        remaining.append((await replica.take(key, NO_REFILL, T0)).remaining)
    assert remaining == [9, 8, 7, 6, 5, 4]


async def test_a_forgotten_bucket_comes_back_full(
    replicas: tuple[RateLimitRepository, RateLimitRepository],
) -> None:
    key = _key()
    a, _ = replicas
    assert (await a.take(key, NO_REFILL, T0)).remaining == 9
    assert (await a.take(key, NO_REFILL, T0)).remaining == 8
    # idle for a day: forgotten (a later `now`, so no other test's bucket of T0 is young enough to keep)
    while await a.purge_idle(T0 + timedelta(days=1), idle_s=3600, limit=1000):
        pass
    assert (await a.take(key, NO_REFILL, T0 + timedelta(days=1))).remaining == 9


async def test_a_take_costs_one_statement_and_the_month_count(database_url: str) -> None:
    engine = create_engine(database_url)
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]).split()[0].upper())

    try:
        repository = RateLimitRepository(session_factory(engine))
        limits = Limits(rate_per_second=100.0, burst=100, monthly_quota=1000)
        key = _key()
        await repository.take(key, limits, T0)  # the first reads the row (and creates it)
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        for n in range(3):
            assert (await repository.take(key, limits, T0 + timedelta(seconds=n + 1))).allowed
        assert statements == ["UPDATE", "INSERT"] * 3  # the bucket's compare-and-set, the month's count
    finally:
        await engine.dispose()
