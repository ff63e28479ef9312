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
* With ``readiness`` (the worker always passes it), the first frames go through the pre-checks
  (:mod:`services.liveness.readiness`: one face, in the frame, not too far or too close, lit,
  looking at the camera); challenge 0 is issued once they pass, and its clock starts at the first
  frame of the clean streak that passed them (those neutral frames are its baseline). Until
  then :attr:`ReplayResult.guidance` says what is wrong on the newest frame; a subject not
  ready within ``Readiness.limit_s`` fails with NOT_READY and the problems.
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
from services.liveness.readiness import Readiness, ReadinessCheck

__all__ = [
    "GAP_SKIP_AFTER",
    "REFERENCE_MIN_SCORE",
    "ChallengeOutcome",
    "Guidance",
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
class Guidance:
    """What keeps the subject from starting (empty: nothing, hold still); ``changed``: not what
    the frame before showed (the worker publishes ReadinessChecked then)."""

    problems: tuple[str, ...]
    changed: bool


@dataclass(frozen=True)
class ReplayResult:
    challenges: tuple[Challenge, ...]
    issued: tuple[Issued, ...]
    verdicts: tuple[Verdict, ...]
    judged: tuple[ReplayFrame, ...]
    spoof_scores: tuple[float, ...]
    skipped: tuple[Gap, ...]
    decision: LivenessDecision | None
    #: The pre-checks' problems on the newest frame while the subject is not ready (else None).
    guidance: Guidance | None = None

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
    readiness: Readiness | None = None,
) -> ReplayResult:
    """Run the challenge engine over the usable frames; decide when the sequence is done.

    ``readiness``: the pre-checks to pass before challenge 0 is issued (its clock starts at the
    frame that made the subject ready); None: challenge 0 starts at t = 0 (the offline evaluation).
    """
    chosen = tuple(challenges)
    usable, gaps = replay_order(frames, skipped, gap_skip_after=gap_skip_after)
    run = _Run(chosen, thresholds, IdentityCheck(identity_threshold), readiness)
    for frame in usable:
        if run.over:
            break
        run.feed(frame)
    return run.result(gaps)


class _Run:
    """One replay's state: the pre-checks, then the challenge sequence."""

    def __init__(
        self,
        challenges: tuple[Challenge, ...],
        thresholds: Thresholds,
        identity: IdentityCheck,
        readiness: Readiness | None,
    ) -> None:
        self.challenges = challenges
        self.thresholds = thresholds
        self.identity = identity
        self.check = None if readiness is None else ReadinessCheck(0.0, readiness, thresholds)
        self.sequence: ChallengeSequence | None = None
        self.issued: list[Issued] = []
        if self.check is None:
            self._start(0.0)
        self.judged: list[ReplayFrame] = []
        #: The frames of the pre-checks' current clean streak (challenge 0's baseline once ready).
        self.clean: list[tuple[ReplayFrame, bool | None]] = []
        self.scores: list[float] = []
        self.last_t: float | None = None
        self.connection: int | None = None

    @property
    def over(self) -> bool:
        if self.sequence is not None:
            return self.sequence.done
        return self.check is not None and self.check.failed is not None

    def _start(self, t: float) -> None:
        self.sequence = ChallengeSequence(self.challenges, t, self.thresholds)
        self.issued.append(Issued(0, self.challenges[0], t))

    def feed(self, frame: ReplayFrame) -> None:
        if frame.t < 0.0 or (self.last_t is not None and frame.t < self.last_t):
            return
        self.last_t = frame.t
        connection = frame.sequence // CONNECTION_SEQUENCE_STRIDE
        if self.connection is not None and connection != self.connection:
            # a reconnect: the current challenge is shown again (or the pre-checks go on)
            if self.sequence is not None:
                self.sequence.restart(frame.t)
            elif self.check is not None:
                self.check.restart()
                self.clean = []
        self.connection = connection
        if frame.spoof_score is not None:
            self.scores.append(frame.spoof_score)
        identity_ok = None
        if frame.embedding is not None and self.identity.wants(frame.analysis):
            identity_ok = self.identity.check(frame.embedding)
        self.judged.append(frame)
        if self.sequence is None:
            self._get_ready(frame, identity_ok)
            return
        self._judge(frame, identity_ok)

    def _get_ready(self, frame: ReplayFrame, identity_ok: bool | None) -> None:
        """The pre-checks. Once ready, challenge 0 starts at the clean streak's first frame and
        judges the streak first: those neutral, frontal frames are its baseline."""
        assert self.check is not None
        self.check.update(frame.t, frame.analysis)
        self.clean = [*self.clean, (frame, identity_ok)] if not self.check.problems else []
        if self.check.ready_at is None:
            return
        self._start(self.clean[0][0].t)
        for clean, ok in self.clean:
            self._judge(clean, ok)

    def _judge(self, frame: ReplayFrame, identity_ok: bool | None) -> None:
        sequence = self.sequence
        assert sequence is not None
        before = sequence.index
        sequence.update(frame.t, frame.analysis, identity_ok=identity_ok)
        if sequence.index != before and not sequence.done:
            self.issued.append(Issued(sequence.index, self.challenges[sequence.index], frame.t))

    def result(self, gaps: tuple[Gap, ...]) -> ReplayResult:
        sequence, check = self.sequence, self.check
        decision = None
        if sequence is not None and sequence.done:
            started = self.issued[0].t
            decision = decide(
                sequence.verdicts,
                len(self.challenges),
                self.scores,
                started_at=started,
                thresholds=self.thresholds,
            )
        elif check is not None and check.failed is not None:
            decision = decide(
                [], len(self.challenges), self.scores, thresholds=self.thresholds, not_ready=check.failed
            )
        guidance = None
        if check is not None and check.pending and self.judged:
            guidance = Guidance(
                problems=tuple(p.value for p in check.problems), changed=check.problems != check.previous
            )
        return ReplayResult(
            challenges=self.challenges,
            issued=tuple(self.issued),
            verdicts=tuple(sequence.verdicts) if sequence is not None else (),
            judged=tuple(self.judged),
            spoof_scores=tuple(self.scores),
            skipped=gaps,
            decision=decision,
            guidance=guidance,
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
