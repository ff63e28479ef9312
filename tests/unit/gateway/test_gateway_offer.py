"""POST /v1/sessions/{id}/offer over in-memory ports: what the browser reads (the SDP answer, or
the status, code and Retry-After), what the call agent was asked, and that a connection that got
no answer is released for the next offer."""

from __future__ import annotations

import httpx
import pytest

from contracts.events import SessionStarted
from contracts.routing import CONNECTION_SEQUENCE_STRIDE
from contracts.values import ErrorCode, ErrorInfo, SessionStatus
from infra.rpc import BrokerUnavailable, ReplyTimeout
from infra.settings import Settings
from services.gateway.routes.sessions import BUSY_RETRY_AFTER_S
from tests.unit.gateway.fakes import FakeCallAgents, Gateway

OFFER = {"sdp": "v=0 offer", "type": "offer"}


async def offer(
    gateway: Gateway, session_id: str, token: str | None, body: dict[str, str] = OFFER
) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with gateway.client() as client:
        return await client.post(f"/v1/sessions/{session_id}/offer", json=body, headers=headers)


async def test_an_offer_is_answered_by_a_call_agent_in_the_sessions_language() -> None:
    gateway = Gateway(settings=Settings(rate_limits=False, offer_timeout_s=7))
    session_id, token = gateway.sessions.add(language="es")
    response = await offer(gateway, session_id, token)
    assert response.status_code == 200 and response.json() == {"sdp": "v=0 answer", "type": "answer"}
    [(command, deadline)] = gateway.call_agents.asked
    assert (command.session_id, command.offer_sdp, command.language) == (session_id, "v=0 offer", "es")
    assert command.sequence_base == 0 and deadline == 7
    assert gateway.sessions.rows[session_id].connection_id == command.connection_id


async def test_a_reconnect_numbers_its_frames_after_the_first_connection() -> None:
    gateway = Gateway()
    session_id, token = gateway.sessions.add()
    assert (await offer(gateway, session_id, token)).status_code == 200
    first, _ = gateway.call_agents.asked[0]
    await gateway.sessions.release_connection(session_id, first.connection_id)  # the peer hung up
    assert (await offer(gateway, session_id, token)).status_code == 200
    second, _ = gateway.call_agents.asked[1]
    assert second.sequence_base == CONNECTION_SEQUENCE_STRIDE and second.connection_id != first.connection_id


@pytest.mark.parametrize("which", ["none", "wrong", "another session's"])
async def test_an_offer_needs_this_sessions_client_token(which: str) -> None:
    gateway = Gateway()
    session_id, token = gateway.sessions.add()
    _, other = gateway.sessions.add()
    sent = {"none": None, "wrong": token + "x", "another session's": other}[which]
    response = await offer(gateway, session_id, sent)
    assert response.status_code == 401 and response.json()["code"] == "UNAUTHORIZED"
    assert response.headers["www-authenticate"] == "Bearer"
    assert gateway.call_agents.asked == []


async def test_an_unknown_session_answers_as_a_wrong_token() -> None:
    """The browser's routes need no API key: a 404 told anyone which session ids exist (and echoed
    the id). Unknown or not yours, the answer is the same 401."""
    response = await offer(Gateway(), "nope", "token")
    assert response.status_code == 401 and response.json()["code"] == "UNAUTHORIZED"
    assert "nope" not in response.text


async def test_a_finished_session_takes_no_offer() -> None:
    gateway = Gateway()
    session_id, token = gateway.sessions.add(status=SessionStatus.FAILED)
    response = await offer(gateway, session_id, token)
    assert response.status_code == 409 and response.json()["code"] == "SESSION_FINISHED"
    assert gateway.call_agents.asked == []


async def test_a_second_connection_while_one_streams_is_refused() -> None:
    gateway = Gateway()
    session_id, token = gateway.sessions.add()
    assert (await offer(gateway, session_id, token)).status_code == 200
    response = await offer(gateway, session_id, token)
    assert response.status_code == 409 and response.json()["code"] == "SESSION_IN_USE"
    assert len(gateway.call_agents.asked) == 1


async def test_an_sdp_over_the_limit_is_413() -> None:
    gateway = Gateway(settings=Settings(rate_limits=False, max_sdp_bytes=1024))
    session_id, token = gateway.sessions.add()
    response = await offer(gateway, session_id, token, {"sdp": "a" * 1025, "type": "offer"})
    assert response.status_code == 413 and response.json()["code"] == "SDP_TOO_LARGE"
    assert gateway.call_agents.asked == [] and gateway.sessions.rows[session_id].connection_id is None


def refused(code: ErrorCode, detail: str) -> FakeCallAgents:
    return FakeCallAgents(
        answer=lambda command: SessionStarted(
            correlation_id=command.session_id,
            session_id=command.session_id,
            error=ErrorInfo(code=code, detail=detail),
        )
    )


@pytest.mark.parametrize(
    ("agents", "status", "code", "retry_after"),
    [
        (FakeCallAgents(answer=ReplyTimeout("late")), 504, "CALL_AGENT_TIMEOUT", None),
        (FakeCallAgents(answer=BrokerUnavailable("down")), 503, "BROKER_UNAVAILABLE", "5"),
        (refused(ErrorCode.CALL_AGENT_BUSY, "full"), 503, "CALL_AGENT_BUSY", str(BUSY_RETRY_AFTER_S)),
        (refused(ErrorCode.INVALID_OFFER, "no video m-line"), 400, "INVALID_OFFER", None),
    ],
)
async def test_an_offer_without_an_answer_says_why_and_frees_the_connection(
    agents: FakeCallAgents, status: int, code: str, retry_after: str | None
) -> None:
    gateway = Gateway(call_agents=agents)
    session_id, token = gateway.sessions.add()
    response = await offer(gateway, session_id, token)
    assert response.status_code == status and response.json()["code"] == code
    assert response.headers.get("retry-after") == retry_after
    [(command, _)] = agents.asked
    assert gateway.sessions.released == [(session_id, command.connection_id)]
    if code == "INVALID_OFFER":
        assert response.json()["detail"] == "no video m-line"
    gateway.call_agents = FakeCallAgents()  # the browser offers again: the session is free
    assert (await offer(gateway, session_id, token)).status_code == 200
