"""Migrations apply on PostgreSQL and SQLite, re-running them is a no-op, and they match the models."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.db.engine import create_engine
from infra.db.migrate import (
    MIGRATION_LOCK_KEY,
    MIGRATIONS_DIR,
    alembic_config,
    current,
    current_async,
    upgrade,
    upgrade_async,
)
from infra.db.tables import Base
from tests.support import services

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_there_is_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    newest = max(path.name for path in (MIGRATIONS_DIR / "versions").glob("0*.py"))
    assert newest.startswith(HEAD + "_")
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()


async def test_upgrade_reaches_head_and_twice_is_a_noop(engine: AsyncEngine) -> None:
    assert await current_async(engine) == HEAD  # the fixture already migrated
    await upgrade_async(engine)
    await upgrade_async(engine)
    assert await current_async(engine) == HEAD
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"alembic_version", "api_clients", "sessions"} <= tables


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sync_api_from_a_thread_without_a_loop(backend: str, tmp_path: Path) -> None:
    # The sync functions are for the CLI: they run their own event loop, so call them off this one.
    if backend == "sqlite":
        await _check_sync_api(f"sqlite:///{tmp_path / 'deep' / 'dir' / 'x.db'}")
        return
    services.require_url(services.postgres_url(), "PostgreSQL", 5432)
    async with services.fresh_postgres_database() as url:
        await _check_sync_api(url.replace("postgresql+asyncpg://", "postgresql://"))


async def _check_sync_api(url: str) -> None:
    assert await asyncio.to_thread(current, url) is None
    await asyncio.to_thread(upgrade, url)
    await asyncio.to_thread(upgrade, url)
    assert await asyncio.to_thread(current, url) == HEAD


async def test_upgrades_from_other_processes_wait_for_the_migration_lock() -> None:
    # Replicas start together: while one migrates (holding the lock), the others wait, then find
    # the schema at head. Hold the lock here and watch a migrating process wait for it.
    services.require_url(services.postgres_url(), "PostgreSQL", 5432)
    async with services.fresh_postgres_database() as url:
        engine = create_engine(url)
        try:
            async with engine.connect() as holder:
                await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await holder.commit()
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    "import sys; from infra.db.migrate import upgrade; upgrade(sys.argv[1])",
                    url,
                )
                await _wait_for_a_waiting_advisory_lock(holder)
                assert process.returncode is None
                assert await current_async(engine) is None
                await holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await holder.commit()
            assert await asyncio.wait_for(process.wait(), timeout=60) == 0
            assert await current_async(engine) == HEAD
        finally:
            await engine.dispose()


async def _wait_for_a_waiting_advisory_lock(connection: AsyncConnection) -> None:
    query = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    deadline = time.monotonic() + 60
    while (await connection.scalar(query)) == 0:
        await connection.commit()
        assert time.monotonic() < deadline, "the migrating process never waited for the lock"
        await asyncio.sleep(0.1)
