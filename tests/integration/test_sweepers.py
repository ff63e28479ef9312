"""Sweepers against real storage (SeaweedFS) and both databases: one session whose purge or expiry
fails (a fault injected through the port) neither blocks the others nor stops the loop, and each
failure is counted in faceproof_sweep_failures_total."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.documents import LivenessDecisionDocument, SessionSettingsDocument
from contracts.events import SessionFinished
from contracts.routing import EventKey
from contracts.values import SessionStatus
from domain.records import SessionRecord
from domain.sessions import Expired, SessionEnding
from infra.db.engine import session_factory
from infra.db.errors import DatabaseUnavailable
from infra.db.liveness import LivenessRepository
from infra.db.outbox import SqlOutbox
from infra.db.repositories import SessionRepository
from infra.db.tables import LivenessStateRow, SessionRow
from infra.lifecycle import SessionLifecycle
from infra.retention import RETENTION_SWEEPER, Retention, session_prefix
from infra.storage import ObjectStore
from infra.sweeps import ITEM, run_forever
from infra.telemetry.metrics import REGISTRY
from services.liveness.frames import AnalysedFrame
from services.liveness.handlers import EXPIRY_SWEEPER, Deps, sweep
from tests.integration.test_retention import DAY, finished_session


@pytest.fixture
async def factory(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield session_factory(engine)


def item_failures(sweeper: str) -> float:
    value = REGISTRY.get_sample_value("faceproof_sweep_failures_total", {"sweeper": sweeper, "scope": ITEM})
    return value or 0.0


class BrokenForOneSession:
    """The real store, except that deleting anything of one session raises (a disk error, a bug)."""

    def __init__(self, store: ObjectStore, broken_session: str) -> None:
        self._store = store
        self._broken = session_prefix(broken_session)
        self.refused = 0

    async def ensure_buckets(self) -> None:
        await self._store.ensure_buckets()

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await self._store.put(key, data, content_type)

    async def get(self, key: str) -> bytes:
        return await self._store.get(key)

    async def delete(self, key: str) -> None:
        if key.startswith(self._broken):
            self.refused += 1
            raise RuntimeError(f"cannot delete {key}")
        await self._store.delete(key)

    async def list(self, prefix: str) -> builtins.list[str]:
        return await self._store.list(prefix)

    async def presign_get(self, key: str, expires: timedelta) -> str:
        return await self._store.presign_get(key, expires)

    async def ping(self) -> None:
        await self._store.ping()


async def test_a_session_whose_purge_fails_blocks_neither_the_others_nor_the_loop(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    first, broken, last = [await finished_session(factory, s3_store, age_s=DAY + 60) for _ in range(3)]
    store = BrokenForOneSession(s3_store, broken.id)
    retention = Retention(factory, store)
    before = item_failures(RETENTION_SWEEPER)
    sweeps = 0
    thrice = asyncio.Event()

    async def purge() -> None:
        nonlocal sweeps
        await retention.purge_expired(datetime.now(UTC), retention_s=DAY)
        sweeps += 1
        if sweeps == 3:
            thrice.set()

    loop = asyncio.create_task(run_forever(RETENTION_SWEEPER, purge, interval_s=0.05))
    try:
        await asyncio.wait_for(thrice.wait(), timeout=60)
        assert not loop.done()  # still sweeping, the broken session tried again each time
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop

    sessions = SessionRepository(factory)
    for purged in (first, last):
        assert await s3_store.list(session_prefix(purged.id)) == []
        record = await sessions.fetch(purged.id)
        assert record is not None and record.purged_at is not None
    record = await sessions.fetch(broken.id)
    assert record is not None and record.purged_at is None  # not marked: retried next time
    assert await s3_store.list(session_prefix(broken.id))  # its images are still there
    assert store.refused >= 3
    assert item_failures(RETENTION_SWEEPER) >= before + 3


class OneBrokenSession(SessionRepository):
    """Cannot end one session (its transaction fails); the others end as usual."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], broken_session: str) -> None:
        super().__init__(factory)
        self.broken_session = broken_session

    async def end(self, ending: SessionEnding) -> SessionRecord:
        if ending.session_id == self.broken_session:
            raise DatabaseUnavailable("connection lost")
        return await super().end(ending)


class NoFrames:
    async def analyse(
        self, session_id: str, sequence: int, jpeg: bytes, *, eyes: bool = True
    ) -> AnalysedFrame:
        raise AssertionError("an expiry analyses no frame")

    def forget(self, session_id: str) -> None:
        pass


