"""Streams that are not a live camera's: frozen pictures, and a media clock running ahead (pure
numpy, no model).

A live camera never delivers the same picture twice: the sensor's noise, the subject's breathing
and the auto-exposure change every frame a little. An injected stream often does: a still image
or a paused video fed through a virtual camera repeats one picture for as long as it lasts, and a
low-frame-rate video pushed through a 30 fps device repeats each picture several times.

Per frame, :func:`frame_content` keeps the mean luma of an 8x8 grid of blocks (64 numbers, one
decimal: a picture far too coarse to show a face); :func:`same_content` calls two frames the
same when no block's mean moved more than :data:`SAME_CONTENT_MAX_CHANGE` luma levels.
:class:`FrozenCheck` follows the judged frames in order and says FROZEN_STREAM once a run of
``min_run`` consecutive frames repeats one picture (docs/liveness.md, "Injected and replayed
streams"; thresholds measured there on the shared recordings).

A live camera's frames cannot arrive before they were taken, so their timestamps never run ahead
of the call agent's clock by more than a first frame's delay (``services/call_agent/media_clock.py``
measures the lead, ``FrameCaptured.media_lead_s``); :func:`media_clock_ahead` says
MEDIA_CLOCK_AHEAD past :data:`MEDIA_LEAD_LIMIT_S`: a recording pushed faster than real time, or
timestamps that jump forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from services.liveness.progress import FrozenState

__all__ = [
    "FROZEN_STREAM",
    "GRID",
    "MEDIA_CLOCK_AHEAD",
    "MEDIA_LEAD_LIMIT_S",
    "SAME_CONTENT_MAX_CHANGE",
    "FrozenCheck",
    "content_change",
    "frame_content",
    "media_clock_ahead",
    "same_content",
]

#: Reason code of a session whose stream repeated one picture for ``FrozenCheck.min_run`` frames.
FROZEN_STREAM: Final = "FROZEN_STREAM"
#: Blocks per side of the content grid.
GRID: Final = 8
#: Largest change of a block's mean luma (0..255) between two frames called "the same picture".
SAME_CONTENT_MAX_CHANGE: Final = 0.5
#: Consecutive repeats (frames equal to the one before) that make a stream frozen: 24 frames,
#: three seconds at the worker's 8 fps. One second (8) failed a subject who rejoined a call and
#: waited, still, for the instruction (tests/e2e/test_mediasoup_room_e2e.py); a person holding
#: still that long is not an attack, and a still or paused injection lasts far longer.
FROZEN_MIN_RUN: Final = 24
#: Reason code of a session whose stream's media clock ran ahead of the call agent's.
MEDIA_CLOCK_AHEAD: Final = "MEDIA_CLOCK_AHEAD"
#: The largest lead a live camera's media clock may show, in seconds: what its first frame's delay
#: can explain (network, decoder, a busy agent), with a wide margin (docs/liveness.md).
MEDIA_LEAD_LIMIT_S: Final = 5.0


def frame_content(frame_bgr: npt.NDArray[np.uint8]) -> tuple[float, ...]:
    """The frame's mean luma per block of a ``GRID`` x ``GRID`` grid, row by row, one decimal."""
    gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    blocks = cv2.resize(gray.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
    return tuple(round(float(v), 1) for v in blocks.reshape(-1))


def media_clock_ahead(lead_s: float | None) -> bool:
    """Whether a stream's media clock ran ahead of the call agent's by more than a camera's can."""
    return lead_s is not None and lead_s > MEDIA_LEAD_LIMIT_S


def content_change(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest change of one block's mean luma between two frames' contents."""
    if len(a) != len(b):
        return float("inf")
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=float("inf"))


def same_content(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """Whether two frames show the same picture (False when either is not known)."""
    return a is not None and b is not None and content_change(a, b) <= SAME_CONTENT_MAX_CHANGE


@dataclass
class FrozenCheck:
    """Follows a session's frames in order: ``run`` repeats in a row now, ``longest`` so far,
    ``repeats`` of ``pairs`` compared. Its fields are its whole state (stored in the replay's
    progress)."""

    min_run: int = FROZEN_MIN_RUN
    last: tuple[float, ...] | None = None
    run: int = 0
    longest: int = 0
    repeats: int = 0
    pairs: int = 0

    def update(self, content: Sequence[float] | None) -> None:
        """The next frame's content (None: not known, e.g. stored before this check: no verdict)."""
        if content is None:
            self.last, self.run = None, 0
            return
        current = tuple(content)
        if self.last is not None:
            self.pairs += 1
            if same_content(self.last, current):
                self.repeats += 1
                self.run += 1
                self.longest = max(self.longest, self.run)
            else:
                self.run = 0
        self.last = current

    @property
    def frozen(self) -> bool:
        return self.longest >= self.min_run

    def snapshot(self) -> FrozenState:
        last = None if self.last is None else list(self.last)
        return FrozenState(
            last=last, run=self.run, longest=self.longest, repeats=self.repeats, pairs=self.pairs
        )

    @classmethod
    def resume(cls, state: FrozenState, min_run: int = FROZEN_MIN_RUN) -> FrozenCheck:
        last = None if state.last is None else tuple(state.last)
        return cls(min_run, last, state.run, state.longest, state.repeats, state.pairs)
