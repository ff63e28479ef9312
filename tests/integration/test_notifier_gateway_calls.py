"""The gateway's call routes on a real RabbitMQ vhost and a migrated SQLite database: a flow id
at once, JoinCall published, the API token required, bad URLs refused, the language fallback
reported, and GET /v1/calls/{id} showing the flow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aio_pika
import pytest
from fastapi.testclient import TestClient

from contracts.languages import choose_language
from infra.settings import Settings
from services.call_agent.catalog import available_languages
from services.gateway.app import create_app
from tests.support.broker import RabbitVhost, temporary_vhost

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer t"}
SEED = {
    "ws_url": "wss://rooms.example.com/protoo?roomId=r1&peerId=faceproof",
    "callback_base_url": "http://127.0.0.1:9000",
    "datastore_base_url": "http://127.0.0.1:9001",
    "token": "controller-token-1",
    "lang": "es",
}


@pytest.fixture(scope="module")
def vhost() -> Iterator[RabbitVhost]:
    with temporary_vhost() as created:
        yield created


@pytest.fixture(scope="module")
def client(vhost: RabbitVhost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("gateway"), broker_url=vhost.url, api_token="t")
    with TestClient(create_app(settings, migrate=True)) as test_client:
        yield test_client


def join_commands(vhost: RabbitVhost) -> list[dict[str, Any]]:
    """What the call agents' queue holds (read, not acknowledged: it goes back on close)."""

    async def read() -> list[dict[str, Any]]:
        connection = await aio_pika.connect(vhost.url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue("call-agent.join-call", ensure=True)
            bodies = []
            while len(bodies) < 100 and (message := await queue.get(no_ack=False, fail=False)) is not None:
                bodies.append(json.loads(message.body))
            return bodies

    return asyncio.run(read())


def test_join_call_answers_a_flow_id_and_publishes_join_call(client: TestClient, vhost: RabbitVhost) -> None:
    response = client.post("/join-call", json=SEED, headers=AUTH)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["flowId"] and created["sessionId"] and created["status"] == "RUNNING"
    assert created["language"] == "es" and created["languageFallback"] is False

    (command,) = [c for c in join_commands(vhost) if c["flow_id"] == created["flowId"]]
    assert command["correlation_id"] == created["flowId"]
    assert command["session_id"] == created["sessionId"]
    assert command["ws_url"] == SEED["ws_url"] and command["token"] == SEED["token"]
    assert command["callback_base_url"].rstrip("/") == SEED["callback_base_url"]
    assert command["language"] == "es"

    status = client.get(f"/v1/calls/{created['flowId']}", headers=AUTH)
    assert status.status_code == 200
    body = status.json()
    assert body["status"] == "RUNNING" and body["sessionId"] == created["sessionId"]
    assert body["callback"] == {
        "outcome": None,
        "delivery": None,
        "attempts": 0,
        "lastError": None,
        "statusCode": None,
    }
    assert "token" not in json.dumps(body).lower().replace("statuscode", "")

    session = client.get(f"/v1/sessions/{created['sessionId']}", headers=AUTH)
    assert session.status_code == 200 and session.json()["status"] == "CREATED"


def test_v1_calls_takes_settings_and_never_returns_the_secret(client: TestClient, vhost: RabbitVhost) -> None:
    body = {
        "wsUrl": SEED["ws_url"],
        "callbackBaseUrl": SEED["callback_base_url"],
        "token": "controller-token-2",
        "lang": "pt-BR",
        "settings": {"challenges": 2, "timeoutS": 600, "callbackSecret": "s" * 32},
    }
    response = client.post("/v1/calls", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["language"] == "pt" and created["languageFallback"] is False
    (command,) = [c for c in join_commands(vhost) if c["flow_id"] == created["flowId"]]
    assert command["settings"]["challenges"] == 2
    assert "s" * 32 not in json.dumps(command)
    status = client.get(f"/v1/calls/{created['flowId']}", headers=AUTH).text
    assert "s" * 32 not in status and "secret" not in status.lower()


def test_unknown_language_falls_back_to_english_and_says_so(client: TestClient) -> None:
    response = client.post("/join-call", json={**SEED, "lang": "tlh"}, headers=AUTH)
    assert response.status_code == 202
    created = response.json()
    assert created["language"] == "en" and created["languageFallback"] is True
    assert created["requestedLanguage"] == "tlh"


def test_every_catalog_language_is_accepted() -> None:
    languages = set(available_languages())
    assert {"en", "es", "fr", "de", "pt", "it", "nl", "pl"} <= languages
    for language in languages:
        assert choose_language(language.upper()) == (language, False)


@pytest.mark.parametrize("path", ["/join-call", "/v1/calls"])
def test_the_api_token_is_required(client: TestClient, path: str) -> None:
    assert client.post(path, json=SEED).status_code == 401
    assert client.post(path, json=SEED, headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.parametrize(
    "change",
    [
        {"ws_url": "ftp://rooms.example.com/x"},
        {"ws_url": "not a url"},
        {"callback_base_url": "javascript:alert(1)"},
        {"callback_base_url": "file:///etc/passwd"},
        {"datastore_base_url": "gopher://x"},
        {"token": ""},
    ],
)
def test_bad_urls_are_refused_with_422(client: TestClient, change: dict[str, str]) -> None:
    response = client.post("/join-call", json={**SEED, **change}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_REQUEST"


def test_an_unknown_flow_is_404(client: TestClient) -> None:
    response = client.get("/v1/calls/no-such-flow", headers=AUTH)
    assert response.status_code == 404 and response.json()["code"] == "CALL_NOT_FOUND"


def test_the_gateway_sees_the_call_agents_catalogs() -> None:
    assert choose_language("en") == ("en", False)
    assert choose_language("pt-BR") == ("pt", False)


@pytest.mark.parametrize("path", ["/join-call", "/v1/calls"])
@pytest.mark.parametrize(
    ("ws_url", "why"),
    [
        ("ws://169.254.169.254/latest/meta-data", "169.254.169.254 resolves to a link-local address"),
        ("wss://10.0.0.1:4443/?roomId=r1", "10.0.0.1 resolves to a private address"),
        ("ws://127.0.0.1:5672/", "127.0.0.1 resolves to a loopback address"),  # not allow-listed here
        ("ws://[::ffff:a9fe:a9fe]/", "::ffff:a9fe:a9fe resolves to a IPv4-mapped IPv6 address"),
        ("wss://user:pw@rooms.example.com/", "credentials in the URL are not allowed"),
    ],
)
def test_a_room_at_a_refused_address_is_refused_before_anything_is_published(
    client: TestClient, vhost: RabbitVhost, path: str, ws_url: str, why: str
) -> None:
    """The attack: make the call agent open a socket to the cloud metadata service or an internal
    host. The gateway answers 422 ROOM_REFUSED with the reason; no flow starts."""
    response = client.post(path, json={**SEED, "ws_url": ws_url}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "ROOM_REFUSED"
    assert response.json()["detail"] == f"The room URL (ws_url) is refused: {why}."
    assert [c for c in join_commands(vhost) if c["ws_url"] == ws_url] == []
