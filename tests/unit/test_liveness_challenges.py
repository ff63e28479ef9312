"""The challenge engine's logic on synthetic frame analyses (the analysis itself is tested on real data
in test_liveness_measures.py and test_liveness_video.py)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import pytest

from contracts.values import ChallengeType
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    EXPRESSION_CHALLENGES,
    RIGID_CHALLENGES,
    UNPASSED_MAX_PROGRESS,
    Challenge,
    ChallengeEvaluator,
    ChallengeSequence,
    ChallengeStatus,
    FailureReason,
    Verdict,
    draw_challenges,
    frame_gate,
)
from services.liveness.measures import FaceMeasures, HeadPose

FPS = 8.0
WIDTH, HEIGHT = 640, 480


def face(
    *,
    yaw: float = 0.0,
    pitch: float = 0.0,
    ear: float = 0.3,
    ear_left: float | None = None,
    mar: float = 0.05,
    size: float = 0.4,
    nose: tuple[float, float] = (0.5, 0.5),
    aspect: float = 0.9,
    faces: int = 1,
    overflow: float = 0.0,
) -> FrameAnalysis:
    """A frame with one measured face; ``nose`` is in raw (not mirrored) frame coordinates."""
    side = size * HEIGHT
    cx, cy = nose[0] * WIDTH, nose[1] * HEIGHT
    return FrameAnalysis(
        width=WIDTH,
        height=HEIGHT,
        face_count=faces,
        detected=True,
        box=(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2),
        detection_score=0.9,
        presence=1.0,
        measures=FaceMeasures(
            pose=HeadPose(yaw=yaw, pitch=pitch, roll=0.0),
            ear_right=ear,
            ear_left=ear if ear_left is None else ear_left,
            mar=mar,
            mouth_width=0.55,
            nose=nose,
            face_aspect=aspect,
        ),
        inside_frame=overflow == 0.0,
        frame_overflow=overflow,
        relative_size=size,
    )


NO_FACE = FrameAnalysis(width=WIDTH, height=HEIGHT, face_count=0, detected=True)
NEUTRAL = face()


def run(
    challenge: Challenge | ChallengeType,
    frames: Iterable[FrameAnalysis],
    *,
    start: float = 0.0,
) -> Verdict:
    """Feed frames at 8 fps from ``start``; stop at the first decision."""
    if isinstance(challenge, ChallengeType):
        challenge = Challenge(challenge)
    evaluator = ChallengeEvaluator(challenge, start)
    for i, frame in enumerate(frames):
        verdict = evaluator.update(start + i / FPS, frame)
        if verdict.done:
            return verdict
    return evaluator.verdict


def seq(*parts: tuple[FrameAnalysis, int]) -> list[FrameAnalysis]:
    return [frame for frame, count in parts for _ in range(count)]


# -- head turns and looks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("challenge", "moved"),
    [
        (ChallengeType.TURN_LEFT, face(yaw=20.0)),
        (ChallengeType.TURN_RIGHT, face(yaw=-20.0)),
        (ChallengeType.LOOK_UP, face(pitch=12.0)),
        (ChallengeType.LOOK_DOWN, face(pitch=-12.0)),
        (ChallengeType.OPEN_MOUTH, face(mar=0.5)),
        (ChallengeType.MOVE_CLOSER, face(size=0.55)),
    ],
)
def test_a_held_movement_passes(challenge: ChallengeType, moved: FrameAnalysis) -> None:
    verdict = run(challenge, seq((NEUTRAL, 4), (moved, 3)))
    assert verdict.status is ChallengeStatus.PASSED and verdict.progress == 1.0
    assert verdict.decided_at == pytest.approx(6 / FPS)  # the third frame of the hold
    # two frames are not a hold: back to neutral, nothing decided
    assert run(challenge, seq((NEUTRAL, 4), (moved, 2), (NEUTRAL, 5))).status is ChallengeStatus.PENDING


@pytest.mark.parametrize(
    ("challenge", "opposite"),
    [
        (ChallengeType.TURN_LEFT, face(yaw=-20.0)),
        (ChallengeType.TURN_RIGHT, face(yaw=20.0)),
        (ChallengeType.LOOK_UP, face(pitch=-12.0)),
        (ChallengeType.LOOK_DOWN, face(pitch=12.0)),
    ],
)
def test_the_opposite_movement_fails(challenge: ChallengeType, opposite: FrameAnalysis) -> None:
    verdict = run(challenge, seq((NEUTRAL, 4), (opposite, 3)))
    assert verdict.status is ChallengeStatus.FAILED
    assert verdict.reason is FailureReason.WRONG_DIRECTION


def test_progress_reaches_one_only_when_the_challenge_passes() -> None:
    # a talking mouth: 0.2 above the baseline but under 0.35, or 0.35 for two frames only
    assert run(ChallengeType.OPEN_MOUTH, seq((NEUTRAL, 4), (face(mar=0.3), 8))).progress < 0.9
    flicker = seq((NEUTRAL, 4), (face(mar=0.5), 2), (NEUTRAL, 1), (face(mar=0.5), 2), (NEUTRAL, 4))
    verdict = run(ChallengeType.OPEN_MOUTH, flicker)
    assert verdict.status is ChallengeStatus.PENDING and verdict.progress == UNPASSED_MAX_PROGRESS
    # a chin raised 8 degrees from a head bowed 6 degrees: 2 degrees up, not the 4 asked for
    bowed = face(pitch=-6.0)
    assert run(ChallengeType.LOOK_UP, seq((bowed, 4), (face(pitch=2.0), 8))).progress == pytest.approx(0.5)
    # a turn from the other side: 20 degrees of change, 0 to the left
    assert run(ChallengeType.TURN_LEFT, seq((face(yaw=-20.0), 4), (NEUTRAL, 8))).progress == 0.0


def test_small_movements_do_not_count() -> None:
    assert (
        run(ChallengeType.TURN_LEFT, seq((NEUTRAL, 4), (face(yaw=12.0), 20))).status
        is ChallengeStatus.PENDING
    )
    assert (
        run(ChallengeType.LOOK_UP, seq((NEUTRAL, 4), (face(pitch=6.0), 20))).status is ChallengeStatus.PENDING
    )
    assert (
        run(ChallengeType.MOVE_CLOSER, seq((NEUTRAL, 4), (face(size=0.46), 20))).status
        is ChallengeStatus.PENDING
    )
    assert (
        run(ChallengeType.OPEN_MOUTH, seq((NEUTRAL, 4), (face(mar=0.25), 20))).status
        is ChallengeStatus.PENDING
    )


def test_turning_back_from_the_other_side_is_not_a_turn() -> None:
    # the user starts turned right (from a previous challenge) and comes back to the front:
    # 20 degrees of change, but not to the left of the camera
    turned_right = face(yaw=-20.0)
    verdict = run(ChallengeType.TURN_LEFT, seq((turned_right, 4), (NEUTRAL, 10)))
    assert verdict.status is ChallengeStatus.PENDING
    assert (
        run(ChallengeType.TURN_LEFT, seq((turned_right, 4), (face(yaw=12.0), 3))).status
        is ChallengeStatus.PASSED
    )


def test_the_hold_needs_time_as_well_as_frames() -> None:
    evaluator = ChallengeEvaluator(Challenge(ChallengeType.TURN_LEFT), 0.0)
    for i in range(3):
        evaluator.update(i * 0.1, NEUTRAL)
    for t in (0.40, 0.45, 0.50):  # three frames within 0.1 s
        assert evaluator.update(t, face(yaw=20.0)).status is ChallengeStatus.PENDING
    assert evaluator.update(0.60, face(yaw=20.0)).status is ChallengeStatus.PASSED


# -- blink --------------------------------------------------------------------------------------


def test_a_blink_passes() -> None:
    closed = face(ear=0.08)
    verdict = run(ChallengeType.BLINK, seq((NEUTRAL, 4), (closed, 1), (NEUTRAL, 1)))
    assert verdict.status is ChallengeStatus.PASSED


@pytest.mark.parametrize(
    "closed",
    [
        face(ear=0.3, ear_left=0.05),  # a wink: one eye
        face(ear=0.2),  # half closed
        face(ear=0.08, pitch=-14.0),  # looking down lowers the lids
        face(ear=0.08, aspect=0.6),  # a photo tilted away squashes the eyes and the whole face
    ],
)
def test_not_a_blink(closed: FrameAnalysis) -> None:
    verdict = run(ChallengeType.BLINK, seq((NEUTRAL, 4), (closed, 2), (NEUTRAL, 2)))
    assert verdict.status is ChallengeStatus.PENDING


def test_eyes_closed_for_long_are_not_a_blink() -> None:
    closed = face(ear=0.08)
    verdict = run(ChallengeType.BLINK, seq((NEUTRAL, 4), (closed, 16), (NEUTRAL, 2)))
    assert verdict.status is ChallengeStatus.PENDING
    # but a later, proper blink still counts
    verdict = run(
        ChallengeType.BLINK, seq((NEUTRAL, 4), (closed, 16), (NEUTRAL, 2), (closed, 1), (NEUTRAL, 1))
    )
    assert verdict.status is ChallengeStatus.PASSED


def test_one_unsteady_frame_does_not_drop_a_blink() -> None:
    # the analysis of one frame of the reopening eyes reads the head a little further down (a
    # tracked crop against a detected one): that frame is skipped, the blink goes on
    closed, wobbly = face(ear=0.08), face(ear=0.2, pitch=11.0)
    verdict = run(ChallengeType.BLINK, seq((NEUTRAL, 4), (closed, 1), (wobbly, 1), (NEUTRAL, 1)))
    assert verdict.status is ChallengeStatus.PASSED
    # but eyes reopening on unsteady frames only are not a blink (nor is closing on them)
    reopened_down = face(pitch=11.0)
    assert run(ChallengeType.BLINK, seq((NEUTRAL, 4), (closed, 1), (reopened_down, 4))).status is (
        ChallengeStatus.PENDING
    )
    squashed = face(ear=0.08, aspect=0.6)
    assert run(ChallengeType.BLINK, seq((NEUTRAL, 4), (squashed, 1), (NEUTRAL, 2))).status is (
        ChallengeStatus.PENDING
    )


def test_an_open_mouth_counts_from_the_most_closed_mouth() -> None:
    # the subject is still talking when the instruction appears: a half-open baseline (0.4)
    half_open, closed, open_ = face(mar=0.4), face(mar=0.05), face(mar=0.5)
    assert run(ChallengeType.OPEN_MOUTH, seq((half_open, 4), (open_, 5))).status is ChallengeStatus.PENDING
    verdict = run(ChallengeType.OPEN_MOUTH, seq((half_open, 4), (closed, 2), (open_, 3)))
    assert verdict.status is ChallengeStatus.PASSED
    # still 0.2 above the closed mouth and 0.35 at least
    assert run(ChallengeType.OPEN_MOUTH, seq((half_open, 4), (closed, 2), (face(mar=0.3), 5))).status is (
        ChallengeStatus.PENDING
    )


# -- nose to target -----------------------------------------------------------------------------


def test_nose_to_target_uses_the_mirrored_view() -> None:
    challenge = Challenge(ChallengeType.NOSE_TO_TARGET, target=(0.25, 0.5))  # left of the mirrored view
    to_the_right = face(nose=(0.75, 0.5))  # raw frame: the right, which the user sees on the left
    to_the_left = face(nose=(0.25, 0.5))
    assert run(challenge, seq((NEUTRAL, 4), (to_the_right, 3))).status is ChallengeStatus.PASSED
    assert run(challenge, seq((NEUTRAL, 4), (to_the_left, 10))).status is ChallengeStatus.PENDING


def test_nose_already_on_target_must_travel() -> None:
    challenge = Challenge(ChallengeType.NOSE_TO_TARGET, target=(0.5, 0.5))
    assert run(challenge, seq((NEUTRAL, 12))).status is ChallengeStatus.PENDING
    away = face(nose=(0.35, 0.5))
    assert run(challenge, seq((NEUTRAL, 3), (away, 2), (NEUTRAL, 3))).status is ChallengeStatus.PASSED


def test_a_target_is_required_for_nose_to_target_only() -> None:
    with pytest.raises(ValueError):
        Challenge(ChallengeType.NOSE_TO_TARGET)
    with pytest.raises(ValueError):
        Challenge(ChallengeType.BLINK, target=(0.2, 0.2))


# -- gates and time -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (NO_FACE, FailureReason.NO_FACE),
        (face(faces=2), FailureReason.MULTIPLE_FACES),
        (face(overflow=0.2), FailureReason.FACE_OUT_OF_FRAME),
        (face(size=0.1), FailureReason.FACE_TOO_SMALL),
    ],
)
def test_gates_fail_when_the_violation_lasts(bad: FrameAnalysis, reason: FailureReason) -> None:
    assert frame_gate(bad) is reason
    # one bad frame is tolerated
    assert (
        run(ChallengeType.TURN_LEFT, seq((NEUTRAL, 4), (bad, 1), (NEUTRAL, 4))).status
        is ChallengeStatus.PENDING
    )
    # 0.3 s of it is not: the 4th bad frame at 8 fps
    verdict = run(ChallengeType.TURN_LEFT, seq((NEUTRAL, 4), (bad, 6)))
    assert verdict.status is ChallengeStatus.FAILED and verdict.reason is reason
    assert verdict.decided_at == pytest.approx(7 / FPS)


def test_a_chin_grazing_the_border_is_tolerated() -> None:
    assert frame_gate(face(overflow=0.03)) is None
    assert frame_gate(NEUTRAL) is None


def test_timeout_with_and_without_frames() -> None:
    verdict = run(ChallengeType.BLINK, seq((NEUTRAL, 60)))
    assert verdict.status is ChallengeStatus.FAILED and verdict.reason is FailureReason.TIMEOUT
    assert verdict.decided_at is not None and verdict.decided_at > DEFAULT_THRESHOLDS.time_limit_s
    evaluator = ChallengeEvaluator(Challenge(ChallengeType.BLINK), 10.0)
    assert evaluator.deadline == 10.0 + DEFAULT_THRESHOLDS.time_limit_s
    assert evaluator.expire(15.0).status is ChallengeStatus.PENDING
    assert evaluator.expire(16.5).reason is FailureReason.TIMEOUT


def test_identity_hook_fails_at_once() -> None:
    evaluator = ChallengeEvaluator(Challenge(ChallengeType.TURN_LEFT), 0.0)
    assert evaluator.update(0.0, NEUTRAL, identity_ok=True).status is ChallengeStatus.PENDING
    assert evaluator.update(0.1, NEUTRAL, identity_ok=None).status is ChallengeStatus.PENDING
    verdict = evaluator.update(0.2, NEUTRAL, identity_ok=False)
    assert verdict.status is ChallengeStatus.FAILED and verdict.reason is FailureReason.IDENTITY_CHANGED


def test_decisions_are_final_and_deterministic() -> None:
    frames = seq((NEUTRAL, 4), (face(yaw=20.0), 3), (face(yaw=-30.0), 10), (NO_FACE, 10))
    first, second = run(ChallengeType.TURN_LEFT, frames), run(ChallengeType.TURN_LEFT, frames)
    assert first == second and first.status is ChallengeStatus.PASSED
    # the stored form gives the same verdict
    stored = [FrameAnalysis.from_dict(f.to_dict()) for f in frames]
    assert run(ChallengeType.TURN_LEFT, stored) == first


def test_frames_must_come_in_time_order() -> None:
    evaluator = ChallengeEvaluator(Challenge(ChallengeType.BLINK), 0.0)
    evaluator.update(1.0, NEUTRAL)
    with pytest.raises(ValueError):
        evaluator.update(0.5, NEUTRAL)
    # frames from before the challenge started are ignored
    late = ChallengeEvaluator(Challenge(ChallengeType.BLINK), 5.0)
    assert late.update(1.0, NO_FACE).status is ChallengeStatus.PENDING
    assert late.baseline is None


# -- a sequence of challenges -------------------------------------------------------------------


def test_a_sequence_runs_challenges_in_turn() -> None:
    challenges = [Challenge(ChallengeType.TURN_LEFT), Challenge(ChallengeType.BLINK)]
    sequence = ChallengeSequence(challenges, 0.0)
    frames = seq((NEUTRAL, 4), (face(yaw=20.0), 3), (NEUTRAL, 4), (face(ear=0.07), 1), (NEUTRAL, 1))
    for i, frame in enumerate(frames):
        sequence.update(i / FPS, frame)
    assert sequence.done and sequence.status is ChallengeStatus.PASSED
    assert [v.status for v in sequence.verdicts] == [ChallengeStatus.PASSED, ChallengeStatus.PASSED]
    assert sequence.current is None and sequence.reasons == []


def test_a_sequence_stops_at_the_first_failure() -> None:
    sequence = ChallengeSequence([Challenge(ChallengeType.TURN_LEFT), Challenge(ChallengeType.BLINK)], 0.0)
    for i, frame in enumerate(seq((NEUTRAL, 4), (face(yaw=-20.0), 3), (NEUTRAL, 10))):
        sequence.update(i / FPS, frame)
    assert sequence.status is ChallengeStatus.FAILED
    assert sequence.reasons == [FailureReason.WRONG_DIRECTION] and sequence.index == 1
    fresh = ChallengeSequence([Challenge(ChallengeType.BLINK)], 0.0)
    verdict = fresh.expire(7.0)
    assert verdict is not None and verdict.reason is FailureReason.TIMEOUT and fresh.done


# -- drawing challenges -------------------------------------------------------------------------


def test_draws_distinct_allowed_challenges() -> None:
    rng = random.Random(7)
    for n in (2, 3, 4):
        for _ in range(50):
            drawn = draw_challenges(n, rng=rng)
            types = [c.type for c in drawn]
            assert len(types) == n == len(set(types))
    allowed = [ChallengeType.BLINK, ChallengeType.TURN_LEFT, ChallengeType.OPEN_MOUTH]
    for _ in range(20):
        assert {c.type for c in draw_challenges(2, allowed, rng)} <= set(allowed)
    # the default source is the operating system's
    assert len(draw_challenges(3)) == 3


def test_draws_are_seedable_and_vary() -> None:
    assert draw_challenges(3, rng=random.Random(1)) == draw_challenges(3, rng=random.Random(1))
    draws = {tuple(c.type for c in draw_challenges(3)) for _ in range(30)}
    assert len(draws) > 10


def test_never_only_challenges_a_photo_can_answer() -> None:
    rng = random.Random(3)
    allowed = [*RIGID_CHALLENGES, ChallengeType.BLINK]
    for _ in range(50):
        assert any(c.type not in RIGID_CHALLENGES for c in draw_challenges(2, allowed, rng))
    # unless nothing else is allowed
    assert {c.type for c in draw_challenges(2, RIGID_CHALLENGES, rng)} == set(RIGID_CHALLENGES)


def test_every_draw_asks_for_a_face_that_changes_shape_when_one_is_allowed() -> None:
    """A statue or a rigid mask turns and nods with real parallax; it cannot blink or open its mouth."""
    rng = random.Random(5)
    for n in (1, 2, 3, 4):
        for _ in range(30):
            assert any(c.type in EXPRESSION_CHALLENGES for c in draw_challenges(n, rng=rng))
    turns = [ChallengeType.TURN_LEFT, ChallengeType.LOOK_UP, *RIGID_CHALLENGES]
    for _ in range(30):  # no expression allowed: at least one movement beyond the picture's
        assert any(c.type not in RIGID_CHALLENGES for c in draw_challenges(2, turns, rng))


def test_nose_targets_are_away_from_the_start() -> None:
    rng = random.Random(11)
    for start in (None, (0.5, 0.5), (0.2, 0.8)):
        for _ in range(50):
            (challenge,) = draw_challenges(1, [ChallengeType.NOSE_TO_TARGET], rng, nose_start=start)
            assert challenge.target is not None
            x, y = challenge.target
            origin = start or (0.5, 0.5)
            assert 0.12 <= x <= 0.88 and 0.12 <= y <= 0.88
            assert ((x - origin[0]) ** 2 + (y - origin[1]) ** 2) ** 0.5 >= 0.2
    assert Challenge.from_dict(challenge.to_dict()) == challenge


@pytest.mark.parametrize(
    ("n", "allowed"), [(0, None), (5, None), (3, [ChallengeType.BLINK, ChallengeType.TURN_LEFT])]
)
def test_rejects_impossible_draws(n: int, allowed: Sequence[ChallengeType] | None) -> None:
    with pytest.raises(ValueError):
        draw_challenges(n, allowed)
