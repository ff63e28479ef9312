"""3D consistency on real frames: real heads leave the plane, photos moved by hand do not.

Real heads: the annotated head turns, nods and mouth openings of ../shared/data/video. Photos: the
printed-photo stills of ../shared/data/antispoof posed in 3D and moved by hand
(:mod:`faceproof.testing.moved_photo`: turned, tilted, brought closer, slid, bent), at the worker's
8 fps with its JPEG round trip and the default analyzer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from contracts.values import ChallengeType
from faceproof.testing.annotate import load_video_segments, read_frames
from faceproof.testing.moved_photo import PATHS, moved_photo_frames
from faceproof.testing.scripted_subject import WORKER_FPS, camera_round_trip
from services.liveness.analysis import FrameAnalysis, FrameAnalyzer
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    Challenge,
    ChallengeEvaluator,
    ChallengeStatus,
    Thresholds,
    Verdict,
)
from services.liveness.parallax import (
    SHAPE_POINTS,
    Shape,
    median_shape,
    mouth_deformation,
    nose_parallax,
    shape_of,
)
from tests.paths import DATA_DIR, MODELS_DIR

SEGMENTS = load_video_segments()
FLAT: Final = replace(DEFAULT_THRESHOLDS, depth_frames=0)  # the check switched off
Stream = tuple[tuple[float, FrameAnalysis], ...]
PHOTOS: Final = ("image_F1.jpg", "doubango_spoof.jpg")


@functools.cache
def analyzer() -> FrameAnalyzer:
    return FrameAnalyzer.from_models_dir(MODELS_DIR, threads=2, use_antispoof=False)


def analyze_all(frames: list[npt.NDArray[np.uint8]]) -> Stream:
    engine = analyzer()
    engine.reset()
    return tuple((i / WORKER_FPS, engine.analyze(camera_round_trip(f))) for i, f in enumerate(frames))


@functools.cache
def segment(kind: ChallengeType) -> tuple[float, Stream]:
    video, start, end, mirrored = SEGMENTS.for_challenge(kind)[0]
    step = max(1, round(SEGMENTS.videos[video].fps / WORKER_FPS))
    frames = read_frames(DATA_DIR / "video" / video, start, end, mirrored=mirrored)
    engine = analyzer()
    engine.reset()
    return start, tuple((t, engine.analyze(f)) for i, (t, f) in enumerate(frames) if i % step == 0)


@functools.cache
def moved(photo: str, path: str) -> Stream:
    image = cv2.imread(str(DATA_DIR / "antispoof" / photo))
    assert image is not None, photo
    return analyze_all(moved_photo_frames(np.asarray(image, dtype=np.uint8), PATHS[path]))


def judge(
    challenge: Challenge, stream: Stream, start: float = 0.0, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> Verdict:
    evaluator = ChallengeEvaluator(challenge, start, thresholds)
    for t, frame in stream:
        if evaluator.update(t, frame).done:
            break
    return evaluator.expire(evaluator.deadline + 0.01)


def shapes(stream: Stream) -> list[Shape]:
    return [f.measures.shape for _, f in stream if f.measures is not None and f.measures.shape is not None]


def test_a_plane_explains_a_homography_and_not_a_nose_that_moves() -> None:
    _, stream = segment(ChallengeType.BLINK)
    base = shapes(stream)[0]
    assert len(base) == 2 * len(SHAPE_POINTS)
    assert base == shape_of(np.asarray(stream[0][1].landmarks))  # what the analysis stores per frame
    points = np.asarray(base).reshape(-1, 2)
    homography = np.array([[1.2, 0.1, 30.0], [-0.05, 0.9, -12.0], [2e-4, -1e-4, 1.0]])
    mapped = np.c_[points, np.ones(len(points))] @ homography.T
    warped = tuple((mapped[:, :2] / mapped[:, 2:3]).reshape(-1))
    assert nose_parallax(base, warped) < 1e-3
    assert mouth_deformation(base, warped) < 1e-3
    eye_distance = float(np.linalg.norm(points[SHAPE_POINTS.index(263)] - points[SHAPE_POINTS.index(33)]))
    nosed = points.copy()
    for index in (1, 4, 5, 195, 2):  # the nose tip points move 0.1 eye-corner distance sideways
        nosed[SHAPE_POINTS.index(index), 0] += 0.1 * eye_distance
    assert nose_parallax(base, tuple(nosed.reshape(-1))) == pytest.approx(0.1, abs=0.01)
    assert median_shape([base, warped, base]) == pytest.approx(base)
    with pytest.raises(ValueError, match="62"):
        nose_parallax(base, base[:-2])


@pytest.mark.parametrize(
    ("kind", "measure", "least"),
    [
        (ChallengeType.TURN_LEFT, nose_parallax, DEFAULT_THRESHOLDS.min_nose_parallax),
        (ChallengeType.LOOK_UP, nose_parallax, DEFAULT_THRESHOLDS.min_look_parallax),
        (ChallengeType.OPEN_MOUTH, mouth_deformation, DEFAULT_THRESHOLDS.min_mouth_deformation),
    ],
)
def test_real_heads_leave_the_plane_and_pass(
    kind: ChallengeType, measure: Callable[[Shape, Shape], float], least: float
) -> None:
    start, stream = segment(kind)
    seen = shapes(stream)
    base = median_shape(seen[:3])
    values = sorted(measure(base, s) for s in seen[3:])
    assert values[-2] >= least, values
    still = [nose_parallax(base, s) for s in seen[:3]]
    assert max(still) < 0.03  # the baseline frames themselves: a head's noise
    assert judge(Challenge(kind), stream, start).status is ChallengeStatus.PASSED
    replayed = tuple((t, FrameAnalysis.from_dict(f.to_dict())) for t, f in stream)
    assert judge(Challenge(kind), replayed, start) == judge(Challenge(kind), stream, start)


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("path", list(PATHS))
def test_a_photo_moved_by_hand_passes_no_challenge(photo: str, path: str) -> None:
    stream = moved(photo, path)
    measured = [f for _, f in stream if f.measures is not None]
    assert len(measured) >= len(stream) - 2, "the analysis should see the face on the photo"
    first, last = measured[0].measures, measured[-1].measures
    assert first is not None and last is not None
    target = (round(last.nose_mirrored[0], 3), round(last.nose_mirrored[1], 3))
    for kind in ChallengeType:
        challenge = Challenge(kind, target if kind is ChallengeType.NOSE_TO_TARGET else None)
        verdict = judge(challenge, stream)
        assert verdict.status is ChallengeStatus.FAILED, (kind, verdict)


def test_without_the_check_moved_photos_pass_the_rigid_challenges() -> None:
    """What the check stops: the same moved photos answer MOVE_CLOSER and NOSE_TO_TARGET without it."""
    for photo in PHOTOS:
        closer = moved(photo, "closer")
        assert (
            judge(Challenge(ChallengeType.MOVE_CLOSER), closer, thresholds=FLAT).status
            is ChallengeStatus.PASSED
        )
        slide = moved(photo, "slide")
        last = slide[-1][1].measures
        assert last is not None
        target = Challenge(
            ChallengeType.NOSE_TO_TARGET, (round(last.nose_mirrored[0], 3), round(last.nose_mirrored[1], 3))
        )
        assert judge(target, slide, thresholds=FLAT).status is ChallengeStatus.PASSED
        verdict = judge(target, slide)
        assert verdict.status is ChallengeStatus.FAILED and "flat" in verdict.detail
