"""Video calls through a real mediasoup SFU (issue 19): every service as a process, a real mediasoup
3.8.4 room (tests/support/sfu/room.js: one Worker, a Router per room, protoo-server), and the
subject as a second pymediasoup peer playing a real face video who joins the room AFTER the call
agent, as people do. The room is built once per machine by scripts/mediasoup.sh (cached); these
tests skip only when that build fails, with its error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from examples.controller import Controller
from faceproof.testing.mediasoup_room import MediasoupRoom, RoomSubject, run_bounded
from faceproof.testing.scripted_subject import Media
from faceproof.testing.webrtc_subject import Image, ScriptedSource, SourceTrack
from services.liveness.analysis import FrameAnalyzer
from tests.e2e.conftest import (  # the call flow's helpers: one scripted subject, one run_flow
    LOOPBACK,
    SECRET,
    TURNS,
    Stack,
    agent_in_the_room,
    flow_with_subject,
    run_flow,
    scripted,
    session_log,
    settle,
    write_jpeg,
)
from tests.paths import PEOPLE

#: The first run on a machine builds mediasoup's worker in the room_server fixture (~7-13 min).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), pytest.mark.usefixtures("room_server")]

#: The subject walks in this long after the call agent joined and produced its video.
LATE_S = 4.0


def test_a_subject_who_joins_late_gets_one_success_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """mediasoup-demo's behaviour: the room resumes consumers itself and has no leaveRoom."""
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], MediasoupRoom, int]:
        async with MediasoupRoom("--resume", "server", "--no-leave-room") as room:
            source = scripted(d3, analyzer)
            state, callback, frames = await flow_with_subject(
                stack, controller, room, "late", source, late_s=LATE_S
            )
            return state, callback, room, frames

    state, callback, room, instruction_frames = run_bounded(scenario())
    assert callback["outcome"] == "success", (state.get("reasons"), session_log(stack, state))
    assert state["status"] == "SUCCEEDED" and state["isLive"] is True and state["match"] is True, state
    assert callback["result"]["isLive"] is True
    assert instruction_frames > 0, "the subject never received the call agent's instruction video"
    # the agent consumed the subject's video and the subject the agent's, through mediasoup
    assert room.of("consuming", peerId="faceproof", producerPeerId="subject", kind="video")
    assert room.of("consuming", peerId="subject", producerPeerId="faceproof", kind="video")
    assert room.of("refused", peerId="faceproof", method="leaveRoom")  # refused; the call still ended once


def test_a_subject_who_leaves_mid_call_gets_one_failure_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """A room that waits for resumeConsumer; the subject joins late, is seen, then hangs up."""
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], MediasoupRoom]:
        async with MediasoupRoom() as room:
            subject = RoomSubject(SourceTrack(scripted(d3, analyzer)), policy=LOOPBACK)

            async def come_and_go() -> None:
                await agent_in_the_room(room, "leaves")
                await asyncio.sleep(LATE_S)
                await subject.join(room.url("leaves", "subject"))
                await room.wait_for(lambda: bool(room.of("resumed", peerId="faceproof", by="client")), 60)
                await asyncio.sleep(3.0)
                await subject.leave()

            visit = asyncio.ensure_future(come_and_go())
            try:
                state, callback = await run_flow(
                    stack,
                    controller,
                    room.url("leaves", "faceproof"),
                    None,  # the subject does not follow the instructions; it leaves
                    settings={
                        "challenges": 2,
                        "challengeTypes": TURNS,
                        "callbackSecret": SECRET,
                        "sessionTimeoutS": 30,
                    },
                )
            finally:
                await settle(visit)
            return state, callback, room

    state, callback, room = run_bounded(scenario())
    assert callback["outcome"] == "failure", (callback, state)
    assert state["status"] == "FAILED" and "SUBJECT_LEFT" in state["reasons"], state
    assert room.of("peerClosed", peerId="subject")


