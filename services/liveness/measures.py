"""Face measures from the 468 MediaPipe face-mesh points: head pose, eye and mouth openness, nose.

All functions take the mesh in **frame pixels** (``468 x 3``: x right, y down, z away from the
camera, as :class:`services.liveness.landmarks.FaceMesh` returns it) of the **raw camera frame**,
not of the mirrored preview the user sees.

Head pose (degrees) is a geometric estimate from the mesh's own 3D shape, no canonical model and
no camera intrinsics: the face's x axis runs from the outer corner of the subject's right eye
(point 33) to that of the left eye (263); its y axis from the forehead (10) to the chin (152),
made orthogonal to x; the face normal is their cross product, pointing out of the face; yaw and
pitch are the normal's angles. Roll is the angle of the eye line in the image. Sign
conventions, chosen to match what the user sees in the mirrored preview:

* ``yaw > 0``: the subject turns the head to **their own left**. In the raw frame the nose moves
  to the image's right; in the mirrored preview the head turns to the screen's left, the way the
  user turns. ``TURN_LEFT`` asks for positive yaw.
* ``pitch > 0``: the subject looks **up** (the nose moves up in the image).
* ``roll > 0``: the head tilts toward the subject's **right** shoulder (clockwise in the
  mirrored preview).

The mesh's z is a learned, weak-perspective depth, so the angles are estimates: good to a few
degrees for the question "did the head turn by 20 degrees, and which way", not for metrology.
``PITCH_OFFSET_DEG`` removes the bias of the forehead-chin axis (a frontal face looking straight
at the camera has its forehead slightly behind its chin in the mesh); it was measured as the
median raw pitch over LFW dev-test photos (mostly frontal portraits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from services.liveness.landmarks import EyeResult
from services.liveness.parallax import Shape, shape_of

__all__ = [
    "EYE_CONTOUR",
    "LEFT_EYE",
    "MOUTH_CORNERS",
    "MOUTH_INNER_CORNERS",
    "MOUTH_INNER_PAIRS",
    "NOSE_TIP",
    "PITCH_OFFSET_DEG",
    "RIGHT_EYE",
    "FaceMeasures",
    "HeadPose",
    "eye_aspect_ratio",
    "face_aspect_ratio",
    "head_pose",
    "measure_face",
    "mouth_aspect_ratio",
    "mouth_width_ratio",
]

FloatArray = npt.NDArray[np.float32]

# Mesh indices (MediaPipe Face Mesh topology). "Right"/"left" are the subject's.
#: Eye contour for the eye aspect ratio: outer corner, two upper lid, inner corner, two lower lid
#: points, in the order p1..p6 of Soukupova and Cech (2016): EAR = (|p2-p6| + |p3-p5|) / (2|p1-p4|).
RIGHT_EYE: Final = (33, 160, 158, 133, 153, 144)
LEFT_EYE: Final = (263, 387, 385, 362, 380, 373)
#: The same six points in the iris model's 71-point eye contour (0 outer corner, 8 inner corner,
#: 3 and 5 on the lower lid, 11 and 13 on the upper lid), for either eye.
EYE_CONTOUR: Final = (0, 11, 13, 8, 5, 3)
#: Inner lip contour: corners (78, 308) and three vertical pairs (82-87, 13-14, 312-317).
MOUTH_INNER_CORNERS: Final = (78, 308)
MOUTH_INNER_PAIRS: Final = ((82, 87), (13, 14), (312, 317))
#: Outer mouth corners (61: subject's right, 291: subject's left).
MOUTH_CORNERS: Final = (61, 291)
NOSE_TIP: Final = 1
FOREHEAD: Final = 10
CHIN: Final = 152
RIGHT_EYE_OUTER: Final = 33
LEFT_EYE_OUTER: Final = 263
#: Raw pitch of a frontal face: the median over 310 LFW dev-test photos (every 5th file, YuNet crop,
#: iris model on; 25th-75th percentiles -11.2 to +1.0), subtracted from every raw pitch.
PITCH_OFFSET_DEG: Final = -4.6


@dataclass(frozen=True)
class HeadPose:
    """Degrees; see the module docstring for the sign conventions."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class FaceMeasures:
    """Everything the challenge engine reads from one face.

    ``ear_right`` / ``ear_left``: eye aspect ratio of the subject's right / left eye (open ~0.25-0.35,
    closed < 0.1). ``mar``: inner-mouth aspect ratio (closed ~0, wide open > 0.5).
    ``mouth_width``: mouth-corner distance over outer eye-corner distance (grows with a smile).
    ``nose``: nose tip normalised to the raw frame (0..1, x right, y down).
    ``face_aspect``: eye-line-to-mouth distance over the outer eye-corner distance; stable on a
    live face (a blink does not change it), squashed when a flat photo is tilted.
    ``shape``: the few mesh points the 3D-consistency check compares between frames
    (:func:`services.liveness.parallax.shape_of`, 62 floats); None for analyses stored without it.
    ``mouth_area``: the grey picture of the mouth and chin that OPEN_MOUTH compares
    (:func:`services.liveness.mouth_area.mouth_area`; the analyzer adds it, the mesh alone cannot);
    None for analyses stored without it.
    """

    pose: HeadPose
    ear_right: float
    ear_left: float
    mar: float
    mouth_width: float
    nose: tuple[float, float]
    face_aspect: float
    shape: Shape | None = None
    mouth_area: bytes | None = field(default=None, repr=False)

    @property
    def ear(self) -> float:
        """Mean eye aspect ratio of both eyes."""
        return (self.ear_right + self.ear_left) / 2.0

    @property
    def nose_mirrored(self) -> tuple[float, float]:
        """The nose tip in the mirrored preview's normalised coordinates (x flipped)."""
        return 1.0 - self.nose[0], self.nose[1]


