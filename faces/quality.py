"""Face quality: size, sharpness, exposure, head pose and detector confidence, and quality filters.

:func:`assess_quality` measures one detected face from the source image, its :class:`Detection`
(box, score, five keypoints) and its aligned 112x112 crop (the one the embedder sees). It is pure
numpy/OpenCV and cheap (well under a millisecond per face).

:class:`QualityFilter` follows Amazon Rekognition's ``QualityFilter``: a face below the chosen
bar is still *reported* (box, score, quality, reasons) but is *not matched*. :func:`passes` and
:func:`failed_checks` apply the cut-offs in :data:`QUALITY_BARS`; ``docs/quality.md`` explains
each number.

Conventions (angles in degrees; all approximate, see ``docs/quality.md``):

* ``roll``: the angle of the eye line; positive when the face is tilted clockwise on screen (the
  eye on the image's right is lower). Exact for the keypoints, but only as right as they are.
* ``yaw``: positive when the face turns toward the image's right (the person's left). From the
  nose tip's horizontal offset from the line through the eye and mouth midpoints.
* ``pitch``: positive when the face looks up. From where the nose tip sits between the eye line
  and the mouth line.

Yaw and pitch map those keypoint ratios to angles with constants fitted against the 3D
landmarks of MediaPipe's face mesh (:class:`PoseCalibration`). The keypoints of each detector
behave differently (YuNet's nose barely moves with pitch), so the constants are per detector
architecture: :func:`pose_calibration_for`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from contracts.values import QualityFilter
from faces.alignment import ARCFACE_TEMPLATE, estimate_similarity
from faces.detection import Detection

__all__ = [
    "QUALITY_BARS",
    "FaceQuality",
    "PoseCalibration",
    "QualityBar",
    "QualityIssue",
    "assess_quality",
    "estimate_pose",
    "failed_checks",
    "passes",
    "pose_calibration_for",
]

#: The face region of the aligned 112x112 crop (rows, columns) that sharpness and exposure are
#: measured on: eyebrows to below the mouth, between the outer eye corners. Little background.
_REGION_ROWS: Final = (36, 100)
_REGION_COLS: Final = (28, 84)
_DARK_LEVEL: Final = 10  # grey level at or below which a pixel counts as crushed black
_BRIGHT_LEVEL: Final = 245  # at or above which it counts as blown out


@dataclass(frozen=True)
class FaceQuality:
    """Quality measures of one detected face.

    * ``size_px``: the shorter side of the detection box, in source pixels.
    * ``interocular_px``: distance between the two eye keypoints, in source pixels.
    * ``sharpness``: variance of the Laplacian of the grey aligned crop at half resolution over
      the face region, divided by the region's grey standard deviation. About 13 for a typical
      LFW face (5th percentile 7.5); a Gaussian blur of sigma 1 / 1.5 / 2 / 3 crop pixels brings
      it to about 7.6 / 4.8 / 2.9 / 1.1.
    * ``brightness``: mean grey level (0..255) of the face region of the aligned crop.
    * ``yaw``, ``pitch``, ``roll``: head pose in degrees (module docstring for signs).
    * ``detection_score``: the detector's confidence. Scales differ per detector (YuNet gives
      about 0.93 to a clear face, SCRFD about 0.8).
    * ``dark_fraction``, ``bright_fraction``: share of face-region pixels at or below grey 10
      (crushed) and at or above 245 (blown out).
    * ``in_frame``: share of the face region that lies inside the image (1.0: fully visible).
    """

    size_px: float
    interocular_px: float
    sharpness: float
    brightness: float
    yaw: float
    pitch: float
    roll: float
    detection_score: float
    dark_fraction: float = 0.0
    bright_fraction: float = 0.0
    in_frame: float = 1.0


@dataclass(frozen=True)
class PoseCalibration:
    """Maps keypoint ratios to angles: ``tan(yaw) = yaw_gain * dx``, ``tan(pitch) = pitch_gain * (r0 - r)``.

    ``dx`` is the nose tip's horizontal offset from the eye-mouth midline in interocular
    distances; ``r`` is the nose tip's height between the eye line (0) and the mouth line (1).
    """

    yaw_gain: float
    pitch_gain: float
    pitch_r0: float


#: Fitted on 2026-11-21 by least squares of tan(angle) on the ratio, with MediaPipe face-mesh
#: 3D landmarks as the reference angle, over 400 LFW dev-test images and the conditions/ photos
#: (docs/quality.md). Against the mesh: yaw within about +-6 degrees (5th-95th percentile) for
#: both detectors; pitch within about +-7 (SCRFD) and +-15 (YuNet).
_POSE_CALIBRATIONS: Final[Mapping[str, PoseCalibration]] = {
    "scrfd": PoseCalibration(yaw_gain=1.40, pitch_gain=1.56, pitch_r0=0.561),
    "yunet": PoseCalibration(yaw_gain=1.40, pitch_gain=3.05, pitch_r0=0.567),
}
_GENERIC_POSE: Final = _POSE_CALIBRATIONS["scrfd"]


def pose_calibration_for(detector_architecture: str | None) -> PoseCalibration:
    """The pose constants for a detector architecture (``scrfd``, ``yunet``); SCRFD's otherwise."""
    if detector_architecture is None:
        return _GENERIC_POSE
    return _POSE_CALIBRATIONS.get(detector_architecture, _GENERIC_POSE)


