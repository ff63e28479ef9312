"""A subject who is not ready at first: an unready version of a recording's own first frames.

Used by ``faceproof eval liveness --unready`` (:mod:`faceproof.evaluation.liveness`) to simulate
a user who starts the session in a poor position or light and corrects after the "get ready"
hint. A recording cannot react to guidance, so the correction is scripted: the first
``seconds`` of the session show the recording's first frames made unready by one of the
conditions the pre-checks name (:class:`contracts.values.Precheck`), then the recording itself
plays. What each condition does to a frame (OpenCV only, from the recording itself):

* ``dark`` (TOO_DARK): the picture darkened so the face box's centre averages
  :data:`DARK_FACE_LUMA` of 255 (the pre-check's limit is 28), with a little sensor noise;
* ``far`` (FACE_TOO_SMALL): the picture shrunk about the frame's centre so the face box's longer
  side is :data:`FAR_RELATIVE_SIZE` of the frame's shorter side (the pre-check asks for 0.25, the
  challenges' gate fails under 0.15), the rest of the frame the picture's mean colour (a wall);
* ``cut_off`` (FACE_OUT_OF_FRAME): the picture shifted sideways until :data:`CUT_OFF_SHARE` of the
  face box's width is past the frame's edge (the side nearer the face), the uncovered strip
  the picture's mean colour.

Not simulated: looking away (a turned head cannot be made from a frontal frame with a 2D warp;
the mesh reads a warped face's pose unreliably), backlight, a second person. The prefix is a
cut, not a movement: the frame after it is the recording as it plays.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "CUT_OFF_SHARE",
    "DARK_FACE_LUMA",
    "FAR_RELATIVE_SIZE",
    "Unready",
    "face_luma",
    "unready_frame",
    "unready_prefix",
]

Image = npt.NDArray[np.uint8]
Box = tuple[float, float, float, float]

#: ``dark``: the mean luma of the face box's centre after darkening (TOO_DARK under 28).
DARK_FACE_LUMA: Final = 16.0
#: ``dark``: the standard deviation of the added sensor noise (luma levels).
DARK_NOISE: Final = 2.0
#: ``far``: the face box's longer side over the frame's shorter side (FACE_TOO_SMALL under 0.25,
#: the challenges' FACE_TOO_SMALL gate under 0.15: a face this far is refused by the pre-checks
#: but measured by the challenges).
FAR_RELATIVE_SIZE: Final = 0.19
#: ``cut_off``: the share of the face box's width pushed past the frame's edge.
CUT_OFF_SHARE: Final = 0.4


class Unready(StrEnum):
    DARK = "dark"
    FAR = "far"
    CUT_OFF = "cut_off"


def face_luma(image: Image, box: Box) -> float:
    """Mean luma (0-255) of the middle half of ``box`` (x1, y1, x2, y2 in pixels)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    height, width = image.shape[:2]
    left, right = int(max(x1 + w / 4, 0)), int(min(x2 - w / 4, width))
    top, bottom = int(max(y1 + h / 4, 0)), int(min(y2 - h / 4, height))
    if right <= left or bottom <= top:
        raise ValueError(f"the face box {box} is outside the {width}x{height} frame")
    gray = cv2.cvtColor(image[top:bottom, left:right], cv2.COLOR_BGR2GRAY)
    return float(gray.mean())


def _wall(image: Image) -> tuple[float, float, float]:
    b, g, r = (float(v) for v in image.reshape(-1, 3).mean(axis=0))
    return b, g, r


def _warp(image: Image, scale: float, pivot: tuple[float, float], shift: tuple[float, float]) -> Image:
    height, width = image.shape[:2]
    px, py = pivot
    matrix = np.array(
        [[scale, 0.0, (1.0 - scale) * px + shift[0]], [0.0, scale, (1.0 - scale) * py + shift[1]]],
        dtype=np.float64,
    )
    warped = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_AREA, borderValue=_wall(image))
    return np.asarray(warped, dtype=np.uint8)


def unready_frame(image: Image, box: Box, condition: Unready, *, seed: int = 0) -> Image:
    """``image`` (BGR) made unready by ``condition``; ``box``: the face box in it (pixels)."""
    x1, y1, x2, y2 = box
    height, width = image.shape[:2]
    if condition is Unready.DARK:
        factor = DARK_FACE_LUMA / max(face_luma(image, box), 1.0)
        noise = np.random.default_rng(seed).normal(0.0, DARK_NOISE, image.shape)
        dark = image.astype(np.float64) * min(factor, 1.0) + noise
        return np.asarray(np.clip(np.rint(dark), 0, 255), dtype=np.uint8)
    if condition is Unready.FAR:
        size = max(x2 - x1, y2 - y1) / min(width, height)
        scale = min(FAR_RELATIVE_SIZE / max(size, 1e-6), 1.0)
        return _warp(image, scale, (width / 2, height / 2), (0.0, 0.0))
    # CUT_OFF: push the face past the nearer side edge
    face_width = x2 - x1
    if (x1 + x2) / 2 >= width / 2:
        shift = width - x2 + CUT_OFF_SHARE * face_width
    else:
        shift = -(x1 + CUT_OFF_SHARE * face_width)
    return _warp(image, 1.0, (0.0, 0.0), (shift, 0.0))


def unready_prefix(
    frames: Sequence[Image], box: Box, condition: Unready, count: int, *, seed: int = 0
) -> tuple[Image, ...]:
    """``count`` frames: the first ``count`` of ``frames`` (the last one repeated when there are
    fewer) made unready by ``condition``; ``box``: the face box on the first frame, used for all
    (the prefix is short: a subject barely moves in it)."""
    if not frames:
        raise ValueError("no frames to make unready")
    return tuple(
        unready_frame(frames[min(k, len(frames) - 1)], box, condition, seed=seed + k) for k in range(count)
    )
