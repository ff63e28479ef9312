"""A real browser in a real mediasoup room with the call agent: headless Chromium (mediasoup-client
bundled from npm by esbuild, served by the room server, no CDN) whose fake camera is a y4m made
from a real face video, joining AFTER the agent; the agent's RoomCall in this process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from contracts.events import CallFailed, FrameCaptured, SessionFinished, SessionStarted
from contracts.routing import EventKey
from contracts.values import SessionStatus
from faceproof.testing.mediasoup_room import MediasoupRoom, room_server_ready
from infra.storage import LocalObjectStore
from services.call_agent.room.handler import RoomCalls
from tests.e2e.test_browser_e2e import CHROMIUM, write_y4m
from tests.integration.test_room_calls import RecordingEvents, config, join_call, until
from tests.paths import DATA_DIR

pytestmark = pytest.mark.timeout(1800)  # the first run on a machine builds mediasoup's worker

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


@pytest.fixture(scope="module", autouse=True)
def room_server() -> None:
    error = room_server_ready()
    if error is not None:
        print(error)
        pytest.skip(f"the mediasoup room server could not be built: {error[-500:]}")


async def test_a_browser_subject_who_joins_late_is_seen_and_sees_the_instructions(tmp_path: Path) -> None:
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
                await page.goto(f"http://127.0.0.1:{room.port}/subject?roomId=browser&peerId=subject")

                async def subject() -> dict[str, Any]:
                    state: dict[str, Any] = await page.evaluate("window.subject")
                    assert state["error"] is None, (state, console)
                    return state

                async with asyncio.timeout(60):
                    seen = 0  # the frames the page showed of the agent's instruction video
                    while len(events.of(FrameCaptured)) < 5 or seen < 10:
                        await asyncio.sleep(0.25)
                        seen = (await subject())["framesShown"]
                state = await subject()
            finally:
                await browser.close()
        finished = SessionFinished(
            correlation_id="session-1", session_id="session-1", status=SessionStatus.FAILED
        )
        await calls.on_event(EventKey.SESSION_FINISHED, finished.model_dump_json().encode())
        outcome = await asyncio.wait_for(calls.wait("flow-1"), 60)
        await until(lambda: bool(room.of("peerClosed", peerId="faceproof")))

    assert state["joined"] and state["produced"] and state["consumed"] >= 1, state
    assert len(events.of(SessionStarted)) == 1  # started by the browser's first frame
    assert outcome.failure is None and events.of(CallFailed) == []
    # the agent consumed the browser's video and the browser the agent's, through mediasoup
    assert room.of("consuming", peerId="faceproof", producerPeerId="subject", kind="video")
    assert room.of("consuming", peerId="subject", producerPeerId="faceproof", kind="video")
