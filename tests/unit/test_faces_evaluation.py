"""Verification metrics on small hand-made score sets whose answers are known exactly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from contracts.values import QualityFilter
from faces.detection import Detection
from faces.evaluation import (
    NO_FACE_SCORE,
    AnalysedImage,
    FaceRule,
    Pair,
    assign_folds,
    best_accuracy,
    equal_error_rate,
    kfold_accuracy,
    read_pairs,
    roc_auc,
    roc_curve,
    score_pairs,
    tar_at_far,
    verification_metrics,
)
from faces.pipeline import Face
from faces.quality import FaceQuality

# 4 same-person and 4 different-person scores; 14 of the 16 (same, different) combinations are
# ordered correctly, so AUC = 14/16; at threshold 0.4, FAR = FRR = 1/4.
SAME = [0.9, 0.8, 0.4, 0.35]
DIFFERENT = [0.7, 0.3, 0.2, 0.1]
SCORES = SAME + DIFFERENT
LABELS = [True] * 4 + [False] * 4


def test_roc_curve_points() -> None:
    roc = roc_curve(SCORES, LABELS)
    assert roc.thresholds[0] == math.inf
    np.testing.assert_allclose(roc.thresholds[1:], sorted(set(SCORES), reverse=True))
    np.testing.assert_allclose(roc.tar, [0, 0.25, 0.5, 0.5, 0.75, 1, 1, 1, 1])
    np.testing.assert_allclose(roc.far, [0, 0, 0, 0.25, 0.25, 0.25, 0.5, 0.75, 1])


def test_auc_is_the_share_of_correctly_ordered_pairs() -> None:
    assert roc_auc(SCORES, LABELS) == pytest.approx(14 / 16)
    assert roc_auc([0.9, 0.1], [True, False]) == 1.0
    assert roc_auc([0.1, 0.9], [True, False]) == 0.0
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # a tie counts one half


def test_equal_error_rate() -> None:
    assert equal_error_rate(SCORES, LABELS) == pytest.approx(0.25)
    assert equal_error_rate([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 0.0
    # the ROC jumps from (FAR 0, FRR 1/2) to (FAR 1/2, FRR 0) at the tied 0.5: the straight line
    # between them crosses FAR = FRR at 1/4
    assert equal_error_rate([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(0.25)


def test_tar_at_far_is_conservative() -> None:
    # 4 negatives: FAR 0.25 allows 1 false accept (0.7), so the threshold sits just above 0.3
    tar, threshold = tar_at_far(SCORES, LABELS, 0.25)
    assert tar == 1.0
    assert 0.3 < threshold <= 0.35
    # FAR 0.1 allows none: just above 0.7, two of the four same-person scores remain
    assert tar_at_far(SCORES, LABELS, 0.1)[0] == 0.5
    assert tar_at_far(SCORES, LABELS, 1e-3)[0] == 0.5
    # tied negatives are rejected together: FAR 1/3 allows one of the two 0.5s, so neither is accepted
    tar, threshold = tar_at_far([0.9, 0.5, 0.5, 0.5, 0.1], [True, True, False, False, False], 1 / 3)
    assert tar == 0.5
    assert threshold > 0.5


def test_best_accuracy_on_all_pairs() -> None:
    # only a threshold between 0.3 and 0.35 gets 7 of 8 right (the 0.7 different pair is the error)
    accuracy, threshold = best_accuracy(SCORES, LABELS)
    assert accuracy == pytest.approx(7 / 8)
    assert threshold == pytest.approx(0.325)


def test_kfold_chooses_the_threshold_on_the_other_folds() -> None:
    scores = [0.9, 0.8, 0.1, 0.2, 0.7, 0.35, 0.3, 0.05]
    labels = [True, True, False, False, True, True, False, False]
    folds = [1, 1, 1, 1, 2, 2, 2, 2]
    result = kfold_accuracy(scores, labels, folds)
    # fold 1 held out: fold 2 separates at 0.325 and so does fold 1 -> 1.0
    # fold 2 held out: fold 1 separates at 0.5, which rejects fold 2's 0.35 -> 0.75
    assert result.folds == (1, 2)
    assert result.thresholds == pytest.approx((0.325, 0.5))
    assert result.accuracies == pytest.approx((1.0, 0.75))
    assert result.mean == pytest.approx(0.875)
    assert result.std == pytest.approx(0.125)
    # on all pairs at once the same scores look perfect: the held-out estimate is the honest one
    assert best_accuracy(scores, labels)[0] == 1.0


def test_verification_metrics_protocols() -> None:
    folded = verification_metrics(
        [0.9, 0.8, 0.1, 0.2, 0.7, 0.35, 0.3, 0.05],
        [True, True, False, False, True, True, False, False],
        [1, 1, 1, 1, 2, 2, 2, 2],
    )
    assert folded.protocol == "k-fold"
    assert (folded.accuracy, folded.accuracy_std, folded.folds) == pytest.approx((0.875, 0.125, 2))
    assert folded.threshold == pytest.approx((0.325 + 0.5) / 2)
    assert folded.threshold_for(2) == pytest.approx(0.5)
    plain = verification_metrics(SCORES, LABELS, [1] * 8)  # one fold: nothing to hold out
    assert plain.protocol == "best threshold on all pairs"
    assert (plain.accuracy, plain.accuracy_std) == (pytest.approx(7 / 8), 0.0)
    assert plain.as_dict()["tar_at_far_1e-2"] == 0.5
    assert plain.auc == pytest.approx(14 / 16)
    assert plain.eer == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same-person and one different-person"):
        verification_metrics([0.1, 0.2], [True, True])


def test_read_pairs_with_and_without_folds(tmp_path: Path) -> None:
    with_folds = tmp_path / "folds.csv"
    with_folds.write_text("fold,file_a,file_b,same\n3,a/1.jpg,a/2.jpg,1\n4,a/1.jpg,b/1.jpg,0\n")
    assert read_pairs(with_folds) == [
        Pair("a/1.jpg", "a/2.jpg", True, 3),
        Pair("a/1.jpg", "b/1.jpg", False, 4),
    ]
    without = tmp_path / "plain.csv"
    without.write_text("file_a,file_b,same\na.jpg,b.jpg,0\n")
    assert read_pairs(without) == [Pair("a.jpg", "b.jpg", False, None)]
    broken = tmp_path / "broken.csv"
    broken.write_text("file_a,file_b,same\na.jpg,b.jpg,yes\n")
    with pytest.raises(ValueError, match="same must be 1 or 0"):
        read_pairs(broken)
    (tmp_path / "nosame.csv").write_text("file_a,file_b\na.jpg,b.jpg\n")
    with pytest.raises(ValueError, match="missing column"):
        read_pairs(tmp_path / "nosame.csv")


def test_assign_folds_is_stratified() -> None:
    pairs = [Pair(f"s{i}", f"t{i}", True) for i in range(20)] + [
        Pair(f"d{i}", f"e{i}", False) for i in range(20)
    ]
    folded = assign_folds(pairs, 10)
    for fold in range(1, 11):
        members = [pair for pair in folded if pair.fold == fold]
        assert sorted(pair.same for pair in members) == [False, False, True, True]
    assert [(p.file_a, p.file_b, p.same) for p in folded] == [(p.file_a, p.file_b, p.same) for p in pairs]


def _face(
    box: tuple[float, float, float, float], vector: list[float], quality: FaceQuality | None = None
) -> Face:
    embedding = np.array(vector, dtype=np.float32) / np.linalg.norm(vector)
    detection = Detection(box=box, score=0.9, keypoints=np.zeros((5, 2), dtype=np.float32))
    return Face(detection=detection, embedding=embedding, quality=quality)


GOOD = FaceQuality(
    size_px=200, interocular_px=90, sharpness=20, brightness=130, yaw=0, pitch=0, roll=0, detection_score=0.9
)
TINY = FaceQuality(
    size_px=12, interocular_px=5, sharpness=20, brightness=130, yaw=0, pitch=0, roll=0, detection_score=0.9
)


def test_face_rules_pick_the_centre_or_the_largest_face() -> None:
    bystander = _face((0, 0, 60, 60), [1, 0])  # largest, in a corner
    subject = _face((40, 40, 60, 60), [0, 1])  # centred on the 100x100 image
    image = AnalysedImage("x.jpg", 100, 100, (bystander, subject))
    assert image.probe(FaceRule.LARGEST) is bystander
    assert image.probe(FaceRule.CENTRE) is subject
    assert AnalysedImage("none.jpg", 100, 100, ()).probe(FaceRule.CENTRE) is None


def test_pairs_without_a_face_are_rejected_not_dropped() -> None:
    images = {
        "a1": AnalysedImage("a1", 100, 100, (_face((10, 10, 90, 90), [1, 0.1], GOOD),)),
        "a2": AnalysedImage("a2", 100, 100, (_face((10, 10, 90, 90), [1, 0.2], GOOD),)),
        "b1": AnalysedImage("b1", 100, 100, (_face((10, 10, 90, 90), [0.1, 1], TINY),)),
        "empty": AnalysedImage("empty", 100, 100, ()),
    }
    pairs = [
        Pair("a1", "a2", True),
        Pair("a1", "b1", False),
        Pair("a1", "empty", True),  # same person, but no face found: a false reject
        Pair("b1", "empty", False),  # different people, no face: rejected, which is right
    ]
    scores = score_pairs(pairs, images)
    assert scores.missing.tolist() == [False, False, True, True]
    assert scores.cosines[2] == NO_FACE_SCORE == scores.cosines[3]
    metrics = verification_metrics(scores.cosines, scores.labels)
    assert metrics.pairs == 4
    assert metrics.accuracy == pytest.approx(3 / 4)
    # with a quality filter the tiny face in b1 is reported but not matched: its pairs are rejected
    filtered = score_pairs(pairs, images, quality_filter=QualityFilter.LOW)
    assert filtered.missing.tolist() == [False, True, True, True]
    assert score_pairs(pairs, images, quality_filter=QualityFilter.NONE).missing.tolist() == [
        False,
        False,
        True,
        True,
    ]
