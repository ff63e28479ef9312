"""The liveness replay's stored progress: one typed document (pydantic, snake_case, versioned).

The liveness worker keeps it in the session's ``liveness_states`` row, so a step resumes where
the last one stopped and reads only the frames stored since: the position in the frame
sequence, the gaps skipped, the challenge engine's state (the current challenge's baseline
frames, streaks and blink, every verdict so far), the identity check's reference embedding, the
anti-spoofing scores, which sequences were judged and the best reference frame so far. Nothing
in it grows with the session but the anti-spoofing scores (one float every second frame) and
the runs of judged sequences (one pair per gap).

Pure data: :mod:`services.liveness.challenges` and :mod:`services.liveness.replay` turn it into
the running engine and back.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PROGRESS_VERSION",
    "CleanFrame",
    "EvaluatorState",
    "FrozenState",
    "Pick",
    "ReadinessState",
    "ReplayProgress",
    "SequenceState",
    "StreakState",
    "VerdictState",
]

PROGRESS_VERSION: Final = 1


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VerdictState(_Document):
    """A :class:`~services.liveness.challenges.Verdict` (``status`` and ``reason`` as their codes)."""

    status: str
    reason: str | None = None
    detail: str = ""
    progress: float = 0.0
    decided_at: float | None = None


class StreakState(_Document):
    """Consecutive frames meeting a condition: how many, and the first one's time."""

    count: int = 0
    since: float = 0.0


class EvaluatorState(_Document):
    """One challenge being judged (see :class:`~services.liveness.challenges.ChallengeEvaluator`).

    ``baseline_frames``: the neutral frames so far, as ``FrameAnalysis.to_dict`` (at most
    ``Thresholds.baseline_frames``; the baseline is their median); ``gates``: a streak per gate
    reason code; ``depth_frames``: frames so far that left the baseline face's plane, ``flat``: the
    movement was reached but a plane explained it (:mod:`services.liveness.parallax`);
    ``mouth_closed`` / ``mouth_shape`` / ``mouth_area``: OPEN_MOUTH's most closed mouth after the
    baseline (MAR, the 31 mesh points and the mouth area as base64), which the opening is measured
    from."""

    started_at: float
    verdict: VerdictState
    baseline_frames: list[dict[str, Any]] = Field(default_factory=list)
    gates: dict[str, StreakState] = Field(default_factory=dict)
    hold: StreakState = StreakState()
    wrong: StreakState = StreakState()
    blink_closed_since: float | None = None
    last_t: float | None = None
    max_travel: float = 0.0
    mouth_closed: float | None = None
    mouth_shape: list[float] | None = None
    mouth_area: str | None = None
    depth_frames: int = 0
    flat: bool = False


class SequenceState(_Document):
    """The challenges so far: the verdicts of those decided, and the current one's state."""

    verdicts: list[VerdictState] = Field(default_factory=list)
    current: EvaluatorState


class ReadinessState(_Document):
    """The pre-checks (see :class:`~services.liveness.readiness.ReadinessCheck`); problems as their
    codes, ``seen``: how often each problem was seen, ``clean``: the clean frames in a row."""

    started_at: float = 0.0
    ready_at: float | None = None
    failed: list[str] | None = None
    problems: list[str] = Field(default_factory=list)
    previous: list[str] | None = None
    seen: dict[str, int] = Field(default_factory=dict)
    clean: int = 0
    clean_since: float = 0.0


class CleanFrame(_Document):
    """A frame of the pre-checks' current clean streak, kept for challenge 0's baseline: its
    analysis (``FrameAnalysis.to_dict``) and the identity check's answer on it."""

    sequence: int
    t: float
    analysis: dict[str, Any]
    identity_ok: bool | None = None


class Pick(_Document):
    """A reference frame candidate: its sequence, its object and its frontal score (lower wins)."""

    sequence: int
    storage_key: str
    frontal: float


class FrozenState(_Document):
    """The frozen-stream check (:class:`services.liveness.stream.FrozenCheck`): the last judged
    frame's content (64 block means), the repeats in a row now, the longest run, repeats and
    pairs compared."""

    last: list[float] | None = None
    run: int = 0
    longest: int = 0
    repeats: int = 0
    pairs: int = 0


class ReplayProgress(_Document):
    """Where the replay of a session's frames stands (see :mod:`services.liveness.replay`).

    * ``next_sequence``: the sequence the replay expects next; stored frames below it were used
      (or lie in a skipped gap) and are never read again.
    * ``skipped``: gaps of lost frames the replay went past ([first, last] inclusive).
    * ``last_t`` / ``connection``: the last judged frame's time and connection (sequence //
      ``CONNECTION_SEQUENCE_STRIDE``); frames running backwards in time are ignored.
    * ``restarts``: reconnects that restarted the current challenge with its full time (bounded:
      ``replay.FULL_TIME_RESTARTS``).
    * ``issued_at``: when each challenge was shown (seconds since the session started);
      ``awaiting_shown``: the challenge issued but not yet seen in a frame (FrameCaptured.shown).
    * ``readiness``: the pre-checks before the first challenge (None: not run); ``clean``: the
      frames of their current clean streak (challenge 0 judges them first once ready).
    * ``engine``: the challenge engine (None until challenge 0 is issued).
    * ``identity_reference``: the identity check's reference embedding, once taken.
    * ``spoof_scores``: the anti-spoofing scores of the judged frames, in order; ``vote_from``:
      where the challenges' start (the decision reads those: ``replay._Run._vote``).
    * ``judged``: the judged sequences as runs [first, last]; ``judged_count`` their number.
    * ``reference`` / ``reference_fallback``: the most frontal judged frame scoring at least
      ``REFERENCE_MIN_SCORE``, and the most frontal of any score.
    * ``frozen``: the frozen-stream check over the judged frames (repeated pictures).
    * ``media_lead_s``: how far the stream's media clock ran ahead of the call agent's: each
      connection's largest lead, added up over the connections (None: no frame said);
      ``media_lead_banked_s``: what the connections before the current one added.
    """

    version: Literal[1] = PROGRESS_VERSION
    next_sequence: int = 0
    skipped: list[tuple[int, int]] = Field(default_factory=list)
    last_t: float | None = None
    connection: int | None = None
    restarts: int = 0
    issued_at: list[float] = Field(default_factory=list)
    awaiting_shown: int | None = None
    readiness: ReadinessState | None = None
    clean: list[CleanFrame] = Field(default_factory=list)
    engine: SequenceState | None = None
    identity_reference: list[float] | None = None
    spoof_scores: list[float] = Field(default_factory=list)
    vote_from: int | None = None
    judged: list[tuple[int, int]] = Field(default_factory=list)
    judged_count: int = 0
    reference: Pick | None = None
    reference_fallback: Pick | None = None
    frozen: FrozenState = Field(default_factory=FrozenState)
    media_lead_s: float | None = None
    media_lead_banked_s: float = 0.0

    @classmethod
    def load(cls, document: dict[str, Any] | None) -> ReplayProgress:
        """The stored document (None: a session whose frames were never replayed)."""
        return cls() if document is None else cls.model_validate(document)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
