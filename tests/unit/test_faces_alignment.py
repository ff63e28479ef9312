from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from faces.alignment import ARCFACE_TEMPLATE, align_face, estimate_similarity


def similarity_matrix(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points @ matrix[:, :2].T + matrix[:, 2], dtype=np.float64)


@pytest.mark.parametrize(
    ("scale", "angle", "tx", "ty"), [(1.0, 0.0, 0.0, 0.0), (0.37, 0.4, 12.0, -3.0), (2.5, -2.8, -40, 7)]
)
def test_umeyama_recovers_a_known_similarity(scale: float, angle: float, tx: float, ty: float) -> None:
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 300, size=(5, 2))
    expected = similarity_matrix(scale, angle, tx, ty)
    recovered = estimate_similarity(source, apply(expected, source))
    np.testing.assert_allclose(recovered, expected, atol=1e-9)


def test_umeyama_is_least_squares_with_noise() -> None:
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 200, size=(50, 2))
    expected = similarity_matrix(0.8, 0.3, 5.0, 9.0)
    target = apply(expected, source) + rng.normal(0, 0.5, size=source.shape)
    estimate = estimate_similarity(source, target)
    np.testing.assert_allclose(estimate[:, :2], expected[:, :2], atol=0.01)
    np.testing.assert_allclose(estimate[:, 2], expected[:, 2], atol=0.5)
    residual = np.sum((apply(estimate, source) - target) ** 2)
    assert residual <= np.sum((apply(expected, source) - target) ** 2)  # at least as good as the truth


def test_umeyama_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 2)), np.ones((4, 2)))


def test_aligned_landmarks_land_on_the_template() -> None:
    # Dots drawn where a rotated, scaled, shifted template would be must end up on the template.
    truth = similarity_matrix(2.2, 0.35, 140.0, 60.0)
    keypoints = apply(truth, ARCFACE_TEMPLATE)
    image = np.zeros((500, 500, 3), dtype=np.uint8)
    for x, y in keypoints:
        cv2.circle(image, (round(x), round(y)), 4, (255, 255, 255), -1)

    aligned = align_face(image, keypoints)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    for x, y in ARCFACE_TEMPLATE:
        assert aligned[round(y), round(x)].min() > 200
    assert aligned.sum() < 255 * 3 * 5 * 40  # only the five dots are bright

    matrix = estimate_similarity(keypoints, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(apply(matrix, keypoints), ARCFACE_TEMPLATE, atol=1e-6)


def test_align_face_other_sizes_scale_the_template() -> None:
    keypoints = ARCFACE_TEMPLATE * 2
    image = np.full((300, 300, 3), 90, dtype=np.uint8)
    assert align_face(image, keypoints, size=224).shape == (224, 224, 3)
