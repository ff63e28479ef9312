"""The liveness worker's replay over recorded analyses: order, gaps, duplicates, decision; step
by step from the stored progress as the worker runs it, with the same verdicts as in one go."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from contracts.documents import SessionSettingsDocument
from contracts.values import ChallengeType
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import Challenge, ChallengeStatus
from services.liveness.handlers import audit_image_count, session_challenges
from services.liveness.measures import FaceMeasures, HeadPose
from services.liveness.progress import ReplayProgress
from services.liveness.readiness import DEFAULT_READINESS
from services.liveness.replay import (
    FULL_TIME_RESTARTS,
    GAP_SKIP_AFTER,
    ReplayFrame,
    ReplayResult,
    audit_frames,
    audit_sequences,
    reference_pick,
    replay,
    replay_step,
)

FPS = 8.0
CHALLENGES = [Challenge(ChallengeType.TURN_LEFT), Challenge(ChallengeType.OPEN_MOUTH)]
SAME_PERSON = np.array([1.0, 0.0, 0.0], dtype=np.float32)
OTHER_PERSON = np.array([0.0, 1.0, 0.0], dtype=np.float32)


def face(yaw: float = 0.0, pitch: float = 0.0, mar: float = 0.05, faces: int = 1) -> FrameAnalysis:
    measures = FaceMeasures(
        pose=HeadPose(yaw=yaw, pitch=pitch, roll=0.0),
        ear_right=0.3,
        ear_left=0.3,
        mar=mar,
        mouth_width=0.8,
        nose=(0.5, 0.5),
        face_aspect=1.0,
    )
    analysis = FrameAnalysis(
        width=640,
        height=480,
        face_count=faces,
        detected=True,
        box=(220.0, 140.0, 420.0, 340.0),
        detection_score=0.9,
        presence=0.99,
        measures=measures,
        inside_frame=True,
        relative_size=200 / 480,
        keypoints=np.zeros((5, 2), dtype=np.float32),
    )
    # what the worker stores and reads back
    return FrameAnalysis.from_dict(analysis.to_dict())


def frame(
    sequence: int, analysis: FrameAnalysis, *, spoof: float = 0.95, person: np.ndarray[Any, Any] = SAME_PERSON
) -> ReplayFrame:
    return ReplayFrame(
        sequence=sequence,
        t=sequence / FPS,
        analysis=analysis,
        storage_key=f"sessions/s/frames/{sequence:08d}.jpg",
        spoof_score=spoof if sequence % 2 == 0 else None,
        embedding=person if sequence % 4 == 0 else None,
    )


def live_session(count: int = 24) -> list[ReplayFrame]:
    """Neutral, turn left (held), back, open the mouth (held), neutral."""
    poses = [face()] * 6 + [face(yaw=30.0)] * 4 + [face()] * 4 + [face(mar=0.6)] * 4 + [face()] * (count - 18)
    return [frame(i, analysis) for i, analysis in enumerate(poses[:count])]


def run(frames: list[ReplayFrame], skipped: tuple[tuple[int, int], ...] = ()) -> ReplayResult:
    return replay(CHALLENGES, frames, identity_threshold=0.35, skipped=skipped)


def stored(progress: ReplayProgress) -> ReplayProgress:
    """The progress as the worker reads it back from its JSON column."""
    return ReplayProgress.load(json.loads(json.dumps(progress.dump())))


def deliver(
    order: list[ReplayFrame], **options: Any
) -> tuple[list[tuple[str, int, object]], ReplayResult, list[ReplayFrame]]:
    """Frames arriving one by one; after each, a worker's step: it reads the frames stored from
    the progress's next sequence on, replays them from the stored progress and publishes past
    the counters. Also returns every frame the steps judged, in order."""
    store: dict[int, ReplayFrame] = {}
    progress = ReplayProgress()
    issued = verdicts = 0
    published: list[tuple[str, int, object]] = []
    judged: list[ReplayFrame] = []
    result = replay_step(CHALLENGES, progress, [], identity_threshold=0.35, **options)
    for arriving in order:
        store.setdefault(arriving.sequence, arriving)
        pending = [store[s] for s in sorted(store) if s >= progress.next_sequence]
        result = replay_step(CHALLENGES, progress, pending, identity_threshold=0.35, **options)
        progress = stored(result.progress)
        judged += result.judged
        published += [("issued", i.index, i.challenge.type) for i in result.issued[issued:]]
        published += [
            ("verdict", n, result.verdicts[n].status) for n in range(verdicts, len(result.verdicts))
        ]
        issued, verdicts = len(result.issued), len(result.verdicts)
        if result.done:
            break
    return published, result, judged


def block_shuffled(
    frames: list[ReplayFrame], seed: int, block: int = GAP_SKIP_AFTER + 1
) -> list[ReplayFrame]:
    rng = random.Random(seed)
    out: list[ReplayFrame] = []
    for start in range(0, len(frames), block):
        chunk = frames[start : start + block]
        rng.shuffle(chunk)
        out += chunk
    return out


def test_a_live_session_passes_both_challenges_and_is_live() -> None:
    result = run(live_session())
    assert [v.status for v in result.verdicts] == [ChallengeStatus.PASSED, ChallengeStatus.PASSED]
    assert [(i.index, i.challenge.type) for i in result.issued] == [
        (0, ChallengeType.TURN_LEFT),
        (1, ChallengeType.OPEN_MOUTH),
    ]
    assert result.decision is not None and result.decision.is_live
    assert [o.to_dict() for o in result.outcomes] == [
        {"type": "TURN_LEFT", "status": "PASSED", "reason": None},
        {"type": "OPEN_MOUTH", "status": "PASSED", "reason": None},
    ]


@pytest.mark.parametrize("seed", range(8))
def test_frames_arriving_out_of_order_publish_the_same_events_as_in_order(seed: int) -> None:
    frames = live_session()
    in_order, expected, _ = deliver(frames)
    shuffled, result, _ = deliver(block_shuffled(frames, seed))
    assert shuffled == in_order
    assert result.verdicts == expected.verdicts
    assert result.decision == expected.decision
    assert result.skipped == ()


def test_the_complete_set_in_any_order_gives_the_same_result() -> None:
    frames = live_session()
    expected = run(frames)
    for seed in range(5):
        shuffled = list(frames)
        random.Random(seed).shuffle(shuffled)
        assert run(shuffled).verdicts == expected.verdicts
        assert run(shuffled).decision == expected.decision


def test_a_gap_waits_until_more_than_four_later_frames_exist_then_is_skipped_for_good() -> None:
    frames = live_session()
    without_8 = [f for f in frames if f.sequence != 8]
    waiting = run(without_8[:12])  # 0..7 and 9..12: four frames after the gap
    assert [f.sequence for f in waiting.judged] == list(range(8))
    assert waiting.skipped == ()
    skipping = run(without_8[:13])  # five frames after it: frame 8 counts as lost
    assert skipping.skipped == ((8, 8),)
    assert 8 not in [f.sequence for f in skipping.judged] and 13 in [f.sequence for f in skipping.judged]
    # frame 8 arriving late changes nothing that was decided without it
    late = run([*without_8[:13], frames[8]], skipping.skipped)
    assert [f.sequence for f in late.judged] == [f.sequence for f in skipping.judged]
    assert late.verdicts == skipping.verdicts


def test_a_missing_first_frame_is_a_gap_too() -> None:
    frames = live_session()[1:]
    assert run(frames[:4]).judged == ()
    assert run(frames[:5]).skipped == ((0, 0),)


def test_a_reconnect_jumps_the_sequence_and_the_session_goes_on() -> None:
    frames = live_session()
    reconnected = frames[:12] + [replace(f, sequence=100000 + f.sequence) for f in frames[12:]]
    result = run(reconnected)
    assert result.skipped == ((12, 100011),)
    assert result.decision is not None and result.decision.is_live
    assert [v.status for v in result.verdicts] == [v.status for v in run(frames).verdicts]


def test_a_reconnect_restarts_the_current_challenge_with_its_full_time() -> None:
    """Away for 10 s (longer than a challenge's limit): the challenge shown again gets its time."""
    frames = live_session()
    away = 10.0
    reconnected = frames[:12] + [replace(f, sequence=100000 + f.sequence, t=f.t + away) for f in frames[12:]]
    result = run(reconnected)
    assert [v.status for v in result.verdicts] == [ChallengeStatus.PASSED, ChallengeStatus.PASSED]
    assert result.decision is not None and result.decision.is_live
    # the same absence within one connection is a time-out
    stalled = frames[:12] + [replace(f, t=f.t + away) for f in frames[12:]]
    assert run(stalled).verdicts[-1].reason is not None


def test_reconnects_restart_a_challenge_only_a_bounded_number_of_times() -> None:
    """The attack: drop the connection before each deadline and come back: every reconnect gave
    the challenge its full time again, so a subject had unlimited tries (and read each challenge
    in advance) until the session expired. Past FULL_TIME_RESTARTS the challenge goes on by its
    clock: an absence past its deadline is a time-out."""
    still = [face()] * 6
    t, sequence, frames = 0.0, 0, []
    for connection in range(FULL_TIME_RESTARTS + 2):  # each connection: 6 still frames, then 10 s away
        base = connection * 100000
        for offset, analysis in enumerate(still):
            frames.append(replace(frame(sequence, analysis), sequence=base + offset, t=t))
            sequence, t = sequence + 1, t + 1 / FPS
        t += 10.0
    result = run(frames)
    assert result.progress.restarts == FULL_TIME_RESTARTS
    assert [v.reason.value for v in result.verdicts if v.reason is not None] == ["TIMEOUT"]
    assert result.decision is not None and not result.decision.is_live
    # within the bound, the same absences are forgiven: the last connection turns and passes
    forgiven = frames[: 6 * (FULL_TIME_RESTARTS + 1)]
    last = forgiven[-1]
    answer = [face(yaw=30.0)] * 4 + [face()] * 4 + [face(mar=0.6)] * 4 + [face()] * 4
    forgiven += [
        replace(frame(n, analysis), sequence=last.sequence + 1 + n, t=last.t + (1 + n) / FPS)
        for n, analysis in enumerate(answer)
    ]
    assert run(forgiven).decision is not None and run(forgiven).decision.is_live  # type: ignore[union-attr]


def test_duplicate_frames_count_once_and_the_first_stored_wins() -> None:
    frames = live_session()
    expected = run(frames)
    duplicated = frames + frames[3:12]
    assert run(duplicated).verdicts == expected.verdicts
    # a second analysis of frame 7 (another worker) cannot change the stored first one
    clash = [*frames[:8], replace(frames[7], analysis=face(faces=2)), *frames[8:]]
    assert run(clash).verdicts == expected.verdicts


def test_frames_before_the_start_are_ignored() -> None:
    frames = live_session()
    early = [replace(frames[0], t=-0.5), *[replace(f, t=f.t + 0.1) for f in frames[1:]]]
    result = run(early)
    assert 0 not in [f.sequence for f in result.judged]
    assert result.decision is not None and result.decision.is_live


def test_a_still_photo_fails_with_a_reason() -> None:
    photo = [frame(i, face(), spoof=0.05) for i in range(60)]
    result = run(photo)
    assert result.decision is not None and not result.decision.is_live
    assert result.verdicts[0].status is ChallengeStatus.FAILED
    assert "TIMEOUT" in result.decision.reasons and "SPOOF_SUSPECTED" in result.decision.reasons


@pytest.mark.parametrize("readiness", [None, DEFAULT_READINESS])
def test_another_persons_photo_is_never_the_frame_matched_against_the_apps_photo(readiness: object) -> None:
    """The attack: the live person answers every challenge, and a frontal photo of someone else is
    shown for a frame where no identity check fails the session (before the challenges, or on a
    frame the worker does not embed). The most frontal frame was matched against the app's photo,
    whoever it showed; now only a frame the identity check embedded and accepted is."""
    turned = [face(yaw=6.0)] * 6 + [face(yaw=30.0)] * 4 + [face(yaw=6.0)] * 4 + [face(yaw=6.0, mar=0.6)] * 4
    session = [frame(n, analysis) for n, analysis in enumerate(turned + [face(yaw=6.0)] * 6)]
    for sequence, person in ((2, SAME_PERSON), (8, OTHER_PERSON)):  # (2: a frame no one embeds)
        photo = replace(frame(sequence, face()), embedding=None if sequence % 4 else person)
        frames = [photo if f.sequence == sequence else f for f in session]
        result = replay(CHALLENGES, frames, identity_threshold=0.35, readiness=readiness)  # type: ignore[arg-type]
        pick = reference_pick(result.progress)
        assert pick is not None and pick.sequence != sequence, (sequence, readiness)


def test_another_person_fails_with_identity_changed() -> None:
    frames = live_session()
    swapped = [replace(f, embedding=OTHER_PERSON) if f.sequence == 4 else f for f in frames]
    result = run(swapped)
    assert result.verdicts[0].reason is not None and result.verdicts[0].reason.value == "IDENTITY_CHANGED"
    assert result.decision is not None and result.decision.reasons == ("IDENTITY_CHANGED",)


def test_frames_after_the_decision_are_not_judged() -> None:
    frames = live_session(40)
    result = run(frames)
    assert result.done
    assert max(f.sequence for f in result.judged) < 20


def embedded(sequence: int, analysis: FrameAnalysis) -> ReplayFrame:
    return replace(frame(sequence, analysis), embedding=SAME_PERSON)


def test_reference_is_the_most_frontal_single_face_of_the_checked_person_and_audit_frames_spread() -> None:
    frames = [
        embedded(0, face(yaw=12.0)),
        embedded(1, face(yaw=3.0, pitch=-2.0)),
        embedded(2, face(yaw=1.0, pitch=1.0, faces=2)),
        embedded(3, face(yaw=-4.0)),
        frame(5, face(yaw=0.5)),  # not embedded: the identity check never saw this face
    ]
    pick = reference_pick(run(frames).progress)
    assert pick is not None and pick.sequence == 3
    assert [f.sequence for f in audit_frames(live_session(), 2)] == [6, 18]
    assert audit_frames(frames, 0) == []
    assert len(audit_frames(frames[:1], 3)) == 1


def test_session_settings_choose_the_challenges_and_audit_images() -> None:
    rng = random.Random(1)
    drawn = session_challenges(
        SessionSettingsDocument.from_row({"challenges": 2, "challenge_types": ["BLINK", "TURN_LEFT"]}), rng
    )
    assert sorted(c.type.value for c in drawn) == ["BLINK", "TURN_LEFT"]
    assert len(session_challenges(SessionSettingsDocument(challenges=4), rng)) == 4
    assert audit_image_count(SessionSettingsDocument()) == 2
    assert audit_image_count(SessionSettingsDocument.from_row({"auditImages": 3})) == 3  # a call's legacy row
    assert audit_image_count(SessionSettingsDocument(audit_images=9)) == 4


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("readiness", [None, DEFAULT_READINESS])
def test_step_by_step_from_the_stored_progress_equals_one_replay_of_every_frame(
    seed: int, readiness: object
) -> None:
    """Each frame judged once, by steps resumed from the JSON progress: the same verdicts,
    decision, reference frame and audit frames as a replay of every frame in one go."""
    frames = live_session(30)
    whole = replay(CHALLENGES, frames, identity_threshold=0.35, readiness=readiness)  # type: ignore[arg-type]
    _, stepped, judged = deliver(block_shuffled(frames, seed), readiness=readiness)
    assert [f.sequence for f in judged] == [f.sequence for f in whole.judged]  # each once, in order
    assert stepped.verdicts == whole.verdicts
    assert stepped.decision == whole.decision and stepped.decision is not None
    assert [(i.index, i.t) for i in stepped.issued] == [(i.index, i.t) for i in whole.issued]
    expected = reference_pick(whole.progress)
    pick = reference_pick(stepped.progress)
    assert expected is not None and pick is not None and pick.sequence == expected.sequence
    for count in range(5):
        assert audit_sequences(stepped.progress, count) == [
            f.sequence for f in audit_frames(whole.judged, count)
        ]


def test_a_step_reads_only_frames_from_its_next_sequence_on() -> None:
    frames = live_session()
    first = replay_step(CHALLENGES, ReplayProgress(), frames[:5], identity_threshold=0.35)
    assert first.progress.next_sequence == 5
    # frames before the next sequence (already judged) are ignored, whatever they show now
    again = replay_step(
        CHALLENGES,
        stored(first.progress),
        [replace(f, analysis=face(faces=2)) for f in frames[:5]] + frames[5:8],
        identity_threshold=0.35,
    )
    assert [f.sequence for f in again.judged] == [5, 6, 7]
    assert again.verdicts == replay(CHALLENGES, frames[:8], identity_threshold=0.35).verdicts


def test_a_gap_skipped_in_one_step_stays_skipped_in_the_next() -> None:
    frames = [f for f in live_session() if f.sequence != 3]
    step = replay_step(CHALLENGES, ReplayProgress(), frames[:8], identity_threshold=0.35)
    assert step.progress.skipped == [(3, 3)] and step.progress.next_sequence == 9
    late = replay_step(CHALLENGES, stored(step.progress), [live_session()[3]], identity_threshold=0.35)
    assert late.judged == () and late.progress.skipped == [(3, 3)]
