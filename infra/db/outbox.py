"""The outbox table (``outbox``): messages written in the transaction of the state change they
follow (:func:`stage`), read and marked by the relay (infra/outbox.py), forgotten once sent
(infra/housekeeping.py); a sent row keeps no payload.

A transaction that staged messages wakes, once it has committed, the relays of its own process
on the same database (:meth:`SqlOutbox.wakes`): every writer's rows go out at once, whichever
repository wrote them, and the relay's idle poll is only the fallback (rows of a process that
died, a wake-up that found another process's relay holding the lock)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine, Update, delete, event, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from domain.outgoing import Outgoing
from infra.db.errors import translate_errors
from infra.db.tables import OutboxRow, utc_now

__all__ = ["RELAY_LOCK_KEY", "Pending", "SqlOutbox", "stage"]

#: PostgreSQL advisory lock a relay batch holds: one relay publishes at a time.
RELAY_LOCK_KEY: Final = 0x6F757462  # "outb"
#: How long a relay's batch transaction may sit idle (publishing) before Postgres ends it.
_IDLE_LIMIT: Final = "SET LOCAL idle_in_transaction_session_timeout = '60s'"
#: ``Session.info`` key: this transaction staged messages (its commit wakes the relays).
_STAGED: Final = "faceproof.outbox.staged"
#: The wake-ups of this process's running relays, by the database engine they read.
_WAKES: dict[Engine, list[Callable[[], None]]] = {}


def stage(session: AsyncSession, *messages: Outgoing) -> None:
    """Write ``messages`` to the outbox in ``session``'s transaction (after the state change, so
    that one subject's messages get ids in the order of its changes); its commit wakes this
    process's relays of the same database."""
    if messages:
        session.info[_STAGED] = True
    now = utc_now()
    for message in messages:
        session.add(
            OutboxRow(
                message_id=message.message_id,
                exchange=message.exchange,
                routing_key=message.routing_key,
                correlation_id=message.correlation_id,
                payload=message.payload,
                headers=message.headers,
                created_at=now,
                sent_at=None,
                attempts=0,
            )
        )


@event.listens_for(Session, "after_commit")
def _wake_relays(session: Session) -> None:
    if session.info.pop(_STAGED, False) and isinstance(bind := session.get_bind(), Engine):
        for wake in _WAKES.get(bind, ()):
            wake()


@event.listens_for(Session, "after_rollback")
def _forget_staged(session: Session) -> None:
    session.info.pop(_STAGED, None)


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    message: Outgoing


