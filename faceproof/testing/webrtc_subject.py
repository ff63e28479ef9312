"""A subject that joins a liveness session the way the hosted page does, over real WebRTC (the
end-to-end tests and ``faceproof bench soak`` use it).

It posts its SDP offer to the gateway with the session's client token, sends camera frames from a
:class:`FrameSource` at the worker's 8 fps on a real aiortc video track, receives the call agent's
instruction video, and reads the instructions from the ``faceproof`` data channel, handing each
one to its source (a scripted subject answers it; an attack may ignore it).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
import cv2
import httpx
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from contracts.values import ChallengeType
from faceproof.testing.scripted_subject import WORKER_FPS, Media, ScriptedSubject
from services.liveness.challenges import Challenge

Image = npt.NDArray[np.uint8]
VIDEO_CLOCK_RATE = 90_000


class FrameSource(Protocol):
    def instruct(self, message: dict[str, Any]) -> None:
        """A ``challenge`` message from the data channel arrived."""

    def next_frame(self) -> Image:
        """The next camera picture (BGR)."""


@dataclass
class ScriptedSource:
    """Answers each challenge with the scripted subject's annotated segments of its video."""

    subject: ScriptedSubject
    search: bool = False
    _started: bool = False

    def instruct(self, message: dict[str, Any]) -> None:
        target = message.get("target")
        challenge = Challenge(
            ChallengeType(message["challenge"]),
            None if target is None else (float(target[0]), float(target[1])),
        )
        self.subject.prepare_one(int(message["index"]), challenge, search=self.search)
        self.subject.instruct(int(message["index"]))
        self._started = True

    def next_frame(self) -> Image:
        if not self._started:
            return self.subject.media.frame(0)
        return self.subject.next_frame()


@dataclass
class PlaybackSource:
    """Plays its material in a loop, whatever it is asked (a replay, or a subject who ignores)."""

    media: Media
    transform: Callable[[Image, int], Image] | None = None
    _index: int = 0

    def instruct(self, message: dict[str, Any]) -> None:
        return None

    def next_frame(self) -> Image:
        index = self._index
        self._index += 1
        image = self.media.frame(index % len(self.media.frames))
        return self.transform(image, index) if self.transform is not None else image


@dataclass
class SwitchingSource:
    """One source until challenge ``switch_at`` is issued, then another (a person swapped halfway)."""

    first: FrameSource
    second: FrameSource
    switch_at: int = 1
    _switched: bool = False

    def instruct(self, message: dict[str, Any]) -> None:
        if int(message["index"]) >= self.switch_at:
            self._switched = True
        (self.second if self._switched else self.first).instruct(message)

    def next_frame(self) -> Image:
        return (self.second if self._switched else self.first).next_frame()


@dataclass
class OnScreen:
    """A subject in a video call who answers a challenge once the call agent's video shows it, as
    a person reacts to the picture: each ChallengeIssued (``instruct``) is held until a frame the
    agent captured says it had drawn that instruction (:meth:`seen` with FrameCaptured.shown).
    Handed the event itself, a scripted subject raced the agent under load and moved before the
    frames that make the challenge's baseline (the first ones taken while it was shown)."""

    source: FrameSource
    #: The highest challenge index the agent's video showed (-1: none yet).
    shown: int = -1
    _pending: dict[int, dict[str, Any]] = field(default_factory=dict)

    def instruct(self, message: dict[str, Any]) -> None:
        self._pending[int(message["index"])] = message
        self._release()

    def seen(self, shown: int | None) -> None:
        """A FrameCaptured of the session arrived (``shown`` None: the agent does not say)."""
        if shown is not None:
            self.shown = max(self.shown, shown)
        self._release()

    def next_frame(self) -> Image:
        return self.source.next_frame()

    def _release(self) -> None:
        for index in sorted(i for i in self._pending if i <= self.shown):
            self.source.instruct(self._pending.pop(index))


