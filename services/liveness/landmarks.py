"""Dense face landmarks: the MediaPipe face mesh (468 points) on onnxruntime.

The model (``mediapipe_face_landmark_468.onnx``) takes a 192x192 RGB crop in [0, 1] (NHWC) of a
face and returns 468 points (x, y, z) in crop pixels and a face-presence logit. As MediaPipe
does, the crop is a square of 1.5x the face box's longer side around its centre, rotated so the
eye line is horizontal (the roll comes from the detector's eye keypoints, or from the previous
mesh when tracking). :class:`FaceMesh` warps that crop with one affine transform and maps the
points back to frame pixels with its inverse; ``z`` is scaled like ``x`` and ``y`` (MediaPipe's
z: smaller is closer to the camera, origin near the centre of the head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from faces.errors import ModelError
from faces.runtime import Model

__all__ = [
    "CROP_SCALE",
    "EYE_CROP_SCALE",
    "IRIS_MODEL_FILE",
    "MESH_INPUT_SIZE",
    "MESH_MODEL_FILE",
    "N_POINTS",
    "CropRegion",
    "EyeLandmarks",
    "EyeResult",
    "FaceMesh",
    "MeshResult",
    "region_from_box",
    "region_from_points",
]

MESH_MODEL_FILE: Final = "mediapipe_face_landmark_468.onnx"
MESH_INPUT_SIZE: Final = 192
N_POINTS: Final = 468
#: Side of the square crop relative to the face box's longer side (MediaPipe's 1.5).
CROP_SCALE: Final = 1.5
#: Mesh points of the outer eye corners: 33 is the subject's right eye (image left when not
#: mirrored), 263 the subject's left eye. They define the roll used to level the next crop.
_RIGHT_EYE_OUTER: Final = 33
_LEFT_EYE_OUTER: Final = 263

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class CropRegion:
    """A square, rotated region of the frame: centre and side in pixels, rotation in radians.

    ``angle`` is the angle of the face's eye line in the image (atan2 of dy, dx with y pointing
    down); the crop is rotated by it, so the eyes are level in the crop.
    """

    center: tuple[float, float]
    size: float
    angle: float = 0.0

    def crop_matrix(self, out_size: int) -> npt.NDArray[np.float64]:
        """2x3 affine map from frame pixels to ``out_size`` crop pixels."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        k = out_size / self.size
        cx, cy = self.center
        # rotate by -angle around the centre, scale by k, put the centre in the middle of the crop
        a, b = k * cos, k * sin
        c, d = -k * sin, k * cos
        half = out_size / 2.0
        return np.array(
            [[a, b, half - (a * cx + b * cy)], [c, d, half - (c * cx + d * cy)]],
            dtype=np.float64,
        )


def region_from_box(
    box: tuple[float, float, float, float],
    eye_left: tuple[float, float] | None = None,
    eye_right: tuple[float, float] | None = None,
    *,
    scale: float = CROP_SCALE,
) -> CropRegion:
    """The crop for a detector box; the eye keypoints (image left, image right) give the roll."""
    x1, y1, x2, y2 = box
    angle = 0.0
    if eye_left is not None and eye_right is not None:
        angle = math.atan2(eye_right[1] - eye_left[1], eye_right[0] - eye_left[0])
    side = max(x2 - x1, y2 - y1) * scale
    return CropRegion(center=((x1 + x2) / 2.0, (y1 + y2) / 2.0), size=max(side, 1.0), angle=angle)


def region_from_points(points: FloatArray, *, scale: float = CROP_SCALE) -> CropRegion:
    """The crop for tracking: the mesh's bounding box in the face's own (de-rolled) axes."""
    xy = points[:, :2].astype(np.float64)
    eye_r, eye_l = xy[_RIGHT_EYE_OUTER], xy[_LEFT_EYE_OUTER]
    angle = math.atan2(eye_l[1] - eye_r[1], eye_l[0] - eye_r[0])
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, sin], [-sin, cos]])  # frame -> face axes
    local = xy @ rotation.T
    low, high = local.min(axis=0), local.max(axis=0)
    mid_local = (low + high) / 2.0
    mid = mid_local @ rotation  # face axes -> frame
    side = float(max(high - low)) * scale
    return CropRegion(center=(float(mid[0]), float(mid[1])), size=max(side, 1.0), angle=angle)


