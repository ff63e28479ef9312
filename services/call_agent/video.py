"""The outbound instruction video: the latest camera frame, mirrored, with the instruction drawn."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from av.video.reformatter import VideoReformatter

from services.call_agent.instructions import Screen
from services.call_agent.overlay import RGB, blank_frame, render
from services.call_agent.sampling import fit_size

__all__ = ["OUTBOUND_FPS", "InstructionTrack", "LatestFrame"]

#: Frames per second of the instruction video (the browser only shows it; keep the CPU low).
OUTBOUND_FPS = 15
_CLOCK_RATE = 90_000
_TIME_BASE = fractions.Fraction(1, _CLOCK_RATE)


class LatestFrame:
    """The newest inbound camera frame (replaced as frames arrive; read by the outbound track)."""

    def __init__(self) -> None:
        self.frame: VideoFrame | None = None


def compose(
    frame: VideoFrame | None, screen: Screen, now: float, reformatter: VideoReformatter | None = None
) -> RGB:
    """Fit, mirror and draw: CPU-bound, run it in a thread.

    ``reformatter`` is the caller's own (default: a fresh one): a frame's built-in one
    (``frame.reformat``) must never be used, since the frame writer converts the same frame in
    another thread at the same time, and two threads in one swscale context can hang for good.
    """
    if frame is None:
        pixels = blank_frame()
    else:
        width, height = fit_size(frame.width, frame.height)
        width, height = max(2, width - width % 2), max(2, height - height % 2)  # 4:2:0 encoders
        scaled = (reformatter or VideoReformatter()).reformat(
            frame, width=width, height=height, format="rgb24", threads=1
        )
        pixels = np.asarray(scaled.to_ndarray(), dtype=np.uint8)
    return render(pixels, screen, now)


class InstructionTrack(MediaStreamTrack):
    """A video track of :data:`OUTBOUND_FPS` frames a second, each rendered off the event loop."""

    kind = "video"

    def __init__(
        self,
        latest: LatestFrame,
        screen: Callable[[], Screen],
        fps: int = OUTBOUND_FPS,
        rendered: Callable[[Screen], None] | None = None,
    ) -> None:
        super().__init__()
        self._latest = latest
        self._screen = screen
        self._rendered = rendered
        self._interval = 1.0 / fps
        self._start: float | None = None
        self._count = 0
        self._reformatter = VideoReformatter()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._count += 1
            wait = self._start + self._count * self._interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:  # fell behind (a loaded machine): skip ahead rather than burst
                self._count = int((time.monotonic() - self._start) / self._interval)
        now = time.monotonic()
        screen = self._screen()
        pixels = await asyncio.to_thread(compose, self._latest.frame, screen, now, self._reformatter)
        out = VideoFrame.from_ndarray(pixels, format="rgb24")
        out.pts = int((now - self._start) * _CLOCK_RATE)
        out.time_base = _TIME_BASE
        if self._rendered is not None:  # handed to the encoder now: the subject sees it next
            self._rendered(screen)
        return out
