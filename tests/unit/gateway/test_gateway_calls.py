"""POST /v1/calls, the seed's POST /join-call and GET /v1/calls/{id} over in-memory ports: the
flow and session stored for the caller, the JoinCall the call agents get, what the controller's
app reads back, and that one client never reads another's flow."""

from __future__ import annotations

from dataclasses import replace

import httpx

from contracts.documents import FlowDecision
from domain.flows import DeliveryStatus, FlowStatus
from tests.unit.gateway.fakes import API_KEY, STATIC_TOKEN, Gateway

KEY = {"Authorization": f"Bearer {API_KEY}"}
CALL = {
    "ws_url": "wss://rooms.example/r/1",
    "callback_base_url": "https://controller.example/cb/",
    "token": "t-1",
}


async def call(gateway: Gateway, method: str, path: str, **options: object) -> httpx.Response:
    async with gateway.client() as client:
        return await client.request(method, path, **options)  # type: ignore[arg-type]


async def test_a_call_stores_its_flow_for_the_caller_and_asks_a_call_agent() -> None:
    gateway = Gateway()
    response = await call(gateway, "POST", "/v1/calls", json={**CALL, "lang": "xx"}, headers=KEY)
    assert response.status_code == 202
    started = response.json()
    assert (started["language"], started["requestedLanguage"], started["languageFallback"]) == (
        "en",
        "xx",
        True,
    )
    flow = gateway.flows.rows[started["flowId"]]
    assert flow.owner == "client-1" and flow.session_id == started["sessionId"] and flow.token == "t-1"
    [join] = gateway.call_commands.sent
    assert (join.flow_id, join.client_id, join.ws_url) == (flow.id, "client-1", "wss://rooms.example/r/1")


async def test_the_seed_join_call_answers_the_same_shape() -> None:
    gateway = Gateway()
    response = await call(gateway, "POST", "/join-call", json={**CALL, "lang": "es"}, headers=KEY)
    assert response.status_code == 202 and response.json()["language"] == "es"
    assert len(gateway.call_commands.sent) == 1


async def test_a_private_room_or_a_broker_down_is_refused_and_no_call_agent_is_asked() -> None:
    gateway = Gateway()
    private = await call(gateway, "POST", "/v1/calls", json={**CALL, "ws_url": "ws://10.0.0.8/"}, headers=KEY)
    assert private.status_code == 422 and private.json()["code"] == "ROOM_REFUSED"
    assert gateway.flows.rows == {} and gateway.call_commands.sent == []
    gateway.call_commands.down = True
    down = await call(gateway, "POST", "/v1/calls", json=CALL, headers=KEY)
    assert (
        down.status_code == 503
        and down.json()["code"] == "BROKER_UNAVAILABLE"
        and "retry-after" in down.headers
    )


async def test_a_flow_reads_back_its_decision_and_callback() -> None:
    gateway = Gateway()
    flow_id = (await call(gateway, "POST", "/v1/calls", json=CALL, headers=KEY)).json()["flowId"]
    gateway.flows.rows[flow_id] = replace(
        gateway.flows.rows[flow_id],
        status=FlowStatus.FAILED,
        outcome="FAILURE",
        decision=FlowDecision(is_live=False, confidence=0.3, reasons=["NO_FACE", "FLOW_TIMEOUT"]),
        delivery=DeliveryStatus.PENDING,
        attempts=2,
        last_error="HTTP 503",
        status_code=503,
    )
    response = await call(gateway, "GET", f"/v1/calls/{flow_id}", headers=KEY)
    assert response.status_code == 200
    read = response.json()
    assert (read["status"], read["isLive"], read["reasons"]) == ("FAILED", False, ["NO_FACE", "FLOW_TIMEOUT"])
    assert read["callback"] == {
        "outcome": "FAILURE",
        "delivery": "PENDING",
        "attempts": 2,
        "lastError": "HTTP 503",
        "statusCode": 503,
    }
    assert "t-1" not in response.text  # the controller's token is not shown back


async def test_another_clients_flow_is_not_found() -> None:
    gateway = Gateway()
    flow_id = (await call(gateway, "POST", "/v1/calls", json=CALL, headers=KEY)).json()["flowId"]
    other = await call(
        gateway, "GET", f"/v1/calls/{flow_id}", headers={"Authorization": f"Bearer {STATIC_TOKEN}"}
    )
    assert other.status_code == 404 and other.json()["code"] == "CALL_NOT_FOUND"
