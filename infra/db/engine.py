"""Async engine construction for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from infra.db.errors import translate_errors

__all__ = ["create_engine", "normalise_url", "ping", "session_factory"]

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}

CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalise_url(url: str) -> str:
    """Return ``url`` with its async driver: ``postgres://`` and ``postgresql://`` become
    ``postgresql+asyncpg://``, ``sqlite:///`` becomes ``sqlite+aiosqlite:///``.

    Raises ``ValueError`` for anything else (the message never contains the password).
    """
    return _parse(url).render_as_string(hide_password=False)


def create_engine(url: str, *, echo: bool = False, wait_for_disk: bool = True) -> AsyncEngine:
    """Create the async engine. For a SQLite file, its directory is created and every
    connection gets WAL journalling, foreign keys and a busy timeout.

    ``wait_for_disk=False``: a commit returns once it is written, before the write is flushed to
    disk (PostgreSQL ``synchronous_commit=off``; SQLite ``synchronous=NORMAL``, safe in WAL mode).
    Other connections see it at once, and nothing can be half applied or corrupted; but a crash of
    the database server or of its machine (SQLite: of the machine) may lose the last fraction of a
    second of commits. Only for rows where that is harmless: the rate limit's counters
    (services.gateway.app)."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo, wait_for_disk=wait_for_disk)
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S}
    if not wait_for_disk:
        connect_args["server_settings"] = {"synchronous_commit": "off"}
    engine = create_async_engine(parsed, echo=echo, connect_args=connect_args)
    event.listen(engine.sync_engine, "checkout", _drop_closed_connection)
    return engine


def _drop_closed_connection(
    _dbapi_connection: Any, entry: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """A pooled connection the server has closed (a restart, an idle timeout: asyncpg saw the
    socket end) is replaced before use, so the first query after a restart succeeds. This is
    what ``pool_pre_ping`` did, without its three round trips on every checkout (BEGIN, a ping,
    ROLLBACK: 4 or more checkouts per liveness frame, 2 per compare). A connection whose server
    vanished without closing the socket is found by its first query instead (an error the
    services retry: ``DatabaseUnavailable``), which a ping could only find by waiting as long."""
    driver = entry.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (repositories return plain records)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Run ``SELECT 1``; raise ``DatabaseUnavailable`` (or ``DatabaseError``) when it fails."""
    with translate_errors():
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("not a database URL (expected postgresql://... or sqlite:///...)") from None
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}; "
            "use postgresql+asyncpg://, postgresql://, postgres://, sqlite+aiosqlite:/// or sqlite:///"
        )
    return parsed.set(drivername=driver)


def _sqlite_engine(url: URL, *, echo: bool, wait_for_disk: bool) -> AsyncEngine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, echo=echo)

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                if not wait_for_disk:
                    cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    return engine
