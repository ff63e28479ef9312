"""The frozen-stream check: a run of repeated pictures makes FROZEN_STREAM, a hard failure of the
decision; anything that changes between frames breaks the run; the stored progress resumes it."""

from __future__ import annotations

import json
from dataclasses import replace

from contracts.routing import CONNECTION_SEQUENCE_STRIDE
from services.liveness.decision import decide
from services.liveness.progress import ReplayProgress
from services.liveness.readiness import DEFAULT_READINESS
from services.liveness.replay import ReplayFrame, replay
from services.liveness.stream import (
    FROZEN_MIN_RUN,
    FROZEN_STREAM,
    MEDIA_CLOCK_AHEAD,
    MEDIA_LEAD_LIMIT_S,
    FrozenCheck,
    same_content,
)
from tests.unit.test_liveness_readiness import DARK, lit
from tests.unit.test_liveness_replay import CHALLENGES, deliver, face, frame

PICTURE = tuple(float(v) for v in range(64))


def moved(by: float) -> tuple[float, ...]:
    """The picture with one block's mean changed by ``by`` luma levels."""
    return (PICTURE[0] + by, *PICTURE[1:])


def test_a_picture_repeated_for_one_second_is_frozen() -> None:
    check = FrozenCheck()
    for _ in range(FROZEN_MIN_RUN):  # the first frame and 7 repeats
        check.update(PICTURE)
    assert not check.frozen and check.longest == FROZEN_MIN_RUN - 1
    check.update(PICTURE)
    assert check.frozen and (check.repeats, check.pairs) == (FROZEN_MIN_RUN, FROZEN_MIN_RUN)


def test_a_change_in_one_block_breaks_the_run_and_unknown_frames_judge_nothing() -> None:
    assert same_content(PICTURE, moved(0.5)) and not same_content(PICTURE, moved(0.6))
    check = FrozenCheck()
    for n in range(40):  # every 5th frame moves one block, or is not known
        check.update(None if n % 10 == 9 else moved(0.6 if n % 5 == 4 else 0.0))
    assert not check.frozen and check.longest == 3


def test_the_longest_run_counts_even_after_the_stream_moves_again() -> None:
    check = FrozenCheck()
    for content in [PICTURE] * (FROZEN_MIN_RUN + 1) + [moved(5.0), PICTURE]:
        check.update(content)
    assert check.frozen and check.run == 0


def test_the_stored_state_resumes_the_check() -> None:
    whole, stepped = FrozenCheck(), FrozenCheck()
    contents = [moved(3.0)] + [PICTURE] * 5 + [moved(1.0)] * 4
    for n, content in enumerate(contents):
        whole.update(content)
        state = json.loads(json.dumps(stepped.snapshot().model_dump()))
        stepped = FrozenCheck.resume(ReplayProgress(frozen=state).frozen)
        stepped.update(content)
        assert stepped == whole, n


def test_a_frozen_stream_is_a_hard_failure_of_the_decision() -> None:
    decision = decide([], 1, [0.95] * 4, stream=(FROZEN_STREAM,))
    assert not decision.is_live and FROZEN_STREAM in decision.reasons and decision.confidence == 0.0


def with_contents(frames: list[ReplayFrame], contents: list[tuple[float, ...]]) -> list[ReplayFrame]:
    return [
        replace(f, analysis=replace(f.analysis, content=c)) for f, c in zip(frames, contents, strict=True)
    ]


def test_a_session_that_answers_its_challenges_on_a_frozen_background_fails() -> None:
    """The engine sees a live subject, but the pictures repeat (the measures differ, the pixels do
    not: a replay that moves only its metadata): FROZEN_STREAM, whatever the challenges did."""
    reading = FROZEN_MIN_RUN + 6  # the subject takes a while over the first instruction
    poses = [face()] * reading + [face(yaw=30.0)] * 4 + [face()] * 4 + [face(mar=0.6)] * 4 + [face()] * 6
    frames = [frame(i, analysis) for i, analysis in enumerate(poses)]
    live = replay(
        CHALLENGES,
        with_contents(frames, [moved(float(n)) for n in range(len(frames))]),
        identity_threshold=0.35,
    )
    assert live.decision is not None and live.decision.is_live
    frozen = with_contents(frames, [moved(float(n)) for n in range(4)] + [PICTURE] * (len(frames) - 4))
    result = replay(CHALLENGES, frozen, identity_threshold=0.35)
    assert result.decision is not None and not result.decision.is_live
    assert result.decision.reasons == (FROZEN_STREAM,)
    _, stepped, _ = deliver(frozen)  # step by step from the stored progress: the same decision
    assert stepped.decision == result.decision


