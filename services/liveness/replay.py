"""Replay: the stored frames of a session -> the challenges issued, their verdicts and the decision.

Pure and deterministic: the liveness worker calls :func:`replay` under the session's row lock
with every stored frame (in any order, duplicates allowed) and publishes what the result holds
beyond what was published before (the counters in the state row). The offline evaluation
(:func:`faceproof.evaluation.liveness.run_session`) runs the same engine on the same kind of
input, with the same thresholds, the same identity gate and the same decision.

The rules:

* Frames are replayed in **sequence order** (never arrival order). Sequences are expected from
  0 and to grow by one; the replay stops at the first **gap** (a missing sequence) unless more
  than :data:`GAP_SKIP_AFTER` later frames are stored, in which case the gap is skipped (lost
  frames; a reconnect jumps the sequence by 100000). A skipped gap is remembered in the state
  (``skipped``), so a frame of it that arrives later is ignored: what was published stays true.
* The first frame of a new connection (a reconnect) restarts the current challenge: a fresh
  baseline and its full time limit from that frame on.
* A frame's time is ``captured_at - started_at`` in seconds; frames before the session started,
  and frames whose time runs backwards, are ignored.
* Each frame's ``identity`` embedding (computed by the worker on every
  :data:`~services.liveness.frames.IDENTITY_EVERY_FRAMES`-th sequence when
  :meth:`IdentityCheck.wants` it) goes through one :class:`IdentityCheck` in replay order;
  ``spoof_score`` (every :data:`~services.liveness.frames.SPOOF_EVERY_FRAMES`-th sequence)
  joins the scores of frames judged until the sequence is done.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from contracts.routing import CONNECTION_SEQUENCE_STRIDE
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    Challenge,
    ChallengeSequence,
    ChallengeStatus,
    Thresholds,
    Verdict,
    frame_gate,
)
from services.liveness.decision import IdentityCheck, LivenessDecision, decide

__all__ = [
    "GAP_SKIP_AFTER",
    "REFERENCE_MIN_SCORE",
    "ChallengeOutcome",
    "Issued",
    "ReplayFrame",
    "ReplayResult",
    "audit_frames",
    "challenge_outcomes",
    "reference_frame",
    "replay",
    "replay_order",
]

#: A gap in the sequence numbers is skipped once more than this many later frames are stored.
GAP_SKIP_AFTER: Final = 4
#: A reference frame candidate's detection score (mesh presence on tracked frames) at least this.
REFERENCE_MIN_SCORE: Final = 0.7

Gap = tuple[int, int]  # missing sequences first..last, inclusive


@dataclass(frozen=True)
class ReplayFrame:
    """One stored frame: its analysis, and the samples the worker took on it."""

    sequence: int
    t: float
    analysis: FrameAnalysis
    storage_key: str = ""
    spoof_score: float | None = None
    embedding: npt.NDArray[np.float32] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Issued:
    """Challenge ``index`` was shown from ``t`` (seconds since the session started)."""

    index: int
    challenge: Challenge
    t: float


@dataclass(frozen=True)
class ChallengeOutcome:
    """A challenge as the session result reports it."""

    challenge: Challenge
    status: ChallengeStatus
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.challenge.type.value, "status": self.status.value, "reason": self.reason}


@dataclass(frozen=True)
class ReplayResult:
    challenges: tuple[Challenge, ...]
    issued: tuple[Issued, ...]
    verdicts: tuple[Verdict, ...]
    judged: tuple[ReplayFrame, ...]
    spoof_scores: tuple[float, ...]
    skipped: tuple[Gap, ...]
    decision: LivenessDecision | None

    @property
    def done(self) -> bool:
        return self.decision is not None

    @property
    def outcomes(self) -> list[ChallengeOutcome]:
        return challenge_outcomes(self.challenges, self.verdicts)


def replay_order(
    frames: Iterable[ReplayFrame], skipped: Iterable[Gap] = (), *, gap_skip_after: int = GAP_SKIP_AFTER
) -> tuple[list[ReplayFrame], tuple[Gap, ...]]:
    """The frames the replay may use, in sequence order, and every skipped gap (old and new).

    Duplicates (same sequence) count once (the first given wins). Frames inside a gap skipped
    before are dropped. The walk starts at sequence 0 and stops at the first gap with at most
    ``gap_skip_after`` frames stored after it.
    """
    old = tuple(sorted((int(a), int(b)) for a, b in skipped))
    by_sequence: dict[int, ReplayFrame] = {}
    for frame in frames:
        if frame.sequence < 0 or any(a <= frame.sequence <= b for a, b in old):
            continue
        by_sequence.setdefault(frame.sequence, frame)
    ordered = [by_sequence[s] for s in sorted(by_sequence)]
    gaps = list(old)
    usable: list[ReplayFrame] = []
    expected = 0
    for position, frame in enumerate(ordered):
        if frame.sequence != expected:
            hole = (expected, frame.sequence - 1)
            # stored frames are never removed and frames inside a skipped gap are dropped, so
            # a gap skipped before shows up again with exactly the same bounds
            if hole not in old:
                later = len(ordered) - position
                if later <= gap_skip_after:
                    break
                gaps.append(hole)
        usable.append(frame)
        expected = frame.sequence + 1
    return usable, tuple(sorted(set(gaps)))


def replay(
    challenges: Sequence[Challenge],
    frames: Iterable[ReplayFrame],
    *,
    identity_threshold: float,
    skipped: Iterable[Gap] = (),
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    gap_skip_after: int = GAP_SKIP_AFTER,
) -> ReplayResult:
    """Run the challenge engine over the usable frames; decide when the sequence is done."""
    chosen = tuple(challenges)
    usable, gaps = replay_order(frames, skipped, gap_skip_after=gap_skip_after)
    sequence = ChallengeSequence(chosen, 0.0, thresholds)
    identity = IdentityCheck(identity_threshold)
    issued = [Issued(0, chosen[0], 0.0)]
    judged: list[ReplayFrame] = []
    scores: list[float] = []
    last_t: float | None = None
    connection: int | None = None
    for frame in usable:
        if sequence.done:
            break
        if frame.t < 0.0 or (last_t is not None and frame.t < last_t):
            continue
        last_t = frame.t
        if connection is not None and frame.sequence // CONNECTION_SEQUENCE_STRIDE != connection:
            sequence.restart(frame.t)  # a reconnect: the current challenge is shown again
        connection = frame.sequence // CONNECTION_SEQUENCE_STRIDE
        if frame.spoof_score is not None:
            scores.append(frame.spoof_score)
        identity_ok = None
        if frame.embedding is not None and identity.wants(frame.analysis):
            identity_ok = identity.check(frame.embedding)
        judged.append(frame)
        before = sequence.index
        sequence.update(frame.t, frame.analysis, identity_ok=identity_ok)
        if sequence.index != before and not sequence.done:
            issued.append(Issued(sequence.index, chosen[sequence.index], frame.t))
    decision = None
    if sequence.done:
        decision = decide(sequence.verdicts, len(chosen), scores, thresholds=thresholds)
    return ReplayResult(
        challenges=chosen,
        issued=tuple(issued),
        verdicts=tuple(sequence.verdicts),
        judged=tuple(judged),
        spoof_scores=tuple(scores),
        skipped=gaps,
        decision=decision,
    )


def challenge_outcomes(
    challenges: Sequence[Challenge], verdicts: Sequence[Verdict]
) -> list[ChallengeOutcome]:
    """Every challenge with its status (PENDING: never reached) and failure reason."""
    outcomes = []
    for index, challenge in enumerate(challenges):
        verdict = verdicts[index] if index < len(verdicts) else None
        status = verdict.status if verdict is not None else ChallengeStatus.PENDING
        reason = verdict.reason.value if verdict is not None and verdict.reason is not None else None
        outcomes.append(ChallengeOutcome(challenge, status, reason))
    return outcomes


def _score(analysis: FrameAnalysis) -> float:
    if analysis.detection_score is not None:
        return analysis.detection_score
    return analysis.presence or 0.0


def reference_frame(
    frames: Sequence[ReplayFrame], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> ReplayFrame | None:
    """The most frontal (smallest |yaw| + |pitch|) single-face frame passing the gates, preferring
    frames scored at least :data:`REFERENCE_MIN_SCORE`; the earliest on a tie; None without one."""

    def frontal(frame: ReplayFrame) -> tuple[float, int]:
        m = frame.analysis.measures
        assert m is not None
        return abs(m.pose.yaw) + abs(m.pose.pitch), frame.sequence

    faces = [
        f
        for f in frames
        if f.analysis.face_count == 1
        and f.analysis.measures is not None
        and frame_gate(f.analysis, thresholds) is None
    ]
    good = [f for f in faces if _score(f.analysis) >= REFERENCE_MIN_SCORE]
    pool = good or faces
    return min(pool, key=frontal) if pool else None


def audit_frames(frames: Sequence[ReplayFrame], count: int) -> list[ReplayFrame]:
    """``count`` frames spread evenly over ``frames`` (the middle of each of ``count`` stretches)."""
    if count <= 0 or not frames:
        return []
    count = min(count, len(frames))
    return [frames[min(len(frames) - 1, int((i + 0.5) * len(frames) / count))] for i in range(count)]