def moved_in_plane(image: Image, index: int) -> Image:
    """The photo rotated up to 25 degrees in the image plane and slid around, as a hand would."""
    height, width = image.shape[:2]
    t = index / WORKER_FPS
    angle = 25.0 * math.sin(t * 1.3)
    dx, dy = 0.08 * width * math.sin(t * 0.9), 0.05 * height * math.cos(t * 1.1)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    matrix[:, 2] += (dx, dy)
    return np.asarray(cv2.warpAffine(image, matrix, (width, height), borderValue=(0, 0, 0)), dtype=np.uint8)


class SourceTrack(VideoStreamTrack):
    """A camera track at 8 fps fed by a :class:`FrameSource`. ``media_clock``: how fast the clock
    that stamps its frames runs against real time (1, a camera; more, a stream pushed ahead of
    real time, which the call agent's media clock catches)."""

    def __init__(self, source: FrameSource, fps: float = WORKER_FPS, media_clock: float = 1.0) -> None:
        super().__init__()
        self.source = source
        self.fps = fps
        self.media_clock = media_clock
        self._count = 0
        self._began: float | None = None

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self._began is None:
            self._began = loop.time()
        due = self._began + self._count / self.fps
        await asyncio.sleep(max(0.0, due - loop.time()))
        image = self.source.next_frame()
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        # a camera stamps its frames on schedule; a fast clock, media_clock times the real time
        # elapsed (however late a loaded sender makes its frames)
        elapsed = self._count / self.fps if self.media_clock == 1.0 else loop.time() - self._began
        frame.pts = round(elapsed * self.media_clock * VIDEO_CLOCK_RATE)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self._count += 1
        return frame


@dataclass
class SessionRun:
    """What the subject saw: data channel messages, instruction frames received, the answer."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    frames_received: int = 0
    last_frame: Image | None = None

    @property
    def finished(self) -> dict[str, Any] | None:
        return next((m for m in self.messages if m.get("type") == "finished"), None)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


async def post_offer(
    base_url: str, session_id: str, client_token: str, pc: RTCPeerConnection
) -> httpx.Response:
    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)  # aiortc gathers every ICE candidate here
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        return await http.post(
            f"/v1/sessions/{session_id}/offer",
            headers={"Authorization": f"Bearer {client_token}"},
            json={"sdp": pc.localDescription.sdp, "type": pc.localDescription.type},
        )


async def run_subject(
    base_url: str,
    session_id: str,
    client_token: str,
    source: FrameSource,
    *,
    timeout_s: float = 90.0,
    stop_after: Callable[[SessionRun], bool] | None = None,
    media_clock: float = 1.0,
) -> SessionRun:
    """Join the session, stream until the ``finished`` message (or ``stop_after``), hang up
    (``media_clock``: :class:`SourceTrack`'s)."""
    run = SessionRun()
    done = asyncio.Event()
    pc = RTCPeerConnection()
    channel = pc.createDataChannel("faceproof")
    pc.addTransceiver(SourceTrack(source, media_clock=media_clock), direction="sendrecv")

    @channel.on("message")
    def on_message(raw: str | bytes) -> None:
        message = json.loads(raw)
        run.messages.append(message)
        if message.get("type") == "challenge":
            source.instruct(message)
        if message.get("type") == "finished" or (stop_after is not None and stop_after(run)):
            done.set()

    async def consume(track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:  # the track ends when the agent hangs up
                return
            run.frames_received += 1
            if run.frames_received % 8 == 0 and isinstance(frame, av.VideoFrame):
                run.last_frame = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)

    consumers: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            consumers.append(asyncio.ensure_future(consume(track)))

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            done.set()

    try:
        response = await post_offer(base_url, session_id, client_token, pc)
        if response.status_code != 200:
            raise AssertionError(f"offer refused: {response.status_code} {response.text}")
        answer = response.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        async with asyncio.timeout(timeout_s):
            await done.wait()
        await asyncio.sleep(0.5)  # let the last messages and frames arrive
    finally:
        await pc.close()
        for task in consumers:
            task.cancel()
    return run
