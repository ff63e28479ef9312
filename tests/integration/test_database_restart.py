"""A Postgres server restarted (``pg_ctl stop -m fast``, then started on the same data): a private
cluster of the test's own (faceproof.bench.servers), never the shared server on 5432.

What the services rely on: a query cut by the shutdown and a connection refused while the server is
down are both ``DatabaseUnavailable`` (retryable: a 503, a nack), never a permanent ``DatabaseError``;
once the server is back, the very next use of the pool succeeds (a checkout replaces a connection
the server closed: ``infra.db.engine``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from faceproof.bench.servers import PrivatePostgres
from infra.db.engine import create_engine, ping
from infra.db.errors import DatabaseUnavailable, translate_errors


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as server:
        yield server


def test_a_restart_is_unavailable_while_it_lasts_and_forgotten_after(postgres: PrivatePostgres) -> None:
    async def scenario() -> None:
        engine = create_engine(postgres.url)
        try:
            await ping(engine)  # a pooled connection, soon dead
            async with engine.connect() as connection:

                async def long_query() -> None:
                    with translate_errors():
                        await connection.execute(text("SELECT pg_sleep(30)"))

                running = asyncio.ensure_future(long_query())
                await asyncio.sleep(0.5)
                await asyncio.to_thread(postgres.stop)  # ends every session: admin_shutdown (57P01)
                with pytest.raises(DatabaseUnavailable):
                    await asyncio.wait_for(running, 20)
            with pytest.raises(DatabaseUnavailable):  # down: connection refused
                await ping(engine)
            await asyncio.to_thread(postgres.start)
            await ping(engine)  # the first try after the restart
            async with engine.connect() as connection:
                assert (await connection.execute(text("SELECT 1"))).scalar() == 1
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_an_idle_pool_after_a_restart_answers_at_once(postgres: PrivatePostgres) -> None:
    """The pool's connections were idle through the whole restart (nothing used them while the
    server was down): the next use gets a fresh connection, not the dead one's error."""

    async def scenario() -> None:
        engine = create_engine(postgres.url)
        try:
            async with engine.connect() as first, engine.connect() as second:  # two pooled connections
                for connection in (first, second):
                    await connection.execute(text("SELECT 1"))
            await asyncio.to_thread(postgres.stop)
            await asyncio.to_thread(postgres.start)
            await asyncio.sleep(0.2)  # the event loop reads the closed sockets
            for _ in range(3):
                async with engine.connect() as connection:
                    assert (await connection.execute(text("SELECT 1"))).scalar() == 1
        finally:
            await engine.dispose()

    asyncio.run(scenario())
