"""The scripted subject and one evaluation session, on real faces and the real models.

Short material only (photos, one 3 s video) and a 3 s time limit where a challenge
must time out, so the whole file stays well under 30 s.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest

from contracts.values import ChallengeType
from faceproof.evaluation.liveness import run_session
from faceproof.testing.annotate import load_video_segments
from faceproof.testing.scripted_subject import (
    FRAME_SIZE,
    HOLD_FRAMES,
    WORKER_FPS,
    Image,
    Media,
    Placement,
    ScriptedSubject,
    fit_frame,
)
from faceproof.testing.unready import Unready, unready_prefix
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    Challenge,
    ChallengeStatus,
    FailureReason,
    Thresholds,
)
from services.liveness.session_models import SessionModels
from tests.paths import DATA_DIR, MODELS_DIR, PEOPLE

D0 = DATA_DIR / "video" / "liveportrait_d0.mp4"
#: A 3 s time limit where a challenge is bound to time out (a photo cannot blink).
SHORT = Thresholds(time_limit_s=3.0)


@functools.cache
def models() -> SessionModels:
    return SessionModels.load(MODELS_DIR, threads=2)


@functools.cache
def photo_media(name: str) -> Media:
    return Media.from_path(PEOPLE / name)


@functools.cache
def d0_subject() -> ScriptedSubject:
    """liveportrait_d0: 3 s, one annotated blink, no head turn."""
    media = Media.from_path(D0)
    return ScriptedSubject(media, models().analyzer, segments=load_video_segments())


def test_material_is_fitted_and_sampled_at_8_fps() -> None:
    still = photo_media("obama.jpg")
    assert still.still and len(still.frames) == 1
    width, height = still.size
    assert width <= FRAME_SIZE[0] and height <= FRAME_SIZE[1] and FRAME_SIZE[1] in (width, height)
    assert still.frame(100) is still.frames[0]  # a still shows its one frame whenever asked
    video = d0_subject().media
    assert not video.still and video.size == (480, 480)
    assert len(video.frames) == pytest.approx(3.12 * WORKER_FPS, abs=1)
    assert len(Media.from_path(D0, max_seconds=1.0).frames) == 1 + WORKER_FPS
    assert np.array_equal(video.frame(3, mirrored=True), video.frames[3][:, ::-1])


def test_a_placement_scales_about_its_pivot() -> None:
    image: Image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[48:53, 98:103] = 255  # a dot at (100, 50)
    assert Placement().apply(image) is image
    grown = Placement(2.0, (100.0, 50.0)).apply(image)
    ys, xs = np.nonzero(grown[:, :, 0] > 128)
    assert abs(xs.mean() - 100) < 1 and abs(ys.mean() - 50) < 1 and len(xs) > 60  # 4x the area
    moved = Placement(1.0, (0.0, 0.0), (30.0, -10.0)).apply(image)
    ys, xs = np.nonzero(moved[:, :, 0] > 128)
    assert abs(xs.mean() - 130) < 1 and abs(ys.mean() - 40) < 1
    half = Placement().towards(Placement(3.0, (5.0, 5.0), (10.0, 0.0)), 0.5)
    assert half == Placement(2.0, (5.0, 5.0), (5.0, 0.0))
    assert fit_frame(np.zeros((1000, 500, 3), dtype=np.uint8)).shape == (480, 240, 3)


def test_a_photo_moved_by_hand_is_flat_and_cannot_blink() -> None:
    """Scaled and moved, the photo reaches MOVE_CLOSER's size and the nose target, but a single plane
    explains the movement: without the 3D-consistency check it passes both, with it neither."""
    subject = ScriptedSubject(photo_media("obama.jpg"), models().analyzer)
    nose = subject.nose_start()
    assert nose is not None
    target = (round(min(nose[0] + 0.25, 0.85), 3), round(nose[1], 3))
    challenges = [
        Challenge(ChallengeType.MOVE_CLOSER),
        Challenge(ChallengeType.NOSE_TO_TARGET, target),
        Challenge(ChallengeType.BLINK),
    ]
    flat = run_session(subject, challenges, models(), thresholds=replace(SHORT, depth_frames=0))
    assert [(c.status, c.reason) for c in flat.challenges] == [
        (ChallengeStatus.PASSED, None),
        (ChallengeStatus.PASSED, None),
        (ChallengeStatus.FAILED, FailureReason.TIMEOUT.value),
    ]
    assert "scaled" in flat.challenges[0].played[0] and "moved" in flat.challenges[1].played[0]
    subject = ScriptedSubject(photo_media("obama.jpg"), models().analyzer)
    session = run_session(subject, challenges, models(), thresholds=SHORT)
    first = session.challenges[0]
    assert (first.status, first.reason) == (ChallengeStatus.FAILED, FailureReason.TIMEOUT.value)
    decision = session.decision
    assert not decision.is_live and decision.reasons[0] == "TIMEOUT" and decision.confidence < 50
    # a digital photo looks real to the anti-spoofing models: only the challenges stop it
    assert decision.spoof_median is not None and decision.spoof_median > 0.5
    assert flat.identity_min_cosine is not None and flat.identity_min_cosine > 0.8


class Swapper(ScriptedSubject):
    """Shows one person for 1 s, then another (the person swapped halfway)."""

    def __init__(self, first: Media, second: Media, subject_models: SessionModels) -> None:
        super().__init__(first, subject_models.analyzer)
        self.second = second
        self.count = 0

    def prepare(self, challenges: object) -> None:
        del challenges

    def instruct(self, index: int) -> None:
        self.played[index] = ["swap"]

    def next_frame(self) -> Image:
        self.count += 1
        return (self.media if self.count <= WORKER_FPS else self.second).frames[0]


def test_a_person_swapped_halfway_fails_identity_changed() -> None:
    subject = Swapper(photo_media("obama.jpg"), photo_media("biden.jpg"), models())
    session = run_session(subject, [Challenge(ChallengeType.BLINK)], models(), thresholds=SHORT)
    assert session.decision.reasons == (FailureReason.IDENTITY_CHANGED.value,)
    assert session.decision.confidence == 0.0
    assert session.challenges[0].seconds is not None and session.challenges[0].seconds <= 1.6


def test_the_subject_plays_annotated_segments_first_and_can_find_its_own() -> None:
    subject = d0_subject()
    blink = Challenge(ChallengeType.BLINK)
    plans = subject.candidates(blink)
    assert [p.source for p in plans[:2]] == ["annotated 2.2-3.08 s", "annotated 2.2-3.08 s mirrored"]
    assert plans[0].steps[:HOLD_FRAMES] == (plans[0].steps[0],) * HOLD_FRAMES
    # without the annotation, the rehearsal search finds the same blink by seeking
    best = subject.search(blink)[0]
    assert best.status is ChallengeStatus.PASSED and best.robust
    assert 1.4 <= best.start / WORKER_FPS <= 2.6
    # a head turn is not in this video: nothing passes, and what is left is only "safe" to play
    turns = subject.search(Challenge(ChallengeType.TURN_LEFT))
    assert all(not t.passed and t.safe for t in turns)


def test_a_recorded_session_passes_its_challenges() -> None:
    """A blink the recording has; MOVE_CLOSER, which a recording can only answer by scaling its
    picture (a plane: the 3D-consistency check rejects it), checked without that check."""
    subject = d0_subject()
    challenges = [Challenge(ChallengeType.BLINK), Challenge(ChallengeType.MOVE_CLOSER)]
    session = run_session(
        subject, challenges, models(), thresholds=replace(DEFAULT_THRESHOLDS, depth_frames=0)
    )
    assert [c.status for c in session.challenges] == [ChallengeStatus.PASSED] * 2, session.challenges
    assert session.challenges[0].played[0].startswith("annotated")
    assert session.decision.is_live and session.decision.confidence >= 50
    assert session.frames < 2 * 6 * WORKER_FPS


@pytest.mark.parametrize("condition", [Unready.CUT_OFF, Unready.DARK])
def test_a_subject_who_starts_unready_waits_with_the_prechecks_and_fails_without(condition: Unready) -> None:
    """liveportrait_d0 starting 2.5 s unready (its own first frames), then blinking as asked: with
    the worker's pre-checks the session names the problem, waits, then starts BLINK (live);
    without them BLINK starts on the unready frames: a cut-off face fails the gate at once, a dark
    one leaves less of the 6 s to answer (and its anti-spoofing scores count)."""
    subject = d0_subject()
    box = subject.rehearsal()[0].detected.box
    assert box is not None
    lead_in = unready_prefix(subject.media.frames, box, condition, round(2.5 * WORKER_FPS))
    blink = [Challenge(ChallengeType.BLINK)]
    guided = run_session(subject, blink, models(), lead_in=lead_in)
    problem = {Unready.CUT_OFF: "FACE_OUT_OF_FRAME", Unready.DARK: "TOO_DARK"}[condition]
    assert guided.guidance[0] == (0.0, (problem,)) and guided.guidance[-1][1] == ()
    assert guided.started_s is not None and 2.5 < guided.started_s < 3.5
    assert guided.decision.is_live, guided.decision
    assert guided.challenges[0].seconds is not None and guided.challenges[0].seconds < 2.0
    plain = run_session(subject, blink, models(), readiness=None, lead_in=lead_in)
    assert plain.started_s == 0.0 and plain.guidance == ()
    if condition is Unready.CUT_OFF:
        assert plain.decision.reasons == ("FACE_OUT_OF_FRAME",)
    else:
        assert plain.challenges[0].seconds is not None and plain.challenges[0].seconds > 2.5
        assert min(plain.spoof_scores) < min(guided.spoof_scores)
