"""Get ready: the pre-checks before the first challenge, what they report, and the replay's clock."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from contracts.values import ChallengeType, Precheck
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import DEFAULT_THRESHOLDS
from services.liveness.lighting import measure_light
from services.liveness.readiness import DEFAULT_READINESS, Readiness, ReadinessCheck, prechecks
from services.liveness.replay import replay
from tests.unit.test_liveness_replay import CHALLENGES, FPS, OTHER_PERSON, face, frame, live_session


def lit(analysis: FrameAnalysis, face_luma: float = 130.0, scene_luma: float = 120.0) -> FrameAnalysis:
    return replace(analysis, face_luma=face_luma, scene_luma=scene_luma)


@pytest.mark.parametrize(
    ("analysis", "problems"),
    [
        pytest.param(lit(face()), (), id="ready"),
        pytest.param(
            replace(face(), face_count=0, measures=None, box=None), (Precheck.NO_FACE,), id="no-face"
        ),
        pytest.param(lit(face(faces=2)), (Precheck.MULTIPLE_FACES,), id="two-faces"),
        pytest.param(lit(replace(face(), relative_size=0.2)), (Precheck.FACE_TOO_SMALL,), id="too-far"),
        pytest.param(lit(replace(face(), relative_size=0.95)), (Precheck.FACE_TOO_CLOSE,), id="too-close"),
        pytest.param(lit(replace(face(), frame_overflow=0.2)), (Precheck.FACE_OUT_OF_FRAME,), id="cut-off"),
        pytest.param(lit(face(), 20.0, 30.0), (Precheck.TOO_DARK,), id="dark"),
        pytest.param(lit(face(), 70.0, 200.0), (Precheck.BACKLIT,), id="backlit"),
        pytest.param(lit(face(yaw=35.0)), (Precheck.NOT_LOOKING_AT_CAMERA,), id="turned-away"),
        pytest.param(
            lit(replace(face(pitch=-30.0), relative_size=0.2), 20.0, 30.0),
            (Precheck.FACE_TOO_SMALL, Precheck.TOO_DARK, Precheck.NOT_LOOKING_AT_CAMERA),
            id="far-dark-and-looking-down",
        ),
    ],
)
def test_each_precheck_names_what_is_wrong(analysis: FrameAnalysis, problems: tuple[Precheck, ...]) -> None:
    assert prechecks(FrameAnalysis.from_dict(analysis.to_dict())) == problems


def test_the_light_of_a_face_against_a_bright_window_reads_as_backlit() -> None:
    image = np.full((480, 640, 3), 220, dtype=np.uint8)  # a bright window
    image[140:340, 220:420] = 60  # the face in its shadow
    face_luma, scene_luma = measure_light(image, (220.0, 140.0, 420.0, 340.0))
    assert face_luma == pytest.approx(60, abs=1) and scene_luma == pytest.approx(220, abs=1)
    assert prechecks(lit(face(), face_luma, scene_luma)) == (Precheck.BACKLIT,)


def test_the_subject_is_ready_after_three_clean_frames_spanning_a_quarter_second() -> None:
    check = ReadinessCheck()
    for n, analysis in enumerate([lit(face(yaw=40.0))] * 3 + [lit(face())] * 3):
        check.update(n / FPS, analysis)
    assert check.ready_at == pytest.approx(5 / FPS) and check.failed is None


def test_a_subject_never_ready_fails_with_the_problems_seen_most() -> None:
    check = ReadinessCheck(readiness=Readiness(limit_s=2.0))
    frames = [lit(face(), 20.0, 25.0)] * 10 + [lit(replace(face(), relative_size=0.2), 20.0, 25.0)] * 7
    for n, analysis in enumerate(frames):
        check.update(n / FPS, analysis)
    assert check.ready_at is None
    assert check.failed == (Precheck.TOO_DARK.value, Precheck.FACE_TOO_SMALL.value)


def test_the_first_challenges_clock_starts_when_the_subject_is_ready() -> None:
    """Two seconds too far from the camera, then ready: challenge 0 has its whole time from then on
    (without the pre-checks, the same frames time out: the subject spent the time getting ready)."""
    far = [frame(n, lit(replace(face(), relative_size=0.2))) for n in range(16)]
    answer = [replace(f, sequence=f.sequence + 16, t=f.t + 16 / FPS) for f in live_session(24)]
    answer = [replace(f, analysis=lit(f.analysis)) for f in answer]
    frames = far + answer
    result = replay(CHALLENGES, frames, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert result.issued[0].t == pytest.approx(16 / FPS)  # the first of three clean frames
    assert [v.status.value for v in result.verdicts] == ["PASSED", "PASSED"]
    assert result.decision is not None and result.decision.is_live

    # while getting ready: no challenge, the problem on the newest frame, said once
    early = replay(CHALLENGES, frames[:5], identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert early.issued == () and early.decision is None
    assert early.guidance is not None and early.guidance.problems == (Precheck.FACE_TOO_SMALL.value,)
    assert early.guidance.changed is False
    first = replay(CHALLENGES, frames[:1], identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert first.guidance is not None and first.guidance.changed is True
    clean = replay(CHALLENGES, frames[:17], identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert clean.guidance is not None and clean.guidance.problems == () and clean.guidance.changed


def test_frames_the_prechecks_refused_give_no_anti_spoofing_score() -> None:
    """Two seconds in the dark (which the anti-spoofing models read as a spoof), then lit and
    live: only the lit frames' scores decide (found with ``faceproof eval liveness --unready``:
    a user who corrected the light as asked was rejected with SPOOF_SUSPECTED)."""
    dark = [frame(n, lit(face(), 20.0, 22.0), spoof=0.05) for n in range(16)]
    answer = [replace(f, sequence=f.sequence + 16, t=f.t + 16 / FPS) for f in live_session(24)]
    answer = [replace(f, analysis=lit(f.analysis)) for f in answer]
    result = replay(CHALLENGES, dark + answer, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert result.spoof_scores and set(result.spoof_scores) == {0.95}
    assert result.decision is not None and result.decision.is_live
    # without the pre-checks nothing is refused: the dark frames' scores count (and the
    # challenge's time ran out in the dark)
    plain = replay(CHALLENGES, dark + answer, identity_threshold=0.35)
    assert 0.05 in plain.spoof_scores


def test_frames_the_prechecks_refused_give_no_identity_reference() -> None:
    """Two seconds with the face cut off by the frame's edge (the embedder reads half a face as
    someone else), then ready: the identity reference is a clean frame's (found with ``faceproof
    eval liveness --unready cut_off``: liveportrait_d12 and d6 failed IDENTITY_CHANGED)."""
    cut = replace(lit(face()), inside_frame=False, frame_overflow=0.4)
    half = [frame(n, cut, person=OTHER_PERSON) for n in range(16)]
    answer = [replace(f, sequence=f.sequence + 16, t=f.t + 16 / FPS) for f in live_session(24)]
    answer = [replace(f, analysis=lit(f.analysis)) for f in answer]
    result = replay(CHALLENGES, half + answer, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert result.guidance is None and result.issued[0].t == pytest.approx(16 / FPS)
    assert result.decision is not None and result.decision.is_live, result.decision
    plain = replay(CHALLENGES, half + answer, identity_threshold=0.35)
    assert plain.decision is not None and not plain.decision.is_live


def test_a_session_whose_subject_never_gets_ready_says_why() -> None:
    dark = [frame(n, lit(face(), 20.0, 22.0)) for n in range(int(DEFAULT_READINESS.limit_s * FPS) + 2)]
    result = replay(CHALLENGES, dark, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert result.issued == () and result.verdicts == ()
    assert result.decision is not None and not result.decision.is_live
    assert result.decision.reasons[:2] == ("NOT_READY", "TOO_DARK")
    assert [o.status.value for o in result.outcomes] == ["PENDING", "PENDING"]


def test_frames_analysed_before_lighting_was_measured_are_not_held_back() -> None:
    """Stored analyses without the light measures (older rows) pass the lighting pre-checks."""
    assert prechecks(face()) == ()
    assert ChallengeType.TURN_LEFT in {c.type for c in CHALLENGES}


def test_challenge_0s_clock_starts_when_the_subject_could_see_it() -> None:
    """Ready at once, but the instruction reaches the subject's screen 4 s later (a backlog): the
    frames captured before it was shown are not judged, and the subject who then answers passes.
    Judged from the moment it was issued, the same frames time out."""
    ready = [frame(n, lit(face())) for n in range(3)]
    waiting = [frame(n, lit(face())) for n in range(3, 43)]  # 5 s with nothing on screen
    answer = [replace(f, sequence=f.sequence + 43, t=f.t + 43 / FPS) for f in live_session(24)]
    frames = [replace(f, shown=-1) for f in ready + waiting] + [
        replace(f, analysis=lit(f.analysis), shown=0 if n < 9 else 1) for n, f in enumerate(answer)
    ]
    result = replay(CHALLENGES, frames, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert result.issued[0].t == pytest.approx(43 / FPS)  # the first frame taken with it on screen
    assert [v.status.value for v in result.verdicts] == ["PASSED", "PASSED"]
    assert result.decision is not None and result.decision.is_live

    unknown = [replace(f, shown=None) for f in frames]  # frames that do not say what was shown
    late = replay(CHALLENGES, unknown, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert late.issued[0].t == 0.0 and late.verdicts[0].reason is not None
    assert late.verdicts[0].reason.value == "TIMEOUT"

    # issued, but never seen (the agent's video does not go out): the clock starts anyway
    never = [replace(f, shown=-1) for f in frames[:70]]
    stuck = replay(CHALLENGES, never, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert stuck.issued[0].t == pytest.approx(2 / FPS + DEFAULT_THRESHOLDS.time_limit_s)


def test_each_next_challenges_clock_starts_when_the_subject_could_see_it() -> None:
    """Challenge 1 passes; the next instruction reaches the screen 5 s later (a backlog): its clock
    and baseline start there, so the subject who then opens the mouth passes; judged from the
    frame that passed challenge 1, the same frames time out."""
    poses = [face()] * 6 + [face(yaw=30.0)] * 4 + [face()] * 52 + [face(mar=0.6)] * 4 + [face()] * 6
    frames = [frame(n, lit(analysis)) for n, analysis in enumerate(poses)]
    passed_at = 8  # the 3rd turned frame holds the turn (3 frames spanning 0.25 s)
    shown = [replace(f, shown=0 if f.sequence <= passed_at + 40 else 1) for f in frames]
    result = replay(CHALLENGES, shown, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert [v.status.value for v in result.verdicts] == ["PASSED", "PASSED"]
    assert result.issued[1].t == pytest.approx((passed_at + 41) / FPS)

    untagged = [replace(f, shown=None) for f in frames]
    late = replay(CHALLENGES, untagged, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert [v.reason.value if v.reason else None for v in late.verdicts] == [None, "TIMEOUT"]


def test_a_backlog_longer_than_the_time_limit_does_not_start_the_next_challenge_early() -> None:
    """The worker falls behind by 15 s (one analysis thread on a loaded machine, `faceproof bench
    room` at load 24-39): the agent learns of challenge 1 and shows it 15 s of frames after the
    frame that passed challenge 0. Frames still showing challenge 0 say the agent's video goes out
    and the instruction has not reached it yet, so the clock waits for it and the subject who then
    opens the mouth passes. (It used to start 6 s after the pass, on frames the subject took
    before they could see it, and time out.) A frame whose video showed nothing (-1) still lets
    it start past the time limit."""
    backlog = int(15 * FPS)
    poses = (
        [face()] * 6 + [face(yaw=30.0)] * 4 + [face()] * (backlog + 12) + [face(mar=0.6)] * 4 + [face()] * 6
    )
    frames = [frame(n, lit(analysis)) for n, analysis in enumerate(poses)]
    passed_at = 8  # the 3rd turned frame holds the turn (3 frames spanning 0.25 s)
    shown = [replace(f, shown=0 if f.sequence <= passed_at + backlog else 1) for f in frames]
    result = replay(CHALLENGES, shown, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert [v.status.value for v in result.verdicts] == ["PASSED", "PASSED"]
    assert result.issued[1].t == pytest.approx((passed_at + backlog + 1) / FPS)

    dark = [replace(f, shown=0 if f.sequence <= passed_at else -1) for f in frames]
    stuck = replay(CHALLENGES, dark, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert stuck.issued[1].t == pytest.approx(passed_at / FPS + DEFAULT_THRESHOLDS.time_limit_s, abs=0.2)
    assert [v.reason.value if v.reason else None for v in stuck.verdicts] == [None, "TIMEOUT"]
