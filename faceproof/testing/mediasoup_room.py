"""A real mediasoup room for tests and ``faceproof bench room``: tests/support/sfu/room.js
(mediasoup 3.8.4 + protoo-server) as a process, and a subject that joins it with pymediasoup (the
same RoomPeer the call agent uses).

``scripts/mediasoup.sh`` builds the mediasoup worker once per machine (cached under
``~/.cache/faceproof``) and installs the room server's node_modules; :func:`room_server_ready`
runs it (seconds once cached) and says why not when the build failed, so a test can skip with the
build's error. The room writes one JSON line per event to stdout; :class:`MediasoupRoom` keeps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from infra.safe_fetch import FetchPolicy
from services.call_agent.room.errors import RoomError
from services.call_agent.room.mediasoup import RoomConfig, RoomPeer
from services.call_agent.room.protoo import ProtooClient

__all__ = ["SFU_DIR", "MediasoupRoom", "RoomSubject", "room_server_ready", "run_bounded"]

ROOT = Path(__file__).resolve().parents[2]
SFU_DIR = ROOT / "tests" / "support" / "sfu"
_READY: list[str | None] = []


def room_server_ready() -> str | None:
    """Build or reuse the room server (scripts/mediasoup.sh); None when ready, else the build's
    error (what a test that needs it prints when it skips). Runs the script once per process."""
    if not _READY:
        done = subprocess.run(
            [str(ROOT / "scripts" / "mediasoup.sh")],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        _READY.append(None if done.returncode == 0 else (done.stderr or done.stdout)[-4000:])
    return _READY[0]


class MediasoupRoom:
    """``async with MediasoupRoom("--resume", "server") as room: url = room.url("r1", "faceproof")``."""

    def __init__(self, *options: str) -> None:
        self.options = options
        self.port = 0
        self.version = ""
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MediasoupRoom:
        self._process = await asyncio.create_subprocess_exec(
            "node",
            str(SFU_DIR / "room.js"),
            *self.options,
            cwd=SFU_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        async with asyncio.timeout(30):
            first = await self._process.stdout.readline()
        if not first:
            stderr = await self._process.stderr.read() if self._process.stderr else b""
            raise RuntimeError(f"the room server did not start: {stderr.decode(errors='replace')[-2000:]}")
        hello = json.loads(first)
        self.port, self.version = int(hello["port"]), str(hello["mediasoup"])
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, room_id: str, peer_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/?roomId={room_id}&peerId={peer_id}"

    def of(self, event: str, **fields: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 60.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():  # noqa: ASYNC110 - the reader task fills self.events
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """The room server dies (SIGKILL): every socket drops at once."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self._process.wait()
            except TimeoutError:
                await self.kill()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            with contextlib.suppress(json.JSONDecodeError):
                self.events.append(json.loads(line))


class RoomSubject:
    """The person in the call: a pymediasoup peer producing ``camera`` and counting the frames of
    the instruction video it consumes (the call agent's); ``last_frame`` is the last one."""

    def __init__(self, camera: MediaStreamTrack, *, policy: FetchPolicy) -> None:
        self.camera = camera
        self.received_frames = 0
        self.last_frame: VideoFrame | None = None
        self.failures: list[RoomError] = []
        self._client = ProtooClient(policy=policy, request_timeout_s=15, open_timeout_s=15)
        self._peer = RoomPeer(
            self._client,
            RoomConfig(request_timeout_s=15, address_policy=policy, display_name="subject"),
            on_track=self._on_track,
            on_failure=self.failures.append,
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self, url: str) -> None:
        await self._client.connect(url)
        await self._peer.join(self.camera)

    async def leave(self) -> None:
        """Hang up: leaveRoom, close the transports and the socket (the camera stops)."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(RoomError):
            await self._peer.leave()
        await self._client.close()
        self.camera.stop()

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.create_task(self._count(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, VideoFrame):
                self.received_frames += 1
                self.last_frame = frame


T = TypeVar("T")


def run_bounded(scenario: Coroutine[Any, Any, T], *, cleanup_s: float = 10.0) -> T:
    """``asyncio.run``, except that the tasks a scenario leaves behind (WebRTC transports, socket
    readers) get ``cleanup_s`` to finish once cancelled: ``asyncio.run`` waits for them forever,
    and one that swallows its cancellation would hold the test until its timeout. Those that do
    are named in a warning."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(scenario)
    finally:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            _, stuck = loop.run_until_complete(asyncio.wait(pending, timeout=cleanup_s))
            if stuck:
                warnings.warn(
                    f"tasks that ignored their cancellation: {[t.get_coro() for t in stuck]}", stacklevel=2
                )
        loop.close()
