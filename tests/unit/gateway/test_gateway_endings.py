"""The gateway's two ways of ending a session, over in-memory ports: the lazy expiry on a read or
an offer, and DELETE (erasure). What the API client and the browser read, and what the one ending
writes: one SessionFinished, one SESSION_DECIDED record, the tombstone, the purge."""

from __future__ import annotations

import httpx

from contracts.values import SessionStatus
from tests.unit.gateway.fakes import API_KEY, STATIC_TOKEN, FakeEraser, Gateway

KEY = {"Authorization": f"Bearer {API_KEY}"}


async def call(gateway: Gateway, method: str, path: str, **options: object) -> httpx.Response:
    async with gateway.client() as client:
        return await client.request(method, path, **options)  # type: ignore[arg-type]


def browser(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_overdue_session_reads_expired_and_ends_once() -> None:
    gateway = Gateway()
    session_id, token = gateway.sessions.add(expires_in_s=-1)
    status = await call(gateway, "GET", f"/v1/sessions/{session_id}/status", headers=browser(token))
    assert status.status_code == 200 and status.json() == {"status": "EXPIRED"}
    read = await call(gateway, "GET", f"/v1/sessions/{session_id}", headers=KEY)
    assert read.json()["status"] == "EXPIRED"
    [event] = gateway.sessions.finished
    assert (event.session_id, event.status, event.reasons) == (session_id, SessionStatus.EXPIRED, ["EXPIRED"])
    [audit] = gateway.sessions.audits
    assert (audit.action, audit.subject_id, audit.outcome) == ("SESSION_DECIDED", session_id, "EXPIRED")


async def test_an_offer_on_an_overdue_session_ends_it_and_is_refused() -> None:
    gateway = Gateway()
    session_id, token = gateway.sessions.add(expires_in_s=-1)
    async with gateway.client() as client:
        response = await client.post(
            f"/v1/sessions/{session_id}/offer", json={"sdp": "v=0", "type": "offer"}, headers=browser(token)
        )
    assert response.status_code == 409 and response.json()["code"] == "SESSION_EXPIRED"
    assert gateway.call_agents.asked == [] and len(gateway.sessions.finished) == 1


async def test_erasing_an_unfinished_session_ends_it_failed_and_purges_it() -> None:
    gateway = Gateway()
    session_id, _ = gateway.sessions.add(connections=1)
    response = await call(gateway, "DELETE", f"/v1/sessions/{session_id}", headers=KEY)
    assert response.status_code == 204
    stored = gateway.sessions.rows[session_id]
    assert stored.erase_requested_at is not None and stored.status is SessionStatus.FAILED
    [event] = gateway.sessions.finished
    assert event.status is SessionStatus.FAILED and event.reasons == ["ERASED"]
    assert gateway.eraser.purged == [session_id]
    again = await call(gateway, "DELETE", f"/v1/sessions/{session_id}", headers=KEY)
    assert again.status_code == 204 and len(gateway.sessions.finished) == 1  # ended once


async def test_erasing_a_finished_session_purges_it_and_keeps_its_decision() -> None:
    gateway = Gateway()
    session_id, _ = gateway.sessions.add(status=SessionStatus.SUCCEEDED)
    assert (await call(gateway, "DELETE", f"/v1/sessions/{session_id}", headers=KEY)).status_code == 204
    assert gateway.sessions.rows[session_id].status is SessionStatus.SUCCEEDED
    assert gateway.sessions.finished == [] and gateway.eraser.purged == [session_id]


async def test_another_clients_session_cannot_be_erased() -> None:
    gateway = Gateway()
    session_id, _ = gateway.sessions.add(owner="client-2")
    response = await call(gateway, "DELETE", f"/v1/sessions/{session_id}", headers=KEY)
    assert response.status_code == 404 and response.json()["code"] == "SESSION_NOT_FOUND"
    stored = gateway.sessions.rows[session_id]
    assert stored.erase_requested_at is None and stored.status is SessionStatus.CREATED
    assert gateway.sessions.finished == [] and gateway.eraser.purged == []
    assert (
        await call(
            gateway, "DELETE", "/v1/sessions/nope", headers={"Authorization": f"Bearer {STATIC_TOKEN}"}
        )
    ).status_code == 404


async def test_with_the_store_down_the_erasure_is_recorded_and_the_caller_told_to_repeat() -> None:
    gateway = Gateway(eraser=FakeEraser(down=True))
    session_id, _ = gateway.sessions.add()
    response = await call(gateway, "DELETE", f"/v1/sessions/{session_id}", headers=KEY)
    assert response.status_code == 503 and response.json()["code"] == "STORAGE_UNAVAILABLE"
    assert response.headers["retry-after"] == "5"
    stored = gateway.sessions.rows[session_id]
    assert stored.erase_requested_at is not None and stored.status is SessionStatus.FAILED
