"""Replay: the stored frames of a session -> the challenges issued, their verdicts and the decision.

Pure and deterministic, and incremental: :func:`replay_step` resumes a replay from its stored
:class:`~services.liveness.progress.ReplayProgress` with only the frames stored since (sequence
``>= progress.next_sequence``), so each frame is read and judged once and a step costs the same
whatever the session's length; the liveness worker publishes what the result holds beyond what
was published before (the counters in the state row) and stores the new progress.
:func:`replay` is one step from the start over every frame (in any order, duplicates allowed):
the same frames give the same verdicts however they are split into steps. The offline evaluation
(:func:`faceproof.evaluation.liveness.run_session`) runs this very step, one frame at a time.

The rules:

* Frames are replayed in **sequence order** (never arrival order). Sequences are expected from
  0 and to grow by one; the replay stops at the first **gap** (a missing sequence) unless more
  than :data:`GAP_SKIP_AFTER` later frames are stored, in which case the gap is skipped (lost
  frames; a reconnect jumps the sequence by 100000). A skipped gap is remembered in the state
  (``skipped``), so a frame of it that arrives later is ignored: what was published stays true.
* With ``readiness`` (the worker always passes it), the first frames go through the pre-checks
  (:mod:`services.liveness.readiness`: one face, in the frame, not too far or too close, lit,
  looking at the camera); challenge 0 is issued once they pass, and its clock starts at the first
  frame taken while the call agent showed it (``ReplayFrame.shown``; each next challenge's too);
  frames that do not say start it at the clean streak's first frame, its baseline. Until
  then :attr:`ReplayResult.guidance` says what is wrong on the newest frame; a subject not
  ready within ``Readiness.limit_s`` fails with NOT_READY and the problems.
* Once the subject is ready the pre-checks go on with fewer problems
  (:func:`~services.liveness.readiness.running_prechecks`: the challenges' gates, too dark) until
  the decision, and ``guidance`` names them as they change. A frame they refuse counts for
  nothing: the challenge's own gates judge a gated one as always (never progress; held
  ``gate_tolerance_s``, a failure), and a frame that is only too dark is not shown to the
  challenge at all (no baseline, no progress, as if lost), while the challenge's clock runs on.
* A new connection (a reconnect) restarts the current challenge: a fresh baseline and its full
  time limit, from the first frame taken while the new connection's video showed it (frames that
  do not say what was shown: from the connection's first frame). Before challenge 0 was seen, the
  wait for it starts again too: its fallback (a video that shows nothing, past the time limit)
  counts from the new connection's first frame, not from the moment the subject was ready.
* A frame's time is ``captured_at - started_at`` in seconds; frames before the session started,
  and frames whose time runs backwards, are ignored.
* Each frame's ``identity`` embedding (computed by the worker on every
  :data:`~services.liveness.frames.IDENTITY_EVERY_FRAMES`-th sequence when
  :meth:`IdentityCheck.wants` it) goes through one :class:`IdentityCheck` in replay order;
  ``spoof_score`` (every :data:`~services.liveness.frames.SPOOF_EVERY_FRAMES`-th sequence)
  joins the scores of frames judged until the sequence is done; the decision reads those of the
  challenges' frames (``_Run._vote``). Frames the pre-checks refused
  (too dark, too small, cut off..., before challenge 0 or during the challenges) give neither,
  and are never the reference frame: the models read those as spoofs, or as another person (the
  first embedding is the reference), and the subject was told to fix them (found with
  ``faceproof eval liveness --unready``).
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
from services.liveness.progress import CleanFrame, Pick, ReplayProgress
from services.liveness.readiness import Readiness, ReadinessCheck
from services.liveness.stream import FROZEN_STREAM, MEDIA_CLOCK_AHEAD, FrozenCheck, media_clock_ahead

__all__ = [
    "GAP_SKIP_AFTER",
    "REFERENCE_MIN_SCORE",
    "ChallengeOutcome",
    "Guidance",
    "Issued",
    "ReplayFrame",
    "ReplayResult",
    "audit_frames",
    "audit_positions",
    "audit_sequences",
    "challenge_outcomes",
    "reference_pick",
    "replay",
    "replay_order",
    "replay_step",
]

#: A gap in the sequence numbers is skipped once more than this many later frames are stored.
GAP_SKIP_AFTER: Final = 4
#: A reference frame candidate's detection score (mesh presence on tracked frames) at least this.
REFERENCE_MIN_SCORE: Final = 0.7
#: Reconnects after which the current challenge starts again with its full time (a dropped
#: network, a reloaded page). Past them a reconnect changes nothing: the challenge goes on by its
#: clock. Without a bound, dropping before each deadline and coming back gave a subject unlimited
#: tries at every challenge (and each challenge read in advance) until the session expired.
FULL_TIME_RESTARTS: Final = 2

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
    #: The highest challenge index the call agent had sent in its video when the frame arrived
    #: (FrameCaptured.shown; -1: none yet); None: not known (challenge 0 then starts at once).
    shown: int | None = None
    #: How far the stream's media clock had run ahead of the agent's (FrameCaptured.media_lead_s).
    media_lead_s: float | None = None


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
    """What keeps the subject from starting, or, once the challenges run, what refuses the newest
    frame (empty: nothing, hold still / go on); ``changed``: not what the previous step ended on
    (the worker publishes ReadinessChecked then)."""

    problems: tuple[str, ...]
    changed: bool


@dataclass(frozen=True)
class ReplayResult:
    challenges: tuple[Challenge, ...]
    issued: tuple[Issued, ...]
    verdicts: tuple[Verdict, ...]
    judged: tuple[ReplayFrame, ...]
    #: The anti-spoofing scores the decision reads (the challenges' frames', see ``_Run._vote``).
    spoof_scores: tuple[float, ...]
    skipped: tuple[Gap, ...]
    decision: LivenessDecision | None
    #: The pre-checks' problems on the newest frame until the decision (None: none, or no check).
    guidance: Guidance | None = None
    #: Where the replay stands after this step (what the next step resumes from).
    progress: ReplayProgress = field(default_factory=ReplayProgress)

    @property
    def done(self) -> bool:
        return self.decision is not None

    @property
    def outcomes(self) -> list[ChallengeOutcome]:
        return challenge_outcomes(self.challenges, self.verdicts)


def replay_order(
    frames: Iterable[ReplayFrame],
    skipped: Iterable[Gap] = (),
    *,
    first: int = 0,
    gap_skip_after: int = GAP_SKIP_AFTER,
) -> tuple[list[ReplayFrame], tuple[Gap, ...]]:
    """The frames the replay may use, in sequence order, and every skipped gap (old and new).

    Duplicates (same sequence) count once (the first given wins). Frames before ``first`` (used
    by an earlier step) and inside a gap skipped before are dropped. The walk starts at
    ``first`` and stops at the first gap with at most ``gap_skip_after`` frames stored after it.
    """
    old = tuple(sorted((int(a), int(b)) for a, b in skipped))
    by_sequence: dict[int, ReplayFrame] = {}
    for frame in frames:
        if frame.sequence < first or any(a <= frame.sequence <= b for a, b in old):
            continue
        by_sequence.setdefault(frame.sequence, frame)
    ordered = [by_sequence[s] for s in sorted(by_sequence)]
    gaps = list(old)
    usable: list[ReplayFrame] = []
    expected = first
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
    frame that made the subject ready); None: challenge 0 starts at t = 0 (``faceproof eval
    liveness --no-prechecks``).
    """
    start = ReplayProgress(skipped=sorted((int(a), int(b)) for a, b in skipped))
    return replay_step(
        challenges,
        start,
        frames,
        identity_threshold=identity_threshold,
        thresholds=thresholds,
        gap_skip_after=gap_skip_after,
        readiness=readiness,
    )


