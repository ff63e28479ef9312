"""The API clients' and sessions' repositories over SQLAlchemy (``ApiClientRepository``,
``SessionRepository``). They return plain records (``infra.db.records.ApiClient``,
``domain.records.SessionRecord``), never ORM rows; the ports the services see them through are
``domain.ports``'s (and the gateway's ``ApiKeys``)."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Any, Final, cast
from uuid import uuid4

from sqlalchemy import ColumnElement, Row, Table, bindparam, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.documents import SessionResult, SessionSettingsDocument
from contracts.routing import EventKey
from domain.outgoing import Outgoing
from domain.records import SessionRecord
from domain.sessions import UNFINISHED, SessionEnding, counts_toward_lockout
from infra.db.audit import AuditAction, audit_row
from infra.db.errors import AlreadyExists, DatabaseError, NotFound, VersionConflict, translate_errors
from infra.db.keys import KEY_SCHEME, hash_key, key_prefix, keys_match, new_key
from infra.db.outbox import stage
from infra.db.records import ApiClient, SessionStatus
from infra.db.security import failure_rows
from infra.db.tables import (
    DEFAULT_BURST,
    DEFAULT_MONTHLY_QUOTA,
    DEFAULT_RATE_PER_SECOND,
    ApiClientRow,
    LivenessFailureRow,
    LivenessStateRow,
    SessionRow,
    session_erased,
    utc_now,
)

__all__ = [
    "ApiClient",
    "ApiClientRepository",
    "SessionRepository",
    "SessionStatus",
]

_MAX_KEY_LENGTH = 128
_SESSIONS = cast(Table, SessionRow.__table__)
#: A session by id, built once: the liveness worker reads it for every frame (Core, no identity map).
_FETCH_SESSION: Final = select(_SESSIONS).where(_SESSIONS.c.id == bindparam("sid"))


class ApiClientRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(
        self,
        name: str,
        *,
        rate_per_second: float | None = None,
        burst: int | None = None,
        monthly_quota: int | None = None,
    ) -> tuple[ApiClient, str]:
        key = new_key()
        row = ApiClientRow(
            id=str(uuid4()),
            name=name,
            key_prefix=key_prefix(key),
            key_hash=hash_key(key),
            created_at=utc_now(),
            revoked_at=None,
            rate_per_second=DEFAULT_RATE_PER_SECOND if rate_per_second is None else rate_per_second,
            burst=DEFAULT_BURST if burst is None else burst,
            monthly_quota=DEFAULT_MONTHLY_QUOTA if monthly_quota is None else monthly_quota,
        )
        with translate_errors():
            try:
                async with self._sessions.begin() as session:
                    session.add(row)
            except IntegrityError as exc:
                raise AlreadyExists(f"an API client named {name!r} already exists") from exc
        return _client(row), key

    async def authenticate(self, key: str) -> ApiClient | None:
        if not key.startswith(KEY_SCHEME) or len(key) > _MAX_KEY_LENGTH:
            return None
        query = select(ApiClientRow).where(
            ApiClientRow.key_prefix == key_prefix(key), ApiClientRow.revoked_at.is_(None)
        )
        with translate_errors():
            async with self._sessions() as session:
                rows = (await session.scalars(query)).all()
        for row in rows:
            if keys_match(key, row.key_hash):
                return _client(row)
        return None

    async def revoke(self, name_or_id: str) -> bool:
        statement = (
            update(ApiClientRow)
            .where(
                or_(ApiClientRow.name == name_or_id, ApiClientRow.id == name_or_id),
                ApiClientRow.revoked_at.is_(None),
            )
            .values(revoked_at=utc_now())
            .returning(ApiClientRow.id)
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                revoked = (await session.scalars(statement)).all()
        return bool(revoked)

    async def list(self) -> builtins.list[ApiClient]:
        query = select(ApiClientRow).order_by(ApiClientRow.created_at, ApiClientRow.name)
        with translate_errors():
            async with self._sessions() as session:
                return [_client(row) for row in await session.scalars(query)]


def _decided(session_id: Any) -> ColumnElement[bool]:
    """The session's liveness decision is stored: it ends with that decision (when the matcher
    answers, or the worker's sweep at most ``FACEPROOF_MATCH_TIMEOUT_S`` after it), never EXPIRED.
    A slow matcher past the expiry turned a passed session into EXPIRED, counted against its
    subject, and its LivenessDecided(live) contradicted its SessionFinished."""
    return exists().where(LivenessStateRow.session_id == session_id, LivenessStateRow.decided_at.is_not(None))


class SessionRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]

    async def create(
        self,
        owner: str,
        *,
        client_request_token: str | None,
        settings: SessionSettingsDocument,
        expires_at: datetime,
        kind: str = "liveness",
        reference_key: str | None = None,
        client_token_hash: str | None = None,
        session_id: str | None = None,
    ) -> tuple[SessionRecord, bool]:
        """``session_id``: chosen by the caller (e.g. to store objects under it first); else random."""
        if client_request_token is not None:
            existing = await self._by_token(owner, client_request_token)
            if existing is not None:
                return existing, False
        now = utc_now()
        row = SessionRow(
            id=session_id or str(uuid4()),
            owner=owner,
            client_request_token=client_request_token,
            kind=kind,
            status=SessionStatus.CREATED.value,
            settings=settings.to_row(),
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            finished_at=None,
            result=None,
            version=1,
            reference_key=reference_key,
            client_token_hash=client_token_hash,
            connection_id=None,
            connection_seen_at=None,
            connections=0,
        )
        with translate_errors():
            try:
                async with self._sessions.begin() as session:
                    session.add(row)
            except IntegrityError:
                if client_request_token is None:
                    raise
                # A concurrent create with the same token won the race: answer with its session.
                existing = await self._by_token(owner, client_request_token)
                if existing is None:
                    raise DatabaseError("session vanished after a conflicting create") from None
                return existing, False
        return _session(row), True

    async def get(self, owner: str, session_id: str) -> SessionRecord | None:
        return await self._one(SessionRow.id == session_id, SessionRow.owner == owner)

    async def fetch(self, session_id: str) -> SessionRecord | None:
        with translate_errors():
            async with self._engine.connect() as connection:
                row = (await connection.execute(_FETCH_SESSION, {"sid": session_id})).one_or_none()
        return None if row is None else _session(row)

    async def update_status(
        self,
        session_id: str,
        *,
        expected_version: int,
        status: SessionStatus,
        result: SessionResult | None = None,
    ) -> SessionRecord:
        now = utc_now()
        values: dict[str, Any] = {
            "status": status.value,
            "updated_at": now,
            "version": SessionRow.version + 1,
        }
        if status.terminal:
            values["finished_at"] = now
        if result is not None:
            values["result"] = result.to_row()
        statement = (
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.version == expected_version)
            .values(values)
            .returning(SessionRow)
            .execution_options(synchronize_session=False)
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                row = (await session.scalars(statement)).one_or_none()
                if row is not None:
                    if status.terminal:  # a test's shortcut; services end sessions with end()
                        counted = counts_toward_lockout(status, connections=row.connections)
                        await _count_lockout(session, row, now, counted=counted)
                    return _session(row)
                if await session.get(SessionRow, session_id) is None:
                    raise NotFound(f"session {session_id} does not exist")
        raise VersionConflict(f"session {session_id} is no longer at version {expected_version}")

    async def end(self, ending: SessionEnding) -> SessionRecord:
        now = utc_now()
        values: dict[str, Any] = {
            "status": ending.status.value,
            "updated_at": now,
            "finished_at": now,
            "version": SessionRow.version + 1,
        }
        if ending.result is not None:
            values["result"] = ending.result.to_row()
        statement = (
            update(SessionRow)
            .where(
                SessionRow.id == ending.session_id,
                SessionRow.version == ending.expected_version,
                SessionRow.status.in_(_UNFINISHED),
            )
            .values(values)
            .returning(SessionRow)
            .execution_options(synchronize_session=False)
        )
        entry = ending.audit
        with translate_errors():
            async with self._sessions.begin() as session:
                row = (await session.scalars(statement)).one_or_none()
                if row is not None:
                    await _count_lockout(session, row, now, counted=ending.counts_toward_lockout)
                    session.add(
                        audit_row(
                            actor=entry.actor,
                            action=AuditAction(entry.action),
                            subject_id=entry.subject_id,
                            outcome=entry.outcome,
                            details=entry.details,
                            at=now,
                        )
                    )
                    stage(session, Outgoing.event(ending.event, EventKey.SESSION_FINISHED))
                    return _session(row)
                if await session.get(SessionRow, ending.session_id) is None:
                    raise NotFound(f"session {ending.session_id} does not exist")
        raise VersionConflict(
            f"session {ending.session_id} is no longer at version {ending.expected_version}"
        )

    async def decided(self, session_id: str) -> bool:
        """Whether the liveness worker has stored its decision (:func:`_decided`)."""
        with translate_errors():
            async with self._sessions() as session:
                return bool(await session.scalar(select(_decided(bindparam("id", session_id)))))

    async def overdue(self, *, limit: int = 100) -> builtins.list[str]:
        """Unfinished sessions past their expiry, but for decided ones (:func:`_decided`)."""
        query = (
            select(SessionRow.id)
            .where(
                SessionRow.status.in_(_UNFINISHED),
                SessionRow.expires_at <= utc_now(),
                ~_decided(SessionRow.id),
            )
            .order_by(SessionRow.expires_at)
            .limit(limit)
        )
        with translate_errors():
            async with self._sessions() as session:
                return list((await session.scalars(query)).all())

    async def set_client_token_hash(self, session_id: str, client_token_hash: str) -> bool:
        """Replace the session's client token (the previous one stops working); False if missing."""
        statement = (
            update(SessionRow)
            .where(SessionRow.id == session_id)
            .values(client_token_hash=client_token_hash, updated_at=utc_now())
            .execution_options(synchronize_session=False)
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                result = await session.execute(statement)
        return bool(getattr(result, "rowcount", 0))

    async def request_erasure(self, session_id: str) -> bool:
        """Set the erasure tombstone (kept if set already); False when there is no such session.
        From here on :meth:`erased` is True and every writer refuses the session."""
        now = utc_now()
        statement = (
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.erase_requested_at.is_(None))
            .values(erase_requested_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                await session.execute(statement)
                found = await session.scalar(select(SessionRow.id).where(SessionRow.id == session_id))
        return found is not None

    async def erased(self, session_id: str) -> bool:
        """Whether nothing may be stored for the session any more: erasure requested, data
        purged (retention), or no such session."""
        statement = select(SessionRow.erase_requested_at, SessionRow.purged_at).where(
            SessionRow.id == session_id
        )
        with translate_errors():
            async with self._sessions() as session:
                row = (await session.execute(statement)).one_or_none()
        return session_erased(row)

    async def claim_connection(
        self, session_id: str, connection_id: str, *, stale_after_s: float
    ) -> SessionRecord | None:
        """Make ``connection_id`` the session's one WebRTC connection.

        Succeeds (returns the updated record, ``connections`` counted up) when the session is
        unfinished and no other connection was seen within ``stale_after_s``; else ``None``.
        """
        now = utc_now()
        statement = (
            update(SessionRow)
            .where(
                SessionRow.id == session_id,
                SessionRow.status.in_(_UNFINISHED),
                SessionRow.expires_at > now,
                or_(
                    SessionRow.connection_id.is_(None),
                    SessionRow.connection_seen_at.is_(None),
                    SessionRow.connection_seen_at < now - timedelta(seconds=stale_after_s),
                ),
            )
            .values(
                connection_id=connection_id,
                connection_seen_at=now,
                connections=SessionRow.connections + 1,
                updated_at=now,
            )
            .returning(SessionRow)
            .execution_options(synchronize_session=False)
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                row = (await session.scalars(statement)).one_or_none()
        return None if row is None else _session(row)

    async def touch_connection(self, session_id: str, connection_id: str) -> bool:
        """Heartbeat of a streaming connection; False when it is no longer the session's."""
        return await self._set_connection(session_id, connection_id, seen_at=utc_now(), keep=True)

    async def release_connection(self, session_id: str, connection_id: str) -> bool:
        """The connection ended (peer gone, hung up); a reconnect may claim the session again."""
        return await self._set_connection(session_id, connection_id, seen_at=None, keep=False)

    async def _set_connection(
        self, session_id: str, connection_id: str, *, seen_at: datetime | None, keep: bool
    ) -> bool:
        statement = (
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.connection_id == connection_id)
            .values(connection_id=connection_id if keep else None, connection_seen_at=seen_at)
            .execution_options(synchronize_session=False)
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                result = await session.execute(statement)
        return bool(getattr(result, "rowcount", 0))

    async def _by_token(self, owner: str, token: str) -> SessionRecord | None:
        return await self._one(SessionRow.owner == owner, SessionRow.client_request_token == token)

    async def _one(self, *criteria: Any) -> SessionRecord | None:
        with translate_errors():
            async with self._sessions() as session:
                row = (await session.scalars(select(SessionRow).where(*criteria))).one_or_none()
        return None if row is None else _session(row)


_UNFINISHED = tuple(sorted(status.value for status in UNFINISHED))


async def _count_lockout(session: AsyncSession, row: SessionRow, now: datetime, *, counted: bool) -> None:
    """Count a session that just ended against its subjects when the domain rule says it counts
    (``domain.sessions.counts_toward_lockout``), in the transaction that ended it: the one place
    lockout failures are recorded."""
    failures = (
        failure_rows(row.owner, SessionSettingsDocument.from_row(row.settings), row.id, now)
        if counted
        else []
    )
    if failures:
        await session.execute(insert(LivenessFailureRow), failures)


def _client(row: ApiClientRow) -> ApiClient:
    return ApiClient(
        id=row.id,
        name=row.name,
        key_prefix=row.key_prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        rate_per_second=row.rate_per_second,
        burst=row.burst,
        monthly_quota=row.monthly_quota,
        admin=row.admin,
    )


def _session(row: SessionRow | Row[Any]) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        owner=row.owner,
        client_request_token=row.client_request_token,
        kind=row.kind,
        status=SessionStatus(row.status),
        settings=SessionSettingsDocument.from_row(row.settings),
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        finished_at=row.finished_at,
        result=None if row.result is None else SessionResult.from_row(row.result),
        version=row.version,
        reference_key=row.reference_key,
        client_token_hash=row.client_token_hash,
        connection_id=row.connection_id,
        connection_seen_at=row.connection_seen_at,
        connections=row.connections,
        purged_at=row.purged_at,
        erase_requested_at=row.erase_requested_at,
    )
