"""What the public broker ingress keeps in the database: which API client a RabbitMQ user acts
for (``broker_users``), which public commands were taken (``processed_commands``), and whose a
session or a call flow is (to route its events to its client)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Select, delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from infra.db.errors import AlreadyExists, NotFound, translate_errors
from infra.db.tables import (
    ApiClientRow,
    BrokerUserRow,
    CallFlowRow,
    ProcessedCommandRow,
    SessionRow,
    utc_now,
)

__all__ = ["BrokerClient", "BrokerUser", "BrokerUsers", "CommandStatus", "Owners", "ProcessedCommands"]


class CommandStatus(StrEnum):
    RUNNING = "RUNNING"
    DONE = "DONE"
    REJECTED = "REJECTED"


def retaken(*, redelivered: bool) -> frozenset[CommandStatus]:
    """Which taken commands run again when their message id comes back. A redelivery (the broker's,
    after a crash or a nack) finishes one left RUNNING; a new publication may try one REJECTED
    again (say, after a rate limit). Not a REJECTED one redelivered: its rejection was published
    already (the nack came after, from its dead-letter record), and running it then gave the
    client CommandRejected and SessionCreated for the same id."""
    return frozenset({CommandStatus.RUNNING}) if redelivered else frozenset({CommandStatus.REJECTED})


@dataclass(frozen=True, slots=True)
class BrokerClient:
    """The API client a broker user acts for, with its rate limit and monthly quota."""

    client_id: str
    rate_per_second: float
    burst: int
    monthly_quota: int


@dataclass(frozen=True, slots=True)
class BrokerUser:
    user_name: str
    client_id: str
    client_name: str
    created_at: datetime


class BrokerUsers:
    """RabbitMQ users of upstream systems and the API clients they act for."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def link(self, user_name: str, client: str) -> BrokerUser:
        """Map ``user_name`` to the active API client named (or with id) ``client``.
        Raises ``NotFound`` (no such active client) or ``AlreadyExists`` (user mapped already)."""
        with translate_errors():
            async with self._sessions.begin() as session:
                row = (
                    await session.scalars(
                        select(ApiClientRow).where(
                            (ApiClientRow.name == client) | (ApiClientRow.id == client),
                            ApiClientRow.revoked_at.is_(None),
                        )
                    )
                ).first()
                if row is None:
                    raise NotFound(f"no active API client {client!r}")
                if await session.get(BrokerUserRow, user_name) is not None:
                    raise AlreadyExists(f"the broker user {user_name!r} is mapped already")
                now = utc_now()
                session.add(BrokerUserRow(user_name=user_name, client_id=row.id, created_at=now))
                return BrokerUser(user_name, row.id, row.name, now)

    async def unlink(self, user_name: str) -> bool:
        with translate_errors():
            async with self._sessions.begin() as session:
                result = await session.execute(
                    delete(BrokerUserRow).where(BrokerUserRow.user_name == user_name)
                )
        return bool(getattr(result, "rowcount", 0))

    async def client_for(self, user_name: str) -> BrokerClient | None:
        """The active API client ``user_name`` acts for (and its limits), or ``None``."""
        query = (
            select(ApiClientRow)
            .join(BrokerUserRow, BrokerUserRow.client_id == ApiClientRow.id)
            .where(BrokerUserRow.user_name == user_name, ApiClientRow.revoked_at.is_(None))
        )
        with translate_errors():
            async with self._sessions() as session:
                row = (await session.scalars(query)).first()
                if row is None:
                    return None
                return BrokerClient(row.id, row.rate_per_second, row.burst, row.monthly_quota)

    async def list(self) -> builtins.list[BrokerUser]:
        query = (
            select(BrokerUserRow, ApiClientRow.name)
            .join(ApiClientRow, BrokerUserRow.client_id == ApiClientRow.id)
            .order_by(BrokerUserRow.user_name)
        )
        with translate_errors():
            async with self._sessions() as session:
                rows = (await session.execute(query)).all()
        return [BrokerUser(row.user_name, row.client_id, name, row.created_at) for row, name in rows]


class ProcessedCommands:
    """One row per (client, message id): a duplicate of a taken command is not run again."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def claim(self, client_id: str, message_id: str, command: str, *, redelivered: bool) -> bool:
        """Take the command; ``False`` for a duplicate of one taken, or one not :func:`retaken`
        (the handlers are safe to repeat)."""
        row = ProcessedCommandRow(
            client_id=client_id,
            message_id=message_id,
            command=command,
            status=CommandStatus.RUNNING.value,
            received_at=utc_now(),
            finished_at=None,
        )
        with translate_errors():
            try:
                async with self._sessions.begin() as session:
                    session.add(row)
                return True
            except IntegrityError:
                pass
            retake = [status.value for status in retaken(redelivered=redelivered)]
            statement = (
                update(ProcessedCommandRow)
                .where(
                    ProcessedCommandRow.client_id == client_id,
                    ProcessedCommandRow.message_id == message_id,
                    ProcessedCommandRow.status.in_(retake),
                )
                .values(status=CommandStatus.RUNNING.value, finished_at=None)
                .returning(ProcessedCommandRow.message_id)
            )
            async with self._sessions.begin() as session:
                return bool((await session.scalars(statement)).all())

    async def finish(self, client_id: str, message_id: str, status: CommandStatus) -> None:
        statement = (
            update(ProcessedCommandRow)
            .where(
                ProcessedCommandRow.client_id == client_id,
                ProcessedCommandRow.message_id == message_id,
            )
            .values(status=status.value, finished_at=utc_now())
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                await session.execute(statement)

    async def purge(self, before: datetime, *, limit: int) -> int:
        """Forget up to ``limit`` commands received before ``before``, oldest first; how many were
        forgotten. A duplicate of a forgotten command runs again: keep them as long as a publisher
        may resend (``FACEPROOF_PROCESSED_COMMAND_KEEP_S``)."""
        row = aliased(ProcessedCommandRow)
        oldest = (
            select(row.client_id, row.message_id)
            .where(row.received_at < before)
            .order_by(row.received_at)
            .limit(limit)
        )
        statement = delete(ProcessedCommandRow).where(
            tuple_(ProcessedCommandRow.client_id, ProcessedCommandRow.message_id).in_(oldest),
            ProcessedCommandRow.received_at < before,
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                result = await session.execute(statement.execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)

    async def count(self, client_id: str) -> int:
        with translate_errors():
            async with self._sessions() as session:
                rows = await session.scalars(
                    select(ProcessedCommandRow.message_id).where(ProcessedCommandRow.client_id == client_id)
                )
                return len(rows.all())


class Owners:
    """Whose a session or a call flow is: the owner is the API client's id (or ``static``)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def of_session(self, session_id: str) -> str | None:
        return await self._owner(select(SessionRow.owner).where(SessionRow.id == session_id))

    async def of_flow(self, flow_id: str) -> str | None:
        return await self._owner(select(CallFlowRow.owner).where(CallFlowRow.id == flow_id))

    async def _owner(self, query: Select[str]) -> str | None:
        with translate_errors():
            async with self._sessions() as session:
                owner: str | None = await session.scalar(query)
        return owner
