"""DELETE /v1/sessions/{id} through the real gateway app (Postgres, a RabbitMQ vhost, SeaweedFS)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts.documents import SessionResult
from contracts.routing import EventKey
from contracts.values import SessionStatus
from infra.db.audit import AuditLog
from infra.db.engine import create_engine, session_factory
from infra.db.repositories import ApiClientRepository, SessionRepository
from infra.retention import session_prefix
from infra.settings import Settings
from infra.storage import open_store
from services.gateway.app import create_app
from tests.paths import PEOPLE
from tests.support.broker import RabbitVhost, bind_event_queue, drain_queue, session_events, temporary_vhost
from tests.support.services import SeaweedFS

pytestmark = pytest.mark.integration

API = {"Authorization": "Bearer api-token"}
OBAMA = base64.b64encode((PEOPLE / "obama.jpg").read_bytes()).decode()
FINISHED_QUEUE = "test.erasure-finished"


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _new_client_key(database_url: str, name: str) -> str:
    engine = create_engine(database_url)
    try:
        _, key = await ApiClientRepository(session_factory(engine)).create(name)
    finally:
        await engine.dispose()
    return key


async def _audit(database_url: str, session_id: str) -> list[tuple[str, str, str | None]]:
    engine = create_engine(database_url)
    try:
        events = await AuditLog(session_factory(engine)).list(subject_id=session_id)
    finally:
        await engine.dispose()
    return [(e.actor, e.action, e.outcome) for e in events]


async def _finish(database_url: str, session_id: str) -> None:
    """Mark the session SUCCEEDED with image keys, as the liveness worker does."""
    engine = create_engine(database_url)
    try:
        sessions = SessionRepository(session_factory(engine))
        record = await sessions.fetch(session_id)
        assert record is not None
        prefix = session_prefix(session_id)
        result = {
            "isLive": True,
            "confidence": 0.93,
            "reasons": [],
            "referenceImageKey": f"{prefix}reference.jpg",
            "auditImageKeys": [f"{prefix}audit-0.jpg"],
            "comparisonResult": 0.88,
            "comparisonMatch": True,
        }
        await sessions.update_status(
            session_id,
            expected_version=record.version,
            status=SessionStatus.SUCCEEDED,
            result=SessionResult.from_row(result),
        )
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, seaweedfs: SeaweedFS
) -> Iterator[tuple[TestClient, RabbitVhost, Settings]]:
    with temporary_vhost() as vhost:
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("gateway"),
            database_url=postgres_url,
            storage_url=seaweedfs.url,
            broker_url=vhost.url,
            api_token="api-token",
        )
        with TestClient(create_app(settings)) as client:
            _run(bind_event_queue(vhost.url, FINISHED_QUEUE, EventKey.SESSION_FINISHED))
            yield client, vhost, settings


def test_delete_erases_a_finished_session_and_keeps_its_decision(
    gateway: tuple[TestClient, RabbitVhost, Settings],
) -> None:
    client, _, settings = gateway
    created = client.post("/v1/sessions", json={"reference": OBAMA}, headers=API).json()
    session_id = created["sessionId"]
    store = open_store(settings.resolved_storage_url)
    prefix = session_prefix(session_id)
    for name in ("reference.jpg", "audit-0.jpg", "frames/00000001.jpg"):
        _run(store.put(f"{prefix}{name}", b"\xff\xd8 image", "image/jpeg"))
    _run(_finish(settings.resolved_database_url, session_id))
    before = client.get(f"/v1/sessions/{session_id}", headers=API).json()
    assert before["referenceImage"] is not None and len(before["auditImages"]) == 1
    assert before["purged"] is False

    response = client.delete(f"/v1/sessions/{session_id}", headers=API)
    assert response.status_code == 204, response.text

    after = client.get(f"/v1/sessions/{session_id}", headers=API).json()
    assert after["purged"] is True
    assert after["status"] == "SUCCEEDED" and after["isLive"] is True
    assert after["confidence"] == 0.93 and after["comparisonResult"] == 0.88
    assert after["referenceImage"] is None and after["auditImages"] == []
    assert _run(store.list(prefix)) == []  # the app's reference-input.jpg too
    assert _run(_audit(settings.resolved_database_url, session_id)) == [
        ("static", "SESSION_ERASED", "SUCCEEDED")
    ]

    again = client.delete(f"/v1/sessions/{session_id}", headers=API)
    assert again.status_code == 204  # idempotent, and no second record
    assert len(_run(_audit(settings.resolved_database_url, session_id))) == 1


def test_delete_ends_an_unfinished_session_once(gateway: tuple[TestClient, RabbitVhost, Settings]) -> None:
    client, vhost, _ = gateway
    _run(drain_queue(vhost.url, FINISHED_QUEUE))
    session_id = client.post("/v1/sessions", json={}, headers=API).json()["sessionId"]
    assert client.delete(f"/v1/sessions/{session_id}", headers=API).status_code == 204
    assert client.delete(f"/v1/sessions/{session_id}", headers=API).status_code == 204
    body = client.get(f"/v1/sessions/{session_id}", headers=API).json()
    assert body["status"] == "FAILED" and body["reasons"] == ["ERASED"] and body["purged"] is True
    finished = _run(session_events(vhost.url, FINISHED_QUEUE, session_id))  # relayed after the commit
    assert len(finished) == 1


def test_another_clients_session_is_not_found(gateway: tuple[TestClient, RabbitVhost, Settings]) -> None:
    client, _, settings = gateway
    session_id = client.post("/v1/sessions", json={"reference": OBAMA}, headers=API).json()["sessionId"]
    key = _run(_new_client_key(settings.resolved_database_url, f"other-{session_id[:8]}"))
    response = client.delete(f"/v1/sessions/{session_id}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404
    assert response.json()["code"] == "SESSION_NOT_FOUND"
    assert client.delete("/v1/sessions/no-such-session", headers=API).status_code == 404
    assert client.delete(f"/v1/sessions/{session_id}").status_code == 401
    store = open_store(settings.resolved_storage_url)
    assert _run(store.list(session_prefix(session_id))) != []  # untouched
