"""Lockout counts every way a subject's attempt can end without passing, through the real gateway
app on real Postgres and RabbitMQ: abandoned sessions (the subject connected its camera, then
left it to expire: the gateway's lazy expiry and the liveness worker's sweep) and sessions erased
mid-way count as failures, so walking away from a failing attempt, or deleting it, does not dodge
the lockout. A session nobody ever opened that expires is the app's, not an attempt: it does not
count (domain.sessions.counts_toward_lockout)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from contracts.events import SessionFinished
from contracts.routing import EventKey
from infra.db.engine import create_engine, session_factory
from infra.db.liveness import LivenessRepository
from infra.db.repositories import ApiClientRepository, SessionRepository
from infra.db.tables import OutboxRow, SessionRow, utc_now
from infra.settings import Settings
from infra.storage import open_store
from services.gateway.app import create_app
from services.liveness.frames import AnalysedFrame
from services.liveness.handlers import Deps, sweep
from tests.support.broker import temporary_vhost

pytestmark = pytest.mark.integration


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@dataclass
class Gateway:
    http: TestClient
    database_url: str
    storage_url: str

    def client_headers(self) -> dict[str, str]:
        async def create() -> str:
            engine = create_engine(self.database_url)
            try:
                _, key = await ApiClientRepository(session_factory(engine)).create(
                    f"lo-{uuid.uuid4().hex[:8]}"
                )
            finally:
                await engine.dispose()
            return key

        return {"Authorization": f"Bearer {_run(create())}"}

    def create(self, headers: dict[str, str], subject: str) -> Any:
        return self.http.post("/v1/sessions", json={"settings": {"subjectKey": subject}}, headers=headers)

    def overdue(self, *session_ids: str) -> None:
        """Time passes: the sessions' deadlines are behind them (nobody finished them)."""

        async def move() -> None:
            engine = create_engine(self.database_url)
            try:
                async with session_factory(engine).begin() as session:
                    await session.execute(
                        update(SessionRow)
                        .where(SessionRow.id.in_(session_ids))
                        .values(expires_at=utc_now() - timedelta(seconds=1))
                    )
            finally:
                await engine.dispose()

        _run(move())

    def opened(self, *session_ids: str) -> None:
        """The subject opened each session: its browser's offer claimed the camera connection
        (as ``POST /v1/sessions/{id}/offer`` does), then it hung up."""

        async def connect() -> None:
            engine = create_engine(self.database_url)
            try:
                sessions = SessionRepository(session_factory(engine))
                for session_id in session_ids:
                    connection = uuid.uuid4().hex
                    assert await sessions.claim_connection(session_id, connection, stale_after_s=30)
                    assert await sessions.release_connection(session_id, connection)
            finally:
                await engine.dispose()

        _run(connect())

    def sweep_expired(self) -> list[str]:
        """The liveness worker's expiry sweep (``services.liveness.handlers.sweep``); the sessions
        it ended (its SessionFinished events, written to the outbox with each ending)."""

        async def run() -> list[str]:
            engine = create_engine(self.database_url)
            try:
                factory = session_factory(engine)
                async with factory() as session:
                    before = await session.scalar(select(func.max(OutboxRow.id))) or 0
                deps = Deps(
                    sessions=SessionRepository(factory),
                    states=LivenessRepository(factory),
                    store=open_store(self.storage_url),
                    frames=NoFrames(),
                    identity_threshold=0.5,
                )
                await sweep(deps, match_timeout_s=30)
                async with factory() as session:
                    rows = await session.scalars(
                        select(OutboxRow).where(
                            OutboxRow.id > before, OutboxRow.routing_key == EventKey.SESSION_FINISHED
                        )
                    )
                    ended = [SessionFinished.model_validate(row.payload).session_id for row in rows]
            finally:
                await engine.dispose()
            return ended

        result: list[str] = _run(run())
        return result


class NoFrames:
    async def analyse(
        self, session_id: str, sequence: int, jpeg: bytes, *, eyes: bool = True
    ) -> AnalysedFrame:
        raise AssertionError("an expiry analyses no frame")

    def forget(self, session_id: str) -> None:
        pass


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Gateway]:
    with temporary_vhost() as vhost:
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("gateway"),
            database_url=postgres_url,
            broker_url=vhost.url,
            api_token="static-token",
            static_burst=10_000,
        )
        with TestClient(create_app(settings)) as http:
            yield Gateway(http, postgres_url, settings.resolved_storage_url)


