"""Run the Alembic migrations from code.

The sync functions (for the CLI) start their own event loop, so they cannot be called from a
running one; async code (app startup, tests) uses ``upgrade_async`` / ``current_async``.
On PostgreSQL, processes migrating at once take turns (advisory lock); within one process run one
migration at a time, as Alembic's context is global.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.db.engine import create_engine, normalise_url
from infra.db.errors import translate_errors

__all__ = [
    "MIGRATIONS_DIR",
    "MIGRATION_LOCK_KEY",
    "alembic_config",
    "current",
    "current_async",
    "upgrade",
    "upgrade_async",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: PostgreSQL advisory lock taken while migrating, so replicas starting together take turns.
MIGRATION_LOCK_KEY = 0x66616365  # "face"


def alembic_config(url: str | None = None) -> Config:
    """An in-memory Alembic config pointing at our migrations (e.g. for ``command.revision``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # Kept out of the ini options: no '%' interpolation, and it never lands in a file.
        config.attributes["url"] = normalise_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``. Idempotent."""
    with translate_errors():
        command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at; ``None`` before the first migration."""
    return asyncio.run(_current_with_url(url))


async def upgrade_async(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate through ``engine`` up to ``revision``, from async code. Idempotent."""
    with translate_errors():
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, revision)


async def current_async(engine: AsyncEngine) -> str | None:
    with translate_errors():
        async with engine.connect() as connection:
            return await connection.run_sync(_current_on)


def _upgrade_on(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _current_on(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _current_with_url(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return await current_async(engine)
    finally:
        await engine.dispose()
