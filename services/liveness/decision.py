"""The liveness decision: challenge verdicts and passive anti-spoofing → isLive, confidence, reasons.

Pure logic, no I/O: the liveness worker and ``faceproof eval liveness`` both call :func:`decide`
with what a session produced, and :class:`IdentityCheck` keeps the session's reference
embedding for the IDENTITY_CHANGED gate (the embedder itself is the caller's).

**The decision.** A session is live when every challenge passed (each within its window, the
hard gates held on every frame: one face, big enough, inside the frame, the same person) **and**
the median passive anti-spoofing ``real_score`` of the sampled frames is at least the threshold
(:func:`services.liveness.challenges.spoof_suspected`, 0.5 by default, at least 3 samples).

**Confidence** (0-100) is ``50 + 50 * min(spoof_evidence, challenge_evidence)``, two numbers
in [-1, 1], each >= 0 exactly when its half of the decision says "live":

* ``spoof_evidence`` from the median real score ``m`` and threshold ``θ``:
  ``(m - θ) / (1 - θ)`` when ``m >= θ`` (0 at the threshold, 1 for a score of 1), else
  ``(m - θ) / θ`` (-1 for a score of 0).
* ``challenge_evidence``: -1 when the stream is not a live camera's (``stream`` reasons such as
  FROZEN_STREAM); when all challenges passed, ``0.5 + 0.5 * mean time margin``, the
  time margin of a challenge being the share of its time limit left when it passed (answering
  at once gives 1, at the deadline 0), so it lies in [0.5, 1]; when one failed, -1 for a hard
  failure (a gate, IDENTITY_CHANGED, WRONG_DIRECTION) and ``-(1 - 0.9 * progress)`` for a
  TIMEOUT (in [-1, -0.1]: a user who almost made it is weaker evidence of an attack than one
  who never moved).

So ``isLive`` ⇔ ``confidence >= 50``; confidence never decreases when the anti-spoofing median
rises or a challenge is answered sooner, and the weakest of the two signals bounds it (a
perfect challenge run cannot make up for a replayed screen, nor the reverse). Without enough
anti-spoofing samples the session is not live (reason INSUFFICIENT_EVIDENCE; confidence from
the challenges, below 50).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from faces.embedding import cosine
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    ChallengeStatus,
    FailureReason,
    Thresholds,
    Verdict,
    spoof_suspected,
)

__all__ = [
    "HARD_FAILURES",
    "IDENTITY_MAX_PITCH_DEG",
    "IDENTITY_MAX_YAW_DEG",
    "INSUFFICIENT_EVIDENCE",
    "NOT_READY",
    "IdentityCheck",
    "LivenessDecision",
    "challenge_evidence",
    "decide",
    "spoof_evidence",
]

#: Reason code (beside :class:`~services.liveness.challenges.FailureReason`) for a session that
#: ended with fewer than ``Thresholds.spoof_min_samples`` anti-spoofing scores.
INSUFFICIENT_EVIDENCE: Final = "INSUFFICIENT_EVIDENCE"
#: Reason code of a session whose subject never passed the pre-checks (the problems follow it).
NOT_READY: Final = "NOT_READY"
#: Failures that say "not a valid live presentation" outright (challenge evidence -1).
HARD_FAILURES: Final = frozenset(
    {
        FailureReason.NO_FACE,
        FailureReason.MULTIPLE_FACES,
        FailureReason.FACE_TOO_SMALL,
        FailureReason.FACE_OUT_OF_FRAME,
        FailureReason.IDENTITY_CHANGED,
        FailureReason.WRONG_DIRECTION,
        FailureReason.SPOOF_SUSPECTED,
    }
)
#: The identity check embeds only frames this frontal (the embedders are trained on frontal
#: faces; a profile view of the same person can fall under the match threshold).
IDENTITY_MAX_YAW_DEG: Final = 20.0
IDENTITY_MAX_PITCH_DEG: Final = 20.0
#: Time-out evidence: ``-(1 - TIMEOUT_PROGRESS_WEIGHT * progress)``.
TIMEOUT_PROGRESS_WEIGHT: Final = 0.9


@dataclass(frozen=True)
class LivenessDecision:
    """``is_live``, ``confidence`` (0-100, >= 50 exactly when live) and ``reasons`` (stable codes)."""

    is_live: bool
    confidence: float
    reasons: tuple[str, ...]
    spoof_median: float | None
    spoof_evidence: float | None
    challenge_evidence: float

    def to_dict(self) -> dict[str, Any]:
        """The API's shape: ``isLive``, ``confidence``, ``reasons``."""
        return {"isLive": self.is_live, "confidence": self.confidence, "reasons": list(self.reasons)}


