from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from faces.calibration import Calibration
from faces.embedding import cosine
from faces.fit_calibration import accuracy_at, best_accuracy, fit_platt, read_pairs, threshold_at_far
from faces.packs import BUILTIN_PACKS


def test_similarity_is_monotonic_and_bounded() -> None:
    calibration = Calibration(a=17.0, b=-6.0, cosine_threshold=0.35)
    values = [calibration.similarity(c) for c in np.linspace(-1, 1, 201)]
    assert all(b > a for a, b in itertools.pairwise(values))
    assert all(0.0 <= v <= 1.0 for v in values)
    assert calibration.similarity(-1e6) == 0.0
    assert calibration.similarity(1e6) == 1.0


def test_threshold_is_the_similarity_at_the_cosine_threshold() -> None:
    calibration = Calibration(a=10.0, b=-3.0, cosine_threshold=0.3)
    assert calibration.threshold == pytest.approx(0.5)
    assert calibration.similarity(0.4) > calibration.threshold > calibration.similarity(0.2)
    assert Calibration(a=4.0, b=0.0, cosine_threshold=0.5).threshold == pytest.approx(1 / (1 + math.exp(-2)))


def test_calibration_rejects_a_decreasing_mapping() -> None:
    with pytest.raises(ValueError):
        Calibration(a=-1.0, b=0.0, cosine_threshold=0.3)


def test_cosine() -> None:
    assert cosine([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine([1, 1], [2, 2]) == pytest.approx(1.0)
    assert cosine([1, 0], [-3, 0]) == pytest.approx(-1.0)
    assert cosine([0, 0], [1, 0]) == 0.0


def test_fit_platt_recovers_logistic_parameters() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 0.9, size=20_000)
    labels = rng.uniform(size=x.size) < 1 / (1 + np.exp(-(12.0 * x - 4.0)))
    a, b = fit_platt(x, labels)
    assert a == pytest.approx(12.0, rel=0.1)
    assert b == pytest.approx(-4.0, rel=0.1)


def test_fit_platt_stays_finite_on_separable_data() -> None:
    a, b = fit_platt([0.1, 0.2, 0.6, 0.7], [False, False, True, True])
    assert math.isfinite(a) and math.isfinite(b) and a > 0


def test_threshold_at_far() -> None:
    negatives = np.linspace(0.0, 0.4, 500)
    assert threshold_at_far(negatives, 1e-3) == pytest.approx(0.401)  # none of 500 may reach it
    t = threshold_at_far(negatives, 1e-2)  # 5 of 500 may
    assert int(np.sum(negatives >= t)) == 5
    assert threshold_at_far(negatives, 1.0) == -1.0


def test_best_accuracy_and_accuracy_at() -> None:
    x = [0.1, 0.2, 0.3, 0.6, 0.7, 0.25]
    y = [False, False, False, True, True, True]
    accuracy, threshold = best_accuracy(x, y)
    assert accuracy == pytest.approx(5 / 6)
    assert accuracy_at(x, y, threshold) == pytest.approx(accuracy)
    assert best_accuracy([0.1, 0.9], [False, True])[0] == 1.0


def test_read_pairs(tmp_path: Path) -> None:
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("fold,file_a,file_b,same\n1,a/1.jpg,a/2.jpg,1\n1,a/1.jpg,b/1.jpg,0\n")
    pairs = read_pairs(csv_file)
    assert [(p.file_a, p.file_b, p.same) for p in pairs] == [
        ("a/1.jpg", "a/2.jpg", True),
        ("a/1.jpg", "b/1.jpg", False),
    ]


@pytest.mark.parametrize("name", sorted(BUILTIN_PACKS))
def test_builtin_calibrations_are_sane(name: str) -> None:
    calibration = BUILTIN_PACKS[name].calibration
    assert 0.0 < calibration.cosine_threshold < 1.0
    assert 0.0 < calibration.threshold < 1.0
    assert calibration.similarity(0.9) > 0.95
    assert calibration.similarity(0.0) < 0.05


def test_threshold_for_a_false_match_rate_interpolates_on_log_scale() -> None:
    calibration = Calibration(
        a=20.0, b=-6.0, cosine_threshold=0.3, fmr_cosines=((1e-2, 0.2), (1e-3, 0.3), (1e-4, 0.4))
    )
    assert calibration.cosine_for_false_match_rate(1e-3) == pytest.approx(0.3)
    assert calibration.cosine_for_false_match_rate(10**-3.5) == pytest.approx(0.35)
    assert calibration.cosine_for_false_match_rate(1e-5) is None  # not measured: no promise
    assert calibration.cosine_for_false_match_rate(0.1) is None


def test_without_measurements_only_the_default_rate_is_known() -> None:
    calibration = Calibration(a=20.0, b=-6.0, cosine_threshold=0.3)
    assert calibration.cosine_for_false_match_rate(1e-3) == 0.3
    assert calibration.cosine_for_false_match_rate(1e-2) is None


def test_rates_must_be_listed_largest_first() -> None:
    with pytest.raises(ValueError):
        Calibration(a=20.0, b=-6.0, cosine_threshold=0.3, fmr_cosines=((1e-4, 0.4), (1e-2, 0.2)))
