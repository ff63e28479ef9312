"""Retention and erasure of a session's biometric data (docs/security.md, "Retention").

A session's biometric data is: every object under ``sessions/<id>/`` (frames, the app's
reference, the live reference frame, audit images), the analysed frame rows with their
embeddings (``liveness_frames``), the liveness worker's progress (``liveness_states``: the
identity check's reference embedding, the baseline frames' mesh points and mouth areas) and the
image keys in its result and liveness decision. Erasing
keeps the session's status and decision (live or not, confidence, reasons, similarity), stamps
``purged_at`` and writes one audit record, in the transaction that erases the rows.

The order is objects first, rows second: if the store fails, nothing is marked purged and the
next call (the sweeper, a repeated DELETE) does it all again. Every step is idempotent, and a
repeated erasure of a purged session still removes anything written since (a late frame).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.documents import ErasureDetails, LivenessDecisionDocument, LivenessStateDocument, SessionResult
from contracts.values import SessionStatus
from infra.db.audit import SYSTEM_ACTOR, AuditAction, audit_row
from infra.db.errors import translate_errors
from infra.db.tables import LivenessFrameRow, LivenessStateRow, SessionRow, utc_now
from infra.storage import ObjectStore
from infra.sweeps import each
from infra.telemetry.metrics import RETENTION_OVERDUE

__all__ = [
    "RETENTION_SWEEPER",
    "SESSION_PREFIX",
    "Retention",
    "scrub_decision",
    "scrub_result",
    "session_prefix",
]

log = logging.getLogger("faceproof.retention")

SESSION_PREFIX: Final = "sessions/"
#: Sessions read and erased per batch (a purge goes on batch after batch until none is due).
PURGE_BATCH: Final = 100
#: The retention purge's name in logs and in ``faceproof_sweep_failures_total``.
RETENTION_SWEEPER: Final = "retention"
_TERMINAL: Final = [status.value for status in SessionStatus if status.terminal]


def session_prefix(session_id: str) -> str:
    return f"{SESSION_PREFIX}{session_id}/"


def scrub_result(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ``sessions.result`` row without image keys (the decision, scores and reasons stay)."""
    if result is None:
        return None
    return SessionResult.from_row(result).scrubbed().to_row()