class HeldBack:
    """The scripted subject, who walks away as challenge 1 appears and answers it only once back:
    the script's instruction for challenge 0 is held until :meth:`release`."""

    def __init__(self, source: ScriptedSource) -> None:
        self.source = source
        self.asked = asyncio.Event()
        self._held: dict[str, Any] | None = None
        self._released = False

    def instruct(self, message: dict[str, Any]) -> None:
        if message["index"] == 0 and not self._released:
            self._held = message
            self.asked.set()
            return
        self.source.instruct(message)

    def release(self) -> None:
        self._released = True
        if self._held is not None:
            self.source.instruct(self._held)

    def next_frame(self) -> Image:
        return self.source.next_frame()


def test_a_subject_who_leaves_mid_challenge_and_comes_back_starts_it_again_and_passes(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """The subject hangs up once challenge 1 is shown and joins again 4 s later (a new peer, a new
    producer): the agent consumes the new video as a new connection, the liveness worker starts
    the challenge again with its full time, and the subject who then follows it passes."""
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], MediasoupRoom]:
        async with MediasoupRoom() as room:
            held = HeldBack(scripted(d3, analyzer))
            first = RoomSubject(SourceTrack(held), policy=LOOPBACK)
            again = RoomSubject(SourceTrack(held), policy=LOOPBACK)

            async def leave_and_return() -> None:
                await agent_in_the_room(room, "back")
                await first.join(room.url("back", "subject"))
                await asyncio.wait_for(held.asked.wait(), 90)  # challenge 1 is on screen
                await asyncio.sleep(1.0)
                await first.leave()
                await asyncio.sleep(4.0)
                await again.join(room.url("back", "subject-again"))
                await room.wait_for(
                    lambda: bool(room.of("consuming", peerId="faceproof", producerPeerId="subject-again")), 60
                )
                await asyncio.sleep(1.5)  # a neutral baseline on the new connection, then the answer
                held.release()

            visit = asyncio.ensure_future(leave_and_return())
            try:
                state, callback = await run_flow(stack, controller, room.url("back", "faceproof"), held)
            finally:
                await settle(visit)
                await again.leave()
            return state, callback, room

    state, callback, room = run_bounded(scenario())
    assert callback["outcome"] == "success", (state.get("reasons"), session_log(stack, state))
    assert state["status"] == "SUCCEEDED" and state["isLive"] is True, state
    assert room.of("peerClosed", peerId="subject")
    assert room.of("consuming", peerId="faceproof", producerPeerId="subject-again", kind="video")


def test_a_live_subject_whose_reference_shows_someone_else_gets_one_failure_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """Live, through the real room, but the controller's reference photo is another person."""
    (controller.images / "obama.jpg").write_bytes((PEOPLE / "obama.jpg").read_bytes())

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with MediasoupRoom() as room:
            return await flow_with_subject(stack, controller, room, "other", scripted(d3, analyzer))

    state, callback, _ = run_bounded(scenario())
    assert callback["outcome"] == "failure", (callback, state)
    assert state["isLive"] is True and state["match"] is False, state
    assert "FACE_MISMATCH" in state["reasons"], state


@pytest.mark.parametrize(
    ("options", "kill_after_join", "reason"),
    [
        pytest.param((), False, "NO_VIDEO", id="no-subject"),
        pytest.param(("--refuse", "produce"), False, "SIGNALLING_ERROR", id="produce-refused"),
        pytest.param((), True, "SOCKET_DROPPED", id="room-killed"),
    ],
)
def test_a_call_the_room_cannot_carry_ends_in_one_failure_callback(
    stack: Stack, controller: Controller, options: tuple[str, ...], kill_after_join: bool, reason: str
) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], MediasoupRoom]:
        async with MediasoupRoom(*options) as room:

            async def kill() -> None:
                await agent_in_the_room(room, "fails")
                await room.kill()

            killer = asyncio.ensure_future(kill() if kill_after_join else asyncio.sleep(0))
            try:
                state, callback = await run_flow(
                    stack, controller, room.url("fails", "faceproof"), None, timeout_s=90
                )
            finally:
                await settle(killer)
            return state, callback, room

    state, callback, room = run_bounded(scenario())
    assert callback["outcome"] == "failure", (callback, state)
    assert state["status"] == "FAILED" and reason in state["reasons"], state
    assert room.of("joined", peerId="faceproof")  # the agent did get into the room
