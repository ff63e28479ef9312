"""Passive anti-spoofing: minivision's Silent-Face MiniFASNet models, averaged.

Each model sees the face box scaled around its centre (2.7x for MiniFASNetV2, 4.0x for
MiniFASNetV1SE), clamped and shifted to stay inside the image exactly as minivision's
``CropImage._get_new_box`` does, resized to 80x80, BGR 0-255, NCHW. The three logits go
through a softmax; class 1 is "real". :class:`AntiSpoof` averages the real probability of the
models into ``real_score`` (0..1), as minivision's ``test.py`` averages their softmax outputs.

What it can and cannot tell (figures from ``../shared/data/antispoof`` and the videos, see
docs/liveness.md): printed and screen-replayed faces score low; real camera faces score high;
a digital original video (or a deepfake rendered from one) looks real to these models, and a
good 3D mask may too. It is one signal of the decision, not the decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from faces.errors import ModelError
from faces.packs import cpu_model
from faces.runtime import Model

__all__ = [
    "ANTISPOOF_MODELS",
    "AntiSpoof",
    "SpoofModel",
    "minivision_crop_box",
]

ANTISPOOF_INPUT_SIZE: Final = 80
#: (file, crop scale) of the two MiniFASNet models in a models directory.
ANTISPOOF_MODELS: Final = (
    ("2.7_80x80_MiniFASNetV2.onnx", 2.7),
    ("4_0_0_80x80_MiniFASNetV1SE.onnx", 4.0),
)
_REAL_CLASS: Final = 1


def minivision_crop_box(
    image_size: tuple[int, int], box: tuple[float, float, float, float], scale: float
) -> tuple[int, int, int, int]:
    """minivision's ``_get_new_box``: (x1, y1, x2, y2), inclusive, inside a ``(width, height)`` image.

    The scale shrinks when the scaled box would not fit the image at all; a box that reaches
    past a border is shifted back inside rather than cut.
    """
    src_w, src_h = image_size
    x, y = box[0], box[1]
    box_w, box_h = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
    scale = min((src_h - 1) / box_h, min((src_w - 1) / box_w, scale))
    new_w, new_h = box_w * scale, box_h * scale
    center_x, center_y = box_w / 2 + x, box_h / 2 + y
    left, top = center_x - new_w / 2, center_y - new_h / 2
    right, bottom = center_x + new_w / 2, center_y + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > src_w - 1:
        left -= right - src_w + 1
        right = src_w - 1
    if bottom > src_h - 1:
        top -= bottom - src_h + 1
        bottom = src_h - 1
    return int(left), int(top), int(right), int(bottom)


@dataclass(frozen=True)
class SpoofModel:
    model: Model
    scale: float

    def real_probability(
        self, image_bgr: npt.NDArray[np.uint8], box: tuple[float, float, float, float]
    ) -> float:
        height, width = image_bgr.shape[:2]
        x1, y1, x2, y2 = minivision_crop_box((width, height), box, self.scale)
        patch = image_bgr[max(y1, 0) : y2 + 1, max(x1, 0) : x2 + 1]
        if patch.size == 0:
            return 0.0
        resized = cv2.resize(patch, (ANTISPOOF_INPUT_SIZE, ANTISPOOF_INPUT_SIZE))
        blob = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)[np.newaxis]
        (logits,) = self.model.run({self.model.input_name: np.ascontiguousarray(blob)})
        values = logits.reshape(-1).astype(np.float64)
        if values.size != 3:
            raise ModelError(f"{self.model.path.name}: expected 3 logits, got {values.size}")
        exp = np.exp(values - values.max())
        return float(exp[_REAL_CLASS] / exp.sum())


class AntiSpoof:
    """The MiniFASNet ensemble: :meth:`real_score` of a face box in a BGR frame."""

    def __init__(self, models: Sequence[SpoofModel]) -> None:
        if not models:
            raise ValueError("at least one anti-spoofing model is needed")
        self.models = tuple(models)

    @classmethod
    def from_dir(cls, models_dir: Path, *, threads: int = 0, prefer_gpu: bool = False) -> AntiSpoof:
        def load(file: str) -> Model:
            return cpu_model(models_dir / file, "minifasnet", threads=threads, prefer_gpu=prefer_gpu)

        return cls([SpoofModel(load(file), scale) for file, scale in ANTISPOOF_MODELS])

    def real_score(self, image_bgr: npt.NDArray[np.uint8], box: tuple[float, float, float, float]) -> float:
        """Mean probability of "real" over the models, 0..1."""
        scores = [m.real_probability(image_bgr, box) for m in self.models]
        return sum(scores) / len(scores)
