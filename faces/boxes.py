"""Box geometry shared by the detectors: letterboxing and non-maximum suppression, in numpy."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["Letterbox", "letterbox", "nms"]


@dataclass(frozen=True)
class Letterbox:
    """A ``size x size`` BGR canvas holding the image scaled by ``scale``, padded bottom/right with 0."""

    canvas: npt.NDArray[np.uint8]
    scale: float


def letterbox(image_bgr: npt.NDArray[np.uint8], size: int) -> Letterbox:
    """Scale (down or up) keeping the aspect ratio so the longer side is ``size``, then pad."""
    height, width = image_bgr.shape[:2]
    scale = size / max(height, width)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return Letterbox(canvas=canvas, scale=scale)


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
