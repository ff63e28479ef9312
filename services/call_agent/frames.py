"""The subject's camera frames, shared by hosted sessions and video-call rooms: sampled at the
frame rate, fitted into 640x480, stored as JPEG under the session, announced as FrameCaptured.

The receiving side (:meth:`FramePipeline.offer`) never blocks the track: past
:data:`FRAME_BACKLOG` waiting frames a sampled frame is dropped. Once the session finished
(:meth:`FramePipeline.stop`) or was erased (the store refuses: ``infra.erasure.SessionErased``)
nothing more is stored; an erasure also calls ``on_erased`` (the connection hangs up). The writer
(:meth:`FramePipeline.run`) encodes off the event loop with its own converter, because the
instruction video converts the same frame in another thread at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
from av import VideoFrame
from av.video.reformatter import VideoReformatter

from contracts.envelope import utc_now
from contracts.events import FrameCaptured
from contracts.routing import CONNECTION_SEQUENCE_STRIDE, EventKey
from domain.ports import EventPublisher
from infra.erasure import SessionErased
from infra.publisher import PublishFailed
from infra.storage import ObjectStore, StorageError
from infra.telemetry.metrics import frame_received, frame_stored
from services.call_agent.media_clock import MediaClock
from services.call_agent.sampling import ArrivalLimit, FrameSampler, encode_jpeg, fit_size
from services.call_agent.video import LatestFrame

__all__ = ["FRAME_BACKLOG", "FramePipeline", "encode_frame", "frame_key"]

log = logging.getLogger("faceproof.call_agent")

#: Sampled frames waiting to be encoded and stored; beyond this a frame is dropped (never blocks).
FRAME_BACKLOG = 16
#: Frames kept per second of the agent's clock, at most, as a multiple of the frame rate
#: (:class:`ArrivalLimit`): the sender's timestamps alone decide nothing.
ARRIVAL_RATE_FACTOR = 1.25


def frame_key(session_id: str, sequence: int) -> str:
    return f"sessions/{session_id}/frames/{sequence:08d}.jpg"


def encode_frame(
    frame: VideoFrame, quality: int, reformatter: VideoReformatter | None = None
) -> tuple[bytes, int, int]:
    """The raw (not mirrored) camera frame, fitted into 640x480, as JPEG bytes, width, height.

    ``reformatter`` is the caller's own (default: a fresh one), never ``frame.reformat``: the
    instruction video converts the same frame in another thread at the same time."""
    width, height = fit_size(frame.width, frame.height)
    scaled = (reformatter or VideoReformatter()).reformat(
        frame, width=width, height=height, format="bgr24", interpolation="AREA", threads=1
    )
    image = np.asarray(scaled.to_ndarray(), dtype=np.uint8)
    return encode_jpeg(image, quality), width, height


class FramePipeline:
    """One stream's frames: the latest for the instruction video, the sampled ones to storage."""

    def __init__(
        self,
        *,
        session_id: str,
        connection_id: str,
        client_id: str | None,
        sequence_base: int,
        frame_rate: float,
        jpeg_quality: int,
        store: ObjectStore,
        events: EventPublisher,
        kind: str,
        log_extra: dict[str, Any],
        on_erased: Callable[[], None] | None = None,
        shown: Callable[[], int] | None = None,
    ) -> None:
        self.session_id = session_id
        self.connection_id = connection_id
        self.latest = LatestFrame()
        self.stored = 0
        self._client_id = client_id
        self._next_sequence = sequence_base
        self._sampler = FrameSampler(frame_rate)
        self._arrivals = ArrivalLimit(rate=ARRIVAL_RATE_FACTOR * frame_rate, burst=2 * frame_rate)
        self._clock = MediaClock()
        self._quality = jpeg_quality
        self._store = store
        self._events = events
        self._kind = kind
        self._log_extra = log_extra
        self._on_erased = on_erased
        self._shown = shown
        self._stopped = False
        self._queue: asyncio.Queue[tuple[int, VideoFrame, datetime, int | None, float | None]] = (
            asyncio.Queue(maxsize=FRAME_BACKLOG)
        )

    def offer(self, frame: VideoFrame) -> None:
        """A frame arrived: show it in the instruction video; keep it if the sampler wants it."""
        frame_received(self._kind)
        self.latest.frame = frame
        now = time.monotonic()
        lead = self._clock.tick(frame.time, now)
        at = frame.time if frame.time is not None else now
        if self._stopped or self._queue.full() or not self._sampler.wants(at) or not self._arrivals.take(now):
            return
        self._sampler.keep(at)
        shown = self._shown() if self._shown is not None else None
        self._queue.put_nowait((self._next_sequence, frame, utc_now(), shown, lead))
        self._next_sequence += 1

    def reconnect(self) -> None:
        """The subject's video came back on a new track: number the next frames as a new
        connection's (the liveness worker restarts the current challenge at its first frame)."""
        self._clock.restart()
        self._next_sequence = (
            self._next_sequence // CONNECTION_SEQUENCE_STRIDE + 1
        ) * CONNECTION_SEQUENCE_STRIDE

    def stop(self) -> None:
        """Store nothing more (the session finished or was erased); the video still shows frames."""
        if not self._stopped:
            log.info("the media clock led by at most %.3f s", self._clock.most, extra=self._log_extra)
        self._stopped = True

    async def run(self) -> None:
        """Encode, store and announce the kept frames, until cancelled."""
        reformatter = VideoReformatter()
        while True:
            sequence, frame, captured_at, shown, lead = await self._queue.get()
            if self._stopped:
                continue
            data, width, height = await asyncio.to_thread(encode_frame, frame, self._quality, reformatter)
            key = frame_key(self.session_id, sequence)
            try:
                await self._store.put(key, data, "image/jpeg")
                await self._events.event(
                    FrameCaptured(
                        correlation_id=self.session_id,
                        client_id=self._client_id,
                        session_id=self.session_id,
                        connection_id=self.connection_id,
                        sequence=sequence,
                        storage_key=key,
                        width=width,
                        height=height,
                        captured_at=captured_at,
                        shown=shown,
                        media_lead_s=None if lead is None else round(lead, 3),
                    ),
                    EventKey.FRAME_CAPTURED,
                )
            except SessionErased:
                log.info("the session was erased: no more frames stored", extra=self._log_extra)
                self.stop()
                if self._on_erased is not None:
                    self._on_erased()
                continue
            except (StorageError, PublishFailed) as error:
                log.warning("frame %d lost (%s)", sequence, type(error).__name__, extra=self._log_extra)
                continue
            self.stored += 1
            frame_stored(self._kind)
