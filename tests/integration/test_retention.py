"""Retention and erasure against real storage (SeaweedFS) and both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.documents import SessionResult, SessionSettingsDocument, StoredChallenge
from contracts.values import ChallengeType, SessionStatus
from domain.records import SessionRecord
from infra.db.audit import SYSTEM_ACTOR, AuditAction, AuditLog
from infra.db.engine import session_factory
from infra.db.errors import VersionConflict
from infra.db.liveness import LivenessFrame, LivenessRepository
from infra.db.repositories import SessionRepository
from infra.db.tables import LivenessFrameRow, LivenessStateRow, SessionRow
from infra.retention import Retention, session_prefix
from infra.storage import ObjectStore, S3ObjectStore, StorageError
from infra.telemetry.metrics import REGISTRY
from tests.support.services import free_ports

DAY = 86_400


@pytest.fixture
async def factory(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield session_factory(engine)


async def finished_session(
    factory: async_sessionmaker[AsyncSession], store: ObjectStore, *, age_s: float = 0
) -> SessionRecord:
    """A SUCCEEDED session with a reference, frames (with embeddings), the liveness worker's progress
    (with the identity check's reference embedding), a decision and audit images."""
    sessions, states = SessionRepository(factory), LivenessRepository(factory)
    record, _ = await sessions.create(
        "client-a",
        client_request_token=None,
        settings=SessionSettingsDocument(),
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    prefix = session_prefix(record.id)
    keys = [f"{prefix}reference-input.jpg", f"{prefix}reference.jpg", f"{prefix}audit-0.jpg"]
    keys += [f"{prefix}frames/{n:08d}.jpg" for n in range(3)]
    for key in keys:
        await store.put(key, b"\xff\xd8 not really a face", "image/jpeg")
    await states.create_state(
        record.id, challenges=[StoredChallenge(type=ChallengeType.BLINK)], started_at=datetime.now(UTC)
    )
    for n in range(3):
        await states.add_frame(
            LivenessFrame(
                record.id,
                sequence=n,
                captured_at=datetime.now(UTC),
                storage_key=f"{prefix}frames/{n:08d}.jpg",
                analysis={"faceCount": 1},
                spoof_score=0.1,
                embedding=[0.25] * 8,
            )
        )
    async with factory.begin() as session:
        state = await session.get(LivenessStateRow, record.id)
        assert state is not None
        state.challenges = {**state.challenges, "progress": {"identity_reference": [0.75] * 8}}
        state.decision = {
            "isLive": True,
            "confidence": 0.9,
            "reasons": [],
            "referenceKey": f"{prefix}reference.jpg",
            "auditKeys": [f"{prefix}audit-0.jpg"],
        }
        await session.execute(
            update(SessionRow)
            .where(SessionRow.id == record.id)
            .values(reference_key=f"{prefix}reference-input.jpg")
        )
    result = {
        "isLive": True,
        "confidence": 0.9,
        "reasons": [],
        "referenceImageKey": f"{prefix}reference.jpg",
        "auditImageKeys": [f"{prefix}audit-0.jpg"],
        "comparisonResult": 0.8,
        "comparisonMatch": True,
    }
    current = await sessions.fetch(record.id)
    assert current is not None
    await sessions.update_status(
        record.id,
        expected_version=current.version,
        status=SessionStatus.SUCCEEDED,
        result=SessionResult.from_row(result),
    )
    fetched_before = await sessions.fetch(record.id)
    assert fetched_before is not None
    if age_s:
        async with factory.begin() as session:
            await session.execute(
                update(SessionRow)
                .where(SessionRow.id == record.id)
                .values(created_at=fetched_before.created_at - timedelta(seconds=age_s))
            )
    fetched = await sessions.fetch(record.id)
    assert fetched is not None
    return fetched


async def frame_rows(factory: async_sessionmaker[AsyncSession], session_id: str) -> int:
    async with factory() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(LivenessFrameRow)
            .where(LivenessFrameRow.session_id == session_id)
        )
    return int(count or 0)


async def test_the_purge_erases_sessions_past_retention_once(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    retention = Retention(factory, s3_store)
    old = await finished_session(factory, s3_store, age_s=DAY + 60)
    young = await finished_session(factory, s3_store)

    now = datetime.now(UTC)
    purged = await retention.purge_expired(now, retention_s=DAY)
    assert old.id in purged
    assert young.id not in purged

    assert await s3_store.list(session_prefix(old.id)) == []
    assert await frame_rows(factory, old.id) == 0
    erased = await SessionRepository(factory).fetch(old.id)
    assert erased is not None and erased.purged_at is not None
    assert erased.status is SessionStatus.SUCCEEDED  # the decision stays
    assert erased.reference_key is None
    assert erased.result is not None
    assert erased.result.is_live is True and erased.result.comparison_result == 0.8
    assert erased.result.reference_image_key is None and erased.result.audit_image_keys == []
    state = await LivenessRepository(factory).get(old.id)
    assert state is not None and state.decision is not None
    assert state.decision.reference_image_key is None and state.decision.audit_image_keys == []
    assert state.decision.is_live is True  # the legacy row's decision, scrubbed, stays
    assert state.progress is None  # the identity check's reference embedding is gone with it
    assert [c.type for c in state.challenges] == [ChallengeType.BLINK]

    # the young one is untouched
    assert len(await s3_store.list(session_prefix(young.id))) == 6
    assert await frame_rows(factory, young.id) == 3
    young_state = await LivenessRepository(factory).get(young.id)
    assert young_state is not None and young_state.progress == {"identity_reference": [0.75] * 8}

    # idempotent: nothing more to do, one audit record
    assert old.id not in await retention.purge_expired(datetime.now(UTC), retention_s=DAY)
    events = await AuditLog(factory).list(subject_id=old.id)
    assert [(e.actor, e.action, e.outcome) for e in events] == [
        (SYSTEM_ACTOR, AuditAction.SESSION_PURGED.value, "SUCCEEDED")
    ]
    assert events[0].details is not None and events[0].details["objectsDeleted"] == 6
    text = json.dumps([e.to_dict() for e in events])
    assert "0.25" not in text and ".jpg" not in text  # no embedding, no object key


async def test_an_unfinished_session_within_its_expiry_is_not_purged(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    sessions = SessionRepository(factory)
    record, _ = await sessions.create(
        "client-a",
        client_request_token=None,
        settings=SessionSettingsDocument(),
        expires_at=datetime.now(UTC) + timedelta(days=3),
    )
    now = datetime.now(UTC) + timedelta(days=2)  # past retention, before its expiry
    assert record.id not in await Retention(factory, s3_store).due(now, retention_s=DAY)
    assert record.id in await Retention(factory, s3_store).due(
        datetime.now(UTC) + timedelta(days=4), retention_s=DAY
    )


async def test_erase_removes_late_objects_of_a_purged_session(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    retention = Retention(factory, s3_store)
    record = await finished_session(factory, s3_store)
    assert await retention.erase(record.id, actor="client-a")
    late = f"{session_prefix(record.id)}frames/00000099.jpg"
    await s3_store.put(late, b"late frame", "image/jpeg")
    assert not await retention.erase(record.id, actor="client-a")  # purged already: no new record
    assert await s3_store.list(session_prefix(record.id)) == []
    events = await AuditLog(factory).list(subject_id=record.id)
    assert [(e.actor, e.action) for e in events] == [("client-a", "SESSION_ERASED")]


async def test_storage_down_marks_nothing_purged(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    record = await finished_session(factory, s3_store)
    (port,) = free_ports(1)
    dead = S3ObjectStore(f"127.0.0.1:{port}", "key", "secret", "faceproof-test", secure=False)
    with pytest.raises(StorageError):
        await Retention(factory, dead).erase(record.id, actor="client-a")
    current = await SessionRepository(factory).fetch(record.id)
    assert current is not None and current.purged_at is None
    assert await frame_rows(factory, record.id) == 3


async def test_concurrent_erasures_record_one_event(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    record = await finished_session(factory, s3_store)
    retention = Retention(factory, s3_store)
    results = await asyncio.gather(*(retention.erase(record.id, actor="client-a") for _ in range(3)))
    assert sorted(results) == [False, False, True]
    assert len(await AuditLog(factory).list(subject_id=record.id)) == 1


async def test_a_step_computed_before_the_erasure_does_not_write_its_progress_back(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    # An unfinished session past its expiry (no one marked it) is purged while the liveness worker
    # holds a step computed from its state: the step must not store its progress (the identity
    # check's reference embedding) after the erasure scrubbed it.
    sessions, states = SessionRepository(factory), LivenessRepository(factory)
    record, _ = await sessions.create(
        "client-a",
        client_request_token=None,
        settings=SessionSettingsDocument(),
        expires_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    async with factory.begin() as session:
        await session.execute(
            update(SessionRow)
            .where(SessionRow.id == record.id)
            .values(created_at=record.created_at - timedelta(seconds=DAY + 60))
        )
    await states.create_state(
        record.id, challenges=[StoredChallenge(type=ChallengeType.BLINK)], started_at=datetime.now(UTC)
    )
    read_by_the_step = await states.get(record.id)
    assert read_by_the_step is not None

    assert record.id in await Retention(factory, s3_store).purge_expired(datetime.now(UTC), retention_s=DAY)
    with pytest.raises(VersionConflict):
        await states.save_step(
            read_by_the_step, issued=1, verdicts=0, progress={"identity_reference": [0.75] * 8}
        )
    after = await states.get(record.id)
    assert after is not None and after.progress is None
    erased = await sessions.fetch(record.id)
    assert erased is not None and erased.purged_at is not None


class RefusingStore:
    """The real store, refusing to list one session's objects (a purge that keeps failing)."""

    def __init__(self, store: ObjectStore, refused_prefix: str) -> None:
        self._store, self._refused = store, refused_prefix

    async def list(self, prefix: str) -> list[str]:
        if prefix == self._refused:
            raise StorageError("refused")
        return await self._store.list(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_one_purge_erases_every_session_past_retention_past_one_that_keeps_failing(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    # A purge took one batch per sweep (100 sessions every 5 minutes), oldest first: more sessions
    # than that a day piled up past retention, and a batch whose erasures kept failing held back
    # every later one. Now it goes on, batch after batch, past the failing ones.
    oldest = await finished_session(factory, s3_store, age_s=DAY + 600)
    others = [await finished_session(factory, s3_store, age_s=DAY + 500 - n) for n in range(5)]
    store = RefusingStore(s3_store, session_prefix(oldest.id))
    retention = Retention(factory, cast(ObjectStore, store))
    now = datetime.now(UTC)

    purged = await retention.purge_expired(now, retention_s=DAY, limit=2)

    assert {record.id for record in others} <= set(purged)
    assert oldest.id not in purged
    for record in others:
        assert await s3_store.list(session_prefix(record.id)) == []
    assert len(await s3_store.list(session_prefix(oldest.id))) == 6
    overdue = REGISTRY.get_sample_value("faceproof_retention_overdue_seconds")
    assert overdue is not None and 595 <= overdue <= 700  # the one still holding data, past by ~600 s
    assert overdue == await retention.overdue_s(now, retention_s=DAY)

    purged_later = await Retention(factory, s3_store).purge_expired(datetime.now(UTC), retention_s=DAY)
    assert oldest.id in purged_later
    assert REGISTRY.get_sample_value("faceproof_retention_overdue_seconds") == 0.0
