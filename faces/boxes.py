"""Box geometry shared by the detectors: letterboxing and non-maximum suppression, in numpy."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["Letterbox", "letterbox", "nms", "own_scale", "own_scale_canvas"]


@dataclass(frozen=True)
class Letterbox:
    """A BGR canvas holding the image scaled by ``scale``, padded bottom/right with 0."""

    canvas: npt.NDArray[np.uint8]
    scale: float


def _place(image_bgr: npt.NDArray[np.uint8], scale: float, height: int, width: int) -> Letterbox:
    rows, cols = image_bgr.shape[:2]
    new_w = min(width, max(1, round(cols * scale)))
    new_h = min(height, max(1, round(rows * scale)))
    if (new_h, new_w) == (rows, cols):
        resized = image_bgr
    else:
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        resized = np.asarray(cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation), np.uint8)
        if (new_h, new_w) == (height, width):  # fills the canvas (LFW's 250x250 at 416): no padding to copy
            return Letterbox(canvas=resized, scale=scale)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return Letterbox(canvas=canvas, scale=scale)


def letterbox(image_bgr: npt.NDArray[np.uint8], size: int) -> Letterbox:
    """A ``size x size`` canvas: the image scaled (down or up) so that its longer side is ``size``."""
    height, width = image_bgr.shape[:2]
    return _place(image_bgr, size / max(height, width), size, size)


def own_scale(image_bgr: npt.NDArray[np.uint8], *, cap: int, floor: int = 0, multiple: int = 32) -> Letterbox:
    """The image near its own size, padded up to multiples of ``multiple`` on each side: scaled down
    when its longer side is over ``cap``, up when under ``floor``, else left as it is."""
    height, width = image_bgr.shape[:2]
    scale, canvas = own_scale_canvas(height, width, cap=cap, floor=floor, multiple=multiple)
    return _place(image_bgr, scale, *canvas)


def own_scale_canvas(
    height: int, width: int, *, cap: int, floor: int = 0, multiple: int = 32
) -> tuple[float, tuple[int, int]]:
    """The scale and the (height, width) of the canvas :func:`own_scale` makes for an image of this size."""
    longer = max(height, width)
    scale = cap / longer if longer > cap else (floor / longer if longer < floor else 1.0)
    rows = max(1, round(height * scale))
    cols = max(1, round(width * scale))
    return scale, (-(-rows // multiple) * multiple, -(-cols // multiple) * multiple)


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; returns kept indices, highest score first.

    ``boxes`` is ``N x 4`` (x1, y1, x2, y2). A box is dropped when its IoU with a kept,
    higher-scoring box is above ``iou_threshold``.
    """
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return keep
