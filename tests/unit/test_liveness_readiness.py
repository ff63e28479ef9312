"""Get ready: the pre-checks before the first challenge, what they report, and the replay's clock."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from contracts.values import ChallengeType, Precheck
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import DEFAULT_THRESHOLDS, Challenge, FailureReason
from services.liveness.lighting import measure_light
from services.liveness.readiness import DEFAULT_READINESS, Readiness, ReadinessCheck, prechecks
from services.liveness.replay import reference_pick, replay, replay_step
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

    # while getting ready: no challenge, the problem on the newest frame, said once (a step says
    # it when the previous step ended on something else, however many frames it judged)
    four = replay(CHALLENGES, frames[:4], identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert four.guidance is not None and four.guidance.changed is True
    early = replay_step(
        CHALLENGES, four.progress, frames[:5], identity_threshold=0.35, readiness=DEFAULT_READINESS
    )
    assert early.issued == () and early.decision is None
    assert early.guidance is not None and early.guidance.problems == (Precheck.FACE_TOO_SMALL.value,)
    assert early.guidance.changed is False
    first = replay(CHALLENGES, frames[:1], identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert first.guidance is not None and first.guidance.changed is True
    clean = replay(CHALLENGES, frames[:17], identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert clean.guidance is not None and clean.guidance.problems == () and clean.guidance.changed


def test_a_presentation_held_still_before_the_challenges_cannot_outvote_the_one_that_answers_them() -> None:
    """The attack: while the pre-checks go on (a problem every third frame keeps the subject from
    being ready), a presentation that scores as real (a good screen) adds its scores; then another
    (scoring 0.05) answers the challenges. Every judged frame's score went into the median: live.
    The decision reads the challenges' frames' scores now."""
    good, bad = lit(face()), lit(replace(face(), relative_size=0.2))
    padding = [replace(frame(n, good if n % 3 else bad), spoof_score=0.95) for n in range(40)]
    answer = [replace(f, sequence=f.sequence + 40, t=f.t + 40 / FPS) for f in live_session(24)]
    answer = [
        replace(f, analysis=lit(f.analysis), spoof_score=0.05 if f.spoof_score else None) for f in answer
    ]
    result = replay(CHALLENGES, padding + answer, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert [v.status.value for v in result.verdicts] == ["PASSED", "PASSED"]
    assert result.decision is not None and not result.decision.is_live
    assert result.decision.reasons == (FailureReason.SPOOF_SUSPECTED.value,)
    # a session whose challenges gave too few scores for an opinion is judged on all of them
    quick = [replace(f, spoof_score=None) for f in answer]
    quick[-1] = replace(quick[-1], spoof_score=0.05)
    result = replay(CHALLENGES, padding + quick, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert result.decision is not None and result.decision.is_live


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


def test_after_a_reconnect_the_challenge_starts_again_when_the_new_connection_shows_it() -> None:
    """Challenge 0 passes, challenge 1 is on screen, the subject hangs up and comes back: the new
    connection's video shows nothing for 4 s (the agent hears of the session again, a backlog),
    then challenge 1; the subject opens the mouth 3 s after seeing it. Its clock restarts at the
    first frame taken with it on the new connection's screen, so they pass; restarted at the new
    connection's first frame, as frames that do not say what was shown still are, 7 s is a
    time-out."""
    first = [face()] * 6 + [face(yaw=30.0)] * 4 + [face()] * 4
    frames = [frame(n, lit(analysis)) for n, analysis in enumerate(first)]
    shown = [replace(f, shown=0 if f.sequence <= 10 else 1) for f in frames]
    blank, asked = int(4 * FPS), int(3 * FPS)
    later = [face()] * (blank + asked) + [face(mar=0.6)] * 4 + [face()] * 4
    base, start = 100_000, frames[-1].t + 10.0  # away for 10 s
    back = [
        replace(frame(base + n, lit(analysis)), t=start + n / FPS, shown=-1 if n < blank else 1)
        for n, analysis in enumerate(later)
    ]
    result = replay(CHALLENGES, shown + back, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert [v.status.value for v in result.verdicts] == ["PASSED", "PASSED"]
    assert result.issued[1].t == pytest.approx(start + blank / FPS)

    untagged = [replace(f, shown=None) for f in shown + back]
    late = replay(CHALLENGES, untagged, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert [v.reason.value if v.reason else None for v in late.verdicts] == [None, "TIMEOUT"]


def test_a_reconnect_before_the_first_instruction_was_seen_waits_for_it_afresh() -> None:
    """Ready, challenge 0 issued, but the subject hangs up before the agent's video showed it, and
    comes back 10 s later (past the time limit since they were ready): the new connection's video
    shows nothing for 4 s, then challenge 0, which they answer 2 s later. The clock starts when it
    is on the new screen, so they pass. Counted from the moment they were ready, the fallback
    started the clock at the new connection's first frame, 4 s before the instruction could be
    seen, and the same answer timed out."""
    ready = [replace(frame(n, lit(face())), shown=-1) for n in range(3)]
    blank, asked = int(4 * FPS), int(2 * FPS)
    later = [face()] * (blank + asked) + [face(yaw=30.0)] * 4 + [face()] * 52 + [face(mar=0.6)] * 4
    base, start = 100_000, ready[-1].t + 10.0  # away for 10 s
    turned = blank + asked + 3  # the 3rd turned frame holds the turn
    back = [
        replace(
            frame(base + n, lit(analysis)),
            t=start + n / FPS,
            shown=-1 if n < blank else 0 if n <= turned + 40 else 1,
        )
        for n, analysis in enumerate(later)
    ]
    result = replay(CHALLENGES, ready + back, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert result.issued[0].t == pytest.approx(start + blank / FPS)
    assert [v.status.value for v in result.verdicts] == ["PASSED", "PASSED"]

    # a step per stored frame, as the worker takes them (each step sees every frame stored, the
    # reconnect's gap is skipped once enough follow it): the same clock and verdicts
    stored = ready + back
    stepped = replay(CHALLENGES, [], identity_threshold=0.35, readiness=DEFAULT_READINESS)
    for n in range(1, len(stored) + 1):
        stepped = replay_step(
            CHALLENGES, stepped.progress, stored[:n], identity_threshold=0.35, readiness=DEFAULT_READINESS
        )
    assert stepped.issued[0].t == result.issued[0].t
    assert [v.status.value for v in stepped.verdicts] == ["PASSED", "PASSED"]


BLINK = [Challenge(ChallengeType.BLINK)]
DARK = 16.0  # face luma: under the TOO_DARK limit (faceproof eval liveness --unready dark's)


def eyes(analysis: FrameAnalysis, ear: float) -> FrameAnalysis:
    assert analysis.measures is not None
    return replace(analysis, measures=replace(analysis.measures, ear_right=ear, ear_left=ear))


def test_a_blink_read_only_in_dark_frames_does_not_pass_and_the_clock_runs_on() -> None:
    """Ready and lit, then the light goes out mid-challenge: the eye ratios of a face of luma 16 are
    noise, and they "close and reopen" (liveportrait_d9 'passed' BLINK that way without the
    pre-checks). Not a pass: the dark frames count for nothing, and the challenge's clock runs on
    through them (going dark does not stall it) to TIMEOUT. The same eyes in the light pass."""
    ready = [lit(face())] * 6
    blink = [eyes(face(), 0.05)] * 2 + [face()] * 2
    in_the_dark = ready + [lit(a, DARK, DARK) for a in [face()] * 4 + blink * 3 + [face()] * 60]
    frames = [frame(n, analysis) for n, analysis in enumerate(in_the_dark)]
    result = replay(BLINK, frames, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert [(v.status.value, v.reason) for v in result.verdicts] == [("FAILED", FailureReason.TIMEOUT)]
    assert result.verdicts[0].decided_at == pytest.approx(
        result.issued[0].t + DEFAULT_THRESHOLDS.time_limit_s, abs=1.5 / FPS
    )
    # without the pre-checks nothing is refused: the noise passes as a blink
    plain = replay(BLINK, frames, identity_threshold=0.35)
    assert [v.status.value for v in plain.verdicts] == ["PASSED"]

    in_the_light = ready + [lit(a) for a in [face()] * 4 + blink + [face()] * 4]
    lit_frames = [frame(n, analysis) for n, analysis in enumerate(in_the_light)]
    passed = replay(BLINK, lit_frames, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert [v.status.value for v in passed.verdicts] == ["PASSED"]
    assert passed.decision is not None and passed.decision.is_live

    # the light back before the time is up: the real blink then passes
    relit = (
        ready + [lit(a, DARK, DARK) for a in [face()] * 4 + blink] + [lit(a) for a in blink + [face()] * 4]
    )
    back = replay(
        BLINK,
        [frame(n, a) for n, a in enumerate(relit)],
        identity_threshold=0.35,
        readiness=DEFAULT_READINESS,
    )
    assert [v.status.value for v in back.verdicts] == ["PASSED"]
    assert back.verdicts[0].decided_at == pytest.approx(
        (len(ready) + 4 + len(blink) + 2) / FPS
    )  # reopened, lit


def test_a_baseline_is_never_taken_in_the_dark() -> None:
    """Challenge 0 starts in the dark (the light went out after the pre-checks) where the head pose
    reads 10 degrees to the right; lit again, the subject turns 12 degrees left. Measured against
    the dark frames that would be a 22-degree turn; against the lit frames it is 12, under the 15
    a turn needs. And the real turn after it passes."""
    ready = [lit(face())] * 3
    dark = [lit(face(yaw=-10.0), DARK, DARK)] * 6
    small = [lit(face())] * 4 + [lit(face(yaw=12.0))] * 4
    frames = [frame(n, a) for n, a in enumerate(ready + dark + small)]
    shown = [replace(f, shown=0) for f in frames]
    result = replay(CHALLENGES, shown, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert result.issued[0].t == pytest.approx(3 / FPS)  # the clock starts in the dark all the same
    assert result.verdicts == ()

    turned = [lit(face(yaw=30.0))] * 4
    more = [frame(n, a) for n, a in enumerate(ready + dark + small + turned)]
    passed = replay(
        CHALLENGES, [replace(f, shown=0) for f in more], identity_threshold=0.35, readiness=DEFAULT_READINESS
    )
    assert [v.status.value for v in passed.verdicts] == ["PASSED"]
    assert passed.verdicts[0].decided_at == pytest.approx((len(more) - 2) / FPS)


def test_frames_refused_during_a_challenge_give_no_sample_and_the_subject_is_told() -> None:
    """Mid-challenge the light goes out, then the face slips half out of the picture, then all is
    well again: those frames give no anti-spoofing score and no identity sample (the dark one
    would read as a spoof, the half face as someone else), and the worker's guidance names each
    problem as it changes, as before the first challenge, then says nothing is wrong."""
    cut = replace(lit(face()), inside_frame=False, frame_overflow=0.4)
    ready = [frame(n, lit(face())) for n in range(6)]
    dark = [frame(n, lit(face(), DARK, DARK), spoof=0.05, person=OTHER_PERSON) for n in range(6, 10)]
    half = [frame(n, cut, spoof=0.1, person=OTHER_PERSON) for n in range(10, 12)]
    lit_again = [frame(n, lit(face())) for n in range(12, 16)]
    frames = ready + dark + half + lit_again
    result = replay(CHALLENGES, frames, identity_threshold=0.35, readiness=DEFAULT_READINESS)
    assert result.verdicts == () and result.decision is None  # the cut-off lasted under the gate's 0.3 s
    assert result.spoof_scores and set(result.spoof_scores) == {0.95}
    plain = replay(CHALLENGES, frames, identity_threshold=0.35)
    assert plain.decision is not None and "IDENTITY_CHANGED" in plain.decision.reasons

    said = []
    progress = replay(CHALLENGES, [], identity_threshold=0.35, readiness=DEFAULT_READINESS).progress
    for f in frames:
        step = replay_step(CHALLENGES, progress, [f], identity_threshold=0.35, readiness=DEFAULT_READINESS)
        progress = step.progress
        if step.guidance is not None and step.guidance.changed:
            said.append((f.sequence, step.guidance.problems))
    assert said == [(0, ()), (6, ("TOO_DARK",)), (10, ("FACE_OUT_OF_FRAME",)), (12, ())]


def test_once_the_challenges_run_turning_and_coming_closer_are_not_refused() -> None:
    """The pre-checks' "not looking at the camera", "too close" and "too far" (above the gate) are
    what the challenges ask for; once they run, only the gates and darkness refuse a frame."""
    check = ReadinessCheck()
    for n in range(3):
        check.update(n / FPS, lit(face()))
    assert check.ready_at is not None
    for analysis in [
        lit(face(yaw=35.0)),
        lit(replace(face(), relative_size=0.95)),
        lit(replace(face(), relative_size=0.2)),
        lit(face(), 70.0, 200.0),  # backlit: the face's own light is judged (TOO_DARK)
    ]:
        check.update(1.0, analysis)
        assert check.problems == ()
    for analysis, problems in [
        (lit(face(), DARK, DARK), (Precheck.TOO_DARK,)),
        (lit(replace(face(), relative_size=0.1)), (Precheck.FACE_TOO_SMALL,)),
        (lit(face(faces=2)), (Precheck.MULTIPLE_FACES,)),
        (
            lit(replace(face(), frame_overflow=0.2), DARK, DARK),
            (Precheck.FACE_OUT_OF_FRAME, Precheck.TOO_DARK),
        ),
    ]:
        check.update(1.0, analysis)
        assert check.problems == problems


def test_a_frame_the_prechecks_refused_is_never_the_reference_frame() -> None:
    """The reference frame (the live face matched against the app's photo) is the most frontal
    judged frame; a dark one, however frontal, is not it (before challenge 0 or during one)."""
    dark = [frame(n, lit(face(), DARK, DARK)) for n in range(4)]
    ready = [frame(n, lit(face(yaw=4.0))) for n in range(4, 10)]
    dark_again = [frame(n, lit(face(), DARK, DARK)) for n in range(10, 14)]
    result = replay(
        CHALLENGES, dark + ready + dark_again, identity_threshold=0.35, readiness=DEFAULT_READINESS
    )
    pick = reference_pick(result.progress)
    assert pick is not None and pick.sequence == 4
    plain = replay(CHALLENGES, dark + ready + dark_again, identity_threshold=0.35)
    assert (chosen := reference_pick(plain.progress)) is not None and chosen.sequence == 0
