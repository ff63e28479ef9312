"""In-memory fakes of the liveness worker's ports (the session rows, the liveness state rows with
their outbox, the object store, the frame source) for unit tests of its handlers. The state fake
checks versions as the database does, writes a change's outbox messages only when the change is
written, and counts every frame it hands out; the store fake fails a test that touches it while a
state row is locked."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.documents import LivenessDecisionDocument, SessionSettingsDocument, StoredChallenge
from contracts.values import SessionStatus
from domain.outgoing import Outgoing
from domain.records import SessionRecord
from infra.db.errors import VersionConflict
from infra.db.liveness import LivenessFrame, LivenessState
from infra.storage import ObjectNotFound
from services.liveness.frames import AnalysedFrame

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def session(session_id: str = "s-1", *, reference_key: str | None = None) -> SessionRecord:
    return SessionRecord(
        id=session_id,
        owner="client-1",
        client_request_token=None,
        kind="liveness",
        status=SessionStatus.IN_PROGRESS,
        settings=SessionSettingsDocument(challenges=2, audit_images=2),
        created_at=NOW,
        updated_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        finished_at=None,
        result=None,
        version=2,
        reference_key=reference_key,
    )


class FakeSessions:
    def __init__(self, *records: SessionRecord) -> None:
        self.records = {record.id: record for record in records}
        self.fetches = 0

    async def fetch(self, session_id: str) -> SessionRecord | None:
        self.fetches += 1
        return self.records.get(session_id)


class FakeStates:
    """``liveness_states`` and ``liveness_frames`` in memory, and the outbox rows their changes
    wrote (``outbox``, in order). ``reads`` counts how often each frame was handed out;
    ``before_save`` runs inside :meth:`save_step` before the version check (a concurrent writer);
    ``locked_now`` is true while a state row lock is held."""

    def __init__(self) -> None:
        self.states: dict[str, LivenessState] = {}
        self.frames: dict[str, dict[int, LivenessFrame]] = {}
        self.reads: Counter[int] = Counter()
        self.saves: list[LivenessState] = []
        self.outbox: list[Outgoing] = []
        self.before_save: Callable[[str], None] | None = None
        self.locked_now = False

    async def create_state(
        self,
        session_id: str,
        *,
        challenges: list[StoredChallenge],
        started_at: datetime,
        connection_id: str = "",
    ) -> tuple[LivenessState, bool]:
        if session_id in self.states:
            return self.states[session_id], False
        state = LivenessState(
            session_id=session_id,
            challenges=challenges,
            connection_id=connection_id,
            started_at=started_at,
            issued=0,
            verdicts=0,
            decision=None,
            decided_at=None,
            version=1,
        )
        self.states[session_id] = state
        return state, True

    async def get(self, session_id: str) -> LivenessState | None:
        return self.states.get(session_id)

    def bump(self, session_id: str, **changes: Any) -> None:
        state = self.states[session_id]
        self.states[session_id] = replace(state, version=state.version + 1, **changes)

    @asynccontextmanager
    async def locked(self, session_id: str) -> AsyncIterator[None]:
        self.locked_now = True
        try:
            yield None
        finally:
            self.locked_now = False

    async def set_connection(
        self, session_id: str, connection_id: str, *, announce: Sequence[Outgoing] = ()
    ) -> bool:
        async with self.locked(session_id):
            if self.states[session_id].connection_id == connection_id:
                return False
            self.bump(session_id, connection_id=connection_id)
            self.outbox.extend(announce)
            return True

    async def add_frame(self, frame: LivenessFrame) -> bool:
        frames = self.frames.setdefault(frame.session_id, {})
        if frame.sequence in frames:
            return False
        frames[frame.sequence] = frame
        return True

    async def frames_from(self, session_id: str, first_sequence: int) -> list[LivenessFrame]:
        frames = self.frames.get(session_id, {})
        out = [frames[s] for s in sorted(frames) if s >= first_sequence]
        self.reads.update(f.sequence for f in out)
        return out

    async def storage_keys(self, session_id: str, sequences: Sequence[int]) -> dict[int, str]:
        frames = self.frames.get(session_id, {})
        return {s: frames[s].storage_key for s in sequences if s in frames}

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
        if self.before_save is not None:
            self.before_save(state.session_id)
        current = self.states[state.session_id]
        if current.version != state.version or current.decision is not None:
            raise VersionConflict(f"{state.session_id} is no longer at {state.version}")
        if frame is not None:  # stored in the same transaction, first wins (else nothing is written)
            frames = self.frames.setdefault(frame.session_id, {})
            if frame.sequence in frames:
                raise VersionConflict(f"frame {frame.sequence} was stored meanwhile")
            frames[frame.sequence] = frame
        saved = replace(
            current,
            issued=max(current.issued, issued),
            verdicts=max(current.verdicts, verdicts),
            progress=progress,
            decision=decision,
            decided_at=NOW if decision is not None else None,
            match_request_id=match_request_id,
            version=current.version + 1,
        )
        self.states[state.session_id] = saved
        self.saves.append(saved)
        self.outbox.extend(messages)  # in the same transaction

    def routing_keys(self) -> list[str]:
        return [message.routing_key for message in self.outbox]


@dataclass
class FakeStore:
    """Objects by key; fails the test when used while ``states`` holds a row lock."""

    states: FakeStates
    objects: dict[str, bytes] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)

    async def get(self, key: str) -> bytes:
        assert not self.states.locked_now, "object-store I/O while a state row is locked"
        self.log.append(("get", key))
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectNotFound(key) from None

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        assert not self.states.locked_now, "object-store I/O while a state row is locked"
        self.log.append(("put", key))
        self.objects[key] = data


class FakeFrames:
    """The frame source: the analysis prepared for each sequence."""

    def __init__(self, analyses: dict[int, AnalysedFrame]) -> None:
        self.analyses = analyses
        #: Per analysed frame, whether the iris model was asked for.
        self.eyes: list[bool] = []

    async def analyse(
        self, session_id: str, sequence: int, jpeg: bytes, *, eyes: bool = True
    ) -> AnalysedFrame:
        self.eyes.append(eyes)
        return self.analyses[sequence]

    def forget(self, session_id: str) -> None:
        return None