def estimate_pose(
    keypoints: npt.ArrayLike, calibration: PoseCalibration = _GENERIC_POSE
) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the five keypoints (eyes, nose, mouth corners)."""
    points = np.asarray(keypoints, dtype=np.float64).reshape(5, 2)
    eyes_mid = (points[0] + points[1]) / 2
    eye_line = points[1] - points[0]
    interocular = float(np.hypot(*eye_line))
    roll = math.degrees(math.atan2(eye_line[1], eye_line[0]))
    if interocular < 1e-6:
        return 90.0, 90.0, roll
    cos_r, sin_r = eye_line / interocular
    # rotate by -roll around the eye midpoint: the eye line becomes horizontal, y points down
    upright = (points - eyes_mid) @ np.array([[cos_r, -sin_r], [sin_r, cos_r]])
    nose = upright[2]
    mouth_mid = (upright[3] + upright[4]) / 2
    if mouth_mid[1] < 1e-3 * interocular:  # mouth not below the eyes: keypoints make no face
        return 90.0, 90.0, roll
    ratio = nose[1] / mouth_mid[1]
    offset = (nose[0] - ratio * mouth_mid[0]) / interocular
    yaw = math.degrees(math.atan(calibration.yaw_gain * offset))
    pitch = math.degrees(math.atan(calibration.pitch_gain * (calibration.pitch_r0 - ratio)))
    return yaw, pitch, roll


def _in_frame_mask(
    keypoints: npt.ArrayLike, image_shape: tuple[int, ...], crop_size: int, rows: slice, cols: slice
) -> npt.NDArray[np.bool_]:
    """Which crop-region pixels come from inside the source image (the rest is warp padding)."""
    matrix = estimate_similarity(keypoints, ARCFACE_TEMPLATE * (crop_size / 112.0))
    inverse = cv2.invertAffineTransform(matrix)
    ys, xs = np.mgrid[rows, cols]
    source = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]).T @ np.asarray(inverse).T
    height, width = image_shape[:2]
    inside = (
        (source[:, 0] >= -0.5)
        & (source[:, 0] <= width - 0.5)
        & (source[:, 1] >= -0.5)
        & (source[:, 1] <= height - 0.5)
    )
    return inside.reshape(xs.shape)


def _sharpness(
    grey: npt.NDArray[np.uint8], rows: slice, cols: slice, inside: npt.NDArray[np.bool_], *, contrast: float
) -> float:
    """Variance of the Laplacian at half resolution over the face region, divided by its grey std.

    Half resolution (``pyrDown``) keeps pixel noise and JPEG blocks from passing for detail;
    dividing by the contrast (std) once, not twice, keeps a well-lit face ahead of a flat one.
    Pixels whose 5x5 neighbourhood reaches the warp padding are left out.
    """
    half = cv2.pyrDown(grey.astype(np.float64))
    laplacian = cv2.Laplacian(half, cv2.CV_64F)
    half_region = laplacian[rows.start // 2 : rows.stop // 2, cols.start // 2 : cols.stop // 2]
    usable = cv2.erode(inside.astype(np.uint8), np.ones((7, 7), np.uint8), borderValue=1).astype(bool)
    usable = usable[::2, ::2][: half_region.shape[0], : half_region.shape[1]]
    if not usable.any():
        return 0.0
    return float(half_region[usable].var()) / max(contrast, 1.0)


def assess_quality(
    image_bgr: npt.NDArray[np.uint8],
    detection: Detection,
    aligned_crop: npt.NDArray[np.uint8],
    *,
    pose: PoseCalibration | None = None,
) -> FaceQuality:
    """Measure one face. ``aligned_crop`` is its square aligned BGR crop (112x112 in the pipeline)."""
    if aligned_crop.ndim != 3 or aligned_crop.shape[0] != aligned_crop.shape[1] or aligned_crop.shape[2] != 3:
        raise ValueError(f"expected a square N x N x 3 BGR crop, got {aligned_crop.shape}")
    size = aligned_crop.shape[0]
    scale = size / 112.0
    rows = slice(round(_REGION_ROWS[0] * scale), round(_REGION_ROWS[1] * scale))
    cols = slice(round(_REGION_COLS[0] * scale), round(_REGION_COLS[1] * scale))
    grey = np.asarray(cv2.cvtColor(aligned_crop, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    region = grey[rows, cols]
    inside = _in_frame_mask(detection.keypoints, image_bgr.shape, size, rows, cols)
    in_frame = float(inside.mean())
    if inside.any():
        pixels = region[inside]
        brightness = float(pixels.mean())
        dark = float(np.mean(pixels <= _DARK_LEVEL))
        bright = float(np.mean(pixels >= _BRIGHT_LEVEL))
        sharpness = _sharpness(grey, rows, cols, inside, contrast=float(np.std(pixels)))
    else:
        brightness, dark, bright, sharpness = 0.0, 1.0, 0.0, 0.0
    keypoints = np.asarray(detection.keypoints, dtype=np.float64)
    yaw, pitch, roll = estimate_pose(keypoints, pose or _GENERIC_POSE)
    return FaceQuality(
        size_px=float(min(detection.width, detection.height)),
        interocular_px=float(np.hypot(*(keypoints[1] - keypoints[0]))),
        sharpness=sharpness,
        brightness=brightness,
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        detection_score=float(detection.score),
        dark_fraction=dark,
        bright_fraction=bright,
        in_frame=in_frame,
    )


class QualityIssue(StrEnum):
    """Reason codes of :func:`failed_checks`."""

    TOO_SMALL = "TOO_SMALL"
    BLURRY = "BLURRY"
    TOO_DARK = "TOO_DARK"
    TOO_BRIGHT = "TOO_BRIGHT"
    POSE = "POSE"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    OUT_OF_FRAME = "OUT_OF_FRAME"


@dataclass(frozen=True)
class QualityBar:
    """The cut-offs of one :class:`QualityFilter` level (``None``: not checked at this level)."""

    min_size_px: float
    min_interocular_px: float
    min_sharpness: float
    min_brightness: float
    max_brightness: float
    max_dark_fraction: float
    max_bright_fraction: float
    min_in_frame: float
    max_yaw: float | None
    max_pitch: float | None
    max_roll: float | None
    min_detection_score: float | None

    def failures(self, quality: FaceQuality) -> list[QualityIssue]:
        q = quality
        checks = [
            (
                QualityIssue.TOO_SMALL,
                q.size_px < self.min_size_px or q.interocular_px < self.min_interocular_px,
            ),
            (QualityIssue.BLURRY, q.sharpness < self.min_sharpness),
            (
                QualityIssue.TOO_DARK,
                q.brightness < self.min_brightness or q.dark_fraction > self.max_dark_fraction,
            ),
            (
                QualityIssue.TOO_BRIGHT,
                q.brightness > self.max_brightness or q.bright_fraction > self.max_bright_fraction,
            ),
            (
                QualityIssue.POSE,
                _beyond(q.yaw, self.max_yaw)
                or _beyond(q.pitch, self.max_pitch)
                or _beyond(q.roll, self.max_roll),
            ),
            (
                QualityIssue.LOW_CONFIDENCE,
                self.min_detection_score is not None and q.detection_score < self.min_detection_score,
            ),
            (QualityIssue.OUT_OF_FRAME, q.in_frame < self.min_in_frame),
        ]
        return [issue for issue, failed in checks if failed]


def _beyond(angle: float, limit: float | None) -> bool:
    return limit is not None and abs(angle) > limit


#: The cut-offs; docs/quality.md has this table with the reasons (a test keeps them in step).
QUALITY_BARS: Final[Mapping[QualityFilter, QualityBar]] = {
    QualityFilter.LOW: QualityBar(
        min_size_px=24,
        min_interocular_px=10,
        min_sharpness=1.5,
        min_brightness=20,
        max_brightness=245,
        max_dark_fraction=0.6,
        max_bright_fraction=0.4,
        min_in_frame=0.5,
        max_yaw=None,
        max_pitch=None,
        max_roll=None,
        min_detection_score=None,
    ),
    QualityFilter.MEDIUM: QualityBar(
        min_size_px=40,
        min_interocular_px=16,
        min_sharpness=3.5,
        min_brightness=35,
        max_brightness=235,
        max_dark_fraction=0.35,
        max_bright_fraction=0.15,
        min_in_frame=0.8,
        max_yaw=45,
        max_pitch=35,
        max_roll=None,
        min_detection_score=0.55,
    ),
    QualityFilter.HIGH: QualityBar(
        min_size_px=64,
        min_interocular_px=28,
        min_sharpness=6,
        min_brightness=50,
        max_brightness=220,
        max_dark_fraction=0.15,
        max_bright_fraction=0.05,
        min_in_frame=0.98,
        max_yaw=25,
        max_pitch=25,
        max_roll=25,
        min_detection_score=0.7,
    ),
}


def failed_checks(quality: FaceQuality, level: QualityFilter) -> list[str]:
    """Reason codes (:class:`QualityIssue` values) of the checks ``quality`` fails at ``level``."""
    bar = QUALITY_BARS.get(level)
    return [] if bar is None else list(bar.failures(quality))


def passes(quality: FaceQuality, level: QualityFilter) -> bool:
    """Whether a face with this quality is matched under ``level`` (``NONE`` passes everything)."""
    return not failed_checks(quality, level)
