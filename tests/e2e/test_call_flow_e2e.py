"""The video-call flow end to end: every service as a process on RabbitMQ, Postgres and S3; a real
mediasoup 3.8.4 room (faceproof/testing/mediasoup_room.py) carrying real RTP media, with the
subject as a pymediasoup peer playing a real face video; the example controller serving reference
images and receiving the one callback each flow ends with. Only faults a real SFU cannot be made
to commit (a socket cut while the room stays up, a room whose handshake redirects) are played by
the stand-in of tests/support/test_sfu.py."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import uuid4

import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine

from examples.controller import Controller
from faceproof.testing.mediasoup_room import MediasoupRoom, run_bounded
from faceproof.testing.scripted_subject import Media
from services.liveness.analysis import FrameAnalyzer
from tests.e2e.conftest import Stack, flow_with_subject, run_flow, scripted, session_log, write_jpeg
from tests.support.test_sfu import TestSfu, redirecting_room

#: The first run on a machine builds mediasoup's worker in the room_server fixture (~7-13 min).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.mark.usefixtures("room_server")
def test_a_live_subject_who_is_on_the_reference_gets_a_success_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with MediasoupRoom() as room:
            return await flow_with_subject(stack, controller, room, "live", scripted(d3, analyzer))

    state, callback, instruction_frames = run_bounded(scenario())
    assert callback["outcome"] == "success", (state.get("reasons"), session_log(stack, state))
    assert state["status"] == "SUCCEEDED" and state["isLive"] is True and state["match"] is True
    assert state["callback"]["delivery"] == "DELIVERED"
    assert callback["result"]["isLive"] is True and callback["result"]["similarity"] >= 0.5
    assert instruction_frames > 0, "the subject never received the call agent's instruction video"
    # the reference photo went to the matcher inline, through the notifier's outbox: no row keeps it
    photo = (controller.images / "reference.jpg").read_bytes()
    encoded = {base64.b64encode(photo).decode()[:400], base64.urlsafe_b64encode(photo).decode()[:400]}
    payloads = outbox_payloads(stack, state["flowId"])
    assert payloads and not [p for p in payloads for e in encoded if e in p], "the outbox keeps the photo"


def outbox_payloads(stack: Stack, correlation_id: str) -> list[str]:
    """The stack's outbox rows for ``correlation_id``, their payloads as JSON text."""

    async def read() -> list[str]:
        engine = create_async_engine(stack.env["FACEPROOF_DATABASE_URL"])
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    sqlalchemy.text("SELECT payload::text FROM outbox WHERE correlation_id = :id"),
                    {"id": correlation_id},
                )
                return [str(row[0]) for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.mark.usefixtures("room_server")
def test_a_subject_whose_video_arrives_late_gets_a_success_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """People arrive in a room after the controller asked faceproof in: the subject joins the room
    10 s after the call agent joined and produced its video (issue 19's case; the stack waits up to
    FACEPROOF_NO_VIDEO_TIMEOUT_S=25 s). The first challenge's clock starts with the subject's video
    (not with the agent's join), so the subject who follows the instructions passes."""
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with MediasoupRoom() as room:
            return await flow_with_subject(
                stack, controller, room, "late", scripted(d3, analyzer), late_s=10.0
            )

    state, callback, _ = run_bounded(scenario())
    assert callback["outcome"] == "success", (state.get("reasons"), session_log(stack, state))
    assert state["status"] == "SUCCEEDED" and state["isLive"] is True, state


def test_a_dropped_socket_ends_in_a_failure_callback(stack: Stack, controller: Controller) -> None:
    """The stand-in cuts the agent's socket (no close handshake) while the room stays up and
    refuses it again: a network cut, which a real room cannot be made to commit (the real room's
    own death is test_mediasoup_room_e2e's room-killed case)."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with TestSfu() as sfu:

            async def drop_after_join() -> None:
                await sfu.joined.wait()
                await asyncio.sleep(1.0)
                await sfu.drop()

            dropper = asyncio.ensure_future(drop_after_join())
            try:
                return await run_flow(stack, controller, sfu.url(), None)
            finally:
                dropper.cancel()

    state, callback = asyncio.run(scenario())
    assert callback["outcome"] == "failure"
    assert "SOCKET_DROPPED" in state["reasons"], state


@pytest.fixture
def redirector() -> Iterator[str]:
    """An allow-listed host (127.0.0.1) that redirects every request to a private address."""

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/reference.jpg")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/reference.jpg"
    server.shutdown()
    server.server_close()


@pytest.mark.usefixtures("room_server")
def test_reference_urls_to_private_addresses_are_refused(
    stack: Stack, controller: Controller, redirector: str, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """The list names the cloud metadata address, a file: URL and a redirect to a private
    address: none is fetched, the flow fails, and the notifier's log says why for each."""
    controller.items = ["http://169.254.169.254/latest/meta-data/iam", "file:///etc/passwd", redirector]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with MediasoupRoom() as room:
            return await flow_with_subject(stack, controller, room, "refs", scripted(d3, analyzer))

    state, callback, _ = run_bounded(scenario())
    assert callback["outcome"] == "failure"
    assert "REFERENCES_UNAVAILABLE" in state["reasons"], state
    refusals = [
        line
        for line in (stack.logs / "notifier.log").read_text().splitlines()
        if state["flowId"] in line and "references unavailable" in line
    ]
    assert len(refusals) == 1, refusals
    line = refusals[0]
    assert "reference 0: UrlRefused: 169.254.169.254 resolves to a link-local address" in line, line
    assert "reference 1: " in line and "http(s) URL" in line, line  # file: is not even a candidate
    assert "reference 2: UrlRefused: 10.0.0.1 resolves to a private address" in line, line


@pytest.mark.usefixtures("room_server")
def test_no_controller_token_or_reference_url_reaches_any_log(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """A live flow whose references are listed as an http URL and as a Data Store id: every
    process fetches and calls back with the controller's token in the URL path. Not one line of
    any process's log holds the token, a reference URL's path or the list's path."""
    for name in ("reference.jpg", "reference2.jpg"):
        write_jpeg(controller.images / name, d3, len(d3.frames) - 1)
    controller.items = [f"{controller.url}/images/reference.jpg", "reference2"]
    token = f"tok-{uuid4().hex}"

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with MediasoupRoom() as room:
            source = scripted(d3, analyzer)
            return await flow_with_subject(
                stack,
                controller,
                room,
                "secrets",
                source,
                timeout_s=300,
                token=token,
                datastore_base_url=controller.url,
            )

    state, callback, _ = run_bounded(scenario())
    assert callback["outcome"] == "success", (callback, state)
    assert controller.callbacks[0].token == token
    time.sleep(1)  # the last lines reach the log files
    logs = {path.name: path.read_text() for path in stack.logs.glob("*.log")}
    assert state["flowId"] in logs["notifier.log"]  # these are the flow's logs
    for name, text in logs.items():
        for secret in (token, "/images/reference.jpg", "/r/reference2", "/list/", "/success/"):
            assert secret not in text, f"{secret!r} in {name}"


def test_a_room_that_redirects_to_a_private_address_ends_in_one_failure_callback(
    stack: Stack, controller: Controller
) -> None:
    """The attack: the room URL is an allow-listed address (it passes the gateway) whose WebSocket
    handshake redirects to the cloud metadata address (no real SFU can be made to answer so; the
    stand-in module's redirecting_room does). The call agent checks the redirect target, refuses it
    (ROOM_REFUSED, with the reason in its log) and the flow ends in exactly one failure callback."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with redirecting_room("ws://169.254.169.254/latest/meta-data/") as url:
            return await run_flow(stack, controller, url, None, timeout_s=60)

    state, callback = asyncio.run(scenario())
    assert callback["outcome"] == "failure"
    assert state["status"] == "FAILED" and "ROOM_REFUSED" in state["reasons"], state
    refusals = [
        line
        for line in (stack.logs / "call-agent.log").read_text().splitlines()
        if state["flowId"] in line and "ROOM_REFUSED" in line
    ]
    assert len(refusals) == 1, refusals
    assert "169.254.169.254 resolves to a link-local address" in refusals[0]


def test_a_call_whose_urls_cannot_be_kept_or_called_back_is_refused_at_once(
    stack: Stack, controller: Controller
) -> None:
    """A callback base URL over its column once normalised was a 500 on PostgreSQL (after the call's
    session was stored); a token whose callback URL is over the URL limit was accepted, and the
    flow could then never be called back. Both are a 422 now, nothing starts, no callback comes."""
    room = "ws://127.0.0.1:9/?roomId=r&peerId=p"
    asks = [
        (
            {"callback_base_url": controller.url + "/" + "é" * 340, "token": "t"},
            "callback_base_url is over 2048",
        ),
        ({"callback_base_url": controller.url, "token": "é" * 512}, "the callback URL"),
    ]
    with stack.client() as http:
        for path in ("/v1/calls", "/join-call"):
            for fields, reason in asks:
                answer = http.post(path, json={"ws_url": room, **fields})
                assert answer.status_code == 422, answer.text
                assert reason in answer.text, answer.text
    time.sleep(3)
    assert controller.callbacks == []


def test_a_room_at_a_private_address_is_refused_at_once(stack: Stack, controller: Controller) -> None:
    """The attack without a redirect: the gateway answers 422 ROOM_REFUSED with the reason, and
    no flow starts (no callback ever comes)."""
    with stack.client() as http:
        for path in ("/v1/calls", "/join-call"):
            answer = http.post(
                path,
                json={
                    "ws_url": "ws://169.254.169.254/latest/meta-data/?roomId=r&peerId=p",
                    "callback_base_url": controller.url,
                    "token": "call-token-1",
                },
            )
            assert answer.status_code == 422, answer.text
            assert answer.json()["code"] == "ROOM_REFUSED"
            assert "169.254.169.254 resolves to a link-local address" in answer.json()["detail"]
    time.sleep(3)
    assert controller.callbacks == []
