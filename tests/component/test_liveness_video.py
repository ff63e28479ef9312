"""The challenge engine on real frames: annotated video segments, still photos, moved and scaled video
(flat: the 3D-consistency check stops them).

Frames are sampled at the worker's 8 fps and analysed with the default analyzer (detection every
5th frame, tracking in between). Only the annotated second or two of each video is decoded, and
every stream is analysed once per test session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from contracts.values import ChallengeType
from faceproof.testing.annotate import SEARCHED, load_video_segments, read_frames
from services.liveness.analysis import FrameAnalysis, FrameAnalyzer
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    Challenge,
    ChallengeEvaluator,
    ChallengeSequence,
    ChallengeStatus,
    FailureReason,
    Thresholds,
    Verdict,
)
from tests.faces_support import read_image
from tests.paths import DATA_DIR, MODELS_DIR, REPO_ROOT

VIDEOS = DATA_DIR / "video"
SEGMENTS = load_video_segments()
WORKER_FPS = 8.0
#: The challenge types the shared recordings hold annotated segments of.
ANNOTATED = (
    ChallengeType.TURN_LEFT,
    ChallengeType.TURN_RIGHT,
    ChallengeType.LOOK_UP,
    ChallengeType.LOOK_DOWN,
    ChallengeType.BLINK,
    ChallengeType.OPEN_MOUTH,
)
Image = npt.NDArray[np.uint8]
Stream = tuple[tuple[float, FrameAnalysis], ...]


@functools.cache
def analyzer() -> FrameAnalyzer:
    return FrameAnalyzer.from_models_dir(MODELS_DIR, threads=2, use_antispoof=False)


def analyze_all(frames: Sequence[tuple[float, Image]]) -> Stream:
    engine = analyzer()
    engine.reset()
    return tuple((t, engine.analyze(frame)) for t, frame in frames)


def sampled(video: str, start: float, end: float, *, mirrored: bool = False) -> list[tuple[float, Image]]:
    """The video's frames from ``start`` to ``end`` at about 8 fps."""
    step = max(1, round(SEGMENTS.videos[video].fps / WORKER_FPS))
    frames = read_frames(VIDEOS / video, start, end, mirrored=mirrored)
    return [pair for i, pair in enumerate(frames) if i % step == 0]


@functools.cache
def segment_stream(video: str, start: float, end: float, mirrored: bool) -> Stream:
    return analyze_all(sampled(video, start, end, mirrored=mirrored))


def first_segment(kind: ChallengeType, *, mirrored: bool | None = None) -> tuple[str, float, float, bool]:
    found = [s for s in SEGMENTS.for_challenge(kind) if mirrored is None or s[3] == mirrored]
    if not found:
        pytest.skip(f"no annotated segment for {kind}")
    return found[0]


