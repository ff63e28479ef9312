"""The liveness worker's tables: ``liveness_states`` (one row per session) and ``liveness_frames``
(one analysed frame per row). Returns plain records.

A replay step reads the state and the frames stored since its last step without any lock, does
its work (the object store included) and writes its result with :meth:`LivenessRepository.save_step`,
a version-checked update: ``VersionConflict`` when another step (or a new connection) moved the
row on, and the step starts again from the new state. Every change of the row advances its
``version``. The messages a change announces (ChallengeIssued, ChallengeVerdict, LivenessDecided,
MatchReferences, ReadinessChecked) are written to the outbox in its transaction
(infra/db/outbox.py), in the order given: they commit with it or not at all.

Locking: :meth:`LivenessRepository.locked` opens a short transaction holding the state row's lock
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite a no-op write first, since SQLite serialises
writers and a read transaction cannot upgrade once another writer committed), for changes that
need no I/O outside the database.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Row, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from contracts.documents import (
    FrameAnalysisDocument,
    FrameEmbedding,
    LivenessDecisionDocument,
    LivenessStateDocument,
    StoredChallenge,
)
from domain.outgoing import Outgoing
from infra.db.errors import NotFound, VersionConflict, translate_errors
from infra.db.outbox import stage
from infra.db.records import SessionStatus
from infra.db.tables import LivenessFrameRow, LivenessStateRow, SessionRow, session_erased, utc_now

__all__ = ["LivenessFrame", "LivenessRepository", "LivenessState", "LockedState"]


@dataclass(frozen=True, slots=True)
class LivenessState:
    """``challenges``: the drawn challenges; ``connection_id``: the last connection announced;
    ``issued`` / ``verdicts``: the ChallengeIssued / ChallengeVerdict events written to the
    outbox so far; ``decision`` once decided;
    ``match_request_id``: the MatchReferences sent for the decision (only its answer counts);
    ``progress``: the replay's own document (``services.liveness.progress.ReplayProgress``),
    None before its first step."""

    session_id: str
    challenges: list[StoredChallenge]
    connection_id: str
    started_at: datetime
    issued: int
    verdicts: int
    decision: LivenessDecisionDocument | None
    decided_at: datetime | None
    version: int
    match_request_id: str | None = None
    progress: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LivenessFrame:
    session_id: str
    sequence: int
    captured_at: datetime
    storage_key: str
    #: ``FrameAnalysis.to_dict`` (services/liveness/analysis.py reads it back).
    analysis: dict[str, Any]
    spoof_score: float | None
    embedding: list[float] | None
    #: What the subject could see when it was taken (``FrameCaptured.shown``).
    shown: int | None = None
    #: How far the stream's media clock had run ahead of the agent's (``FrameCaptured.media_lead_s``).
    media_lead_s: float | None = None


def _document(
    challenges: list[StoredChallenge], connection: str, progress: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``challenges`` column: the drawn challenges, the connection and the replay's progress."""
    return LivenessStateDocument(challenges=challenges, connection=connection, progress=progress).to_row()


_STATES = cast(Table, LivenessStateRow.__table__)
_FRAMES = cast(Table, LivenessFrameRow.__table__)
_SESSIONS = cast(Table, SessionRow.__table__)
_UNFINISHED: Final = tuple(sorted(status.value for status in SessionStatus if not status.terminal))

# The statements of a frame's step (handle_frame: the state read, the frame stored; the replay step:
# the new frames read, the version-checked write), built once: a step binds its values, and no
# statement is built, nor its cache key computed, per frame. Core, not the ORM: nothing here needs
# the identity map (the outbox rows still go through the session that stages them).
_GET_STATE: Final = select(_STATES).where(_STATES.c.session_id == bindparam("sid"))
_FRAMES_FROM: Final = (
    select(_FRAMES)
    .where(_FRAMES.c.session_id == bindparam("sid"), _FRAMES.c.sequence >= bindparam("first"))
    .order_by(_FRAMES.c.sequence)
)
#: The session row share-locked while a frame is stored (see :meth:`LivenessRepository.add_frame`).
_TOMBSTONE: Final = (
    select(_SESSIONS.c.erase_requested_at, _SESSIONS.c.purged_at)
    .where(_SESSIONS.c.id == bindparam("sid"))
    .with_for_update(read=True)
)
#: A step's write: only while the row is at the version the step read, undecided, and its session
#: unfinished.
_SAVE_STEP: Final = (
    update(_STATES)
    .where(
        _STATES.c.session_id == bindparam("sid"),
        _STATES.c.version == bindparam("expected_version"),
        _STATES.c.decision.is_(None),
        _STATES.c.session_id.in_(
            select(_SESSIONS.c.id).where(
                _SESSIONS.c.id == bindparam("sid"),
                _SESSIONS.c.status.in_(_UNFINISHED),
                _SESSIONS.c.purged_at.is_(None),
            )
        ),
    )
    .values(
        challenges=bindparam("document", type_=_STATES.c.challenges.type),
        issued=bindparam("issued_count", type_=_STATES.c.issued.type),
        verdicts=bindparam("verdict_count", type_=_STATES.c.verdicts.type),
        version=_STATES.c.version + 1,
    )
)
#: The same write with the decision (once).
_SAVE_DECISION: Final = _SAVE_STEP.values(
    decision=bindparam("decision_document", type_=_STATES.c.decision.type),
    decided_at=bindparam("decided", type_=_STATES.c.decided_at.type),
    match_request_id=bindparam("match_request", type_=_STATES.c.match_request_id.type),
)