def spoof_evidence(real_scores: Sequence[float], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> float | None:
    """The anti-spoofing half of the confidence, in [-1, 1] (None: too few samples)."""
    if spoof_suspected(real_scores, thresholds) is None:
        return None
    median = min(max(statistics.median(real_scores), 0.0), 1.0)
    threshold = thresholds.spoof_real_threshold
    if median >= threshold:
        return (median - threshold) / max(1.0 - threshold, 1e-9)
    return (median - threshold) / max(threshold, 1e-9)


def challenge_evidence(
    verdicts: Sequence[Verdict],
    challenge_count: int,
    started_at: float,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[float, FailureReason | None]:
    """The challenge half of the confidence, in [-1, 1], and the failure's reason (if any).

    ``verdicts`` in order, as :attr:`~services.liveness.challenges.ChallengeSequence.verdicts`;
    challenge ``i`` started when challenge ``i - 1`` passed (the first at ``started_at``).
    Challenges without a verdict count as timed out with no progress.
    """
    if challenge_count < 1:
        raise ValueError("a session has at least one challenge")
    limit = thresholds.time_limit_s
    margins: list[float] = []
    start = started_at
    for verdict in verdicts:
        if verdict.status is ChallengeStatus.FAILED:
            reason = verdict.reason or FailureReason.TIMEOUT
            if reason in HARD_FAILURES:
                return -1.0, reason
            progress = min(max(verdict.progress, 0.0), 1.0)
            return -(1.0 - TIMEOUT_PROGRESS_WEIGHT * progress), reason
        if verdict.status is ChallengeStatus.PENDING:
            break
        decided = verdict.decided_at if verdict.decided_at is not None else start + limit
        margins.append(min(max((start + limit - decided) / limit, 0.0), 1.0))
        start = decided
    if len(margins) < challenge_count:
        return -1.0, FailureReason.TIMEOUT
    return 0.5 + 0.5 * statistics.fmean(margins), None


def decide(
    verdicts: Sequence[Verdict],
    challenge_count: int,
    real_scores: Sequence[float],
    *,
    started_at: float = 0.0,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    not_ready: Sequence[str] | None = None,
    stream: Sequence[str] = (),
) -> LivenessDecision:
    """The session's decision from its challenge verdicts and its sampled anti-spoofing scores.

    Reasons, in order: the failed challenge's reason (a gate, IDENTITY_CHANGED, WRONG_DIRECTION,
    TIMEOUT), then SPOOF_SUSPECTED when the anti-spoofing median is under the threshold, or
    INSUFFICIENT_EVIDENCE when there are too few scores and nothing else failed.

    ``not_ready``: the subject never passed the pre-checks (services/liveness/readiness.py), with
    these problems: no challenge was issued, the first reasons are NOT_READY and the problems
    (instead of a challenge's TIMEOUT), and the challenge evidence is -1.

    ``stream``: reasons the stream itself is not a live camera (FROZEN_STREAM,
    :mod:`services.liveness.stream`), after the challenge's: a hard failure (challenge evidence
    -1) whatever the challenges did, as a gate is.
    """
    challenges, failure = challenge_evidence(verdicts, challenge_count, started_at, thresholds)
    spoof = spoof_evidence(real_scores, thresholds)
    reasons: list[str] = [failure.value] if failure is not None else []
    if not_ready is not None:
        challenges, reasons = -1.0, [NOT_READY, *not_ready]
    if stream:
        challenges = -1.0
        reasons.extend(reason for reason in stream if reason not in reasons)
    if spoof is not None and spoof < 0:
        reasons.append(FailureReason.SPOOF_SUSPECTED.value)
    if spoof is None and not reasons:
        reasons.append(INSUFFICIENT_EVIDENCE)
    is_live = not reasons
    evidence = min(challenges, spoof) if spoof is not None else min(challenges, 0.0)
    confidence = round(50.0 + 50.0 * evidence, 1)
    # keep the decision and the number on the same side of 50 after rounding
    confidence = max(confidence, 50.0) if is_live else min(confidence, 49.9)
    median = statistics.median(real_scores) if real_scores else None
    return LivenessDecision(
        is_live=is_live,
        confidence=min(max(confidence, 0.0), 100.0),
        reasons=tuple(reasons),
        spoof_median=median,
        spoof_evidence=spoof,
        challenge_evidence=challenges,
    )


@dataclass
class IdentityCheck:
    """The session's identity gate: the first frontal face's embedding is the reference.

    The caller embeds a frame's face (``faces.alignment.align_face(frame, analysis.keypoints)``
    and the pack's embedder) when :meth:`wants` says so, and passes :meth:`check`'s answer as
    ``identity_ok`` to the challenge engine. ``threshold`` is the pack's cosine threshold (the
    permissive pack: 0.347, at most 0.1 % false matches on LFW dev-test): frames of one person
    in the shared videos stay at 0.51-0.95 from the first one (JPEG quality 85, 640x480), other
    people's faces at 0.23 or less.
    """

    threshold: float
    max_yaw_deg: float = IDENTITY_MAX_YAW_DEG
    max_pitch_deg: float = IDENTITY_MAX_PITCH_DEG
    reference: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    cosines: list[float] = field(default_factory=list)

    def wants(self, analysis: FrameAnalysis) -> bool:
        """Whether this frame is worth embedding: exactly one measured, frontal face."""
        m = analysis.measures
        return (
            analysis.face_count == 1
            and m is not None
            and analysis.keypoints is not None
            and abs(m.pose.yaw) <= self.max_yaw_deg
            and abs(m.pose.pitch) <= self.max_pitch_deg
        )

    def check(self, embedding: npt.ArrayLike) -> bool:
        """True for the reference itself and for faces at or above the threshold from it."""
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if self.reference is None:
            self.reference = vector
            return True
        value = cosine(self.reference, vector)
        self.cosines.append(value)
        return value >= self.threshold

    @property
    def min_cosine(self) -> float | None:
        return min(self.cosines) if self.cosines else None
