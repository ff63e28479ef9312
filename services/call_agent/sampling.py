"""Frame sampling, fitting and JPEG encoding: pure functions of frame times and pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["MAX_HEIGHT", "MAX_WIDTH", "ArrivalLimit", "FrameSampler", "encode_jpeg", "fit_image", "fit_size"]

MAX_WIDTH = 640
MAX_HEIGHT = 480

Image = npt.NDArray[np.uint8]


@dataclass
class FrameSampler:
    """Keeps at most ``fps`` frames per second of frame time.

    Frame time is cut into slots of ``1/fps`` seconds (rounded to the nearest slot, so a stream
    that already runs at ``fps`` with some jitter keeps every frame); the first frame of each
    new slot is kept. A clock that jumps back (a new stream, a timestamp wrap) starts afresh.
    """

    fps: float
    _last_slot: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError("fps must be positive")

    def wants(self, time_s: float) -> bool:
        """Whether :meth:`keep` would keep a frame of ``time_s`` (nothing changes)."""
        slot = math.floor(time_s * self.fps + 0.5)
        return self._last_slot is None or not (self._last_slot - 2 * self.fps <= slot <= self._last_slot)

    def keep(self, time_s: float) -> bool:
        if not self.wants(time_s):
            return False
        self._last_slot = math.floor(time_s * self.fps + 0.5)
        return True


@dataclass
class ArrivalLimit:
    """At most ``rate`` frames a second of the agent's own clock, ``burst`` at once (a token bucket).

    The sampler reads the sender's timestamps; a sender that stamps its frames a second apart and
    sends 30 a second had every frame kept, each one encoded, stored and analysed. This bounds
    what any stream costs downstream, whatever its timestamps say; a real camera sampled at
    ``fps`` never reaches it (``rate`` is above ``fps``, and ``burst`` covers frames that arrive
    together after a network stall)."""

    rate: float
    burst: float
    _tokens: float = field(default=0.0, init=False)
    _at: float | None = field(default=None, init=False)

    def take(self, now: float) -> bool:
        if self._at is None:
            self._tokens = self.burst
        else:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def fit_size(
    width: int, height: int, max_width: int = MAX_WIDTH, max_height: int = MAX_HEIGHT
) -> tuple[int, int]:
    """The largest size within ``max_width`` x ``max_height`` with the aspect of ``width`` x ``height``;
    never larger than the input (no upscaling). Even sizes are not forced."""
    if width <= 0 or height <= 0:
        raise ValueError("an image needs a positive size")
    scale = min(1.0, max_width / width, max_height / height)
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_image(image: Image, max_width: int = MAX_WIDTH, max_height: int = MAX_HEIGHT) -> Image:
    height, width = image.shape[:2]
    size = fit_size(width, height, max_width, max_height)
    if size == (width, height):
        return image
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def encode_jpeg(image_bgr: Image, quality: int) -> bytes:
    """JPEG bytes of a BGR image (OpenCV's channel order)."""
    ok, buffer = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("the image could not be encoded as JPEG")
    return bytes(buffer.tobytes())