@dataclass(frozen=True)
class MeshResult:
    """468 points in frame pixels (``points``: read-only 468x3 float32, x, y, z) and presence 0..1."""

    points: FloatArray = field(repr=False)
    presence: float
    region: CropRegion

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box of the points (x1, y1, x2, y2)."""
        xy = self.points[:, :2]
        x1, y1 = xy.min(axis=0)
        x2, y2 = xy.max(axis=0)
        return float(x1), float(y1), float(x2), float(y2)


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


class FaceMesh:
    """MediaPipe face mesh: :meth:`run` a :class:`CropRegion` of a BGR frame."""

    def __init__(self, model: Model) -> None:
        shape = model.input_shape
        if len(shape) != 4 or shape[1:] != (MESH_INPUT_SIZE, MESH_INPUT_SIZE, 3):
            raise ModelError(f"{model.path.name}: expected a 1x192x192x3 face mesh input, got {shape}")
        self.model = model
        self._outputs = self._find_outputs(model)

    @staticmethod
    def _find_outputs(model: Model) -> tuple[int, int]:
        sizes = [math.prod(d if isinstance(d, int) else 1 for d in s) for s in model.output_shapes]
        try:
            return sizes.index(N_POINTS * 3), sizes.index(1)
        except ValueError:
            raise ModelError(f"{model.path.name}: expected 1404 landmarks and a presence score") from None

    def crop(self, frame_bgr: npt.NDArray[np.uint8], region: CropRegion) -> npt.NDArray[np.uint8]:
        """The 192x192 BGR crop the model sees (useful for debugging and audit images)."""
        matrix = region.crop_matrix(MESH_INPUT_SIZE)
        warped = cv2.warpAffine(
            frame_bgr,
            matrix,
            (MESH_INPUT_SIZE, MESH_INPUT_SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        return np.asarray(warped, dtype=np.uint8)

    def run(self, frame_bgr: npt.NDArray[np.uint8], region: CropRegion) -> MeshResult:
        crop = self.crop(frame_bgr, region)
        blob = (crop[:, :, ::-1].astype(np.float32) / 255.0)[np.newaxis]
        outputs = self.model.run({self.model.input_name: np.ascontiguousarray(blob)})
        raw = outputs[self._outputs[0]].reshape(N_POINTS, 3).astype(np.float64)
        logit = float(outputs[self._outputs[1]].reshape(-1)[0])
        inverse = cv2.invertAffineTransform(region.crop_matrix(MESH_INPUT_SIZE))
        xy = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = raw[:, 2] * (region.size / MESH_INPUT_SIZE)
        points = np.column_stack([xy, z]).astype(np.float32)
        points.setflags(write=False)
        return MeshResult(points=points, presence=_sigmoid(logit), region=region)


IRIS_MODEL_FILE: Final = "mediapipe_iris_landmark.onnx"
IRIS_INPUT_SIZE: Final = 64
#: Side of the eye crop relative to the distance between the eye corners (MediaPipe's 2.3).
EYE_CROP_SCALE: Final = 2.3
N_EYE_CONTOUR: Final = 71
N_IRIS: Final = 5
#: Eye corners in the mesh, image-left point first: the subject's right eye (33 outer, 133 inner)
#: and left eye (362 inner, 263 outer).
_EYE_CORNERS: Final = ((33, 133), (362, 263))


@dataclass(frozen=True)
class EyeResult:
    """Eye contours (71 points) and irises (5 points) in frame pixels (x, y, z), read-only float32.

    The first 16 contour points follow the lid: 0 outer corner, 1-7 lower lid, 8 inner corner,
    9-15 upper lid (MediaPipe's order; mesh points 33, 7, 163, 144, 145, 153, 154, 155, 133, 246,
    161, 160, 159, 158, 157, 173 for the right eye). ``right``/``left`` are the subject's.
    """

    right_contour: FloatArray = field(repr=False)
    left_contour: FloatArray = field(repr=False)
    right_iris: FloatArray = field(repr=False)
    left_iris: FloatArray = field(repr=False)


class EyeLandmarks:
    """MediaPipe iris landmark model: eyelid contours that follow a blink better than the mesh's.

    Each eye is cropped as MediaPipe does: a square of 2.3x the corner distance, levelled on the
    corner line; the image-right eye (the subject's left) is flipped horizontally, because the
    model expects the outer corner on the crop's left.
    """

    def __init__(self, model: Model) -> None:
        shape = model.input_shape
        if len(shape) != 4 or shape[1:] != (IRIS_INPUT_SIZE, IRIS_INPUT_SIZE, 3):
            raise ModelError(f"{model.path.name}: expected a 1x64x64x3 iris model input, got {shape}")
        sizes = [math.prod(d if isinstance(d, int) else 1 for d in s) for s in model.output_shapes]
        try:
            self._contour_out = sizes.index(N_EYE_CONTOUR * 3)
            self._iris_out = sizes.index(N_IRIS * 3)
        except ValueError:
            raise ModelError(f"{model.path.name}: expected 71 eye contour and 5 iris points") from None
        self.model = model

    def _one_eye(
        self, frame_bgr: npt.NDArray[np.uint8], start: FloatArray, end: FloatArray, *, flip: bool
    ) -> tuple[FloatArray, FloatArray]:
        angle = math.atan2(float(end[1] - start[1]), float(end[0] - start[0]))
        side = float(np.linalg.norm(end - start)) * EYE_CROP_SCALE
        mid = (start + end) / 2.0
        region = CropRegion(center=(float(mid[0]), float(mid[1])), size=max(side, 1.0), angle=angle)
        matrix = region.crop_matrix(IRIS_INPUT_SIZE)
        crop = cv2.warpAffine(frame_bgr, matrix, (IRIS_INPUT_SIZE, IRIS_INPUT_SIZE), flags=cv2.INTER_LINEAR)
        if flip:
            crop = crop[:, ::-1]
        blob = (np.asarray(crop, dtype=np.float32)[:, :, ::-1] / 255.0)[np.newaxis]
        outputs = self.model.run({self.model.input_name: np.ascontiguousarray(blob)})
        inverse = cv2.invertAffineTransform(matrix)
        scale_z = region.size / IRIS_INPUT_SIZE
        mapped: list[FloatArray] = []
        for index, count in ((self._contour_out, N_EYE_CONTOUR), (self._iris_out, N_IRIS)):
            raw = outputs[index].reshape(count, 3).astype(np.float64)
            if flip:
                raw[:, 0] = IRIS_INPUT_SIZE - raw[:, 0]
            xy = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
            points = np.column_stack([xy, raw[:, 2] * scale_z]).astype(np.float32)
            points.setflags(write=False)
            mapped.append(points)
        return mapped[0], mapped[1]

    def run(self, frame_bgr: npt.NDArray[np.uint8], mesh_points: FloatArray) -> EyeResult:
        xy = mesh_points[:, :2]
        (r_start, r_end), (l_start, l_end) = _EYE_CORNERS
        right_contour, right_iris = self._one_eye(frame_bgr, xy[r_start], xy[r_end], flip=False)
        left_contour, left_iris = self._one_eye(frame_bgr, xy[l_start], xy[l_end], flip=True)
        return EyeResult(
            right_contour=right_contour, left_contour=left_contour, right_iris=right_iris, left_iris=left_iris
        )
