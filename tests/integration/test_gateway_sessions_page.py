"""The hosted page in a real browser (Debian's chromium, fake camera) against the real gateway:
it streams over WebRTC to a stand-in call agent (a real aiortc peer on the real broker), shows the
data channel's instruction, and ends on the result screen the call agent announces."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import uvicorn
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdatachannel import RTCDataChannel

from contracts.events import SessionStarted
from contracts.routing import CALL_AGENT_SESSIONS
from infra.settings import Settings
from services.gateway.app import create_app
from tests.support.broker import temporary_vhost
from tests.support.services import SeaweedFS, free_ports

pytestmark = pytest.mark.integration

API = {"Authorization": "Bearer api-token"}


class _AiortcAgent:
    """Answers StartSession with a real aiortc peer; on the data channel sends one challenge, then
    ``finished`` once the browser's video arrives."""

    def __init__(self, vhost_url: str) -> None:
        self.vhost_url = vhost_url
        self.video_frames = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._peers: list[RTCPeerConnection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._video = asyncio.Event()  # replaced in the agent's own loop
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, offer_sdp: str) -> str:
        pc = RTCPeerConnection()
        self._peers.append(pc)

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            async def script() -> None:
                channel.send(
                    json.dumps(
                        {
                            "type": "challenge",
                            "index": 0,
                            "count": 2,
                            "challenge": "BLINK",
                            "text": "Blink now",
                        }
                    )
                )
                await asyncio.wait_for(self._video.wait(), timeout=60)
                await asyncio.sleep(1.0)
                channel.send(
                    json.dumps({"type": "finished", "status": "SUCCEEDED", "reasons": [], "text": "All done"})
                )

            self._spawn(script())

        @pc.on("track")
        def on_track(track: Any) -> None:
            async def read() -> None:
                while True:
                    try:
                        await track.recv()
                    except Exception:  # the track ended (MediaStreamError): stop reading
                        return
                    self.video_frames += 1
                    if self.video_frames >= 3:
                        self._video.set()

            self._spawn(read())

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._video = asyncio.Event()
        connection = await aio_pika.connect(self.vhost_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(CALL_AGENT_SESSIONS.queue)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    command = json.loads(message.body)
                    answer = SessionStarted(
                        correlation_id=command["correlation_id"],
                        session_id=command["session_id"],
                        connection_id=command["connection_id"],
                        answer_sdp=await self._answer(command["offer_sdp"]),
                    )
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            answer.model_dump_json().encode(), correlation_id=message.correlation_id
                        ),
                        routing_key=str(message.reply_to),
                    )

            tag = await queue.consume(on_message)
            self._ready.set()
            await self._stop.wait()
            await queue.cancel(tag)
            for pc in self._peers:
                await pc.close()

    def __enter__(self) -> _AiortcAgent:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture
def served_gateway(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str, seaweedfs: SeaweedFS
) -> Iterator[tuple[str, str]]:
    """The gateway; Chromium's fake camera names itself "fake_device_0", so the virtual-camera
    check is off unless a test asks for it (``indirect`` parameter True)."""
    port = free_ports(1)[0]
    with temporary_vhost() as vhost:
        settings = Settings(
            data_dir=tmp_path,
            database_url=postgres_url,
            storage_url=seaweedfs.url,
            broker_url=vhost.url,
            api_token="api-token",
            offer_timeout_s=30,
            reject_virtual_cameras=getattr(request, "param", False),
        )
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.started, "the gateway did not start"
        try:
            yield url, vhost.url
        finally:
            server.should_exit = True
            thread.join(30)


def _launch(playwright: Any) -> Any:
    if shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is needed for the browser test")
    return playwright.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
        ],
    )


def test_page_streams_and_shows_the_result(served_gateway: tuple[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, vhost_url = served_gateway
    created = httpx.post(f"{url}/v1/sessions", json={}, headers=API, timeout=30).json()
    results: list[Any] = []
    with _AiortcAgent(vhost_url) as agent, sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            page.on("console", lambda message: results.append(message.text))
            page.goto(created["clientUrl"])
            # (wait_for_function would need eval, which the page's CSP forbids)
            expect(page.locator("#instruction")).to_have_text("Blink now", timeout=60_000)
            assert "#token" not in page.url  # the token left the address bar
            page.wait_for_selector("#result[data-status='SUCCEEDED']", timeout=60_000)
            assert "All done" in page.inner_text("#result")
        finally:
            browser.close()
    assert agent.video_frames >= 3, results


@pytest.mark.parametrize("served_gateway", [True], indirect=True)
def test_chromiums_fake_camera_fails_as_a_virtual_camera(served_gateway: tuple[str, str]) -> None:
    """With the check on (production's default), the page's report of Chromium's fake camera
    fails the session before any video flows: FAILED on the page and over the API, VIRTUAL_CAMERA."""
    from playwright.sync_api import sync_playwright

    url, vhost_url = served_gateway
    created = httpx.post(f"{url}/v1/sessions", json={}, headers=API, timeout=30).json()
    console: list[str] = []
    with _AiortcAgent(vhost_url) as agent, sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page()
            page.on("console", lambda message: console.append(message.text))
            page.goto(created["clientUrl"])
            page.wait_for_selector("#result[data-status]", timeout=60_000)
            shown = page.get_attribute("#result", "data-status")
            reason = page.text_content("#reason") if page.query_selector("#reason") else None
        finally:
            browser.close()
    status = httpx.get(f"{url}/v1/sessions/{created['sessionId']}", headers=API, timeout=30).json()
    assert shown == "FAILED", console
    assert reason == "Use your device's own camera, not a virtual one.", reason  # what to do instead
    assert status["status"] == "FAILED" and status["reasons"] == ["VIRTUAL_CAMERA"], status
    assert status["confidence"] == 0
    assert agent.video_frames == 0  # no call agent was asked: nothing streamed
