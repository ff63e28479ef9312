"""3D consistency: does a movement show a head, or a flat picture that a single plane explains?

A printed photo, a screen or a piece of artwork moves as a plane: whatever a hand does with it
(slide, turn, tilt, bring it closer), the image points of the face on it follow one homography
between two frames. A real head does not: when it turns or nods, the nose tip, which sits
2-3 cm in front of the eyes and the mouth, moves against them (parallax); when the mouth
opens, the lips move against the rest of the face.

The measure: a homography fitted (least squares, normalised DLT) to the **front points**
(:data:`FRONT`: eye corners, brows, forehead, nose bridge, chin, cheeks, mouth corners: nearly
one plane on a real face) of a baseline frame and the current frame; then how far the points
that leave that plane on a real face land from where the homography puts them, in units of the
outer eye-corner distance (mean of both frames):

* :func:`nose_parallax`: the nose tip (:data:`TIP`), for turns, looks, coming closer and
  pointing the nose;
* :func:`mouth_deformation`: the inner and lower lip (:data:`LIPS`), for OPEN_MOUTH.

Measured with this project's analysis (8 fps, JPEG 85, detector every 5th frame; see
docs/liveness.md), nose parallax against the baseline: a still head 0.003-0.030 (5th-95th
percentile), head turns of 15 degrees or more at least 0.085 (2nd-largest frame up to the held
turn; median 0.135), nods of 8 degrees or more at least 0.031 (median 0.075); photos and prints
moved by hand (turned or tilted up to 35 degrees, bent, brought closer, slid) at most 0.062 when
flat, 0.093 when bent (2nd-largest frame of each movement).

Per-frame state is small and serialisable: :func:`shape_of` keeps the :data:`SHAPE_POINTS`
(31 mesh points, x and y in frame pixels) as a flat tuple of 62 floats, stored with the frame's
measures (``FaceMeasures.shape``) so a replay of stored analyses judges the same. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "FRONT",
    "LIPS",
    "SHAPE_POINTS",
    "TIP",
    "Shape",
    "median_shape",
    "mouth_deformation",
    "nose_parallax",
    "shape_of",
]

Shape = tuple[float, ...]
FloatArray = npt.NDArray[np.float64]

#: Mesh points close to one plane on a real face: outer and inner eye corners (33, 133, 362,
#: 263), brows (70, 105, 107, 336, 334, 300), forehead and nose bridge (10, 151, 9, 168), chin
#: (152), cheeks (50, 280, 205, 425), mouth corners (61, 291).
FRONT: Final = (
    *(33, 133, 362, 263),
    *(70, 105, 107, 336, 334, 300),
    *(10, 151, 9, 168, 152),
    *(50, 280, 205, 425, 61, 291),
)
#: The nose tip and its neighbours (1, 4, 5, 195, 2): the points furthest in front of that plane.
TIP: Final = (1, 4, 5, 195, 2)
#: Upper and lower lip, inner (13, 14) and outer (0, 17) middle points: they move when the mouth opens.
LIPS: Final = (13, 14, 0, 17, 87)
#: What a frame keeps: the front points, then the tip, then the lips.
SHAPE_POINTS: Final = FRONT + TIP + LIPS
_EYE_OUTER: Final = (SHAPE_POINTS.index(33), SHAPE_POINTS.index(263))
_FRONT_ROWS: Final = tuple(range(len(FRONT)))
_TIP_ROWS: Final = tuple(SHAPE_POINTS.index(p) for p in TIP)
_LIP_ROWS: Final = tuple(SHAPE_POINTS.index(p) for p in LIPS)


def shape_of(landmarks: npt.ArrayLike) -> Shape:
    """The :data:`SHAPE_POINTS` of a ``468 x 2`` (or ``x 3``) mesh, flattened, rounded to 0.1 px."""
    points = np.asarray(landmarks, dtype=np.float64)[list(SHAPE_POINTS), :2]
    return tuple(round(float(v), 1) for v in points.reshape(-1))


def _points(shape: Sequence[float]) -> FloatArray:
    array = np.asarray(shape, dtype=np.float64)
    if array.size != 2 * len(SHAPE_POINTS):
        raise ValueError(f"a shape has {2 * len(SHAPE_POINTS)} numbers, got {array.size}")
    return array.reshape(-1, 2)


def median_shape(shapes: Sequence[Sequence[float]]) -> Shape:
    """Point-wise median of several frames' shapes (a baseline)."""
    if not shapes:
        raise ValueError("a median shape needs at least one shape")
    stacked = np.stack([_points(s) for s in shapes])
    return tuple(float(v) for v in np.median(stacked, axis=0).reshape(-1))


def _normaliser(points: FloatArray) -> FloatArray:
    centre = points.mean(axis=0)
    spread = float(np.sqrt(((points - centre) ** 2).sum(axis=1)).mean())
    s = np.sqrt(2.0) / max(spread, 1e-9)
    return np.array([[s, 0.0, -s * centre[0]], [0.0, s, -s * centre[1]], [0.0, 0.0, 1.0]])


def _homography(source: FloatArray, target: FloatArray) -> FloatArray:
    """Least-squares homography mapping ``source`` onto ``target`` (normalised DLT)."""
    ts, tt = _normaliser(source), _normaliser(target)
    a = np.c_[source, np.ones(len(source))] @ ts.T
    b = np.c_[target, np.ones(len(target))] @ tt.T
    rows = np.zeros((2 * len(a), 9))
    rows[0::2, 0:3] = a
    rows[0::2, 6:9] = -b[:, 0:1] * a
    rows[1::2, 3:6] = a
    rows[1::2, 6:9] = -b[:, 1:2] * a
    h = np.linalg.svd(rows)[2][-1].reshape(3, 3)
    full = np.linalg.inv(tt) @ h @ ts
    return np.asarray(full / full[2, 2], dtype=np.float64)


def _off_plane(base: Sequence[float], current: Sequence[float], rows: tuple[int, ...]) -> float:
    """Mean distance of ``rows`` from where the front points' homography puts them.

    In units of the outer eye-corner distance (the mean of both frames'). Not cached: the points
    are a face's shape, which must not outlive its session in the worker's memory.
    """
    b, c = _points(base), _points(current)
    front = list(_FRONT_ROWS)
    homography = _homography(b[front], c[front])
    picked = list(rows)
    mapped = np.c_[b[picked], np.ones(len(picked))] @ homography.T
    predicted = mapped[:, :2] / mapped[:, 2:3]
    i, j = _EYE_OUTER
    scale = 0.5 * (float(np.linalg.norm(b[j] - b[i])) + float(np.linalg.norm(c[j] - c[i])))
    if scale <= 1e-6:
        return 0.0
    return float(np.linalg.norm(predicted - c[picked], axis=1).mean()) / scale


def nose_parallax(base: Sequence[float], current: Sequence[float]) -> float:
    """How far the nose tip left the plane of the front points between two frames (0 for a photo)."""
    return _off_plane(base, current, _TIP_ROWS)


def mouth_deformation(base: Sequence[float], current: Sequence[float]) -> float:
    """How far the lips left the plane of the front points between two frames (0 for a photo)."""
    return _off_plane(base, current, _LIP_ROWS)