class _SqlBatch:
    """A batch read under the relay lock (PostgreSQL: marked in the same transaction) or, on
    SQLite, read in one short transaction and marked in another (a SQLite read transaction that
    writes after someone else committed fails: no lock is held across the publishing there)."""

    def __init__(
        self,
        messages: Sequence[Pending],
        *,
        session: AsyncSession | None,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.messages = messages
        self._session = session
        self._sessions = sessions

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Sent: the row keeps what went where and when, not the message (a call's reference
        photos travel inline in its MatchReferences; the sent row must not keep them)."""
        if ids:
            await self._execute(
                update(OutboxRow).where(OutboxRow.id.in_(ids)).values(sent_at=utc_now(), payload={})
            )

    async def mark_failed(self, row_id: int, error: str) -> None:
        await self._execute(
            update(OutboxRow)
            .where(OutboxRow.id == row_id)
            .values(attempts=OutboxRow.attempts + 1, last_error=error[:200])
        )

    async def set_aside(self, row_id: int, error: str) -> None:
        """A message no broker may take (too large, or past its time to live): done with, unsent,
        without its payload."""
        await self._execute(
            update(OutboxRow)
            .where(OutboxRow.id == row_id)
            .values(**_set_aside(error), attempts=OutboxRow.attempts + 1)
        )

    async def _execute(self, statement: Update) -> None:
        if self._session is not None:
            await self._session.execute(statement)
            return
        with translate_errors():
            async with self._sessions.begin() as session:
                await session.execute(statement)


class SqlOutbox:
    """The outbox table (``outbox``) as the relay and the housekeeping use it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @contextmanager
    def wakes(self, wake: Callable[[], None]) -> Iterator[None]:
        """While the block runs, ``wake()`` after each commit in this process that staged
        messages on this database (whichever session factory of its engine made the session)."""
        bind: AsyncEngine = self._sessions.kw["bind"]
        engine = bind.sync_engine
        wakes = _WAKES.setdefault(engine, [])
        wakes.append(wake)
        try:
            yield
        finally:
            wakes.remove(wake)
            if not wakes:
                del _WAKES[engine]

    @asynccontextmanager
    async def batch(self, limit: int) -> AsyncIterator[_SqlBatch | None]:
        """The oldest unsent rows, under the relay lock (None: another relay holds it); what the
        caller marks is committed when the block ends."""
        query = select(OutboxRow).where(OutboxRow.sent_at.is_(None)).order_by(OutboxRow.id).limit(limit)
        with translate_errors():
            async with self._sessions.begin() as session:
                if session.get_bind().dialect.name == "postgresql":
                    # a relay that hangs (or whose connection is half-open) must not hold the lock,
                    # and so every relay, for ever: Postgres ends the transaction after this long
                    await session.execute(text(_IDLE_LIMIT))
                    if not await session.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY))):
                        yield None
                        return
                    rows = (await session.scalars(query)).all()
                    yield _SqlBatch(_pending(rows), session=session, sessions=self._sessions)
                    return
                rows = (await session.scalars(query)).all()
            yield _SqlBatch(_pending(rows), session=None, sessions=self._sessions)

    async def purge(self, before: datetime, *, limit: int) -> int:
        """Forget at most ``limit`` rows sent before ``before``; how many."""
        ids = (
            select(OutboxRow.id)
            .where(OutboxRow.sent_at.is_not(None), OutboxRow.sent_at < before)
            .order_by(OutboxRow.id)
            .limit(limit)
            .scalar_subquery()
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                result = await session.execute(delete(OutboxRow).where(OutboxRow.id.in_(ids)))
        return int(getattr(result, "rowcount", 0) or 0)

    async def expire_unsent(self, before: datetime, *, limit: int) -> int:
        """Set aside at most ``limit`` unsent messages whose data came in before ``before`` (past the
        message time to live, the relay would never send them, and they may hold face images: a
        broker down that long no longer leaves them in the table); how many."""
        ids = (
            select(OutboxRow.id)
            .where(OutboxRow.sent_at.is_(None), OutboxRow.created_at < before)
            .order_by(OutboxRow.id)
            .limit(limit)
            .scalar_subquery()
        )
        statement = (
            update(OutboxRow)
            .where(OutboxRow.id.in_(ids), OutboxRow.sent_at.is_(None))
            .values(**_set_aside("past its time to live"))
            .execution_options(synchronize_session=False)
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                result = await session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    async def messages(self, correlation_id: str, *, routing_key: str | None = None) -> list[Outgoing]:
        """The messages written for ``correlation_id`` (sent or not), oldest first."""
        query = select(OutboxRow).where(OutboxRow.correlation_id == correlation_id)
        if routing_key is not None:
            query = query.where(OutboxRow.routing_key == routing_key)
        with translate_errors():
            async with self._sessions() as session:
                rows = (await session.scalars(query.order_by(OutboxRow.id))).all()
        return [_outgoing(row) for row in rows]

    async def unsent(self) -> int:
        """How many messages wait for the relay."""
        query = select(func.count()).select_from(OutboxRow).where(OutboxRow.sent_at.is_(None))
        with translate_errors():
            async with self._sessions() as session:
                return int(await session.scalar(query) or 0)


def _pending(rows: Sequence[OutboxRow]) -> list[Pending]:
    return [Pending(row.id, _outgoing(row)) for row in rows]


def _set_aside(error: str) -> dict[str, Any]:
    """What a row set aside holds: done with (``sent_at``), unsent, without its payload, and why."""
    return {"sent_at": utc_now(), "payload": {}, "last_error": f"set aside, not sent: {error}"[:200]}


def _outgoing(row: OutboxRow) -> Outgoing:
    return Outgoing(
        exchange=row.exchange,
        routing_key=row.routing_key,
        message_id=row.message_id,
        correlation_id=row.correlation_id,
        payload=row.payload,
        headers=row.headers,
        origin=row.created_at,
    )
