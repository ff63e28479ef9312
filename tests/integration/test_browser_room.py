"""A real browser in a real mediasoup room with the call agent: headless Chromium (mediasoup-client
bundled from npm by esbuild, served by the room server, no CDN) whose fake camera is a y4m made
from a real face video, joining AFTER the agent; the agent's RoomCall in this process."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from contracts.events import CallFailed, FrameCaptured, SessionFinished, SessionStarted
from contracts.routing import EventKey
from contracts.values import SessionStatus
from faceproof.testing.mediasoup_room import MediasoupRoom
from infra.storage import LocalObjectStore
from services.call_agent.room.handler import RoomCalls
from tests.e2e.test_browser_e2e import CHROMIUM, write_y4m
from tests.integration.test_room_calls import RecordingEvents, config, join_call, until
from tests.paths import DATA_DIR

#: The first run on a machine builds mediasoup's worker in the room_server fixture (~7-13 min).
pytestmark = [pytest.mark.timeout(1800), pytest.mark.usefixtures("room_server")]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def best_layer(events: RecordingEvents) -> bool:
    """A frame of the camera's full 640x480 stored (a simulcast room may start on a lower layer)."""
    return any(frame.width == 640 for frame in events.of(FrameCaptured))


@pytest.mark.parametrize("layers", [0, 2], ids=["one-encoding", "simulcast"])
async def test_a_browser_subject_who_joins_late_is_seen_and_sees_the_instructions(
    tmp_path: Path, layers: int
) -> None:
    """``layers=2``: the page produces two VP8 simulcast encodings (320x240 and 640x480). The agent
    asks for no layer: a mediasoup consumer's preferred layer is the best one by default, so the
    frames it stores must reach the camera's 640x480. (Three encodings of a 640x480 camera: Chromium
    sends only the two lowest, 160x120 and 320x240; docs/rooms.md.)"""
    from playwright.async_api import async_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: scripts/test installs it"
    camera = write_y4m(DATA_DIR / "video" / "liveportrait_d3.mp4", tmp_path / "camera.y4m")
    events = RecordingEvents()
    async with MediasoupRoom() as room:
        calls = RoomCalls(config(), store=LocalObjectStore(tmp_path / "store"), events=events)
        await calls.start(join_call(room.url("browser", "faceproof")))
        await room.wait_for(lambda: bool(room.of("produced", roomId="browser", peerId="faceproof")))
        await asyncio.sleep(3.0)  # the person walks in later
        assert events.of(SessionStarted) == []  # nobody to watch yet: the session waits
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                headless=True,
                args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={camera}"],
            )
            try:
                page = await browser.new_page()
                console: list[str] = []
                page.on("console", lambda message: console.append(message.text))
                await page.goto(
                    f"http://127.0.0.1:{room.port}/subject?roomId=browser&peerId=subject&simulcast={layers}"
                )

                async def subject() -> dict[str, Any]:
                    state: dict[str, Any] = await page.evaluate("window.subject")
                    assert state["error"] is None, (state, console)
                    return state

                seen = 0  # the frames the page showed of the agent's instruction video
                try:
                    async with asyncio.timeout(60):
                        while len(events.of(FrameCaptured)) < 5 or seen < 10 or not best_layer(events):
                            await asyncio.sleep(0.25)
                            seen = (await subject())["framesShown"]
                except TimeoutError:
                    sizes = Counter((frame.width, frame.height) for frame in events.of(FrameCaptured))
                    layer_events = [e["layers"] for e in room.of("layerschange", peerId="faceproof")]
                    scores = [e["score"] for e in room.of("producerScore", peerId="subject")][-2:]
                    raise AssertionError(
                        f"shown {seen}, stored {sizes}, layers {layer_events}, producer {scores}"
                    ) from None
                state = await subject()
            finally:
                await browser.close()
        finished = SessionFinished(
            correlation_id="session-1", session_id="session-1", status=SessionStatus.FAILED
        )
        await calls.on_event(EventKey.SESSION_FINISHED, finished.model_dump_json().encode())
        outcome = await asyncio.wait_for(calls.wait("flow-1"), 60)
        await until(lambda: bool(room.of("peerClosed", peerId="faceproof")))
    sizes = [(frame.width, frame.height) for frame in events.of(FrameCaptured)]

    assert state["joined"] and state["produced"] and state["consumed"] >= 1, state
    assert len(events.of(SessionStarted)) == 1  # started by the browser's first frame
    assert outcome.failure is None and events.of(CallFailed) == []
    # the agent consumed the browser's video and the browser the agent's, through mediasoup
    assert room.of("consuming", peerId="faceproof", producerPeerId="subject", kind="video")
    assert room.of("consuming", peerId="subject", producerPeerId="faceproof", kind="video")
    produced = room.of("produced", peerId="subject", kind="video")
    consumed = room.of("consuming", peerId="faceproof", producerPeerId="subject", kind="video")
    if layers:
        assert produced[0]["type"] == "simulcast" and produced[0]["encodings"] == layers, produced
        assert consumed[0]["type"] == "simulcast", consumed
        forwarded = [event["layers"] for event in room.of("layerschange", peerId="faceproof")]
        assert forwarded and forwarded[-1]["spatialLayer"] == layers - 1, forwarded  # the best layer
    else:
        assert produced[0]["type"] == "simple" and consumed[0]["type"] == "simple"
    # stored as the camera sent them: the best layer (a room may start lower while it estimates)
    assert sizes[-1] == (640, 480) and set(sizes) <= {(320, 240), (640, 480)}, sizes
