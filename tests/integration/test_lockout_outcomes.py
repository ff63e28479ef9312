"""Lockout counts every way a subject's attempt can end without passing, through the real gateway
app on real Postgres and RabbitMQ: abandoned sessions (left to expire: the gateway's lazy expiry
and the liveness worker's sweep) and sessions erased mid-way count as failures, so walking away
from a failing attempt, or deleting it, does not dodge the lockout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from infra.db.engine import create_engine, session_factory
from infra.db.repositories import ApiClientRepository, SessionRepository
from infra.db.tables import SessionRow, utc_now
from infra.settings import Settings
from services.gateway.app import create_app
from tests.support.broker import temporary_vhost

pytestmark = pytest.mark.integration


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@dataclass
class Gateway:
    http: TestClient
    database_url: str

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

    def sweep_expired(self) -> list[str]:
        """The liveness worker's expiry sweep (``services.liveness.handlers.sweep``)."""

        async def sweep() -> list[str]:
            engine = create_engine(self.database_url)
            try:
                return [r.id for r in await SessionRepository(session_factory(engine)).expire_overdue()]
            finally:
                await engine.dispose()

        result: list[str] = _run(sweep())
        return result


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
            yield Gateway(http, postgres_url)


def test_abandoned_sessions_count_toward_the_lockout(gateway: Gateway) -> None:
    headers = gateway.client_headers()
    subject = f"walks-away-{uuid.uuid4().hex[:6]}"
    abandoned = []
    for _ in range(5):
        created = gateway.create(headers, subject)
        assert created.status_code == 201, created.text
        abandoned.append(created.json()["sessionId"])
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
    for _ in range(5):
        created = gateway.create(headers, subject)
        assert created.status_code == 201, created.text
        session_id = created.json()["sessionId"]
        assert gateway.http.delete(f"/v1/sessions/{session_id}", headers=headers).status_code == 204
    refused = gateway.create(headers, subject)
    assert refused.status_code == 429 and refused.json()["code"] == "SUBJECT_LOCKED_OUT"


def test_erasing_an_ended_session_does_not_count_it_again(gateway: Gateway) -> None:
    """Erasing a session that already ended (here: expired) does not count it again."""
    headers = gateway.client_headers()
    subject = f"once-{uuid.uuid4().hex[:6]}"
    ended = []
    for _ in range(4):
        created = gateway.create(headers, subject)
        assert created.status_code == 201
        ended.append(created.json()["sessionId"])
    gateway.overdue(*ended)
    for session_id in ended:
        assert gateway.http.get(f"/v1/sessions/{session_id}", headers=headers).json()["status"] == "EXPIRED"
        assert gateway.http.delete(f"/v1/sessions/{session_id}", headers=headers).status_code == 204
    assert gateway.create(headers, subject).status_code == 201  # four failures, not eight