def test_abandoned_sessions_count_toward_the_lockout(gateway: Gateway) -> None:
    headers = gateway.client_headers()
    subject = f"walks-away-{uuid.uuid4().hex[:6]}"
    abandoned = []
    for _ in range(5):
        created = gateway.create(headers, subject)
        assert created.status_code == 201, created.text
        abandoned.append(created.json()["sessionId"])
    gateway.opened(*abandoned)
    gateway.overdue(*abandoned[:4])
    # two expire when the app reads them (the gateway's lazy expiry) ...
    for session_id in abandoned[:2]:
        body = gateway.http.get(f"/v1/sessions/{session_id}", headers=headers).json()
        assert body["status"] == "EXPIRED"
    # ... two when the liveness worker sweeps: four abandoned attempts do not lock yet
    assert set(abandoned[2:4]) <= set(gateway.sweep_expired())
    assert gateway.create(headers, subject).status_code == 201
    # the fifth
    gateway.overdue(abandoned[4])
    body = gateway.http.get(f"/v1/sessions/{abandoned[4]}", headers=headers).json()
    assert body["status"] == "EXPIRED"
    refused = gateway.create(headers, subject)
    assert refused.status_code == 429 and refused.json()["code"] == "SUBJECT_LOCKED_OUT"
    assert int(refused.headers["Retry-After"]) > 0
    legacy = gateway.http.post("/session", json={"settings": {"subjectKey": subject}}, headers=headers)
    assert legacy.status_code == 429
    # another subject of the same client is not locked
    assert gateway.create(headers, f"other-{uuid.uuid4().hex[:6]}").status_code == 201


def test_erasing_attempts_mid_way_does_not_dodge_the_lockout(gateway: Gateway) -> None:
    headers = gateway.client_headers()
    subject = f"erases-{uuid.uuid4().hex[:6]}"
    # sessions the user never opened and the app deleted are the app's: they do not count
    for _ in range(5):
        created = gateway.create(headers, subject)
        assert created.status_code == 201, created.text
        session_id = created.json()["sessionId"]
        assert gateway.http.delete(f"/v1/sessions/{session_id}", headers=headers).status_code == 204
    # attempts the subject started and then had deleted do
    for _ in range(5):
        created = gateway.create(headers, subject)
        assert created.status_code == 201, created.text
        session_id = created.json()["sessionId"]
        gateway.opened(session_id)
        assert gateway.http.delete(f"/v1/sessions/{session_id}", headers=headers).status_code == 204
    refused = gateway.create(headers, subject)
    assert refused.status_code == 429 and refused.json()["code"] == "SUBJECT_LOCKED_OUT"


def test_sessions_never_opened_that_expire_do_not_count(gateway: Gateway) -> None:
    """An app that creates sessions its user never opens does not lock the user out."""
    headers = gateway.client_headers()
    subject = f"never-opened-{uuid.uuid4().hex[:6]}"
    unopened = []
    for _ in range(6):
        created = gateway.create(headers, subject)
        assert created.status_code == 201, created.text
        unopened.append(created.json()["sessionId"])
    gateway.overdue(*unopened)
    for session_id in unopened[:3]:  # the gateway's lazy expiry
        assert gateway.http.get(f"/v1/sessions/{session_id}", headers=headers).json()["status"] == "EXPIRED"
    assert set(unopened[3:]) <= set(gateway.sweep_expired())  # the liveness worker's sweep
    for session_id in unopened[3:]:
        assert gateway.http.get(f"/v1/sessions/{session_id}", headers=headers).json()["status"] == "EXPIRED"
    # six abandoned before anyone connected: no failure counted, the subject is not locked
    assert gateway.create(headers, subject).status_code == 201


def test_erasing_an_ended_session_does_not_count_it_again(gateway: Gateway) -> None:
    """Erasing a session that already ended (here: expired after its subject connected) does
    not count it again."""
    headers = gateway.client_headers()
    subject = f"once-{uuid.uuid4().hex[:6]}"
    ended = []
    for _ in range(4):
        created = gateway.create(headers, subject)
        assert created.status_code == 201
        ended.append(created.json()["sessionId"])
    gateway.opened(*ended)
    gateway.overdue(*ended)
    for session_id in ended:
        assert gateway.http.get(f"/v1/sessions/{session_id}", headers=headers).json()["status"] == "EXPIRED"
        assert gateway.http.delete(f"/v1/sessions/{session_id}", headers=headers).status_code == 204
    assert gateway.create(headers, subject).status_code == 201  # four failures, not eight
    # the fifth abandoned attempt locks: the four were counted (once each)
    fifth = gateway.create(headers, subject).json()["sessionId"]
    gateway.opened(fifth)
    gateway.overdue(fifth)
    assert gateway.http.get(f"/v1/sessions/{fifth}", headers=headers).json()["status"] == "EXPIRED"
    refused = gateway.create(headers, subject)
    assert refused.status_code == 429 and refused.json()["code"] == "SUBJECT_LOCKED_OUT"
