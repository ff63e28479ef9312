"""Creating and reading sessions (/v1 and the seed's routes) over in-memory ports: what the API
client reads back, what got stored, and that one client never reads another's session."""

from __future__ import annotations

import base64
from dataclasses import replace

import httpx

from contracts.documents import SessionResult
from contracts.values import SessionStatus
from infra.settings import Settings
from tests.unit.gateway.fakes import API_KEY, STATIC_TOKEN, Gateway
from tests.unit.intake.fakes import jpeg

KEY = {"Authorization": f"Bearer {API_KEY}"}


async def call(gateway: Gateway, method: str, path: str, **options: object) -> httpx.Response:
    async with gateway.client() as client:
        return await client.request(method, path, **options)  # type: ignore[arg-type]


async def test_a_session_is_created_for_the_caller_with_its_page_and_reference() -> None:
    gateway = Gateway(settings=Settings(rate_limits=False, public_url="https://faceproof.example/"))
    body = {"clientRequestToken": "r-1", "reference": base64.b64encode(jpeg()).decode()}
    response = await call(gateway, "POST", "/v1/sessions", json=body, headers=KEY)
    assert response.status_code == 201
    created = response.json()
    [stored] = gateway.sessions.rows.values()
    assert created["sessionId"] == stored.id and created["status"] == "CREATED"
    assert stored.owner == "client-1" and stored.client_request_token == "r-1"
    assert created["clientUrl"] == (
        f"https://faceproof.example/v1/sessions/{stored.id}/client#token={created['clientToken']}"
    )
    assert gateway.store.objects[stored.reference_key or ""] == (jpeg(), "image/jpeg")


async def test_a_repeated_request_token_is_the_same_session_and_only_the_new_token_opens_it() -> None:
    gateway = Gateway()
    first = (
        await call(gateway, "POST", "/v1/sessions", json={"clientRequestToken": "r-1"}, headers=KEY)
    ).json()
    again = (
        await call(gateway, "POST", "/v1/sessions", json={"clientRequestToken": "r-1"}, headers=KEY)
    ).json()
    assert first["sessionId"] == again["sessionId"] and first["clientToken"] != again["clientToken"]
    path = f"/v1/sessions/{first['sessionId']}/status"
    old = await call(gateway, "GET", path, headers={"Authorization": f"Bearer {first['clientToken']}"})
    new = await call(gateway, "GET", path, headers={"Authorization": f"Bearer {again['clientToken']}"})
    assert (old.status_code, new.status_code) == (401, 200) and new.json() == {"status": "CREATED"}


async def test_a_session_reads_back_its_result_with_presigned_images() -> None:
    gateway = Gateway()
    session_id, _ = gateway.sessions.add()
    result = {
        "isLive": True,
        "confidence": 0.97,
        "reasons": [],
        "referenceImageKey": f"sessions/{session_id}/reference.jpg",
        "auditImageKeys": [f"sessions/{session_id}/audit-0.jpg", f"sessions/{session_id}/audit-1.jpg"],
        "challenges": [{"type": "TURN_LEFT", "status": "PASSED"}],
        "comparisonResult": 0.91,
        "comparisonMatch": True,
    }
    gateway.sessions.rows[session_id] = replace(
        gateway.sessions.rows[session_id],
        status=SessionStatus.SUCCEEDED,
        result=SessionResult.from_row(result),
    )
    gateway.store.missing.add(f"sessions/{session_id}/audit-1.jpg")  # left out, not a 500
    response = await call(gateway, "GET", f"/v1/sessions/{session_id}", headers=KEY)
    assert response.status_code == 200
    read = response.json()
    assert (read["status"], read["isLive"], read["confidence"]) == ("SUCCEEDED", True, 0.97)
    assert read["referenceImage"]["url"].startswith(f"https://s3.example/sessions/{session_id}/reference.jpg")
    assert [image["url"].split("?")[0] for image in read["auditImages"]] == [
        f"https://s3.example/sessions/{session_id}/audit-0.jpg"
    ]
    assert read["challenges"] == [{"type": "TURN_LEFT", "status": "PASSED", "reason": None}]
    legacy = await call(gateway, "GET", f"/session/{session_id}", headers=KEY)
    assert legacy.json() == {"clientRequestToken": None, "status": "SUCCEEDED", "comparisonResult": 0.91}


async def test_another_clients_session_is_not_found() -> None:
    gateway = Gateway()
    session_id, client_token = gateway.sessions.add()  # client-1's
    other = {"Authorization": f"Bearer {STATIC_TOKEN}"}  # the static token: another owner
    for path in (f"/v1/sessions/{session_id}", f"/session/{session_id}"):
        response = await call(gateway, "GET", path, headers=other)
        assert response.status_code == 404 and response.json()["code"] == "SESSION_NOT_FOUND"
    # nor does the browser's client token stand in for an API key
    response = await call(
        gateway, "GET", f"/v1/sessions/{session_id}", headers={"Authorization": f"Bearer {client_token}"}
    )
    assert response.status_code == 401


async def test_the_seed_create_answers_its_own_shape() -> None:
    gateway = Gateway()
    response = await call(gateway, "POST", "/session", json={}, headers=KEY)
    [stored] = gateway.sessions.rows.values()
    assert response.status_code == 200 and response.json() == {"SessionId": stored.id}
