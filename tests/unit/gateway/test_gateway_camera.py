"""The camera report the hosted page sends with its offer: a virtual or fake camera fails the
session with VIRTUAL_CAMERA (one terminal status, one SessionFinished, nothing asked of a call
agent) unless the setting is off; a real camera's report streams as before; a malformed report is
refused with a reason."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from contracts.values import SessionStatus
from infra.settings import Settings
from tests.unit.gateway.fakes import Gateway

WEBCAM = {
    "label": "Integrated Camera (04f2:b6d9)",
    "width": 640,
    "height": 480,
    "frameRate": 30.0,
    "deviceIdHash": "ab" * 32,
    "capabilities": {"width": {"min": 1, "max": 1280}, "frameRate": {"min": 0, "max": 30}},
}


async def offer(gateway: Gateway, session_id: str, token: str, camera: Any) -> httpx.Response:
    body = {"sdp": "v=0 offer", "type": "offer", "camera": camera}
    async with gateway.client() as client:
        return await client.post(
            f"/v1/sessions/{session_id}/offer", json=body, headers={"Authorization": f"Bearer {token}"}
        )


async def test_a_real_cameras_report_streams_as_before() -> None:
    gateway = Gateway()
    session_id, token = gateway.sessions.add()
    response = await offer(gateway, session_id, token, WEBCAM)
    assert response.status_code == 200 and len(gateway.call_agents.asked) == 1


async def test_a_virtual_camera_fails_the_session_with_its_reason() -> None:
    gateway = Gateway()
    session_id, token = gateway.sessions.add()
    response = await offer(gateway, session_id, token, {**WEBCAM, "label": "OBS Virtual Camera"})
    assert response.status_code == 409 and response.json()["code"] == "VIRTUAL_CAMERA"
    assert "OBS" in response.json()["detail"]
    row = gateway.sessions.rows[session_id]
    assert row.status is SessionStatus.FAILED and row.result is not None
    assert (row.result.is_live, row.result.confidence, row.result.reasons) == (False, 0.0, ["VIRTUAL_CAMERA"])
    [finished] = gateway.sessions.finished
    assert finished.reasons == ["VIRTUAL_CAMERA"]
    assert gateway.call_agents.asked == []
    again = await offer(gateway, session_id, token, WEBCAM)  # another camera now: the session is over
    assert again.status_code == 409 and again.json()["code"] == "SESSION_FINISHED"
    assert len(gateway.sessions.finished) == 1


async def test_the_check_can_be_switched_off() -> None:
    gateway = Gateway(settings=Settings(rate_limits=False, reject_virtual_cameras=False))
    session_id, token = gateway.sessions.add()
    response = await offer(gateway, session_id, token, {"label": "fake_device_0"})
    assert response.status_code == 200 and gateway.sessions.rows[session_id].status is SessionStatus.CREATED


@pytest.mark.parametrize(
    ("camera", "where"),
    [
        ({**WEBCAM, "label": "x" * 257}, "label"),
        ({**WEBCAM, "width": 100_000}, "width"),
        ({**WEBCAM, "frameRate": -1}, "frameRate"),
        ({**WEBCAM, "deviceIdHash": "the-raw-device-id"}, "deviceIdHash"),
        ({**WEBCAM, "serial": "123"}, "serial"),
        ({**WEBCAM, "capabilities": {"zoom": {"min": 1, "max": 4}}}, "zoom"),
        ("OBS Virtual Camera", "camera"),
    ],
)
async def test_a_malformed_report_is_refused_with_a_reason(camera: Any, where: str) -> None:
    gateway = Gateway()
    session_id, token = gateway.sessions.add()
    response = await offer(gateway, session_id, token, camera)
    assert response.status_code == 422 and where in response.text
    assert gateway.call_agents.asked == []
    assert gateway.sessions.rows[session_id].status is SessionStatus.CREATED
