"""Sessions through the real gateway app on real Postgres, RabbitMQ (a throw-away vhost) and
SeaweedFS: references stored, client tokens, the hosted page, the offer's error codes, the
status route, lazy expiry publishing SessionFinished once, presigned result images."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from contracts.documents import SessionResult
from contracts.events import SessionStarted
from contracts.routing import CALL_AGENT_SESSIONS, EventKey
from contracts.values import ErrorCode, ErrorInfo, SessionStatus
from infra.db.audit import AuditLog
from infra.db.engine import create_engine
from infra.db.engine import session_factory as make_session_factory
from infra.db.repositories import SessionRepository
from infra.settings import Settings
from infra.storage import open_store
from services.gateway.app import create_app
from tests.paths import PEOPLE
from tests.support.broker import RabbitVhost, bind_event_queue, drain_queue, session_events, temporary_vhost
from tests.support.services import SeaweedFS

pytestmark = pytest.mark.integration

API = {"Authorization": "Bearer api-token"}
PUBLIC_URL = "https://faceproof.example"
OBAMA = (PEOPLE / "obama.jpg").read_bytes()
FINISHED_QUEUE = "test.session-finished"


@dataclass
class Gateway:
    client: TestClient
    settings: Settings
    vhost: RabbitVhost
    database_url: str

    def create(self, **body: Any) -> dict[str, Any]:
        response = self.client.post("/v1/sessions", json=body, headers=API)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _sql(url: str, statement: str, **params: Any) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement), params)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, seaweedfs: SeaweedFS
) -> Iterator[Gateway]:
    with temporary_vhost() as vhost:
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("gateway"),
            database_url=postgres_url,
            storage_url=seaweedfs.url,
            broker_url=vhost.url,
            api_token="api-token",
            public_url=PUBLIC_URL,
            offer_timeout_s=1.5,
            max_sdp_bytes=2000,
        )
        with TestClient(create_app(settings)) as client:
            _run(bind_event_queue(vhost.url, FINISHED_QUEUE, EventKey.SESSION_FINISHED))
            yield Gateway(client, settings, vhost, postgres_url)


def _offer(gateway: Gateway, session_id: str, token: str | None, sdp: str = "v=0\r\n") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response: httpx.Response = gateway.client.post(
        f"/v1/sessions/{session_id}/offer", json={"sdp": sdp, "type": "offer"}, headers=headers
    )
    return response


# --------------------------------------------------------------------------- creation


def test_create_returns_client_token_and_url(gateway: Gateway) -> None:
    created = gateway.create(settings={"challenges": 2, "language": "es"})
    session_id, token = created["sessionId"], created["clientToken"]
    assert len(token) >= 40
    assert created["clientUrl"] == f"{PUBLIC_URL}/v1/sessions/{session_id}/client#token={token}"
    record = _run(_fetch(gateway, session_id))
    assert record.client_token_hash and token not in record.client_token_hash
    assert record.settings.language == "es" and record.reference_key is None


async def _fetch(gateway: Gateway, session_id: str) -> Any:
    engine = create_engine(gateway.database_url)
    try:
        return await SessionRepository(make_session_factory(engine)).fetch(session_id)
    finally:
        await engine.dispose()


def test_reference_image_is_stored_in_s3(gateway: Gateway, seaweedfs: SeaweedFS) -> None:
    data_url = "data:image/jpeg;base64," + base64.b64encode(OBAMA).decode()
    created = gateway.create(reference=data_url)
    record = _run(_fetch(gateway, created["sessionId"]))
    assert record.reference_key == f"sessions/{created['sessionId']}/reference-input.jpg"
    assert _run(open_store(seaweedfs.url).get(record.reference_key)) == OBAMA


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body, kind = (OBAMA, "image/jpeg") if self.path == "/obama.jpg" else (b"nope", "text/plain")
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_reference_url_to_loopback_is_refused(gateway: Gateway, image_server: str) -> None:
    response = gateway.client.post(
        "/v1/sessions", json={"reference": f"{image_server}/obama.jpg"}, headers=API
    )
    assert response.status_code == 422
    assert response.json()["code"] == "REFERENCE_URL_REFUSED"
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg"])
def test_reference_url_schemes_refused(gateway: Gateway, url: str) -> None:
    response = gateway.client.post("/v1/sessions", json={"reference": url}, headers=API)
    assert response.status_code == 422 and response.json()["code"] == "REFERENCE_URL_REFUSED"


def test_reference_url_fetched_when_allow_listed(
    tmp_path: Path, postgres_url: str, seaweedfs: SeaweedFS, image_server: str
) -> None:
    with temporary_vhost() as vhost:
        settings = Settings(
            data_dir=tmp_path,
            database_url=postgres_url,
            storage_url=seaweedfs.url,
            broker_url=vhost.url,
            api_token="api-token",
            fetch_allow_hosts="127.0.0.1",
        )
        with TestClient(create_app(settings)) as client:
            ok = client.post("/v1/sessions", json={"reference": f"{image_server}/obama.jpg"}, headers=API)
            not_image = client.post("/v1/sessions", json={"reference": f"{image_server}/text"}, headers=API)
    assert ok.status_code == 201, ok.text
    assert ok.json()["clientUrl"].startswith("http://testserver/v1/sessions/")
    key = f"sessions/{ok.json()['sessionId']}/reference-input.jpg"
    assert _run(open_store(seaweedfs.url).get(key)) == OBAMA
    assert not_image.status_code == 422 and not_image.json()["code"] == "REFERENCE_NOT_AN_IMAGE"


def test_invalid_reference_and_settings(gateway: Gateway) -> None:
    bad = gateway.client.post("/v1/sessions", json={"reference": "bm90IGFuIGltYWdl"}, headers=API)
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_IMAGE"
    for settings in (
        {"challenges": 5},
        {"challenges": 1},
        {"auditImages": 5},
        {"expiresInS": 10},
        {"language": "x" * 17},
        {"challengeTypes": ["BLINK", "BLINK"]},
        {"challengeTypes": ["BLINK", "JUMP"]},
        {"challenges": 3, "challengeTypes": ["BLINK", "TURN_LEFT"]},
    ):
        response = gateway.client.post("/v1/sessions", json={"settings": settings}, headers=API)
        assert response.status_code == 422, settings
    ok = gateway.client.post(
        "/v1/sessions",
        json={"settings": {"challenges": 2, "challengeTypes": ["BLINK", "TURN_LEFT"]}},
        headers=API,
    )
    assert ok.status_code == 201


def test_replay_returns_same_session_with_new_token(gateway: Gateway) -> None:
    first = gateway.create(clientRequestToken="replay-1")
    second = gateway.create(clientRequestToken="replay-1")
    assert second["sessionId"] == first["sessionId"] and second["clientToken"] != first["clientToken"]
    old = gateway.client.get(
        f"/v1/sessions/{first['sessionId']}/status",
        headers={"Authorization": f"Bearer {first['clientToken']}"},
    )
    new = gateway.client.get(
        f"/v1/sessions/{first['sessionId']}/status",
        headers={"Authorization": f"Bearer {second['clientToken']}"},
    )
    assert old.status_code == 401 and new.status_code == 200 and new.json() == {"status": "CREATED"}


def test_seed_routes_keep_their_shape(gateway: Gateway) -> None:
    created = gateway.client.post("/session", json={"clientRequestToken": "seed-1"}, headers=API)
    assert created.status_code == 200 and set(created.json()) == {"SessionId"}
    read = gateway.client.get(f"/session/{created.json()['SessionId']}", headers=API)
    assert read.json() == {"clientRequestToken": "seed-1", "status": "CREATED", "comparisonResult": None}


# --------------------------------------------------------------------------- page and script

_FOREIGN_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def test_page_and_scripts_are_served_self_contained(gateway: Gateway) -> None:
    created = gateway.create()
    page = gateway.client.get(f"/v1/sessions/{created['sessionId']}/client")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "media-src 'self' blob:" in csp
    assert 'src="../client.js"' in page.text and 'href="../client.css"' in page.text
    assert created["clientToken"] not in page.text
    for path in ("/v1/sessions/client.js", "/v1/sessions/page.js", "/v1/sessions/client.css"):
        asset = gateway.client.get(path)
        assert asset.status_code == 200, path
        assert "content-security-policy" in asset.headers
        assert not _FOREIGN_URL.search(asset.text), (path, _FOREIGN_URL.search(asset.text))
    assert not _FOREIGN_URL.search(page.text)
    script = gateway.client.get("/v1/sessions/client.js").text
    for needed in ('createDataChannel("faceproof")', "sendrecv", "getUserMedia", '"/offer"', '"/status"'):
        assert needed in script
    assert gateway.client.get("/v1/sessions/client.js").headers["content-type"].startswith("text/javascript")


# --------------------------------------------------------------------------- offer


def test_offer_auth_and_error_codes(gateway: Gateway) -> None:
    created = gateway.create()
    session_id, token = created["sessionId"], created["clientToken"]
    assert _offer(gateway, session_id, None).status_code == 401
    assert _offer(gateway, session_id, "wrong").status_code == 401
    assert _offer(gateway, session_id, "api-token").status_code == 401  # the API key is not accepted
    assert _offer(gateway, "no-such-session", token).status_code == 401  # unknown: as a wrong token
    big = _offer(gateway, session_id, token, sdp="a" * 3000)
    assert big.status_code == 413 and big.json()["code"] == "SDP_TOO_LARGE"
    # the client token is accepted nowhere else
    assert (
        gateway.client.get(
            f"/v1/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 401
    )


def test_offer_without_call_agent_times_out_and_releases(gateway: Gateway) -> None:
    created = gateway.create()
    response = _offer(gateway, created["sessionId"], created["clientToken"])
    assert response.status_code == 504 and response.json()["code"] == "CALL_AGENT_TIMEOUT"
    record = _run(_fetch(gateway, created["sessionId"]))
    assert record.connection_id is None and record.connections == 1
    # released: a second try claims again (and times out again) rather than SESSION_IN_USE
    assert _offer(gateway, created["sessionId"], created["clientToken"]).status_code == 504
    _purge_start_commands(gateway)


def _purge_start_commands(gateway: Gateway) -> None:
    async def purge() -> None:
        connection = await aio_pika.connect(gateway.vhost.url)
        async with connection:
            channel = await connection.channel()
            await (await channel.get_queue(CALL_AGENT_SESSIONS.queue)).purge()

    _run(purge())


def test_offer_on_finished_and_expired_sessions(gateway: Gateway) -> None:
    finished = gateway.create()
    record = _run(_fetch(gateway, finished["sessionId"]))
    _run(_update(gateway, record.id, record.version, SessionStatus.FAILED, {"isLive": False}))
    response = _offer(gateway, finished["sessionId"], finished["clientToken"])
    assert response.status_code == 409 and response.json()["code"] == "SESSION_FINISHED"

    expired = gateway.create()
    _make_overdue(gateway, expired["sessionId"])
    response = _offer(gateway, expired["sessionId"], expired["clientToken"])
    assert response.status_code == 409 and response.json()["code"] == "SESSION_EXPIRED"
    assert _run(_fetch(gateway, expired["sessionId"])).status is SessionStatus.EXPIRED


def test_offer_in_use_while_another_connection_is_live(gateway: Gateway) -> None:
    created = gateway.create()
    _run(_claim(gateway, created["sessionId"]))
    response = _offer(gateway, created["sessionId"], created["clientToken"])
    assert response.status_code == 409 and response.json()["code"] == "SESSION_IN_USE"


async def _claim(gateway: Gateway, session_id: str) -> None:
    engine = create_engine(gateway.database_url)
    try:
        repository = SessionRepository(make_session_factory(engine))
        assert await repository.claim_connection(session_id, "other", stale_after_s=60) is not None
    finally:
        await engine.dispose()


async def _update(
    gateway: Gateway, session_id: str, version: int, status: SessionStatus, result: dict[str, Any]
) -> None:
    engine = create_engine(gateway.database_url)
    try:
        repository = SessionRepository(make_session_factory(engine))
        stored = SessionResult.from_row(result)  # a legacy (camelCase) row
        await repository.update_status(session_id, expected_version=version, status=status, result=stored)
    finally:
        await engine.dispose()


def _make_overdue(gateway: Gateway, session_id: str) -> None:
    _run(
        _sql(
            gateway.database_url,
            "UPDATE sessions SET expires_at = now() - interval '5 seconds' WHERE id = :id",
            id=session_id,
        )
    )


class _FakeCallAgent:
    """A stand-in call agent on the real broker: answers StartSession through reply_to."""

    def __init__(self, vhost_url: str, answer: SessionStarted | None) -> None:
        self.vhost_url = vhost_url
        self.answer = answer
        self.commands: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connection = await aio_pika.connect(self.vhost_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(CALL_AGENT_SESSIONS.queue)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    command = json.loads(message.body)
                    self.commands.append(command)
                    answer = self.answer or SessionStarted(
                        correlation_id=command["correlation_id"],
                        session_id=command["session_id"],
                        connection_id=command["connection_id"],
                        answer_sdp="v=0\r\nanswer\r\n",
                    )
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            answer.model_dump_json().encode(),
                            correlation_id=message.correlation_id,
                            content_type="application/json",
                        ),
                        routing_key=str(message.reply_to),
                    )

            tag = await queue.consume(on_message)
            self._ready.set()
            await self._stop.wait()
            await queue.cancel(tag)

    def __enter__(self) -> _FakeCallAgent:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def test_offer_answered_by_a_call_agent(gateway: Gateway) -> None:
    created = gateway.create(settings={"language": "es"})
    session_id, token = created["sessionId"], created["clientToken"]
    with _FakeCallAgent(gateway.vhost.url, None) as agent:
        first = _offer(gateway, session_id, token)
        assert first.status_code == 200, first.text
        assert first.json() == {"sdp": "v=0\r\nanswer\r\n", "type": "answer"}
        record = _run(_fetch(gateway, session_id))
        assert record.connection_id == agent.commands[0]["connection_id"]
        _run(_release(gateway, session_id, record.connection_id))
        assert _offer(gateway, session_id, token).status_code == 200  # a reconnect
    command, again = agent.commands
    assert command["session_id"] == session_id and command["correlation_id"] == session_id
    assert command["language"] == "es" and command["offer_sdp"] == "v=0\r\n"
    assert command["sequence_base"] == 0 and again["sequence_base"] == 100000
    assert again["connection_id"] != command["connection_id"]


async def _release(gateway: Gateway, session_id: str, connection_id: str) -> None:
    engine = create_engine(gateway.database_url)
    try:
        await SessionRepository(make_session_factory(engine)).release_connection(session_id, connection_id)
    finally:
        await engine.dispose()


def test_offer_refused_by_the_call_agent_is_400(gateway: Gateway) -> None:
    created = gateway.create()
    refusal = SessionStarted(
        correlation_id=created["sessionId"],
        session_id=created["sessionId"],
        error=ErrorInfo(code=ErrorCode.INVALID_OFFER, detail="The offer has no video."),
    )
    with _FakeCallAgent(gateway.vhost.url, refusal):
        response = _offer(gateway, created["sessionId"], created["clientToken"])
    assert response.status_code == 400 and response.json()["code"] == "INVALID_OFFER"
    assert _run(_fetch(gateway, created["sessionId"])).connection_id is None


def test_cors_preflight_on_client_routes(gateway: Gateway) -> None:
    response = gateway.client.options(
        "/v1/sessions/x/offer",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204 and response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-origin" not in gateway.client.get("/healthz").headers


# --------------------------------------------------------------------------- status, expiry, results


def test_lazy_expiry_publishes_session_finished_once(gateway: Gateway) -> None:
    _run(drain_queue(gateway.vhost.url, FINISHED_QUEUE))
    created = gateway.create()
    session_id = created["sessionId"]
    _make_overdue(gateway, session_id)
    client_auth = {"Authorization": f"Bearer {created['clientToken']}"}
    status = gateway.client.get(f"/v1/sessions/{session_id}/status", headers=client_auth)
    assert status.status_code == 200 and status.json() == {"status": "EXPIRED"}
    assert gateway.client.get(f"/v1/sessions/{session_id}", headers=API).json()["status"] == "EXPIRED"
    assert gateway.client.get(f"/session/{session_id}", headers=API).json()["status"] == "EXPIRED"
    mine = _run(session_events(gateway.vhost.url, FINISHED_QUEUE, session_id))
    assert len(mine) == 1
    assert mine[0]["status"] == "EXPIRED" and mine[0]["reasons"] == ["EXPIRED"]
    assert mine[0]["correlation_id"] == session_id


async def _audit(gateway: Gateway, session_id: str) -> list[tuple[str, str, str | None, Any]]:
    engine = create_engine(gateway.database_url)
    try:
        events = await AuditLog(make_session_factory(engine)).list(subject_id=session_id)
    finally:
        await engine.dispose()
    return [(e.actor, e.action, e.outcome, e.details) for e in events]


def test_lazy_expiry_writes_one_session_decided_record(gateway: Gateway) -> None:
    """The gateway ends an overdue session as the liveness worker does (infra.lifecycle): one
    SESSION_DECIDED audit record for the owner, however often the session is read."""
    session_id = gateway.create()["sessionId"]
    _make_overdue(gateway, session_id)
    for _ in range(3):
        body = gateway.client.get(f"/v1/sessions/{session_id}", headers=API).json()
        assert body["status"] == "EXPIRED"
    records = _run(_audit(gateway, session_id))
    assert [(actor, action, outcome) for actor, action, outcome, _ in records] == [
        ("static", "SESSION_DECIDED", "EXPIRED")
    ]
    assert records[0][3]["reasons"] == ["EXPIRED"]


def test_result_with_presigned_images(gateway: Gateway, seaweedfs: SeaweedFS) -> None:
    created = gateway.create()
    session_id = created["sessionId"]
    store = open_store(seaweedfs.url)
    keys = [f"sessions/{session_id}/reference.jpg", f"sessions/{session_id}/audit-0.jpg"]
    for key in keys:
        _run(store.put(key, OBAMA, "image/jpeg"))
    record = _run(_fetch(gateway, session_id))
    result = {
        "isLive": True,
        "confidence": 97.5,
        "reasons": [],
        "referenceImageKey": keys[0],
        "auditImageKeys": keys[1:],
        "comparisonResult": 0.91,
        "comparisonMatch": True,
        "challenges": [{"type": "BLINK", "status": "PASSED", "reason": None}],
    }
    _run(_update(gateway, session_id, record.version, SessionStatus.SUCCEEDED, result))
    body = gateway.client.get(f"/v1/sessions/{session_id}", headers=API).json()
    assert body["status"] == "SUCCEEDED" and body["isLive"] is True and body["confidence"] == 97.5
    assert body["comparisonResult"] == 0.91 and body["comparisonMatch"] is True
    assert body["challenges"] == [{"type": "BLINK", "status": "PASSED", "reason": None}]
    urls = [body["referenceImage"]["url"], *(image["url"] for image in body["auditImages"])]
    assert len(urls) == 2
    for url in urls:
        fetched = httpx.get(url, timeout=30)
        assert fetched.status_code == 200 and fetched.content == OBAMA
    legacy = gateway.client.get(f"/session/{session_id}", headers=API).json()
    assert legacy == {"clientRequestToken": None, "status": "SUCCEEDED", "comparisonResult": 0.91}
