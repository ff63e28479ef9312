"""Passive anti-spoofing (MiniFASNet) on real and attack stills from ../shared/data/antispoof."""

from __future__ import annotations

import functools

import pytest

from faces.images import decode_image
from services.liveness.analysis import FrameAnalyzer
from services.liveness.antispoof import AntiSpoof, minivision_crop_box
from services.liveness.challenges import spoof_suspected
from tests.paths import DATA_DIR, MODELS_DIR

ANTISPOOF = DATA_DIR / "antispoof"


@functools.cache
def analyzer() -> FrameAnalyzer:
    return FrameAnalyzer.from_models_dir(MODELS_DIR, threads=2, detect_every=1, use_iris=False)


def score(name: str) -> float:
    image = decode_image((ANTISPOOF / name).read_bytes(), max_pixels=40_000_000)
    analysis = analyzer().analyze(image, force_detect=True)
    assert analysis.box is not None
    return analyzer().spoof_score(image, analysis.box)


@pytest.mark.parametrize("name", ["image_T1.jpg", "doubango_genuine.jpg"])
def test_real_faces_score_high(name: str) -> None:
    assert score(name) > 0.9


@pytest.mark.parametrize("name", ["image_F1.jpg", "image_F2.jpg", "doubango_spoof.jpg", "bulk__rgb_fake.jpg"])
def test_printed_and_replayed_faces_score_low(name: str) -> None:
    assert score(name) < 0.4


def test_the_session_level_rule() -> None:
    real = [score("image_T1.jpg")] * 3
    fake = [score("image_F2.jpg")] * 3
    assert spoof_suspected(real) is False
    assert spoof_suspected(fake) is True
    assert spoof_suspected(real[:2]) is None  # too few samples for an opinion
    assert spoof_suspected([*real[:2], *fake]) is True  # the median decides


def test_crop_box_follows_minivision() -> None:
    # scaled around the centre when it fits
    assert minivision_crop_box((640, 480), (300.0, 200.0, 340.0, 240.0), 2.7) == (266, 166, 374, 274)
    # shifted back inside at the border instead of being cut
    assert minivision_crop_box((640, 480), (0.0, 0.0, 40.0, 40.0), 4.0) == (0, 0, 160, 160)
    # the scale shrinks when the scaled box cannot fit at all
    x1, y1, x2, y2 = minivision_crop_box((640, 480), (100.0, 100.0, 400.0, 400.0), 4.0)
    assert (y1, y2) == (0, 479) and x2 - x1 == 479


def test_needs_at_least_one_model() -> None:
    with pytest.raises(ValueError):
        AntiSpoof([])
