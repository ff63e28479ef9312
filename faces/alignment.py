"""Face alignment: a similarity transform (Umeyama) from five keypoints to the ArcFace template."""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["ARCFACE_TEMPLATE", "align_face", "estimate_similarity"]

#: InsightFace's ``arcface_dst``: where the eyes, nose and mouth corners land in a 112x112 crop.
ARCFACE_TEMPLATE: Final = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE.setflags(write=False)


def estimate_similarity(src: npt.ArrayLike, dst: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src to dst.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns". Both arguments are ``N x 2`` point sets; returns the 2x3 matrix ``[s*R | t]``.
    """
    source = np.asarray(src, dtype=np.float64)
    target = np.asarray(dst, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or source.shape[0] < 2:
        raise ValueError(f"need two N x 2 point sets with N >= 2, got {source.shape} and {target.shape}")
    src_mean = source.mean(axis=0)
    dst_mean = target.mean(axis=0)
    src_centered = source - src_mean
    dst_centered = target - dst_mean
    src_variance = float((src_centered**2).sum() / len(source))
    if src_variance <= np.finfo(np.float64).eps:
        raise ValueError("source points are all the same point")
    covariance = dst_centered.T @ src_centered / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection: flip the weakest axis
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = float(singular @ signs) / src_variance
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, np.newaxis]])


def align_face(
    image_bgr: npt.NDArray[np.uint8], keypoints: npt.ArrayLike, size: int = 112
) -> npt.NDArray[np.uint8]:
    """Warp the face so its five keypoints land on the ArcFace template; a ``size x size`` BGR crop."""
    template = ARCFACE_TEMPLATE * (size / 112.0)
    matrix = estimate_similarity(keypoints, template)
    aligned = cv2.warpAffine(image_bgr, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return np.asarray(aligned, dtype=np.uint8)