def replay_step(
    challenges: Sequence[Challenge],
    progress: ReplayProgress,
    frames: Iterable[ReplayFrame],
    *,
    identity_threshold: float,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    gap_skip_after: int = GAP_SKIP_AFTER,
    readiness: Readiness | None = None,
) -> ReplayResult:
    """Resume the replay at ``progress`` with the frames stored since (earlier ones are ignored).

    The result's ``issued``, ``verdicts``, ``spoof_scores`` and ``skipped`` cover the whole
    session; ``judged`` holds the frames this step judged; ``progress`` is the next step's start.
    """
    chosen = tuple(challenges)
    usable, gaps = replay_order(
        frames, progress.skipped, first=progress.next_sequence, gap_skip_after=gap_skip_after
    )
    run = _Run(chosen, thresholds, identity_threshold, readiness, progress)
    for frame in usable:
        if run.over:
            break
        run.feed(frame)
    next_sequence = usable[-1].sequence + 1 if usable else progress.next_sequence
    return run.result(gaps, next_sequence)


class _References:
    """The reference frame so far: the most frontal (smallest |yaw| + |pitch|) single-face frame
    passing the gates, among those scored at least :data:`REFERENCE_MIN_SCORE` (``good``) and
    among all (``fallback``); the earliest on a tie."""

    def __init__(
        self, thresholds: Thresholds, good: Pick | None = None, fallback: Pick | None = None
    ) -> None:
        self.thresholds = thresholds
        self.good = good
        self.fallback = fallback

    @property
    def chosen(self) -> Pick | None:
        return self.good or self.fallback

    def offer(self, frame: ReplayFrame) -> None:
        analysis, m = frame.analysis, frame.analysis.measures
        if analysis.face_count != 1 or m is None or frame_gate(analysis, self.thresholds) is not None:
            return
        pick = Pick(
            sequence=frame.sequence,
            storage_key=frame.storage_key,
            frontal=abs(m.pose.yaw) + abs(m.pose.pitch),
        )
        if _score(analysis) >= REFERENCE_MIN_SCORE and _before(pick, self.good):
            self.good = pick
        if _before(pick, self.fallback):
            self.fallback = pick


