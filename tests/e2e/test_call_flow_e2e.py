"""The video-call flow end to end: every service as a process on RabbitMQ, Postgres and S3; a
protoo-speaking test SFU carrying real RTP media (the subject: a real face video); the example
controller serving reference images and receiving the one callback each flow ends with."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
import cv2
import httpx
import pytest

from examples.controller import Controller
from faceproof.testing.annotate import load_video_segments
from faceproof.testing.scripted_subject import Media, ScriptedSubject
from faceproof.testing.webrtc_subject import FrameSource, ScriptedSource, SourceTrack
from services.liveness.analysis import FrameAnalyzer
from tests.e2e.conftest import SECRET, TOKEN, Stack
from tests.paths import PEOPLE
from tests.support.test_sfu import TestSfu, redirecting_room

pytestmark = pytest.mark.e2e

#: liveportrait_d3 answers these with annotated segments (faceproof/testing/video_segments.json).
TURNS = ["TURN_LEFT", "TURN_RIGHT"]
#: What liveportrait_d3's annotated segments answer when judged from a neutral pose. Each
#: challenge's baseline is the first frames taken once its instruction is on screen, before the
#: subject reacts; d3's turn and look-up segments start already turned and pass only against their
#: own first frames (docs/liveness.md, "Get ready").
ANSWERABLE = ["LOOK_DOWN", "OPEN_MOUTH"]


def scripted(media: Media, analyzer: FrameAnalyzer) -> ScriptedSource:
    return ScriptedSource(ScriptedSubject(media, analyzer, segments=load_video_segments()))


async def follow_instructions(
    stack: Stack, source: FrameSource, session: asyncio.Future[str], bound: asyncio.Event
) -> None:
    """The subject in the room sees the instructions drawn in the video; the script reads them
    from the ChallengeIssued events instead (what the agent draws is checked elsewhere). ``bound``
    is set once its queue is bound: a flow started before would lose its first instruction."""
    connection = await aio_pika.connect_robust(stack.vhost.url)
    async with connection:
        channel = await connection.channel()
        events = await channel.get_exchange("faceproof.events", ensure=False)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(events, routing_key="challenge.issued")
        bound.set()
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    body = json.loads(message.body)
                    if session.done() and body["session_id"] == session.result():
                        source.instruct(body)


async def run_flow(
    stack: Stack,
    controller: Controller,
    sfu: TestSfu | str,
    source: FrameSource | None,
    *,
    timeout_s: float = 150,
    token: str = "call-token-1",
    **fields: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a flow (in the test SFU's room, or at a room URL), answer its instructions, wait for
    the controller's callback; (flow, callback)."""
    session: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    bound = asyncio.Event()
    follower = asyncio.ensure_future(follow_instructions(stack, source, session, bound)) if source else None
    try:
        if follower is not None:
            await asyncio.wait_for(bound.wait(), 30)
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as http:
            started = await http.post(
                "/v1/calls",
                json={
                    "ws_url": sfu if isinstance(sfu, str) else sfu.url(),
                    "callback_base_url": controller.url,
                    "token": token,
                    "lang": "es",
                    "settings": {"challenges": 2, "challengeTypes": ANSWERABLE, "callbackSecret": SECRET},
                    **fields,
                },
            )
            assert started.status_code == 202, started.text
            flow = started.json()
            session.set_result(flow["sessionId"])
            deadline = time.monotonic() + timeout_s
            while not controller.callbacks and time.monotonic() < deadline:  # noqa: ASYNC110 - a thread fills it
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)  # a second callback would arrive now
            state = (await http.get(f"/v1/calls/{flow['flowId']}")).json()
    finally:
        if follower is not None:
            follower.cancel()
    assert len(controller.callbacks) == 1, (controller.callbacks, state)
    callback = controller.callbacks[0]
    assert callback.signature_valid is True
    return state, {"outcome": callback.outcome, "result": callback.result}


