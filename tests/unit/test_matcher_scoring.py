"""The matcher's comparison maths, on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.values import ErrorCode
from services.matcher.scoring import AnalyzedFace, ComparisonError, compare_faces, cosine


def face(box: tuple[float, float, float, float], *vector: float) -> AnalyzedFace:
    return AnalyzedFace(box=box, score=0.9, embedding=np.array(vector, dtype=np.float32))


def identity(value: float) -> float:
    return (value + 1) / 2


def test_cosine() -> None:
    a = np.array([1.0, 0.0], dtype=np.float32)
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, np.array([0.0, 2.0], dtype=np.float32)) == pytest.approx(0.0)
    assert cosine(a, np.array([-3.0, 0.0], dtype=np.float32)) == pytest.approx(-1.0)
    assert cosine(a, np.zeros(2, dtype=np.float32)) == 0.0


def test_largest_source_face_is_used_and_every_target_is_scored() -> None:
    small = face((0, 0, 10, 10), 0.0, 1.0)
    large = face((0, 0, 100, 100), 1.0, 0.0)
    targets = [
        face((5, 5, 50, 50), 1.0, 0.0),
        face((60, 60, 90, 90), 0.0, 1.0),
        face((1, 1, 9, 9), -1.0, 0.0),
    ]
    result = compare_faces([small, large], targets, similarity=identity, threshold=0.8)
    assert result.source_face.box == (0, 0, 100, 100)
    assert [t.similarity for t in result.target_faces] == [1.0, 0.5, 0.0]
    assert [t.match for t in result.target_faces] == [True, False, False]
    assert result.similarity == 1.0 and result.match


def test_no_match_below_threshold() -> None:
    result = compare_faces(
        [face((0, 0, 1, 1), 1.0, 0.0)], [face((0, 0, 1, 1), 0.0, 1.0)], similarity=identity, threshold=0.6
    )
    assert result.similarity == 0.5 and not result.match and result.threshold == 0.6


@pytest.mark.parametrize(
    ("source", "target", "code"),
    [
        ([], [face((0, 0, 1, 1), 1.0)], ErrorCode.NO_FACE_IN_SOURCE),
        ([face((0, 0, 1, 1), 1.0)], [], ErrorCode.NO_FACE_IN_TARGET),
    ],
)
def test_missing_faces_are_reported(
    source: list[AnalyzedFace], target: list[AnalyzedFace], code: ErrorCode
) -> None:
    with pytest.raises(ComparisonError) as caught:
        compare_faces(source, target, similarity=identity, threshold=0.5)
    assert caught.value.code == code