def judge(
    challenge: Challenge,
    stream: Stream,
    start: float,
    *,
    until_deadline: bool = False,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Verdict:
    evaluator = ChallengeEvaluator(challenge, start, thresholds)
    for t, frame in stream:
        if evaluator.update(t, frame).done:
            break
    if until_deadline:
        evaluator.expire(evaluator.deadline + 0.01)  # the subject stops moving until the deadline
    return evaluator.verdict


@functools.cache
def repeated(photo: str, seconds: float = 6.5) -> Stream:
    """A photo shown as a 640x480 static video at 8 fps (a print attack held still)."""
    frame = letterbox(read_image(photo), 1.0)
    return analyze_all([(i / WORKER_FPS, frame) for i in range(round(seconds * WORKER_FPS))])


def letterbox(image: Image, scale: float, shift: tuple[float, float] = (0.0, 0.0)) -> Image:
    """``image`` fitted into 640x480, scaled by ``scale`` and moved by ``shift`` pixels, on black."""
    h, w = image.shape[:2]
    fit = min(640 / w, 480 / h) * scale
    matrix = np.array([[fit, 0.0, 320 - fit * w / 2 + shift[0]], [0.0, fit, 240 - fit * h / 2 + shift[1]]])
    return np.asarray(cv2.warpAffine(image, matrix, (640, 480), flags=cv2.INTER_AREA), dtype=np.uint8)


def test_the_segment_file_describes_every_video() -> None:
    names = {p.name for p in VIDEOS.glob("*.mp4")}
    assert set(SEGMENTS.videos) == names
    for name, info in SEGMENTS.videos.items():
        assert info.fps > 0 and info.width > 0 and info.height > 0 and info.frames > 0
        assert info.real_score_median is not None
        for by_type in (SEGMENTS.segments.get(name, {}), SEGMENTS.mirrored_segments.get(name, {})):
            for spans in by_type.values():
                assert all(0.0 <= s < e <= info.duration_s + 1e-6 for s, e in spans)
    # the replayed screen is what the anti-spoofing models reject; the live recording is not
    assert (SEGMENTS.videos["lestari15_fake.mp4"].real_score_median or 0.0) < 0.2
    assert (SEGMENTS.videos["lestari15_real.mp4"].real_score_median or 0.0) > 0.9
    covered = {kind for kind in SEARCHED if SEGMENTS.for_challenge(kind)}
    assert covered >= set(ANNOTATED)


def test_the_docs_list_the_segments() -> None:
    text = (REPO_ROOT / "docs" / "liveness.md").read_text(encoding="utf-8")
    assert "python -m faceproof.testing.annotate" in text
    for kind in SEARCHED:
        for _, start, end, _ in SEGMENTS.for_challenge(kind):
            assert f"{start:g}\N{EN DASH}{end:g}" in text, (kind, start, end)


@pytest.mark.parametrize("kind", ANNOTATED)
def test_an_annotated_segment_passes_its_challenge(kind: ChallengeType) -> None:
    video, start, end, mirrored = first_segment(kind)
    verdict = judge(Challenge(kind), segment_stream(video, start, end, mirrored), start)
    assert verdict.status is ChallengeStatus.PASSED, (video, start, end, mirrored, verdict)


def test_a_left_turn_does_not_answer_turn_right() -> None:
    video, start, end, mirrored = first_segment(ChallengeType.TURN_LEFT, mirrored=False)
    stream = segment_stream(video, start, end, mirrored)
    assert judge(Challenge(ChallengeType.TURN_LEFT), stream, start).status is ChallengeStatus.PASSED
    verdict = judge(Challenge(ChallengeType.TURN_RIGHT), stream, start, until_deadline=True)
    assert verdict.status is ChallengeStatus.FAILED
    assert verdict.reason in {FailureReason.WRONG_DIRECTION, FailureReason.TIMEOUT}


def test_the_mirrored_left_turn_is_a_right_turn() -> None:
    video, start, end, _ = first_segment(ChallengeType.TURN_LEFT, mirrored=False)
    mirrored = segment_stream(video, start, end, True)
    assert judge(Challenge(ChallengeType.TURN_RIGHT), mirrored, start).status is ChallengeStatus.PASSED
    verdict = judge(Challenge(ChallengeType.TURN_LEFT), mirrored, start, until_deadline=True)
    assert verdict.status is ChallengeStatus.FAILED


def test_a_blink_segment_is_not_a_head_turn() -> None:
    video, start, end, mirrored = first_segment(ChallengeType.BLINK, mirrored=False)
    stream = segment_stream(video, start, end, mirrored)
    assert judge(Challenge(ChallengeType.BLINK), stream, start).status is ChallengeStatus.PASSED
    for kind in (ChallengeType.TURN_LEFT, ChallengeType.TURN_RIGHT):
        assert judge(Challenge(kind), stream, start, until_deadline=True).reason is FailureReason.TIMEOUT


@pytest.mark.parametrize("kind", list(ChallengeType))
def test_a_still_photo_times_out_on_every_challenge(kind: ChallengeType) -> None:
    stream = repeated("people/obama.jpg")
    assert all(f.face_count == 1 and f.has_face for _, f in stream)
    challenge = Challenge(kind, (0.25, 0.35) if kind is ChallengeType.NOSE_TO_TARGET else None)
    verdict = judge(challenge, stream, 0.0)
    assert verdict.status is ChallengeStatus.FAILED and verdict.reason is FailureReason.TIMEOUT


@pytest.mark.parametrize(
    ("photo", "reason"),
    [
        ("people/two_people.jpg", FailureReason.MULTIPLE_FACES),
        ("negative/bulk__view.jpg", FailureReason.NO_FACE),
    ],
)
def test_two_faces_or_none_fail_the_gate(photo: str, reason: FailureReason) -> None:
    stream = repeated(photo, 1.0)
    for kind in (ChallengeType.TURN_LEFT, ChallengeType.BLINK):
        verdict = judge(Challenge(kind), stream, 0.0)
        assert verdict.status is ChallengeStatus.FAILED and verdict.reason is reason
        assert verdict.decided_at is not None and verdict.decided_at < 0.5


Transform = Callable[[int, Image], Image]


@functools.cache
def moved_stream(kind: str) -> Stream:
    """A quiet real video (liveportrait_d0, 2 s) in a 640x480 frame, zoomed in or moved right from 0.5 s."""

    def zoom(i: int, frame: Image) -> Image:
        return letterbox(frame, 0.6 + 0.3 * min(max(i - 4, 0), 6) / 6)

    def move(i: int, frame: Image) -> Image:
        return letterbox(frame, 0.6, (128.0 * min(max(i - 4, 0), 6) / 6, 0.0))

    transform: Transform = zoom if kind == "zoom" else move
    frames = sampled("liveportrait_d0.mp4", 0.0, 2.0)
    return analyze_all([(t, transform(i, frame)) for i, (t, frame) in enumerate(frames)])


FLAT: Final = replace(DEFAULT_THRESHOLDS, depth_frames=0)  # the 3D-consistency check switched off


def test_a_picture_brought_closer_is_flat_and_does_not_pass_move_closer() -> None:
    """A real head's video zoomed in: what a photo or a screen brought closer shows. The face grows
    enough, but a single plane explains the movement, so MOVE_CLOSER times out (saying why)."""
    stream = moved_stream("zoom")
    verdict = judge(Challenge(ChallengeType.MOVE_CLOSER), stream, 0.0, until_deadline=True)
    assert verdict.status is ChallengeStatus.FAILED and verdict.reason is FailureReason.TIMEOUT
    assert "flat" in verdict.detail
    assert (
        judge(Challenge(ChallengeType.MOVE_CLOSER), stream, 0.0, thresholds=FLAT).status
        is ChallengeStatus.PASSED
    )
    assert (
        judge(Challenge(ChallengeType.TURN_LEFT), stream, 0.0, until_deadline=True).reason
        is FailureReason.TIMEOUT
    )


def test_a_picture_moved_to_the_target_is_flat_and_does_not_pass() -> None:
    stream = moved_stream("move")
    first = stream[0][1].measures
    assert first is not None
    # the picture moves 128 px (0.2 of the width) to the right of the raw frame: to the user's
    # left in the mirrored view, where the target is drawn
    x, y = first.nose_mirrored
    on_the_way = Challenge(ChallengeType.NOSE_TO_TARGET, (round(x - 0.2, 3), round(y, 3)))
    elsewhere = Challenge(ChallengeType.NOSE_TO_TARGET, (round(x + 0.2, 3), round(y, 3)))
    assert judge(on_the_way, stream, 0.0, thresholds=FLAT).status is ChallengeStatus.PASSED
    assert judge(on_the_way, stream, 0.0, until_deadline=True).reason is FailureReason.TIMEOUT
    assert judge(elsewhere, stream, 0.0, until_deadline=True, thresholds=FLAT).reason is FailureReason.TIMEOUT


def test_a_scripted_subject_answers_a_sequence_with_segments() -> None:
    """The way a scripted subject plays the annotated segments: one per challenge, back to back."""
    kinds = [ChallengeType.TURN_LEFT, ChallengeType.BLINK]
    sequence = ChallengeSequence([Challenge(kind) for kind in kinds], 100.0)
    now = 100.0
    for number, kind in enumerate(kinds, start=1):
        video, start, end, mirrored = first_segment(kind)
        for t, frame in segment_stream(video, start, end, mirrored):
            sequence.update(now + (t - start) + 1.0 / WORKER_FPS, frame)
            if sequence.index == number:
                break
        assert sequence.index == number, sequence.verdicts
        decided = sequence.verdicts[-1].decided_at
        assert decided is not None
        now = decided
    assert sequence.status is ChallengeStatus.PASSED
