"""Face detection: the :class:`Detection` result, the :class:`Detector` port and two ONNX detectors.

* :class:`ScrfdDetector`: InsightFace SCRFD (``det_500m``, ``det_2.5g``, ``det_10g``), anchor based.
* :class:`YunetDetector`: OpenCV Zoo YuNet 2023mar, anchor free, MIT licensed.

Both look at an image near its own scale first when the model takes any input size (SCRFD; YuNet
once :func:`faces.graphs.free_spatial_dims` has freed its input): the image padded to multiples
of 32, scaled down when its longer side is over ``input_size`` and up when under ``min_input``.
Only when no face is found there do they look again at the classic square letterbox of
``input_size`` (small images scaled up). A model with a fixed input size gets that letterbox
only. They decode boxes and five keypoints, apply NMS, map back to source pixels and drop faces
smaller than ``min_face_px``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from faces.boxes import Letterbox, letterbox, nms, own_scale, own_scale_canvas
from faces.errors import ModelError
from faces.runtime import OnnxModel

__all__ = ["Detection", "Detector", "ScrfdDetector", "YunetDetector", "first_input_shape"]

STRIDES: Final = (8, 16, 32)
#: YuNet looks at small images scaled up so that their longer side is 416 (not 640, not their own
#: size): on LFW dev-test's 250x250 photos that gave the lowest false non-match rates at FMR 1e-3 and
#: 1e-4 of the three (0.0092 and 0.0163; 640: 0.0122, 0.0163; own size: 0.0142, 0.0244), at 2.4 times
#: fewer pixels than 640. SCRFD does best at the image's own size (mobilefacenet pack: 0.0081 at 1e-3,
#: against 0.0132 at 640, and no image without a face), so its floor is 0.
YUNET_MIN_INPUT: Final = 416
_MAX_CANDIDATES: Final = 5000
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Detection:
    """One face in source-image pixels.

    ``box`` is (x1, y1, x2, y2) and may reach past the border for cut-off faces. ``keypoints`` is a
    read-only 5x2 float32 array: left eye, right eye, nose, left and right mouth corner, where
    left/right are as seen in the image (the person's right eye is the image's left eye).
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: FloatArray = field(compare=False, repr=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


class Detector(Protocol):
    """Finds faces in an ``H x W x 3`` uint8 BGR image; largest face first."""

    def detect(self, image_bgr: npt.NDArray[np.uint8]) -> list[Detection]: ...


@dataclass(frozen=True)
class _Candidates:
    """Decoded candidates in letterboxed-canvas pixels."""

    boxes: FloatArray  # N x 4
    scores: FloatArray  # N
    keypoints: FloatArray  # N x 5 x 2


def _finalize(
    candidates: _Candidates, *, scale: float, nms_threshold: float, min_face_px: float
) -> list[Detection]:
    order = np.argsort(-candidates.scores, kind="stable")[:_MAX_CANDIDATES]
    boxes = candidates.boxes[order] / scale
    keypoints = candidates.keypoints[order] / scale
    scores = candidates.scores[order]
    detections: list[Detection] = []
    for i in nms(boxes, scores, nms_threshold):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        if min(x2 - x1, y2 - y1) < min_face_px:
            continue
        points = np.array(keypoints[i], dtype=np.float32)
        points.setflags(write=False)
        detections.append(Detection(box=(x1, y1, x2, y2), score=float(scores[i]), keypoints=points))
    detections.sort(key=lambda d: d.area, reverse=True)
    return detections


def _nchw_float(canvas: npt.NDArray[np.uint8]) -> FloatArray:
    """``1 x 3 x H x W`` float32, C-contiguous, from an ``H x W x 3`` canvas, in one pass and one allocation.

    Casting first and copying the transposed array contiguous after makes two arrays of 2 MiB at
    416x416: 1.9 ms of CPU where both land on fresh pages (page faults), against 0.22 ms for this.
    """
    return np.array(canvas.transpose(2, 0, 1)[np.newaxis], dtype=np.float32, order="C")


@cache
def _grid(height: int, width: int, stride: int, repeats: int) -> FloatArray:
    """(col, row) of every cell of a ``height/stride x width/stride`` grid, row-major, each repeated."""
    rows, cols = np.mgrid[: height // stride, : width // stride]
    grid = np.stack([cols, rows], axis=-1).reshape(-1, 2).astype(np.float32)
    grid = np.repeat(grid, repeats, axis=0)
    grid.setflags(write=False)
    return grid


@cache
def _cells(height: int, width: int, repeats: int) -> tuple[FloatArray, FloatArray]:
    """The three strides' grids one after the other (as :func:`_grid`) and each cell's stride (N x 1)."""
    grids = [_grid(height, width, stride, repeats) for stride in STRIDES]
    strides = np.concatenate(
        [np.full((len(g), 1), stride, np.float32) for g, stride in zip(grids, STRIDES, strict=True)]
    )
    cells = np.concatenate(grids)
    cells.setflags(write=False)
    strides.setflags(write=False)
    return cells, strides


def _canvases(
    image_bgr: npt.NDArray[np.uint8], size: int, floor: int, free: bool
) -> list[Callable[[], Letterbox]]:
    """The inputs to try in turn: the image's own scale (free-size models), then the square letterbox.

    The letterbox is worth a second look only for images smaller than ``size``, which it scales up.
    """
    square = partial(letterbox, image_bgr, size)
    if not free:
        return [square]
    own = partial(own_scale, image_bgr, cap=size, floor=floor)
    return [own] if max(image_bgr.shape[:2]) >= size else [own, square]


def first_input_shape(height: int, width: int, *, size: int, floor: int, free: bool) -> tuple[int, int]:
    """(height, width) of the first input a detector runs on for an image of this size."""
    return own_scale_canvas(height, width, cap=size, floor=floor)[1] if free else (size, size)


def _detect_at_scales(
    image_bgr: npt.NDArray[np.uint8],
    size: int,
    floor: int,
    free: bool,
    at: Callable[[Letterbox], list[Detection]],
) -> list[Detection]:
    for canvas in _canvases(image_bgr, size, floor, free):
        found = at(canvas())
        if found:
            return found
    return []


class ScrfdDetector:
    """InsightFace SCRFD with keypoints: 2 anchors per cell at strides 8/16/32.

    The input is the letterboxed image as RGB, ``(x - 127.5) / 128``, NCHW; this is what
    InsightFace itself feeds these models (``blobFromImage(..., swapRB=True)``).
    """

    _ANCHORS: Final = 2

    def __init__(
        self,
        model: OnnxModel,
        *,
        input_size: int = 640,
        min_input: int = 0,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        min_face_px: float = 20.0,
    ) -> None:
        if len(model.output_names) != 9:
            raise ModelError(f"{model.path.name}: expected SCRFD with keypoints (9 outputs)")
        if input_size % 32:
            raise ValueError("input_size must be a multiple of 32")
        self.model = model
        self.input_size = input_size
        self.min_input = min_input
        self.free_size = not any(isinstance(d, int) for d in model.input_shape[2:])
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_face_px = min_face_px

    def detect(self, image_bgr: npt.NDArray[np.uint8]) -> list[Detection]:
        return _detect_at_scales(image_bgr, self.input_size, self.min_input, self.free_size, self._detect)

    def _detect(self, boxed: Letterbox) -> list[Detection]:
        blob = _nchw_float(boxed.canvas[:, :, ::-1])
        blob -= 127.5
        blob /= 128.0
        outputs = self.model.run({self.model.input_name: blob})
        height, width = boxed.canvas.shape[:2]
        return _finalize(
            self._decode(height, width, *self._heads(outputs)),
            scale=boxed.scale,
            nms_threshold=self.nms_threshold,
            min_face_px=self.min_face_px,
        )

    @staticmethod
    def _heads(outputs: list[FloatArray]) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The 9 outputs as (scores, boxes, keypoints), each with the strides 8, 16, 32 one after the
        other, told apart by their shapes."""
        flat = [o.reshape(-1, o.shape[-1]) for o in outputs]
        heads = []
        for channels in (1, 4, 10):
            group = sorted((o for o in flat if o.shape[1] == channels), key=lambda o: -o.shape[0])
            if len(group) != 3:
                raise ModelError(f"SCRFD outputs do not have the expected shapes: {[o.shape for o in flat]}")
            heads.append(np.concatenate(group))
        return heads[0], heads[1], heads[2]

    def _decode(
        self, height: int, width: int, scores: FloatArray, dists: FloatArray, kps: FloatArray
    ) -> _Candidates:
        """All three strides at once: one pass of numpy calls, not one per stride."""
        keep = np.flatnonzero(scores[:, 0] >= self.score_threshold)
        all_cells, all_strides = _cells(height, width, self._ANCHORS)
        strides = all_strides[keep]
        centers = all_cells[keep] * strides
        dists = dists[keep] * strides
        boxes = np.concatenate([centers - dists[:, :2], centers + dists[:, 2:]], axis=1)
        points = centers[:, np.newaxis, :] + kps[keep].reshape(-1, 5, 2) * strides[:, np.newaxis, :]
        return _Candidates(boxes=boxes, scores=scores[keep, 0], keypoints=points)


class YunetDetector:
    """OpenCV Zoo YuNet (2023mar): 1x3x640x640 BGR 0-255 input (any size once freed), anchor free.

    Decoding follows OpenCV's ``FaceDetectorYN``: score = sqrt(cls * obj); the box centre is
    ``(cell + offset) * stride`` and its size ``exp(log_size) * stride``.
    """

    def __init__(
        self,
        model: OnnxModel,
        *,
        min_input: int = YUNET_MIN_INPUT,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        min_face_px: float = 20.0,
    ) -> None:
        names = set(model.output_names)
        expected = {f"{head}_{s}" for head in ("cls", "obj", "bbox", "kps") for s in STRIDES}
        if not expected <= names:
            raise ModelError(f"{model.path.name}: not a YuNet model (missing {sorted(expected - names)})")
        size = model.input_shape[-1]
        self.input_size = size if isinstance(size, int) else 640
        self.free_size = not isinstance(size, int)
        self.min_input = min_input
        self.model = model
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_face_px = min_face_px

    def detect(self, image_bgr: npt.NDArray[np.uint8]) -> list[Detection]:
        return _detect_at_scales(image_bgr, self.input_size, self.min_input, self.free_size, self._detect)

    def _detect(self, boxed: Letterbox) -> list[Detection]:
        blob = _nchw_float(boxed.canvas)
        outputs = dict(
            zip(self.model.output_names, self.model.run({self.model.input_name: blob}), strict=True)
        )
        height, width = boxed.canvas.shape[:2]
        return _finalize(
            self._decode(height, width, outputs),
            scale=boxed.scale,
            nms_threshold=self.nms_threshold,
            min_face_px=self.min_face_px,
        )

    def _decode(self, height: int, width: int, outputs: dict[str, FloatArray]) -> _Candidates:
        """All three strides at once: one pass of numpy calls, not one per stride."""

        def head(name: str, channels: int) -> FloatArray:
            return np.concatenate([outputs[f"{name}_{stride}"].reshape(-1, channels) for stride in STRIDES])

        cls = np.clip(head("cls", 1).reshape(-1), 0.0, 1.0)
        obj = np.clip(head("obj", 1).reshape(-1), 0.0, 1.0)
        scores = np.sqrt(cls * obj)
        keep = np.flatnonzero(scores >= self.score_threshold)
        all_cells, all_strides = _cells(height, width, 1)
        cells, strides = all_cells[keep], all_strides[keep]
        bbox = head("bbox", 4)[keep]
        centers = (cells + bbox[:, :2]) * strides
        sizes = np.exp(bbox[:, 2:]) * strides
        boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
        kps = head("kps", 10)[keep].reshape(-1, 5, 2)
        points = (kps + cells[:, np.newaxis, :]) * strides[:, np.newaxis, :]
        return _Candidates(boxes=boxes, scores=scores[keep], keypoints=points)