def _before(pick: Pick, best: Pick | None) -> bool:
    return best is None or (pick.frontal, pick.sequence) < (best.frontal, best.sequence)


class _Judged:
    """The judged sequences as runs [first, last], and their number."""

    def __init__(self, runs: Sequence[tuple[int, int]] = (), count: int = 0) -> None:
        self.runs = [list(run) for run in runs]
        self.count = count

    def add(self, sequence: int) -> None:
        self.count += 1
        if self.runs and self.runs[-1][1] == sequence - 1:
            self.runs[-1][1] = sequence
        else:
            self.runs.append([sequence, sequence])

    def at(self, position: int) -> int:
        """The sequence of the judged frame at ``position`` (0-based)."""
        for first, last in self.runs:
            if position <= last - first:
                return first + position
            position -= last - first + 1
        raise IndexError(position)


def _check(
    readiness: Readiness | None, thresholds: Thresholds, progress: ReplayProgress
) -> ReadinessCheck | None:
    if readiness is None:
        return None
    if progress.readiness is None:
        return ReadinessCheck(0.0, readiness, thresholds)
    return ReadinessCheck.resume(progress.readiness, readiness, thresholds)


def _clean_frame(frame: ReplayFrame, identity_ok: bool | None) -> CleanFrame:
    return CleanFrame(
        sequence=frame.sequence, t=frame.t, analysis=frame.analysis.to_dict(), identity_ok=identity_ok
    )


def _from_clean(clean: CleanFrame) -> tuple[ReplayFrame, bool | None]:
    return ReplayFrame(clean.sequence, clean.t, FrameAnalysis.from_dict(clean.analysis)), clean.identity_ok