def write_jpeg(image_path: Path, media: Media, index: int) -> None:
    ok, encoded = cv2.imencode(".jpg", media.frame(index))
    assert ok
    image_path.write_bytes(encoded.tobytes())


def test_a_live_subject_who_is_on_the_reference_gets_a_success_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        source = scripted(d3, analyzer)
        async with TestSfu(subject=SourceTrack(source)) as sfu:
            state, callback = await run_flow(stack, controller, sfu, source)
            return state, callback, sfu.received_frames

    state, callback, instruction_frames = asyncio.run(scenario())
    assert callback["outcome"] == "success", (callback, state)
    assert state["status"] == "SUCCEEDED" and state["isLive"] is True and state["match"] is True
    assert state["callback"]["delivery"] == "DELIVERED"
    assert callback["result"]["isLive"] is True and callback["result"]["similarity"] >= 0.5
    assert instruction_frames > 0, "the room never received the instruction video"


def test_a_subject_whose_video_arrives_late_gets_a_success_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """People arrive in a room after the controller asked faceproof in: the subject's video reaches
    the room 6 s after the call agent joined. The first challenge's clock starts with that video
    (not with the agent's join), so the subject who follows the instructions passes."""
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        source = scripted(d3, analyzer)
        async with TestSfu(subject=SourceTrack(source), subject_delay_s=6.0) as sfu:
            return await run_flow(stack, controller, sfu, source)

    state, callback = asyncio.run(scenario())
    assert callback["outcome"] == "success", (callback, state)
    assert state["status"] == "SUCCEEDED" and state["isLive"] is True, state


def test_a_live_subject_who_is_someone_else_gets_a_failure_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    (controller.images / "obama.jpg").write_bytes((PEOPLE / "obama.jpg").read_bytes())

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        source = scripted(d3, analyzer)
        async with TestSfu(subject=SourceTrack(source)) as sfu:
            return await run_flow(stack, controller, sfu, source)

    state, callback = asyncio.run(scenario())
    assert callback["outcome"] == "failure"
    assert state["isLive"] is True and state["match"] is False, state
    assert "FACE_MISMATCH" in state["reasons"]


def test_no_video_ends_in_a_failure_callback(stack: Stack, controller: Controller) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with TestSfu(send_video=False) as sfu:
            return await run_flow(stack, controller, sfu, None)

    state, callback = asyncio.run(scenario())
    assert callback["outcome"] == "failure"
    assert state["status"] == "FAILED" and "NO_VIDEO" in state["reasons"], state


def test_a_dropped_socket_ends_in_a_failure_callback(stack: Stack, controller: Controller) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with TestSfu() as sfu:

            async def drop_after_join() -> None:
                await sfu.joined.wait()
                await asyncio.sleep(1.0)
                await sfu.drop()

            dropper = asyncio.ensure_future(drop_after_join())
            try:
                return await run_flow(stack, controller, sfu, None)
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


def test_reference_urls_to_private_addresses_are_refused(
    stack: Stack, controller: Controller, redirector: str, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """The list names the cloud metadata address, a file: URL and a redirect to a private
    address: none is fetched, the flow fails, and the notifier's log says why for each."""
    controller.items = ["http://169.254.169.254/latest/meta-data/iam", "file:///etc/passwd", redirector]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        source = scripted(d3, analyzer)
        async with TestSfu(subject=SourceTrack(source)) as sfu:
            return await run_flow(stack, controller, sfu, source)

    state, callback = asyncio.run(scenario())
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

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        source = scripted(d3, analyzer)
        async with TestSfu(subject=SourceTrack(source)) as sfu:
            return await run_flow(
                stack, controller, sfu, source, timeout_s=300, token=token, datastore_base_url=controller.url
            )

    state, callback = asyncio.run(scenario())
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
    handshake redirects to the cloud metadata address. The call agent checks the redirect target,
    refuses it (ROOM_REFUSED, with the reason in its log) and the flow ends in exactly one failure
    callback."""

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