def scrub_decision(decision: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ``liveness_states.decision`` row without image keys."""
    if decision is None:
        return None
    return LivenessDecisionDocument.from_row(decision).scrubbed().to_row()


def scrub_progress(challenges: dict[str, Any]) -> dict[str, Any]:
    """A ``liveness_states.challenges`` row without the replay's progress (the drawn challenges
    and the connection stay)."""
    return LivenessStateDocument.from_row(challenges).model_copy(update={"progress": None}).to_row()


@dataclass(frozen=True)
class Retention:
    """Erases sessions' biometric data: one session at once, or every session past retention."""

    sessions: async_sessionmaker[AsyncSession]
    store: ObjectStore

    async def erase(
        self,
        session_id: str,
        *,
        actor: str,
        action: AuditAction = AuditAction.SESSION_ERASED,
        now: datetime | None = None,
    ) -> bool:
        """Erase one session's biometric data; True when this call marked it purged (and wrote the
        audit record), False when it was purged already or does not exist. Raises ``StorageError``
        or ``DatabaseError`` (retry: nothing is marked purged before the objects are gone)."""
        removed = 0
        for key in await self.store.list(session_prefix(session_id)):
            await self.store.delete(key)
            removed += 1
        now = now or utc_now()
        with translate_errors():
            async with self.sessions.begin() as session:
                # The row lock first: a frame row being added (infra.db.liveness.add_frame, which
                # share-locks it) is committed before the delete below, or refused after it.
                await session.execute(
                    select(SessionRow.id).where(SessionRow.id == session_id).with_for_update()
                )
                frames = await session.execute(
                    delete(LivenessFrameRow)
                    .where(LivenessFrameRow.session_id == session_id)
                    .execution_options(synchronize_session=False)
                )
                row = await session.get(SessionRow, session_id)
                if row is None or row.purged_at is not None:
                    return False
                # Conditional: of two concurrent erasures only one marks it (and writes the record).
                marked = await session.execute(
                    update(SessionRow)
                    .where(SessionRow.id == session_id, SessionRow.purged_at.is_(None))
                    .values(
                        purged_at=now,
                        reference_key=None,
                        result=scrub_result(row.result),
                        updated_at=now,
                        version=SessionRow.version + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                if not getattr(marked, "rowcount", 0):
                    return False
                state = await session.get(LivenessStateRow, session_id)
                if state is not None:
                    state.decision = scrub_decision(state.decision)
                    state.challenges = scrub_progress(state.challenges)
                session.add(
                    audit_row(
                        actor=actor,
                        action=action,
                        subject_id=session_id,
                        outcome=row.status,
                        details=ErasureDetails(
                            owner=row.owner,
                            objects_deleted=removed,
                            frames_deleted=int(getattr(frames, "rowcount", 0) or 0),
                        ),
                        at=now,
                    )
                )
        log.info("session %s erased (%s)", session_id, action.value)
        return True

    async def due(self, now: datetime, *, retention_s: float, limit: int = PURGE_BATCH) -> list[str]:
        """Sessions past retention and not yet purged, oldest first (at most ``limit``)."""
        return [session_id for _, session_id in await self._due_page(now, retention_s, limit, after=None)]

    async def overdue_s(self, now: datetime, *, retention_s: float) -> float:
        """How long the oldest session still holding biometric data is past its retention (0: none)."""
        page = await self._due_page(now, retention_s, 1, after=None)
        if not page:
            return 0.0
        created_at, _ = page[0]
        return max(0.0, (now - created_at).total_seconds() - retention_s)

    async def _due_page(
        self, now: datetime, retention_s: float, limit: int, *, after: tuple[datetime, str] | None
    ) -> list[tuple[datetime, str]]:
        """(created_at, id) of sessions past retention and not yet purged, in that order, after
        ``after``: created before ``now - retention_s`` and finished (or past their expiry, should
        no one have marked them)."""
        cutoff = now - timedelta(seconds=retention_s)
        statement = select(SessionRow.created_at, SessionRow.id).where(
            SessionRow.purged_at.is_(None),
            SessionRow.created_at <= cutoff,
            (SessionRow.status.in_(_TERMINAL)) | (SessionRow.expires_at <= now),
        )
        if after is not None:
            statement = statement.where(tuple_(SessionRow.created_at, SessionRow.id) > tuple_(*after))
        statement = statement.order_by(SessionRow.created_at, SessionRow.id).limit(limit)
        with translate_errors():
            async with self.sessions() as session:
                return [
                    (created_at, session_id) for created_at, session_id in await session.execute(statement)
                ]

    async def purge_expired(
        self, now: datetime, *, retention_s: float, limit: int = PURGE_BATCH
    ) -> list[str]:
        """Erase every session past retention, ``limit`` at a time, until none is left; the ids
        this call purged. A session whose erasure fails is logged and counted, and the ones after it
        are erased all the same (infra/sweeps.py); the next purge tries it again. Sets
        ``faceproof_retention_overdue_seconds`` from what is left."""

        async def purge(session_id: str) -> bool:
            return await self.erase(
                session_id, actor=SYSTEM_ACTOR, action=AuditAction.SESSION_PURGED, now=now
            )

        purged: list[str] = []
        after: tuple[datetime, str] | None = None
        while page := await self._due_page(now, retention_s, limit, after=after):
            erased = await each(RETENTION_SWEEPER, [session_id for _, session_id in page], purge, name=_named)
            purged += [session_id for session_id, marked in erased if marked]
            if len(page) < limit:
                break
            after = page[-1]
        if purged:
            log.info("retention purge: %d sessions erased", len(purged))
        RETENTION_OVERDUE.set(await self.overdue_s(now, retention_s=retention_s))
        return purged


def _named(session_id: str) -> str:
    return f"session {session_id}"
