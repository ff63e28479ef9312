"""The matcher's comparison maths, on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.values import ErrorCode, ErrorInfo, Fusion, ThresholdSource
from services.matcher.scoring import (
    AnalyzedFace,
    ComparisonError,
    choose_threshold,
    compare_faces,
    cosine,
    match_references,
)


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
    assert result.similarity == 0.5 and not result.match


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


def rates(rate: float) -> float | None:
    return {1e-3: 0.45, 1e-4: 0.6}.get(rate)


def test_threshold_from_the_request_wins() -> None:
    chosen = choose_threshold(0.7, None, default_rate=1e-3, threshold_for_rate=rates)
    assert (chosen.value, chosen.source, chosen.false_match_rate) == (0.7, ThresholdSource.REQUEST, None)


def test_threshold_for_a_target_false_match_rate() -> None:
    chosen = choose_threshold(None, 1e-4, default_rate=1e-3, threshold_for_rate=rates)
    assert (chosen.value, chosen.source, chosen.false_match_rate) == (
        0.6,
        ThresholdSource.TARGET_FALSE_MATCH_RATE,
        1e-4,
    )


def test_default_threshold_names_its_rate() -> None:
    chosen = choose_threshold(None, None, default_rate=1e-3, threshold_for_rate=rates)
    assert (chosen.value, chosen.source, chosen.false_match_rate) == (0.45, ThresholdSource.DEFAULT, 1e-3)


def test_unmeasured_rate_is_refused() -> None:
    with pytest.raises(ComparisonError) as caught:
        choose_threshold(None, 1e-9, default_rate=1e-3, threshold_for_rate=rates)
    assert caught.value.code == ErrorCode.UNSUPPORTED_FALSE_MATCH_RATE


PROBE = [face((0, 0, 10, 10), 0.0, 1.0), face((0, 0, 100, 100), 1.0, 0.0)]
NO_FACE = ErrorInfo(code=ErrorCode.INVALID_IMAGE, detail="not an image")


def test_references_max_fusion_uses_the_best_and_reports_each() -> None:
    references = [
        [face((0, 0, 5, 5), 0.0, 1.0)],
        [],
        NO_FACE,
        [face((0, 0, 5, 5), 1.0, 0.0), face((0, 0, 1, 1), 0.0, 1.0)],
    ]
    result = match_references(PROBE, references, similarity=identity, threshold=0.8, fusion=Fusion.MAX)
    assert [r.similarity for r in result.references] == [0.5, None, None, 1.0]
    assert (
        result.references[1].error is not None
        and result.references[1].error.code == ErrorCode.NO_FACE_IN_TARGET
    )
    assert result.references[2].error == NO_FACE
    assert result.similarity == 1.0 and result.match
    assert result.probe_face.box == (0, 0, 100, 100)


def test_references_mean_fusion_averages_the_usable_references() -> None:
    references = [[face((0, 0, 5, 5), 0.0, 1.0)], [face((0, 0, 5, 5), 1.0, 0.0)], []]
    result = match_references(PROBE, references, similarity=identity, threshold=0.8, fusion=Fusion.MEAN)
    assert result.similarity == 0.75 and not result.match


def test_references_without_any_face() -> None:
    with pytest.raises(ComparisonError) as caught:
        match_references(PROBE, [[], NO_FACE], similarity=identity, threshold=0.5, fusion=Fusion.MAX)
    assert caught.value.code == ErrorCode.NO_FACE_IN_REFERENCES
    with pytest.raises(ComparisonError) as caught:
        match_references(
            [], [[face((0, 0, 1, 1), 1.0)]], similarity=identity, threshold=0.5, fusion=Fusion.MAX
        )
    assert caught.value.code == ErrorCode.NO_FACE_IN_SOURCE


def poor(box: tuple[float, float, float, float], *vector: float) -> AnalyzedFace:
    return AnalyzedFace(box=box, score=0.9, embedding=np.array(vector, dtype=np.float32), issues=("BLURRY",))


def test_faces_below_the_quality_bar_are_reported_not_matched() -> None:
    targets = [poor((0, 0, 50, 50), 1.0, 0.0), face((0, 0, 40, 40), 0.6, 0.8)]
    result = compare_faces(PROBE, targets, similarity=identity, threshold=0.5)
    first, second = result.target_faces
    assert first.similarity is None and not first.match and first.quality_issues == ("BLURRY",)
    assert second.similarity == pytest.approx(0.8) and second.match
    assert result.similarity == second.similarity


def test_every_target_below_the_bar_is_an_error() -> None:
    with pytest.raises(ComparisonError) as caught:
        compare_faces(PROBE, [poor((0, 0, 5, 5), 1.0, 0.0)], similarity=identity, threshold=0.5)
    assert caught.value.code == ErrorCode.TARGET_FACES_BELOW_QUALITY and "BLURRY" in caught.value.detail


def test_a_poor_source_face_is_an_error() -> None:
    with pytest.raises(ComparisonError) as caught:
        compare_faces(
            [poor((0, 0, 9, 9), 1.0, 0.0)], [face((0, 0, 5, 5), 1.0, 0.0)], similarity=identity, threshold=0.5
        )
    assert caught.value.code == ErrorCode.SOURCE_FACE_BELOW_QUALITY


def test_a_poor_reference_is_reported_and_left_out_of_the_fusion() -> None:
    references = [[poor((0, 0, 5, 5), 1.0, 0.0)], [face((0, 0, 5, 5), 0.0, 1.0)]]
    result = match_references(PROBE, references, similarity=identity, threshold=0.8, fusion=Fusion.MEAN)
    assert result.references[0].error is not None
    assert result.references[0].error.code == ErrorCode.TARGET_FACES_BELOW_QUALITY
    assert result.similarity == 0.5 and not result.match