@functools.cache
def _insert_frame(dialect: str) -> Any:
    """The dialect's ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of a frame row (first wins)."""
    insert_: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert_(_FRAMES)
        .on_conflict_do_nothing(index_elements=["session_id", "sequence"])
        .returning(_FRAMES.c.sequence)
    )


def _state(row: LivenessStateRow | Row[Any]) -> LivenessState:
    document = LivenessStateDocument.from_row(row.challenges)
    return LivenessState(
        session_id=row.session_id,
        challenges=list(document.challenges),
        connection_id=document.connection,
        started_at=row.started_at,
        issued=row.issued,
        verdicts=row.verdicts,
        decision=None if row.decision is None else LivenessDecisionDocument.from_row(row.decision),
        decided_at=row.decided_at,
        version=row.version,
        match_request_id=row.match_request_id,
        progress=document.progress,
    )


def _frame_row(frame: LivenessFrame) -> dict[str, Any]:
    """The ``liveness_frames`` row of ``frame`` (its documents serialised once, here)."""
    return {
        "session_id": frame.session_id,
        "sequence": frame.sequence,
        "captured_at": frame.captured_at,
        "storage_key": frame.storage_key,
        "analysis": FrameAnalysisDocument(
            analysis=frame.analysis, shown=frame.shown, media_lead_s=frame.media_lead_s
        ).to_row(),
        "spoof_score": frame.spoof_score,
        "embedding": None if frame.embedding is None else FrameEmbedding(vector=frame.embedding).to_row(),
    }


def _frame(row: Row[Any]) -> LivenessFrame:
    embedding = row.embedding
    analysed = FrameAnalysisDocument.from_row(row.analysis)
    return LivenessFrame(
        session_id=row.session_id,
        sequence=row.sequence,
        captured_at=row.captured_at,
        storage_key=row.storage_key,
        analysis=analysed.analysis,
        spoof_score=row.spoof_score,
        embedding=None if embedding is None else FrameEmbedding.from_row(embedding).vector,
        shown=analysed.shown,
        media_lead_s=analysed.media_lead_s,
    )


class LockedState:
    """The state row under lock, inside an open transaction (see :meth:`LivenessRepository.locked`)."""

    def __init__(self, session: AsyncSession, row: LivenessStateRow) -> None:
        self._session = session
        self._row = row

    @property
    def state(self) -> LivenessState:
        return _state(self._row)

    def set_connection(self, connection_id: str) -> None:
        state = _state(self._row)
        self._row.challenges = _document(state.challenges, connection_id, state.progress)
        self._row.version = self._row.version + 1

    def stage(self, messages: Sequence[Outgoing]) -> None:
        """Write ``messages`` to the outbox in this transaction (after the row's change)."""
        stage(self._session, *messages)


class LivenessRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]

    async def create_state(
        self,
        session_id: str,
        *,
        challenges: list[StoredChallenge],
        started_at: datetime,
        connection_id: str = "",
        issued: int = 0,
    ) -> tuple[LivenessState, bool]:
        """Create the session's state; when it exists already, return it and ``False``."""
        row = LivenessStateRow(
            session_id=session_id,
            challenges=_document(challenges, connection_id),
            started_at=started_at,
            issued=issued,
            verdicts=0,
            decision=None,
            decided_at=None,
            version=1,
        )
        with translate_errors():
            try:
                async with self._sessions.begin() as session:
                    session.add(row)
            except IntegrityError:
                existing = await self.get(session_id)
                if existing is None:
                    raise NotFound(f"session {session_id} does not exist") from None
                return existing, False
        return _state(row), True

    async def get(self, session_id: str) -> LivenessState | None:
        with translate_errors():
            async with self._engine.connect() as connection:
                row = (await connection.execute(_GET_STATE, {"sid": session_id})).one_or_none()
        return None if row is None else _state(row)

    async def set_connection(
        self, session_id: str, connection_id: str, *, announce: Sequence[Outgoing] = ()
    ) -> bool:
        """Record ``connection_id`` as the session's current connection, and write ``announce`` to
        the outbox with it; False (nothing written) when it already was."""
        async with self.locked(session_id) as locked:
            if locked is None:
                return False
            state = locked.state
            if state.connection_id == connection_id:
                return False
            locked.set_connection(connection_id)
            locked.stage(announce)
            return True

    async def frames_from(self, session_id: str, first_sequence: int) -> list[LivenessFrame]:
        """The session's stored frames from ``first_sequence`` on, in sequence order (one indexed
        range read: a replay step reads the frames stored since its last step, not all of them)."""
        with translate_errors():
            async with self._engine.connect() as connection:
                rows = await connection.execute(_FRAMES_FROM, {"sid": session_id, "first": first_sequence})
                return [_frame(row) for row in rows]

    async def storage_keys(self, session_id: str, sequences: Sequence[int]) -> dict[int, str]:
        """The object keys of the given stored frames (only that column is read)."""
        if not sequences:
            return {}
        query = select(LivenessFrameRow.sequence, LivenessFrameRow.storage_key).where(
            LivenessFrameRow.session_id == session_id, LivenessFrameRow.sequence.in_(list(sequences))
        )
        with translate_errors():
            async with self._sessions() as session:
                return {int(sequence): str(key) for sequence, key in (await session.execute(query)).all()}

    async def save_step(
        self,
        state: LivenessState,
        *,
        issued: int,
        verdicts: int,
        progress: dict[str, Any],
        decision: LivenessDecisionDocument | None = None,
        match_request_id: str | None = None,
        messages: Sequence[Outgoing] = (),
        frame: LivenessFrame | None = None,
    ) -> None:
        """Write a replay step's result, computed from ``state``: the counts of the events written
        so far, the replay's progress and, once, the decision (with the id of the MatchReferences
        it asks for, if any); ``messages`` (the step's new events, in the order a client must see
        them) go to the outbox in the same transaction. Raises ``VersionConflict``, writing
        nothing, unless the row is still at ``state.version``, undecided, and its session
        unfinished and not erased (re-read and step again): an erasure scrubs the progress, and
        a step computed before it must not write it back.

        ``frame``: the frame the step judged from memory, not stored yet: stored first in the same
        transaction, by :meth:`add_frame`'s rule; when that refuses it (stored meanwhile, or the
        session's erasure requested) nothing is written either and ``VersionConflict`` is raised
        (the caller stores the frame on its own, which refuses it again or not, and steps again)."""
        values: dict[str, Any] = {
            "sid": state.session_id,
            "expected_version": state.version,
            "document": _document(state.challenges, state.connection_id, progress),
            "issued_count": max(state.issued, issued),
            "verdict_count": max(state.verdicts, verdicts),
        }
        statement = _SAVE_STEP
        if decision is not None:
            statement = _SAVE_DECISION
            values |= {
                "decision_document": decision.to_row(),
                "decided": utc_now(),
                "match_request": match_request_id,
            }
        with translate_errors():
            async with self._sessions.begin() as session:
                if frame is not None and not await self._insert(session, frame):
                    raise VersionConflict(f"frame {frame.sequence} of {frame.session_id} was refused")
                updated = int(getattr(await session.execute(statement, values), "rowcount", 0) or 0)
                if updated != 1:
                    raise VersionConflict(
                        f"the liveness state of {state.session_id} is no longer at {state.version}"
                    )
                stage(session, *messages)

    async def add_frame(self, frame: LivenessFrame) -> bool:
        """Store an analysed frame; False when (session, sequence) was stored already (first wins)
        or the session's erasure was requested: its embedding is never kept. The session row is
        share-locked while checking, and the erasure locks it before deleting the frame rows, so
        a frame row is either refused or deleted by the erasure."""
        with translate_errors():
            async with self._engine.begin() as connection:
                return await self._insert(connection, frame)

    async def _insert(self, executor: AsyncConnection | AsyncSession, frame: LivenessFrame) -> bool:
        """Store ``frame`` in ``executor``'s transaction (:meth:`add_frame`'s rule); False when it
        was refused (stored already, or the session's erasure was requested)."""
        tombstone = (await executor.execute(_TOMBSTONE, {"sid": frame.session_id})).one_or_none()
        if session_erased(tombstone):
            return False
        statement = _insert_frame(self._engine.dialect.name)
        return (await executor.execute(statement, _frame_row(frame))).one_or_none() is not None

    @asynccontextmanager
    async def locked(self, session_id: str) -> AsyncIterator[LockedState | None]:
        """A transaction holding the state row's lock (None when there is no state yet)."""
        with translate_errors():
            async with self._sessions.begin() as session:
                if session.get_bind().dialect.name == "sqlite":
                    await session.execute(
                        update(LivenessStateRow)
                        .where(LivenessStateRow.session_id == session_id)
                        .values(version=LivenessStateRow.version)
                        .execution_options(synchronize_session=False)
                    )
                row = await session.scalar(
                    select(LivenessStateRow)
                    .where(LivenessStateRow.session_id == session_id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                )
                yield None if row is None else LockedState(session, row)

    async def waiting_for_match(self, *, decided_before: datetime, limit: int = 100) -> list[str]:
        """Sessions decided before ``decided_before`` and still unfinished (the matcher is late)."""
        unfinished = [status.value for status in SessionStatus if not status.terminal]
        query = (
            select(LivenessStateRow.session_id)
            .join(SessionRow, SessionRow.id == LivenessStateRow.session_id)
            .where(
                LivenessStateRow.decided_at.is_not(None),
                LivenessStateRow.decided_at <= decided_before,
                SessionRow.status.in_(unfinished),
            )
            .limit(limit)
        )
        with translate_errors():
            async with self._sessions() as session:
                return list((await session.scalars(query)).all())