def _dist(points: FloatArray, a: int, b: int) -> float:
    return float(np.linalg.norm(points[a, :2].astype(np.float64) - points[b, :2].astype(np.float64)))


def eye_aspect_ratio(points: FloatArray, eye: tuple[int, int, int, int, int, int]) -> float:
    """EAR of one eye from 2D image points (p1..p6 as in :data:`RIGHT_EYE`)."""
    p1, p2, p3, p4, p5, p6 = eye
    width = _dist(points, p1, p4)
    if width <= 1e-6:
        return 0.0
    return (_dist(points, p2, p6) + _dist(points, p3, p5)) / (2.0 * width)


def mouth_aspect_ratio(points: FloatArray) -> float:
    """Mean inner-lip gap of three vertical pairs over the inner mouth width."""
    width = _dist(points, *MOUTH_INNER_CORNERS)
    if width <= 1e-6:
        return 0.0
    gaps = [_dist(points, top, bottom) for top, bottom in MOUTH_INNER_PAIRS]
    return sum(gaps) / (len(gaps) * width)


def mouth_width_ratio(points: FloatArray) -> float:
    """Outer mouth-corner distance over the outer eye-corner distance (a cheap smile measure)."""
    eyes = _dist(points, RIGHT_EYE_OUTER, LEFT_EYE_OUTER)
    if eyes <= 1e-6:
        return 0.0
    return _dist(points, *MOUTH_CORNERS) / eyes


def face_aspect_ratio(points: FloatArray) -> float:
    """Distance from the eye-corner midpoint to the mouth-corner midpoint over the eye-corner distance."""
    p = points[:, :2].astype(np.float64)
    eyes = float(np.linalg.norm(p[LEFT_EYE_OUTER] - p[RIGHT_EYE_OUTER]))
    if eyes <= 1e-6:
        return 0.0
    eye_mid = (p[LEFT_EYE_OUTER] + p[RIGHT_EYE_OUTER]) / 2.0
    mouth_mid = (p[MOUTH_CORNERS[0]] + p[MOUTH_CORNERS[1]]) / 2.0
    return float(np.linalg.norm(mouth_mid - eye_mid)) / eyes


def head_pose(points: FloatArray) -> HeadPose:
    """Yaw, pitch, roll in degrees from the mesh's face axes (see the module docstring)."""
    p = points.astype(np.float64)
    x_axis = p[LEFT_EYE_OUTER] - p[RIGHT_EYE_OUTER]  # subject's right eye -> left eye
    y_axis = p[CHIN] - p[FOREHEAD]  # down the face
    x_norm = float(np.linalg.norm(x_axis))
    if x_norm <= 1e-6:
        return HeadPose(0.0, 0.0, 0.0)
    x_axis /= x_norm
    y_axis = y_axis - float(y_axis @ x_axis) * x_axis
    y_norm = float(np.linalg.norm(y_axis))
    if y_norm <= 1e-6:
        return HeadPose(0.0, 0.0, 0.0)
    y_axis /= y_norm
    # x (image right) cross y (image down) points away from the camera for a frontal face;
    # the face's normal points out of the face, toward the camera: its negation.
    normal = -np.cross(x_axis, y_axis)
    nx, ny, nz = (float(v) for v in normal)
    yaw = math.degrees(math.atan2(nx, -nz))
    pitch = math.degrees(math.atan2(-ny, math.hypot(nx, nz))) - PITCH_OFFSET_DEG
    # Roll: the eye line's angle in the image, positive when tilting toward the subject's right
    # shoulder (their right eye, image left, going down).
    eye_line = p[LEFT_EYE_OUTER, :2] - p[RIGHT_EYE_OUTER, :2]
    roll = math.degrees(math.atan2(-float(eye_line[1]), float(eye_line[0])))
    return HeadPose(yaw=yaw, pitch=pitch, roll=roll)


def measure_face(
    points: FloatArray, frame_size: tuple[int, int], eyes: EyeResult | None = None
) -> FaceMeasures:
    """All measures of one face; ``frame_size`` is (width, height) of the raw frame.

    With ``eyes`` (the iris model's contours) the eye aspect ratios come from those contours,
    which follow closed lids far better than the mesh does (on a still with closed eyes the mesh
    still draws open lids: EAR 0.29 from the mesh, 0.05-0.09 from the contours).
    """
    width, height = frame_size
    nose = points[NOSE_TIP]
    if eyes is not None:
        ear_right = eye_aspect_ratio(eyes.right_contour, EYE_CONTOUR)
        ear_left = eye_aspect_ratio(eyes.left_contour, EYE_CONTOUR)
    else:
        ear_right = eye_aspect_ratio(points, RIGHT_EYE)
        ear_left = eye_aspect_ratio(points, LEFT_EYE)
    return FaceMeasures(
        pose=head_pose(points),
        ear_right=ear_right,
        ear_left=ear_left,
        mar=mouth_aspect_ratio(points),
        mouth_width=mouth_width_ratio(points),
        nose=(float(nose[0]) / max(width, 1), float(nose[1]) / max(height, 1)),
        face_aspect=face_aspect_ratio(points),
        shape=shape_of(points),
    )
