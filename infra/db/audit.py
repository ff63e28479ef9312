"""The audit log (``audit_events``): who asked for what, when, and the outcome.

Never images, embeddings, tokens or keys: callers pass reasons, statuses and scores only.
:func:`audit_row` builds a row to add inside a caller's own transaction (so the audit record
commits with the change it describes); :class:`AuditLog` records and lists on its own.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.documents import CallDecidedDetails, ErasureDetails, SessionDecidedDetails
from infra.db.errors import translate_errors
from infra.db.tables import AuditEventRow, utc_now

__all__ = ["SYSTEM_ACTOR", "AuditAction", "AuditDetails", "AuditEvent", "AuditLog", "audit_row"]

#: The purge's actor (the retention sweeper), as opposed to an API client.
SYSTEM_ACTOR = "system:retention"


class AuditAction(StrEnum):
    SESSION_DECIDED = "SESSION_DECIDED"
    CALL_DECIDED = "CALL_DECIDED"
    SESSION_ERASED = "SESSION_ERASED"
    SESSION_PURGED = "SESSION_PURGED"


#: What an audit record's ``details`` hold (contracts/documents.py), by action.
AuditDetails = SessionDecidedDetails | CallDecidedDetails | ErasureDetails
_DETAILS: dict[str, type[AuditDetails]] = {
    AuditAction.SESSION_DECIDED: SessionDecidedDetails,
    AuditAction.CALL_DECIDED: CallDecidedDetails,
    AuditAction.SESSION_ERASED: ErasureDetails,
    AuditAction.SESSION_PURGED: ErasureDetails,
}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str
    action: str
    subject_id: str | None
    outcome: str | None
    #: The details as the listing shows them (camelCase, as they always were shown).
    details: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "subjectId": self.subject_id,
            "outcome": self.outcome,
            "details": self.details,
        }


def audit_row(
    *,
    actor: str,
    action: AuditAction,
    subject_id: str | None,
    outcome: str | None,
    details: AuditDetails | None = None,
    at: datetime | None = None,
) -> AuditEventRow:
    return AuditEventRow(
        at=at or utc_now(),
        actor=actor[:100],
        action=action.value,
        subject_id=subject_id,
        outcome=None if outcome is None else outcome[:32],
        details=None if details is None else details.to_row(),
    )


class AuditLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(
        self,
        *,
        actor: str,
        action: AuditAction,
        subject_id: str | None,
        outcome: str | None,
        details: AuditDetails | None = None,
    ) -> None:
        row = audit_row(actor=actor, action=action, subject_id=subject_id, outcome=outcome, details=details)
        with translate_errors():
            async with self._sessions.begin() as session:
                session.add(row)

    async def list(
        self,
        *,
        subject_id: str | None = None,
        since: datetime | None = None,
        action: str | None = None,
        limit: int = 100,
    ) -> builtins.list[AuditEvent]:
        """Events oldest first (the last ``limit`` of them)."""
        statement = select(AuditEventRow)
        if subject_id is not None:
            statement = statement.where(AuditEventRow.subject_id == subject_id)
        if since is not None:
            statement = statement.where(AuditEventRow.at >= since)
        if action is not None:
            statement = statement.where(AuditEventRow.action == action)
        statement = statement.order_by(AuditEventRow.id.desc()).limit(limit)
        with translate_errors():
            async with self._sessions() as session:
                rows = list(await session.scalars(statement))
        return [_event(row) for row in reversed(rows)]


def _event(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        subject_id=row.subject_id,
        outcome=row.outcome,
        details=_shown(row.action, row.details),
    )


def _shown(action: str, details: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row's details read through their document and shown in the listing's spelling."""
    document = _DETAILS.get(action)
    if details is None or document is None:
        return None if details is None else dict(details)
    return document.from_row(details).model_dump(mode="json", by_alias=True, exclude={"version"})
