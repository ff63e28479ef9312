"""The attack: more WebRTC connections than a call agent may hold (FACEPROOF_MAX_CONCURRENT_CALLS=1).

A gateway, one call agent and the notifier as processes on RabbitMQ, Postgres and S3. With one
hosted session streaming, a second session's offer is refused at once (503 CALL_AGENT_BUSY with
Retry-After, not a hang until the offer deadline) and a video call ends in exactly one failure
callback with the reason CALL_AGENT_BUSY; the running session keeps its connection, and the slot is
free again once it hangs up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import RTCPeerConnection

from contracts.routing import CALL_AGENT_CALLS, CALL_AGENT_SESSIONS, NOTIFIER_CALLBACKS, NOTIFIER_CALLS
from examples.controller import Controller
from faceproof.testing.webrtc_subject import post_offer
from tests.e2e.conftest import TOKEN, Stack, start_stack
from tests.support.services import SeaweedFS

pytestmark = pytest.mark.e2e

#: The processes of this stack: what an offer and a video call's failure need, nothing more.
SERVICES = (
    ("gateway", ["gateway"]),
    ("call-agent", ["worker", "call-agent"]),
    ("notifier", ["worker", "notifier"]),
)


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedFS) -> Iterator[Stack]:
    routes = (CALL_AGENT_SESSIONS, CALL_AGENT_CALLS, NOTIFIER_CALLS, NOTIFIER_CALLBACKS)
    with start_stack(
        tmp_path_factory,
        seaweedfs,
        services=SERVICES,
        overrides={"FACEPROOF_MAX_CONCURRENT_CALLS": "1"},
        queues={route.queue for route in routes},
        name="capacity",
    ) as running:
        yield running


def create_session(stack: Stack) -> dict[str, Any]:
    with stack.client() as client:
        response = client.post("/v1/sessions", json={})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def new_peer() -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc.createDataChannel("faceproof")
    pc.addTransceiver("video", direction="sendrecv")
    return pc


async def offer(stack: Stack, created: dict[str, Any], pc: RTCPeerConnection) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await post_offer(stack.url, created["sessionId"], created["clientToken"], pc)
    return response, time.monotonic() - started


async def hold_slot(stack: Stack, created: dict[str, Any], seconds: float = 60) -> RTCPeerConnection:
    """Offer (after Retry-After, while refused) until a call agent answers; the connected peer,
    which holds the agent's slot until it is closed (the agent notices at once)."""
    deadline = time.monotonic() + seconds
    while True:
        pc = new_peer()
        response, _ = await offer(stack, created, pc)
        if response.status_code == 200:
            await pc.setRemoteDescription(_answer(response))
            while pc.connectionState != "connected":  # (a peer that never connects is hung up later)
                assert time.monotonic() < deadline, pc.connectionState
                await asyncio.sleep(0.1)
            return pc
        await pc.close()
        assert response.status_code == 503 and time.monotonic() < deadline, response.text
        await asyncio.sleep(float(response.headers["Retry-After"]))


def test_a_second_concurrent_offer_is_refused_with_call_agent_busy(one_slot: Stack) -> None:
    first, second = create_session(one_slot), create_session(one_slot)

    async def scenario() -> tuple[httpx.Response, float]:
        holder = await hold_slot(one_slot, first)
        try:
            refused_pc = new_peer()
            try:
                refused, elapsed = await offer(one_slot, second, refused_pc)
            finally:
                await refused_pc.close()
        finally:
            await holder.close()  # the first session hangs up: its slot comes back
        await (await hold_slot(one_slot, second)).close()  # (the slot is free again)
        return refused, elapsed

    refused, elapsed = asyncio.run(scenario())
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "CALL_AGENT_BUSY"
    assert int(refused.headers["Retry-After"]) > 0
    assert elapsed < 10, elapsed  # answered at once, not at the offer deadline (15 s)


def _answer(response: httpx.Response) -> Any:
    from aiortc import RTCSessionDescription

    body = response.json()
    return RTCSessionDescription(sdp=body["sdp"], type=body["type"])


def test_a_video_call_past_the_cap_ends_in_one_failure_callback(one_slot: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "references"
    folder.mkdir()
    secret = "capacity-callback-secret-0123456789"
    controller = Controller(images=folder, secret=secret, quiet=True).start()
    holding = create_session(one_slot)

    async def scenario() -> tuple[int, dict[str, Any]]:
        holder = await hold_slot(one_slot, holding)  # (once the previous test's peer is gone)
        try:
            async with httpx.AsyncClient(
                base_url=one_slot.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            ) as http:
                started = await http.post(
                    "/v1/calls",
                    json={
                        "ws_url": "ws://127.0.0.1:9/room",  # never opened: the agent is full
                        "callback_base_url": controller.url,
                        "token": "capacity-call-1",
                        "settings": {"callbackSecret": secret},
                    },
                )
                assert started.status_code == 202, started.text
                deadline = time.monotonic() + 60
                while not controller.callbacks and time.monotonic() < deadline:  # noqa: ASYNC110 - a thread fills it
                    await asyncio.sleep(0.5)
                await asyncio.sleep(3)  # a second callback would arrive now
                return len(controller.callbacks), (
                    await http.get(f"/v1/calls/{started.json()['flowId']}")
                ).json()
        finally:
            await holder.close()

    try:
        count, flow = asyncio.run(scenario())
        assert count == 1, (controller.callbacks, flow)
        callback = controller.callbacks[0]
        assert callback.outcome == "failure"
        assert "CALL_AGENT_BUSY" in callback.result["reasons"], callback.result
    finally:
        controller.stop()
