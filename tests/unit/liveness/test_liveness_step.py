"""The liveness worker's step (handle_frame, then advance) over in-memory fakes of its ports:
each frame is judged once (from memory by the step it came with, stored in that step's write),
object-store I/O happens while no row is locked and before the decision is written, the step's
events are written to the outbox with the step (in the order a client sees them, each once, the
relay woken after the commit), and a step that lost a race starts again without writing anything
twice."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from contracts.documents import StoredChallenge
from contracts.events import FrameCaptured, SessionStarted
from contracts.routing import CommandKey, EventKey
from contracts.values import ChallengeType
from infra.db.liveness import LivenessFrame
from services.liveness import handlers
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import Challenge, ChallengeStatus, judges_eyes
from services.liveness.frames import AnalysedFrame
from services.liveness.handlers import Deps, handle_frame, handle_session_started, to_replay_frame
from services.liveness.measures import FaceMeasures, HeadPose
from services.liveness.replay import GAP_SKIP_AFTER, ReplayFrame, replay
from tests.unit.liveness.fakes import (
    NOW,
    FakeFrames,
    FakeSessions,
    FakeStates,
    FakeStore,
    session,
)

SESSION = "s-1"
FPS = 8.0
CHALLENGES = [Challenge(ChallengeType.TURN_LEFT), Challenge(ChallengeType.OPEN_MOUTH)]
#: Neutral, turn left (held), back, open the mouth (held), neutral: 40 frames.
POSES = [(0.0, 0.05)] * 8 + [(30.0, 0.05)] * 5 + [(0.0, 0.05)] * 6 + [(0.0, 0.6)] * 5 + [(0.0, 0.05)] * 16
#: The events a client sees, readiness guidance aside.
LIVE_EVENTS = [
    EventKey.CHALLENGE_ISSUED,
    EventKey.CHALLENGE_VERDICT,
    EventKey.CHALLENGE_ISSUED,
    EventKey.CHALLENGE_VERDICT,
    EventKey.LIVENESS_DECIDED,
    CommandKey.MATCH_REFERENCES,
]


def analysed(sequence: int) -> AnalysedFrame:
    yaw, mar = POSES[sequence]
    measures = FaceMeasures(
        pose=HeadPose(yaw=yaw, pitch=abs(sequence - 20) / 10, roll=0.0),
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
        face_count=1,
        detected=True,
        box=(220.0, 140.0, 420.0, 340.0),
        detection_score=0.9,
        presence=0.99,
        measures=measures,
        inside_frame=True,
        relative_size=200 / 480,
        keypoints=np.zeros((5, 2), dtype=np.float32),
    )
    spoof = 0.95 if sequence % 2 == 0 else None
    embedding = [1.0, 0.0, 0.0] if sequence % 4 == 0 else None
    return AnalysedFrame(analysis, spoof, embedding)


def key(sequence: int) -> str:
    return f"sessions/{SESSION}/frames/{sequence:08d}.jpg"


@dataclass
class Worker:
    deps: Deps
    states: FakeStates
    store: FakeStore
    #: How often each frame was handed to the replay (from memory or read back from the rows).
    judged: Counter[int] = field(default_factory=Counter)

    async def deliver(self, order: list[int]) -> None:
        for sequence in order:
            event = FrameCaptured(
                correlation_id=SESSION,
                session_id=SESSION,
                connection_id="c1",
                sequence=sequence,
                storage_key=key(sequence),
                width=640,
                height=480,
                captured_at=NOW + timedelta(seconds=sequence / FPS),
            )
            await handle_frame(event, self.deps)

    def events(self) -> list[str]:
        """The routing keys of the messages in the outbox, readiness guidance aside."""
        return [k for k in self.states.routing_keys() if k != EventKey.READINESS_CHECKED]

    def event_bodies(self) -> list[dict[str, Any]]:
        skip = {"message_id", "occurred_at"}
        return [{k: v for k, v in m.payload.items() if k not in skip} for m in self.states.outbox]


@pytest.fixture
async def worker(monkeypatch: pytest.MonkeyPatch) -> Worker:
    states = FakeStates()
    store = FakeStore(states)
    for sequence in range(len(POSES)):
        store.objects[key(sequence)] = f"jpeg {sequence}".encode()
    await states.create_state(
        SESSION,
        challenges=[StoredChallenge(type=c.type, target=c.target) for c in CHALLENGES],
        started_at=NOW,
        connection_id="c1",
    )
    deps = Deps(
        sessions=FakeSessions(session(SESSION, reference_key=f"sessions/{SESSION}/reference-input.jpg")),  # type: ignore[arg-type]
        states=states,  # type: ignore[arg-type]
        store=store,
        frames=FakeFrames({n: analysed(n) for n in range(len(POSES))}),
        identity_threshold=0.35,
    )
    worker = Worker(deps, states, store)

    def judging(frame: LivenessFrame, started_at: datetime) -> ReplayFrame:
        worker.judged[frame.sequence] += 1
        return to_replay_frame(frame, started_at)

    monkeypatch.setattr(handlers, "to_replay_frame", judging)
    return worker


def block_shuffled(seed: int, block: int = GAP_SKIP_AFTER + 1) -> list[int]:
    rng = random.Random(seed)
    order: list[int] = []
    for start in range(0, len(POSES), block):
        chunk = list(range(start, min(start + block, len(POSES))))
        rng.shuffle(chunk)
        order += chunk
    return order


async def test_in_order_each_frame_is_judged_once_and_each_event_written_once(worker: Worker) -> None:
    await worker.deliver(list(range(len(POSES))))
    assert worker.events() == LIVE_EVENTS
    decided = max(worker.judged)
    assert decided < len(POSES) - 1  # the frames after the decision are not even read
    assert worker.judged == {sequence: 1 for sequence in range(decided + 1)}
    # each judged from memory by the step it came with and stored in its write: none read back
    assert not worker.states.reads
    assert sorted(worker.states.frames[SESSION]) == list(range(decided + 1))
    # the same verdicts as one replay of every stored frame
    state = worker.states.states[SESSION]
    stored = [to_replay_frame(f, NOW) for f in worker.states.frames[SESSION].values()]
    whole = replay(CHALLENGES, stored, identity_threshold=0.35, readiness=worker.deps.readiness)
    assert [v.status for v in whole.verdicts] == [ChallengeStatus.PASSED, ChallengeStatus.PASSED]
    assert state.decision is not None and whole.decision is not None
    assert (state.decision.is_live, state.decision.reasons) == (True, [])
    assert state.decision.confidence == whole.decision.confidence


@pytest.mark.parametrize("seed", range(3))
async def test_out_of_order_the_same_events_and_a_frame_is_read_again_only_while_a_gap_waits(
    worker: Worker, seed: int
) -> None:
    await worker.deliver(block_shuffled(seed))
    assert worker.events() == LIVE_EVENTS
    assert max(worker.judged.values()) <= GAP_SKIP_AFTER + 1
    assert worker.states.states[SESSION].decision is not None


async def test_the_decision_copies_its_images_with_no_lock_held_before_it_is_written(worker: Worker) -> None:
    worker.states.before_save = lambda session_id: worker.store.log.append(("save", session_id))
    await worker.deliver(list(range(len(POSES))))
    decision = worker.states.states[SESSION].decision
    assert decision is not None
    reference, audit = (
        f"sessions/{SESSION}/reference.jpg",
        [f"sessions/{SESSION}/audit-{i}.jpg" for i in range(2)],
    )
    assert (decision.reference_image_key, decision.audit_image_keys) == (reference, audit)
    # the most frontal judged frame of the checked person (pitch 0 at sequence 20) is the reference
    assert worker.store.objects[reference] == b"jpeg 20"
    # every copy was made before the one write that stored the decision
    puts = [n for n, (op, k) in enumerate(worker.store.log) if op == "put"]
    saves = [n for n, (op, _) in enumerate(worker.store.log) if op == "save"]
    assert len(puts) == 3 and max(puts) < saves[-1] and max(puts) > saves[-2]


async def test_a_step_that_lost_a_race_starts_again_and_writes_nothing_twice(worker: Worker) -> None:
    raced = {"done": False}

    def concurrent_writer(session_id: str) -> None:
        # another worker's write (a reconnect announced, say) between this step's read and write
        if not raced["done"] and worker.states.states[session_id].issued == 1:
            raced["done"] = True
            worker.states.bump(session_id)

    worker.states.before_save = concurrent_writer
    await worker.deliver(list(range(len(POSES))))
    assert raced["done"]
    assert worker.events() == LIVE_EVENTS
    bodies = worker.event_bodies()
    assert len(bodies) == len({repr(sorted(b.items())) for b in bodies})  # no event written twice


async def test_the_decision_and_its_comparison_follow_the_verdicts_in_one_write(worker: Worker) -> None:
    await worker.deliver(list(range(len(POSES))))
    decided = next(n for n, saved in enumerate(worker.states.saves) if saved.decision is not None)
    assert worker.events()[-2:] == [EventKey.LIVENESS_DECIDED, CommandKey.MATCH_REFERENCES]
    match = worker.states.outbox[-1]
    assert match.message_id == worker.states.saves[decided].match_request_id  # only its answer counts
    assert match.payload["probe"]["storage_key"] == f"sessions/{SESSION}/reference.jpg"


async def test_a_redelivered_frame_writes_nothing_again(worker: Worker) -> None:
    await worker.deliver(list(range(12)))
    written = list(worker.states.outbox)
    assert EventKey.CHALLENGE_ISSUED in worker.events()
    await worker.deliver(list(range(12)))
    assert worker.states.outbox == written


async def test_a_reconnect_writes_the_current_challenge_again_with_the_new_connection(worker: Worker) -> None:
    await worker.deliver(list(range(16)))  # challenge 0 passed, challenge 1 issued
    assert worker.events() == LIVE_EVENTS[:3]

    def started(connection: str) -> SessionStarted:
        return SessionStarted(correlation_id=SESSION, session_id=SESSION, connection_id=connection)

    await handle_session_started(started("c2"), worker.deps)
    assert worker.events() == [*LIVE_EVENTS[:3], EventKey.CHALLENGE_ISSUED]
    assert worker.states.outbox[-1].payload["index"] == 1
    await handle_session_started(started("c2"), worker.deps)  # the same connection again
    assert worker.events() == [*LIVE_EVENTS[:3], EventKey.CHALLENGE_ISSUED]


async def test_a_session_without_a_blink_is_analysed_without_the_iris_model(worker: Worker) -> None:
    await worker.deliver([0, 1, 2])
    frames = worker.deps.frames
    assert isinstance(frames, FakeFrames)
    assert frames.eyes == [False, False, False]  # TURN_LEFT and OPEN_MOUTH read no eye aspect ratio


def test_only_a_blink_needs_the_iris_model() -> None:
    assert judges_eyes([ChallengeType.LOOK_DOWN, ChallengeType.BLINK])
    assert not judges_eyes([c for c in ChallengeType if c is not ChallengeType.BLINK])
    assert not judges_eyes([])


async def test_a_frame_step_reads_the_session_once(worker: Worker) -> None:
    await worker.deliver([0, 1, 2])
    sessions = worker.deps.sessions
    assert isinstance(sessions, FakeSessions)
    assert sessions.fetches == 3  # handle_frame's read serves its replay step too


async def test_an_erased_session_that_never_finished_gets_no_step(worker: Worker) -> None:
    # The retention purge erases a session past its expiry that no one marked finished: a late
    # frame must not start its replay again (nothing judged, written or published).
    sessions = worker.deps.sessions
    assert isinstance(sessions, FakeSessions)
    sessions.records[SESSION] = dataclasses.replace(sessions.records[SESSION], purged_at=NOW)
    await worker.deliver([0, 1, 2])
    assert worker.states.saves == [] and worker.states.outbox == [] and not worker.judged