class _Run:
    """One replay step's state: the pre-checks, then the challenge sequence; resumed from a
    :class:`ReplayProgress` and saved to the next one."""

    def __init__(
        self,
        challenges: tuple[Challenge, ...],
        thresholds: Thresholds,
        identity_threshold: float,
        readiness: Readiness | None,
        progress: ReplayProgress,
    ) -> None:
        self.challenges = challenges
        self.thresholds = thresholds
        self.identity = IdentityCheck(identity_threshold)
        if progress.identity_reference is not None:
            self.identity.reference = np.asarray(progress.identity_reference, dtype=np.float32)
        self.scores = list(progress.spoof_scores)
        #: Where the challenges' scores start in ``scores`` (None: not started, or an older row).
        self.vote_from = progress.vote_from
        self.check = _check(readiness, thresholds, progress)
        self.sequence: ChallengeSequence | None = None
        if progress.engine is not None:
            self.sequence = ChallengeSequence.resume(challenges, progress.engine, thresholds)
        self.issued = [Issued(n, challenges[n], t) for n, t in enumerate(progress.issued_at)]
        #: A challenge after the first, issued but not yet on the subject's screen.
        self.awaiting = progress.awaiting_shown
        if self.sequence is None and self.check is None:
            self._start(0.0)
        #: The frames this step judged.
        self.judged: list[ReplayFrame] = []
        self.all_judged = _Judged(progress.judged, progress.judged_count)
        self.references = _References(thresholds, progress.reference, progress.reference_fallback)
        #: The frames of the pre-checks' current clean streak (challenge 0's baseline once ready).
        self.clean = [_from_clean(clean) for clean in progress.clean]
        self.frozen = FrozenCheck.resume(progress.frozen)
        #: How far the stream's media clock ran ahead of the agent's: the connections' largest
        #: leads added up (:meth:`_count_lead`), and what the connections before the current gave.
        self.media_lead = progress.media_lead_s
        self.media_banked = progress.media_lead_banked_s
        self.last_t = progress.last_t
        self.connection = progress.connection
        #: Challenges restarted by a reconnect so far (at most FULL_TIME_RESTARTS).
        self.restarts = progress.restarts
        #: The problems the previous step ended on (what its guidance said; None: no frame yet).
        check = self.check
        self.announced = None if check is None or check.previous is None else check.problems

    @property
    def over(self) -> bool:
        if self.sequence is not None:
            return self.sequence.done
        return self.check is not None and self.check.failed is not None

    def _start(self, t: float) -> None:
        self._new_sequence(t)
        self.issued.append(Issued(0, self.challenges[0], t))

    def _new_sequence(self, t: float) -> None:
        """Challenge 0's clock from ``t``; the anti-spoofing vote counts the scores from here on."""
        self.sequence = ChallengeSequence(self.challenges, t, self.thresholds)
        self.vote_from = len(self.scores)

    def _count_lead(self, lead: float | None, reconnected: bool) -> None:
        """The media clock's lead over the session: each connection's own (the agent starts it at 0
        on every connection) at its largest, added up over the connections, so that reconnecting
        clears nothing of what a stream gained before (and a connection's negative lead banks
        nothing for the next)."""
        if reconnected and self.media_lead is not None:
            self.media_banked = max(self.media_banked, self.media_lead)
        if lead is not None:
            current = None if self.media_lead is None else self.media_lead - self.media_banked
            self.media_lead = self.media_banked + (lead if current is None else max(current, lead))

    def feed(self, frame: ReplayFrame) -> None:
        if frame.t < 0.0 or (self.last_t is not None and frame.t < self.last_t):
            return
        self.last_t = frame.t
        connection = frame.sequence // CONNECTION_SEQUENCE_STRIDE
        reconnected = self.connection is not None and connection != self.connection
        self._count_lead(frame.media_lead_s, reconnected)
        if reconnected:
            # a reconnect: the current challenge is shown again (or the pre-checks go on)
            if self.sequence is not None:
                if self.restarts < FULL_TIME_RESTARTS:
                    self.restarts += 1
                    self.sequence.restart(frame.t)
                    if frame.shown is not None and not self.sequence.done:
                        # the new connection's video shows it once the agent hears of it again:
                        # its clock and baseline start then, as every challenge's (:meth:`_on_screen`)
                        index = self.sequence.index
                        self.issued[index] = Issued(index, self.challenges[index], frame.t)
                        self.awaiting = index
            elif self.check is not None:
                self.check.restart()
                self.clean = []
                if self.waiting:  # challenge 0 issued, not seen yet: the new video shows it afresh
                    self.issued[0] = Issued(0, self.challenges[0], frame.t)
        self.connection = connection
        getting_ready = self.sequence is None and not self.waiting and self.check is not None
        if self.check is not None:  # the pre-checks; once ready, those that still hold
            self.check.update(frame.t, frame.analysis)
        # a frame the pre-checks refused gives no anti-spoofing score, no identity sample and is
        # not the reference frame (the face matched against the app's photo): the models read a
        # dark, a tiny or a cut-off face as a spoof (or as someone else, and the first sample is
        # the identity reference), and the subject was just asked to fix exactly that; while the
        # challenges run it gives no challenge progress either (:meth:`_judge`)
        refused = self.check is not None and bool(self.check.problems)
        identity_ok = None
        if not refused and frame.embedding is not None and self.identity.wants(frame.analysis):
            identity_ok = self.identity.check(frame.embedding)
        self._record(frame, refused=refused, identity_ok=identity_ok)
        if frame.spoof_score is not None and not refused:
            self.scores.append(frame.spoof_score)
        if getting_ready:
            self._get_ready(frame, identity_ok)
        elif self.sequence is None:  # ready, challenge 0 issued: waiting for it on screen
            self._start_when_shown(frame, identity_ok, refused=refused)
        elif self._on_screen(frame):
            self._judge(frame, identity_ok, refused=refused)

    def _on_screen(self, frame: ReplayFrame) -> bool:
        """Whether the current challenge's instruction was on the subject's screen when ``frame``
        was taken. A challenge after the first starts (fresh baseline, full time) at the first
        frame taken while the agent showed it, not at the frame that passed the previous one:
        frames in between are not judged, however long the worker's or the broker's backlog
        (the agent shows the instruction only once the worker has judged the previous answer).
        Only when a frame says the agent's video shows nothing (``shown`` -1: it never went
        out) does the challenge start anyway past its time limit."""
        awaiting = self.awaiting
        if awaiting is None or self.sequence is None:
            return True
        issued_at = self.issued[awaiting].t
        if (
            frame.shown is not None
            and frame.shown < awaiting
            and (frame.shown >= 0 or frame.t - issued_at < self.thresholds.time_limit_s)
        ):
            return False
        self.sequence.restart(frame.t)
        self.issued[awaiting] = Issued(awaiting, self.challenges[awaiting], frame.t)
        self.awaiting = None
        return True

    @property
    def waiting(self) -> bool:
        """Ready and challenge 0 issued, but its instruction not yet seen in a captured frame."""
        return self.sequence is None and self.check is not None and self.check.ready_at is not None

    def _record(self, frame: ReplayFrame, *, refused: bool, identity_ok: bool | None) -> None:
        self.judged.append(frame)
        self.all_judged.add(frame.sequence)
        if not refused and identity_ok is True:
            # only a frame whose face was embedded and is the person of the identity check (the
            # one who answers the challenges) may be matched against the app's photo: any frame
            # could, and a photo of someone else shown before the challenges (where no identity
            # check fails the session), or on the frames the worker does not embed, was matched
            self.references.offer(frame)

    def _get_ready(self, frame: ReplayFrame, identity_ok: bool | None) -> None:
        """The pre-checks (the check has judged ``frame`` in :meth:`feed`). Once ready, challenge 0
        is issued; its clock starts at the first frame captured while the agent showed it
        (:meth:`_start_when_shown`), or, when frames do not say what was shown, at the clean
        streak's first frame."""
        assert self.check is not None
        self.clean = [*self.clean, (frame, identity_ok)] if not self.check.problems else []
        if self.check.ready_at is None:
            return
        self.issued.append(Issued(0, self.challenges[0], frame.t))  # ChallengeIssued(0) goes out
        if frame.shown is None:
            self._begin(self.clean[0][0].t, clean_baseline=True)

    def _start_when_shown(self, frame: ReplayFrame, identity_ok: bool | None, *, refused: bool) -> None:
        """Frames captured before the subject could see challenge 0 are not judged (a backlog in
        the worker or the broker must not eat the subject's time): its clock and its baseline
        start at the first frame taken while it was on screen; past the time limit without one
        (an agent whose video does not go out), they start anyway, counted from the moment it
        was issued (the subject was ready) or, after a reconnect, from the new connection's first
        frame."""
        seen = frame.shown is None or frame.shown >= 0
        if not seen and frame.t - self.issued[0].t < self.thresholds.time_limit_s:
            return
        self._begin(frame.t, clean_baseline=False)
        self._judge(frame, identity_ok, refused=refused)

    def _begin(self, t: float, *, clean_baseline: bool) -> None:
        """Start challenge 0's clock at ``t``. ``clean_baseline`` (frames that do not say what was
        shown, the clock at the clean streak's first frame): judge the clean streak first, as its
        baseline. Otherwise the baseline is the first frames from ``t`` on, as for every other
        challenge: the subject reads the instruction before moving (found with the real room:
        a subject who shifts between the pre-checks and the instruction must not be measured
        against the pose before)."""
        self._new_sequence(t)
        self.issued[0] = Issued(0, self.challenges[0], t)
        if clean_baseline:
            for clean, ok in self.clean:
                self._judge(clean, ok)
        self.clean = []

    def _judge(self, frame: ReplayFrame, identity_ok: bool | None, *, refused: bool = False) -> None:
        """Judge ``frame`` in the current challenge. A frame the pre-checks refuse while the
        challenges run (:func:`~services.liveness.readiness.running_prechecks`) counts for
        nothing: the challenge's own gates judge a gated one (never progress; held, a failure),
        and one too dark is not shown to the challenge at all, as if lost on the way: no
        baseline, no progress, no break of a hold. The challenge's clock runs on either way (going
        dark must not stall it)."""
        sequence = self.sequence
        assert sequence is not None
        # the frozen-stream check looks at the frames the challenges judge (not the pre-checks':
        # a test subject, or a page, may show one picture until the first instruction comes) and
        # only at those that count: a refused frame (too dark, no face) is passed over, neither a
        # repeat nor a change. A camera left in the dark for seconds repeats its dark picture,
        # which is not an injected still; and dark frames slipped between the repeats of a still
        # do not break its run
        if not refused:
            self.frozen.update(frame.analysis.content)
        before = sequence.index
        if refused and frame_gate(frame.analysis, self.thresholds) is None:
            sequence.expire(frame.t)
        else:
            sequence.update(frame.t, frame.analysis, identity_ok=identity_ok)
        if sequence.index != before and not sequence.done:
            self.issued.append(Issued(sequence.index, self.challenges[sequence.index], frame.t))
            if frame.shown is not None:  # frames say what was on screen: wait for the next one
                self.awaiting = sequence.index

    def _decision(self) -> LivenessDecision | None:
        sequence, check = self.sequence, self.check
        if sequence is not None and sequence.done:
            started = self.issued[0].t
            return decide(
                sequence.verdicts,
                len(self.challenges),
                self._vote(),
                started_at=started,
                thresholds=self.thresholds,
                stream=self._stream(),
            )
        if check is not None and check.failed is not None:
            return decide(
                [],
                len(self.challenges),
                self._vote(),
                thresholds=self.thresholds,
                not_ready=check.failed,
                stream=self._stream(),
            )
        return None

    def _vote(self) -> list[float]:
        """The anti-spoofing scores the decision reads: the challenges' frames', unless they are
        too few for an opinion (a fast single challenge), then every judged frame's. Every frame's
        counted, a presentation held still before the challenges (about 4 scores a second while
        the pre-checks go on) outvoted another one that answered them (docs/liveness.md)."""
        ours = self.scores if self.vote_from is None else self.scores[self.vote_from :]
        return ours if len(ours) >= self.thresholds.spoof_min_samples else self.scores

    def _stream(self) -> tuple[str, ...]:
        """Why the stream is not a live camera's (services/liveness/stream.py)."""
        frozen = (FROZEN_STREAM,) if self.frozen.frozen else ()
        return (*frozen, MEDIA_CLOCK_AHEAD) if media_clock_ahead(self.media_lead) else frozen

    def _guidance(self) -> Guidance | None:
        """The pre-checks' problems on the newest frame, until the decision: before challenge 0
        what keeps the subject from starting, then what refuses their frames. ``changed``
        against what the previous step ended on, so a step over several frames that ends where
        it started announces nothing, and one that ends elsewhere always does."""
        check, sequence = self.check, self.sequence
        if check is None or check.failed is not None or not self.judged:
            return None
        if sequence is not None and sequence.done:
            return None
        return Guidance(
            problems=tuple(p.value for p in check.problems), changed=check.problems != self.announced
        )

    def progress(self, gaps: tuple[Gap, ...], next_sequence: int) -> ReplayProgress:
        reference = self.identity.reference
        return ReplayProgress(
            next_sequence=next_sequence,
            skipped=list(gaps),
            last_t=self.last_t,
            connection=self.connection,
            restarts=self.restarts,
            issued_at=[issued.t for issued in self.issued],
            awaiting_shown=self.awaiting,
            readiness=None if self.check is None else self.check.snapshot(),
            clean=[_clean_frame(frame, ok) for frame, ok in self.clean],
            engine=None if self.sequence is None else self.sequence.snapshot(),
            identity_reference=None if reference is None else [float(x) for x in reference],
            spoof_scores=self.scores,
            vote_from=self.vote_from,
            judged=[(first, last) for first, last in self.all_judged.runs],
            judged_count=self.all_judged.count,
            reference=self.references.good,
            reference_fallback=self.references.fallback,
            frozen=self.frozen.snapshot(),
            media_lead_s=self.media_lead,
            media_lead_banked_s=self.media_banked,
        )

    def result(self, gaps: tuple[Gap, ...], next_sequence: int) -> ReplayResult:
        sequence = self.sequence
        return ReplayResult(
            challenges=self.challenges,
            issued=tuple(self.issued),
            verdicts=tuple(sequence.verdicts) if sequence is not None else (),
            judged=tuple(self.judged),
            spoof_scores=tuple(self._vote()),
            skipped=gaps,
            decision=self._decision(),
            guidance=self._guidance(),
            progress=self.progress(gaps, next_sequence),
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


def reference_pick(progress: ReplayProgress) -> Pick | None:
    """The reference frame: the most frontal (smallest |yaw| + |pitch|) single-face frame passing
    the gates among every frame a replay judged, the pre-checks did not refuse and the identity
    check embedded and accepted; one scored at least :data:`REFERENCE_MIN_SCORE` first, the
    earliest on a tie."""
    return progress.reference or progress.reference_fallback


def audit_positions(total: int, count: int) -> list[int]:
    """``count`` positions spread evenly over ``total`` (the middle of each of ``count`` stretches)."""
    if count <= 0 or total <= 0:
        return []
    count = min(count, total)
    return [min(total - 1, int((i + 0.5) * total / count)) for i in range(count)]


def audit_frames(frames: Sequence[ReplayFrame], count: int) -> list[ReplayFrame]:
    """``count`` frames spread evenly over ``frames`` (:func:`audit_positions`)."""
    return [frames[position] for position in audit_positions(len(frames), count)]


def audit_sequences(progress: ReplayProgress, count: int) -> list[int]:
    """The sequences of ``count`` frames spread evenly over every frame a replay judged."""
    judged = _Judged(progress.judged, progress.judged_count)
    return [judged.at(position) for position in audit_positions(judged.count, count)]