def test_seconds_in_the_dark_mid_challenge_are_not_a_frozen_stream() -> None:
    """The light goes out after challenge 0 has started and comes back: the dark frames repeat
    one dark picture for longer than a frozen run (a camera in the dark shows no change), but the
    pre-checks refuse them, so they are neither a repeat nor a change. The subject answers in the
    light and passes. An injected still with dark frames slipped between its repeats stays frozen."""
    ready = [lit(face())] * 6
    dark = [lit(face(), DARK, DARK)] * (FROZEN_MIN_RUN + 6)
    answers = [face(yaw=30.0)] * 4 + [face()] * 4 + [face(mar=0.6)] * 4 + [face()] * 6
    poses = ready + dark + [lit(a) for a in answers]
    frames = [frame(n, a) for n, a in enumerate(poses)]
    dark_picture = tuple(3.0 for _ in PICTURE)
    contents = [moved(float(n)) for n in range(len(ready))]
    contents += [dark_picture] * len(dark) + [moved(float(n)) for n in range(len(answers))]
    result = replay(
        CHALLENGES, with_contents(frames, contents), identity_threshold=0.35, readiness=DEFAULT_READINESS
    )
    assert result.decision is not None and result.decision.is_live, result.decision
    _, stepped, _ = deliver(with_contents(frames, contents), readiness=DEFAULT_READINESS)
    assert stepped.decision == result.decision

    # the same session, but its lit frames are one picture (an injected still) and every third
    # frame of it dark: the still's run goes on over the dark frames
    frames += [frame(len(frames) + n, lit(face())) for n in range(60)]  # past the time limit
    slipped = [n >= len(ready) and n % 3 == 2 for n in range(len(frames))]
    still = [dark_picture if dark else PICTURE for dark in slipped]
    spliced = [
        replace(f, analysis=lit(f.analysis, DARK, DARK)) if dark else f
        for f, dark in zip(frames, slipped, strict=True)
    ]
    frozen = replay(
        CHALLENGES, with_contents(spliced, still), identity_threshold=0.35, readiness=DEFAULT_READINESS
    )
    assert frozen.decision is not None and FROZEN_STREAM in frozen.decision.reasons


def test_a_session_whose_media_clock_ran_ahead_fails_whatever_the_challenges_said() -> None:
    """The subject answers both challenges, but from the 10th frame on the call agent saw the
    stream's media clock run ahead of its own by more than a camera's can (MEDIA_LEAD_LIMIT_S):
    MEDIA_CLOCK_AHEAD, a hard failure, also when the replay goes step by step from the stored
    progress. A lead under the limit, or frames that do not say, change nothing."""
    poses = [face()] * 6 + [face(yaw=30.0)] * 4 + [face()] * 4 + [face(mar=0.6)] * 4 + [face()] * 6
    frames = [frame(n, analysis) for n, analysis in enumerate(poses)]

    def leading(limit: float) -> list[ReplayFrame]:
        return [replace(f, media_lead_s=0.0 if f.sequence < 10 else limit) for f in frames]

    for live in (frames, leading(MEDIA_LEAD_LIMIT_S)):
        result = replay(CHALLENGES, live, identity_threshold=0.35)
        assert result.decision is not None and result.decision.is_live
    ahead = leading(MEDIA_LEAD_LIMIT_S + 0.5)
    result = replay(CHALLENGES, ahead, identity_threshold=0.35)
    assert result.decision is not None and not result.decision.is_live
    assert result.decision.reasons == (MEDIA_CLOCK_AHEAD,) and result.decision.confidence == 0.0
    _, stepped, _ = deliver(ahead)
    assert stepped.decision == result.decision


def test_a_reconnect_clears_nothing_of_the_media_clocks_lead() -> None:
    """Each connection's lead starts at 0 in the call agent (a hosted page's reconnect may reach
    another agent): a stream that gains 3 s before reconnecting and 3 s after is 6 s ahead, past
    the limit, though no frame says more than 3 (before, the worker took the largest: 3, live).
    A connection whose clock fell behind gives the next nothing, and two live connections' small
    leads stay small; stepped from the stored progress, the same."""
    poses = [face()] * 10 + [face(yaw=30.0)] * 4 + [face()] * 4 + [face(mar=0.6)] * 4 + [face()] * 6
    frames = [frame(n, analysis) for n, analysis in enumerate(poses)]

    def connections(before: float, after: float) -> list[ReplayFrame]:
        """The first 4 frames on connection 0 leading by up to ``before`` (while the subject gets
        ready), the rest on connection 1 leading by ``after``."""
        return [
            replace(f, media_lead_s=before * f.sequence / 3)
            if f.sequence < 4
            else replace(f, sequence=CONNECTION_SEQUENCE_STRIDE + f.sequence, media_lead_s=after)
            for f in frames
        ]

    assert 3.0 < MEDIA_LEAD_LIMIT_S < 6.0
    ahead = connections(3.0, 3.0)
    result = replay(CHALLENGES, ahead, identity_threshold=0.35)
    assert result.decision is not None and MEDIA_CLOCK_AHEAD in result.decision.reasons
    assert not result.decision.is_live and result.decision.confidence == 0.0
    _, stepped, _ = deliver(ahead)
    assert stepped.decision == result.decision
    for before, after in ((-10.0, 4.0), (0.4, 0.4)):  # behind, then ahead; a live camera's twice
        kept = replay(CHALLENGES, connections(before, after), identity_threshold=0.35)
        assert kept.decision is not None and kept.decision.is_live, kept.decision
