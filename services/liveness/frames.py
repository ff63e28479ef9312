"""Analysing one stored frame off the event loop: face analysis, anti-spoofing and identity samples.

:class:`FrameProcessor` holds the models (loaded once by the composition root) and a thread pool
of ``liveness_concurrency`` threads. Frames of one session may reach different workers in any
order, so tracking is kept only where it is correct: a worker keeps a session's tracking state
(a :class:`~services.liveness.analysis.FrameAnalyzer` sharing the loaded models) and tracks frame
``n`` from the last frame of that session it analysed itself when that frame is at most
:data:`MAX_TRACK_GAP` sequences back (``n - 1`` in order; ``n - 2`` where two workers share a
session's frames, as the broker's round robin deals them). It runs the detector instead on any
other frame, on every ``detect_every``-th sequence whatever happened before, and when its own last
detection is ``detect_every`` or more sequences old. So a second face is noticed within
``detect_every`` frames, as in the offline evaluation, whichever worker analyses which frame, and
the box the mouth area is framed on (:mod:`services.liveness.mouth_area`) is never older than on
one worker. Two workers sharing a session's frames detected on every frame before (19.6-23.1 ms
of analysis per frame on three recordings against 9.9-13.9 for one worker in order); now on 40 %
of them (13.9-18.0 ms), with head poses closer to the one worker's (docs/benchmarks.md,
"Tracking across two workers").

Samples, by sequence number (so every worker takes the same ones): anti-spoofing on every
:data:`SPOOF_EVERY_FRAMES`-th frame with a face, the identity embedding on every
:data:`IDENTITY_EVERY_FRAMES`-th frame that
:meth:`~services.liveness.decision.IdentityCheck.wants`. The offline evaluation
(``faceproof eval liveness``) analyses its frames with this class too (:meth:`analyse_now`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from faces.alignment import align_face
from faces.embedding import Embedder
from services.liveness.analysis import DEFAULT_DETECT_EVERY, FrameAnalysis, FrameAnalyzer
from services.liveness.decision import IdentityCheck

__all__ = [
    "IDENTITY_EVERY_FRAMES",
    "MAX_TRACK_GAP",
    "SPOOF_EVERY_FRAMES",
    "AnalysedFrame",
    "FrameProcessor",
    "InvalidFrame",
]

#: Anti-spoofing on every 2nd frame (4 scores a second at 8 fps).
SPOOF_EVERY_FRAMES: Final = 2
#: The identity check on every 4th frame (every 0.5 s), when the face is frontal.
IDENTITY_EVERY_FRAMES: Final = 4
#: The furthest back (in sequences) a worker's own last frame of a session may be to track from it.
MAX_TRACK_GAP: Final = 2
#: Sessions whose tracking state a worker keeps (least recently used dropped first).
MAX_TRACKED_SESSIONS: Final = 256
#: A session's tracking state (its last face mesh) is dropped once no frame of it came for this long:
#: an ended or erased session's landmarks do not stay in memory, and a subject back later only
#: costs one detection.
TRACK_IDLE_S: Final = 60.0


class InvalidFrame(ValueError):
    """The stored bytes are not a decodable image (permanent: the frame is skipped)."""


@dataclass(frozen=True)
class AnalysedFrame:
    analysis: FrameAnalysis
    spoof_score: float | None
    embedding: list[float] | None


@dataclass
class _Track:
    analyzer: FrameAnalyzer
    lock: threading.Lock
    last_sequence: int | None = None
    detected_sequence: int | None = None
    used_at: float = field(default_factory=time.monotonic)

    def must_detect(self, sequence: int, detect_every: int) -> bool:
        """Whether ``sequence`` runs the detector (see the module docstring)."""
        if self.last_sequence is None or self.detected_sequence is None:
            return True
        follows = 0 < sequence - self.last_sequence <= MAX_TRACK_GAP
        stale = sequence - self.detected_sequence >= detect_every
        return not follows or stale or sequence % detect_every == 0


class FrameProcessor:
    """Per-frame work for the liveness worker; call :meth:`close` when done."""

    def __init__(
        self,
        analyzer: FrameAnalyzer,
        embedder: Embedder,
        *,
        concurrency: int,
        detect_every: int = DEFAULT_DETECT_EVERY,
    ) -> None:
        self._models = analyzer
        self._embedder = embedder
        self._detect_every = max(1, detect_every)
        self._gate = IdentityCheck(1.0)  # only its ``wants``: which frames are worth embedding
        self._tracks: OrderedDict[str, _Track] = OrderedDict()
        self._tracks_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="liveness")

    async def analyse(
        self, session_id: str, sequence: int, jpeg: bytes, *, eyes: bool = True
    ) -> AnalysedFrame:
        """``eyes=False``: no iris model (the session judges no BLINK: ``challenges.judges_eyes``)."""
        loop = asyncio.get_running_loop()
        work = partial(self.analyse_now, session_id, sequence, jpeg, eyes=eyes)
        return await loop.run_in_executor(self._pool, work)

    def forget(self, session_id: str) -> None:
        with self._tracks_lock:
            self._tracks.pop(session_id, None)

    def forget_idle(self, now: float | None = None) -> int:
        """Drop the tracking state of sessions with no frame for :data:`TRACK_IDLE_S`; how many."""
        now = time.monotonic() if now is None else now
        dropped = 0
        with self._tracks_lock:
            while self._tracks and now - next(iter(self._tracks.values())).used_at > TRACK_IDLE_S:
                self._tracks.popitem(last=False)  # least recently used first
                dropped += 1
        return dropped

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _track(self, session_id: str) -> _Track:
        with self._tracks_lock:
            track = self._tracks.get(session_id)
            if track is None:
                m = self._models
                analyzer = FrameAnalyzer(
                    m.detector,
                    m.mesh,
                    eyes=m.eyes,
                    antispoof=m.antispoof,
                    detect_every=self._detect_every,
                    presence_threshold=m.presence_threshold,
                )
                track = self._tracks[session_id] = _Track(analyzer, threading.Lock())
                while len(self._tracks) > MAX_TRACKED_SESSIONS:
                    self._tracks.popitem(last=False)
            self._tracks.move_to_end(session_id)
            track.used_at = time.monotonic()
            return track

    def analyse_now(self, session_id: str, sequence: int, jpeg: bytes, *, eyes: bool = True) -> AnalysedFrame:
        """:meth:`analyse` in the caller's thread (the offline evaluation judges one frame at a time)."""
        image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise InvalidFrame("the frame is not a decodable image")
        frame: npt.NDArray[np.uint8] = np.ascontiguousarray(image, dtype=np.uint8)
        track = self._track(session_id)
        with track.lock:
            detect = track.must_detect(sequence, self._detect_every)
            analysis = track.analyzer.analyze(frame, force_detect=detect, eyes=eyes)
            track.last_sequence = sequence
            if analysis.detected:
                track.detected_sequence = sequence
        spoof = None
        if sequence % SPOOF_EVERY_FRAMES == 0 and analysis.box is not None:
            spoof = float(self._models.spoof_score(frame, analysis.box))
        embedding = None
        if sequence % IDENTITY_EVERY_FRAMES == 0 and self._gate.wants(analysis):
            assert analysis.keypoints is not None
            vector = self._embedder.embed([align_face(frame, analysis.keypoints)])[0]
            embedding = [float(x) for x in vector]
        return AnalysedFrame(analysis, spoof, embedding)