async def overdue_sessions(
    factory: async_sessionmaker[AsyncSession],
    count: int,
    *,
    status: SessionStatus | None = None,
    reference_key: str | None = None,
) -> list[str]:
    """``count`` sessions of one client, their expiry a second ago (``status``: moved there too)."""
    sessions = SessionRepository(factory)
    ids = []
    for _ in range(count):
        record, _ = await sessions.create(
            "client-a",
            client_request_token=None,
            settings=SessionSettingsDocument(),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            reference_key=reference_key,
        )
        ids.append(record.id)
    moved: dict[str, object] = {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}
    if status is not None:
        moved["status"] = status.value
    async with factory.begin() as session:
        await session.execute(update(SessionRow).where(SessionRow.id.in_(ids)).values(**moved))
    return ids


async def test_an_expiry_that_fails_for_one_session_still_expires_the_others(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    sessions = SessionRepository(factory)
    overdue = await overdue_sessions(factory, 3)
    deps = Deps(
        sessions=OneBrokenSession(factory, broken_session=overdue[1]),
        states=LivenessRepository(factory),
        store=s3_store,
        frames=NoFrames(),
        identity_threshold=0.5,
    )
    before = item_failures(EXPIRY_SWEEPER)

    await sweep(deps, match_timeout_s=30)

    outbox = SqlOutbox(factory)
    for session_id in overdue:
        fetched = await sessions.fetch(session_id)
        finished = await outbox.messages(session_id, routing_key=EventKey.SESSION_FINISHED)
        assert fetched is not None
        if session_id == overdue[1]:  # not ended: the next sweep tries again
            assert fetched.status is SessionStatus.CREATED and finished == []
        else:  # ended, with exactly one SessionFinished waiting for the relay
            assert fetched.status is SessionStatus.EXPIRED
            assert [SessionFinished.model_validate(m.payload).status for m in finished] == [
                SessionStatus.EXPIRED
            ]
    assert item_failures(EXPIRY_SWEEPER) == before + 1


async def test_a_decided_session_past_its_expiry_ends_with_its_decision_not_expired(
    factory: async_sessionmaker[AsyncSession], s3_store: ObjectStore
) -> None:
    """The race: the session was decided (live) and its reference sent to a matcher that is slow;
    the expiry came first. The sweep and the gateway's lazy expiry turned it EXPIRED (counted
    against a subject who passed, after a LivenessDecided that said live). Now a decided session
    waits for the matcher's answer, and the sweep finishes it with its decision once the answer
    is late (COMPARISON_UNAVAILABLE for its reference)."""
    sessions, states = SessionRepository(factory), LivenessRepository(factory)
    ids = await overdue_sessions(
        factory, 2, status=SessionStatus.IN_PROGRESS, reference_key="sessions/ref/reference-input.jpg"
    )
    for session_id in ids:
        await states.create_state(session_id, challenges=[], started_at=datetime.now(UTC))
    decided, undecided = ids
    decision = LivenessDecisionDocument(is_live=True, confidence=97.0)
    async with factory.begin() as session:
        await session.execute(
            update(LivenessStateRow)
            .where(LivenessStateRow.session_id == decided)
            .values(decision=decision.to_row(), decided_at=datetime.now(UTC), match_request_id="m-1")
        )
    deps = Deps(sessions=sessions, states=states, store=s3_store, frames=NoFrames(), identity_threshold=0.5)

    await sweep(deps, match_timeout_s=30)
    assert await SessionLifecycle(sessions).end(decided, Expired()) is None  # the gateway's lazy expiry
    assert (await sessions.fetch(undecided)).status is SessionStatus.EXPIRED  # type: ignore[union-attr]
    assert (await sessions.fetch(decided)).status is SessionStatus.IN_PROGRESS  # type: ignore[union-attr]

    await sweep(deps, match_timeout_s=0)  # the matcher's answer is late now
    ended = await sessions.fetch(decided)
    assert ended is not None and ended.status is SessionStatus.SUCCEEDED, ended
    assert ended.result is not None and "COMPARISON_UNAVAILABLE" in ended.result.reasons
    finished = await SqlOutbox(factory).messages(decided, routing_key=EventKey.SESSION_FINISHED)
    assert [SessionFinished.model_validate(m.payload).status for m in finished] == [SessionStatus.SUCCEEDED]
