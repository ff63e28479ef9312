"""Erasure is final, through the real gateway app on real Postgres, RabbitMQ (a throw-away vhost)
and SeaweedFS (its own bucket):

- the object store is cut off while a client erases a session: the DELETE answers 503, but the
  erasure is recorded (no writer stores anything for the session any more) and the reconciler
  finishes the purge once the store is back;
- a write racing the erasure is undone by the writer itself;
- objects no session row owns (a reference stored before its row, whose insert failed) and
  objects written after a purge are removed by the reconciler, the former after a grace period.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from contracts.http import CreateSessionRequest
from domain.records import SessionRecord
from infra.db.audit import AuditLog
from infra.db.engine import create_engine, session_factory
from infra.db.errors import DatabaseError
from infra.db.liveness import LivenessFrame, LivenessRepository
from infra.db.repositories import SessionRepository
from infra.db.tables import LivenessFrameRow, utc_now
from infra.erasure import ErasureGuardedStore, SessionErased
from infra.reconcile import Reconciler
from infra.retention import SESSION_PREFIX, session_prefix
from infra.settings import Settings
from infra.storage import ScannableStore, open_store
from infra.telemetry.metrics import ERASED_WRITES, ERASURE_RETRIES, ORPHAN_OBJECTS_REMOVED
from services.gateway.app import create_app
from services.gateway.auth import Principal
from services.intake.sessions import SessionCreator
from tests.paths import PEOPLE
from tests.support.broker import temporary_vhost
from tests.support.services import S3_REGION, SeaweedFS, free_ports
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

API = {"Authorization": "Bearer api-token"}
OBAMA = base64.b64encode((PEOPLE / "obama.jpg").read_bytes()).decode()
BUCKET = "erasure-final"
JPEG = b"\xff\xd8 a face"


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _count(counter: Any, label: str) -> float:
    return float(counter.labels(label)._value.get())


@dataclass
class Rig:
    http: TestClient
    proxy: TcpProxy
    store: ScannableStore  # straight to SeaweedFS (not through the proxy)
    settings: Settings

    def record(self, session_id: str) -> SessionRecord:
        async def fetch() -> SessionRecord | None:
            engine = create_engine(self.settings.resolved_database_url)
            try:
                return await SessionRepository(session_factory(engine)).fetch(session_id)
            finally:
                await engine.dispose()

        record = _run(fetch())
        assert record is not None
        return record

    def reconcile(self, *, grace_s: float = 3600.0, at_offset_s: float = 0.0) -> Any:
        async def run() -> Any:
            engine = create_engine(self.settings.resolved_database_url)
            try:
                reconciler = Reconciler(session_factory(engine), self.store, grace_s=grace_s)
                return await reconciler.run(utc_now() + timedelta(seconds=at_offset_s))
            finally:
                await engine.dispose()

        return _run(run())

    def keys(self, session_id: str) -> list[str]:
        result: list[str] = _run(self.store.list(session_prefix(session_id)))
        return result


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, seaweedfs: SeaweedFS) -> Iterator[Rig]:
    proxy = TcpProxy((seaweedfs.host, seaweedfs.port))
    credentials = f"{quote(seaweedfs.access_key, safe='')}:{quote(seaweedfs.secret_key, safe='')}"
    through_proxy = f"s3://{credentials}@127.0.0.1:{proxy.port}/{BUCKET}?secure=false&region={S3_REGION}"
    try:
        with temporary_vhost() as vhost:
            settings = Settings(
                data_dir=tmp_path_factory.mktemp("gateway"),
                database_url=postgres_url,
                storage_url=through_proxy,
                broker_url=vhost.url,
                api_token="api-token",
            )
            with TestClient(create_app(settings)) as http:
                yield Rig(http, proxy, open_store(seaweedfs.url_for(BUCKET)), settings)
    finally:
        proxy.close()


def _session_with_frames(rig: Rig) -> str:
    created = rig.http.post("/v1/sessions", json={"reference": OBAMA}, headers=API)
    assert created.status_code == 201, created.text
    session_id: str = created.json()["sessionId"]
    for n in range(3):
        _run(rig.store.put(f"{session_prefix(session_id)}frames/{n:08d}.jpg", JPEG, "image/jpeg"))
    assert len(rig.keys(session_id)) == 4  # the app's reference and three frames
    return session_id


def test_a_purge_the_store_failed_is_retried_by_the_reconciler(rig: Rig) -> None:
    session_id = _session_with_frames(rig)
    retried = _count(ERASURE_RETRIES, "purged")

    rig.proxy.cut()  # the object store is unreachable from the gateway
    try:
        started = time.monotonic()
        answer = rig.http.delete(f"/v1/sessions/{session_id}", headers=API)
        assert answer.status_code == 503 and answer.json()["code"] == "STORAGE_UNAVAILABLE"
        assert time.monotonic() - started < 15
        assert "Retry-After" in answer.headers
    finally:
        rig.proxy.restore()

    record = rig.record(session_id)
    assert record.erase_requested_at is not None and record.purged_at is None
    assert record.status.value == "FAILED" and record.result is not None
    assert record.result.reasons == ["ERASED"]
    assert len(rig.keys(session_id)) == 4  # nothing deleted yet: the store was down

    # the tombstone holds meanwhile: a writer (the call agent, the liveness worker) stores nothing
    async def late_frame() -> None:
        engine = create_engine(rig.settings.resolved_database_url)
        try:
            guarded = ErasureGuardedStore(
                rig.store, SessionRepository(session_factory(engine)), writer="test"
            )
            with pytest.raises(SessionErased):
                await guarded.put(f"{session_prefix(session_id)}frames/00000009.jpg", JPEG, "image/jpeg")
        finally:
            await engine.dispose()

    _run(late_frame())
    assert f"{session_prefix(session_id)}frames/00000009.jpg" not in rig.keys(session_id)

    done = rig.reconcile()
    assert done.purged >= 1
    assert rig.keys(session_id) == []
    assert rig.record(session_id).purged_at is not None
    assert _count(ERASURE_RETRIES, "purged") >= retried + 1
    body = rig.http.get(f"/v1/sessions/{session_id}", headers=API).json()
    assert body["purged"] is True and body["referenceImage"] is None

    async def audit() -> list[str]:
        engine = create_engine(rig.settings.resolved_database_url)
        try:
            return [e.action for e in await AuditLog(session_factory(engine)).list(subject_id=session_id)]
        finally:
            await engine.dispose()

    # the unfinished session ended (FAILED, ERASED) once, and was erased once
    assert sorted(_run(audit())) == ["SESSION_DECIDED", "SESSION_ERASED"]
    # a second run finds nothing left to retry for it
    rig.reconcile()
    assert sorted(_run(audit())) == ["SESSION_DECIDED", "SESSION_ERASED"]


def test_a_write_racing_the_erasure_is_undone_by_the_writer(rig: Rig) -> None:
    """The tombstone lands between the writer's check and its write: the writer's second check,
    after the write, sees it and removes what it wrote."""
    session_id = _session_with_frames(rig)
    refused = _count(ERASED_WRITES, "race")

    async def race() -> None:
        engine = create_engine(rig.settings.resolved_database_url)
        try:
            sessions = SessionRepository(session_factory(engine))

            class ErasedRightAfterTheFirstCheck:
                checks = 0

                async def erased(self, sid: str) -> bool:
                    answer = await sessions.erased(sid)
                    self.checks += 1
                    if self.checks == 1:
                        await sessions.request_erasure(sid)  # DELETE arrives now
                    return answer

            guarded = ErasureGuardedStore(rig.store, ErasedRightAfterTheFirstCheck(), writer="race")
            with pytest.raises(SessionErased):
                await guarded.put(f"{session_prefix(session_id)}frames/00000007.jpg", JPEG, "image/jpeg")
        finally:
            await engine.dispose()

    _run(race())
    assert f"{session_prefix(session_id)}frames/00000007.jpg" not in rig.keys(session_id)
    assert _count(ERASED_WRITES, "race") == refused + 1


def test_no_frame_row_or_embedding_is_kept_for_an_erased_session(rig: Rig) -> None:
    """The liveness worker analyses a frame while the app erases the session: the frame's row
    (with its face embedding) is refused once the erasure was requested."""
    session_id = _session_with_frames(rig)

    async def add(sequence: int) -> bool:
        engine = create_engine(rig.settings.resolved_database_url)
        try:
            stored: bool = await LivenessRepository(session_factory(engine)).add_frame(
                LivenessFrame(
                    session_id,
                    sequence=sequence,
                    captured_at=utc_now(),
                    storage_key=f"{session_prefix(session_id)}frames/{sequence:08d}.jpg",
                    analysis={"faceCount": 1},
                    spoof_score=0.1,
                    embedding=[0.25] * 8,
                )
            )
            return stored
        finally:
            await engine.dispose()

    async def frame_rows() -> int:
        engine = create_engine(rig.settings.resolved_database_url)
        try:
            async with session_factory(engine)() as session:
                count = await session.scalar(
                    select(func.count())
                    .select_from(LivenessFrameRow)
                    .where(LivenessFrameRow.session_id == session_id)
                )
            return int(count or 0)
        finally:
            await engine.dispose()

    assert _run(add(0)) is True
    assert rig.http.delete(f"/v1/sessions/{session_id}", headers=API).status_code == 204
    assert _run(frame_rows()) == 0
    assert _run(add(1)) is False  # analysed too late: not stored
    assert _run(frame_rows()) == 0


def test_objects_without_a_row_and_late_objects_are_removed(rig: Rig) -> None:
    # A reference stored, then the row's insert fails (the database is gone): the creator removes it.
    before = {o.key for o in _run(rig.store.scan(SESSION_PREFIX, after=None, limit=100_000))}

    async def create_without_database() -> None:
        (port,) = free_ports(1)
        engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nothing")
        try:
            creator = SessionCreator(
                rig.settings, SessionRepository(session_factory(engine)), rig.store, None
            )
            with pytest.raises(DatabaseError):
                await creator.create(
                    CreateSessionRequest(reference=OBAMA), Principal(owner="static", client_id=None)
                )
        finally:
            await engine.dispose()

    _run(create_without_database())
    after = {o.key for o in _run(rig.store.scan(SESSION_PREFIX, after=None, limit=100_000))}
    assert after == before

    # What a crash between the two leaves: a reference no row owns.
    orphan = f"{session_prefix(str(uuid.uuid4()))}reference-input.jpg"
    _run(rig.store.put(orphan, JPEG, "image/jpeg"))
    # A live session's objects, and a frame written after a session was purged.
    live = _session_with_frames(rig)
    purged = _session_with_frames(rig)
    assert rig.http.delete(f"/v1/sessions/{purged}", headers=API).status_code == 204
    late = f"{session_prefix(purged)}frames/00000042.jpg"
    _run(rig.store.put(late, JPEG, "image/jpeg"))
    removed_erased = _count(ORPHAN_OBJECTS_REMOVED, "erased")
    removed_no_row = _count(ORPHAN_OBJECTS_REMOVED, "no_row")

    rig.reconcile(grace_s=3600)  # the orphan is young: it may be a creation in progress
    assert rig.keys(purged) == []
    assert orphan in {o.key for o in _run(rig.store.scan(SESSION_PREFIX, after=None, limit=100_000))}
    assert len(rig.keys(live)) == 4
    assert _count(ORPHAN_OBJECTS_REMOVED, "erased") == removed_erased + 1

    rig.reconcile(grace_s=3600, at_offset_s=3601)  # an hour later
    assert orphan not in {o.key for o in _run(rig.store.scan(SESSION_PREFIX, after=None, limit=100_000))}
    assert len(rig.keys(live)) == 4  # a session's own objects are never orphans
    assert _count(ORPHAN_OBJECTS_REMOVED, "no_row") >= removed_no_row + 1
