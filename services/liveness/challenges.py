"""The challenge engine: draw random challenges, and judge a time-ordered stream of frame analyses.

Pure logic: no I/O, no clock, no randomness except the ``rng`` handed to :func:`draw_challenges`.
Given the same frames and timestamps, :class:`ChallengeEvaluator` always reaches the same verdict,
so a worker may replay stored :class:`~services.liveness.analysis.FrameAnalysis` records (see
``FrameAnalysis.to_dict``) in timestamp order and get the verdict again.

How a challenge is judged (all numbers in :class:`Thresholds`):

1. **Baseline.** The first ``baseline_frames`` frames with one measurable face after the
   challenge starts are the neutral reference (median of each measure). The user needs a few
   hundred milliseconds to read an instruction, so these frames are still neutral.
2. **Gates** (every frame, baseline included): no face, several faces, face out of the frame,
   face too small. A violation fails the challenge once it has lasted ``gate_tolerance_s``
   (and at least ``gate_min_frames`` frames) without a break, so one missed detection does not
   fail a session, but a photo of two people or an empty frame does within half a second.
   ``identity_ok=False`` (the worker's embedding check) fails at once with IDENTITY_CHANGED.
3. **Movement**, relative to the baseline, must go the asked way beyond a threshold and be
   HELD for ``hold_frames`` consecutive frames spanning at least ``hold_s``. The same movement
   the other way (turn right when asked to turn left), held as long, fails with
   WRONG_DIRECTION. A blink is a close-then-reopen of both eyes, not a hold.
4. **3D consistency**: a movement that a single plane explains (a photo or a screen moved by
   hand: the face's points follow one homography) does not pass, however far it goes: at least
   ``depth_frames`` frames since the baseline must show the nose tip leaving the plane of the
   front of the face (turns, looks, coming closer, pointing the nose) or the lips leaving it
   (opening the mouth), see :mod:`services.liveness.parallax`. A blink keeps the face's
   proportions instead (the plane that would squash the eyes squashes the face with them).
5. **Time limit**: ``time_limit_s`` after the start without a pass fails with TIMEOUT (on the
   next frame, or when the worker calls :meth:`ChallengeEvaluator.expire`).

Coordinates: analyses are in the raw camera frame; the user sees a mirrored preview. Head pose
signs are defined for the user (see :mod:`services.liveness.measures`): TURN_LEFT wants positive
yaw, the user turning to their own left. The NOSE_TO_TARGET ``target`` is given in the
**mirrored** view's normalised coordinates (0..1, x right, y down), where the call agent draws
it; the evaluator compares it with the mirrored nose position.
"""

from __future__ import annotations

import math
import random
import secrets
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

from contracts.values import ChallengeType
from services.liveness.analysis import FrameAnalysis
from services.liveness.measures import FaceMeasures
from services.liveness.mouth_area import area_from_text, area_similarity, area_to_text
from services.liveness.parallax import Shape, median_shape, mouth_deformation, nose_parallax
from services.liveness.progress import EvaluatorState, SequenceState, StreakState, VerdictState

__all__ = [
    "ALL_CHALLENGES",
    "DEFAULT_THRESHOLDS",
    "EXPRESSION_CHALLENGES",
    "MAX_CHALLENGES",
    "MIN_CHALLENGES",
    "MOVEMENT_CHALLENGES",
    "RIGID_CHALLENGES",
    "UNPASSED_MAX_PROGRESS",
    "Baseline",
    "Challenge",
    "ChallengeEvaluator",
    "ChallengeSequence",
    "ChallengeStatus",
    "ChallengeType",
    "FailureReason",
    "Thresholds",
    "Verdict",
    "draw_challenges",
    "frame_gate",
    "judges_eyes",
    "spoof_suspected",
]

MIN_CHALLENGES: Final = 1
MAX_CHALLENGES: Final = 4
ALL_CHALLENGES: Final = tuple(ChallengeType)
#: Challenges answered by a held movement (everything but BLINK).
MOVEMENT_CHALLENGES: Final = tuple(c for c in ChallengeType if c is not ChallengeType.BLINK)
#: Challenges a flat photo moved in front of the camera can answer (it can come closer and
#: move its nose anywhere); :func:`draw_challenges` never draws only these when others are allowed.
RIGID_CHALLENGES: Final = (ChallengeType.MOVE_CLOSER, ChallengeType.NOSE_TO_TARGET)
#: Challenges only a face that changes its shape answers: a rigid 3D object (a statue, a rigid
#: mask) turns, nods and comes closer with real parallax, but cannot blink or open its mouth.
#: :func:`draw_challenges` draws at least one of these whenever one is allowed.
EXPRESSION_CHALLENGES: Final = (ChallengeType.BLINK, ChallengeType.OPEN_MOUTH)
#: The only challenge judged on the eye aspect ratios (the iris model's, far better than the mesh's
#: on closed lids); no other challenge, pre-check or decision reads them.
EYE_CHALLENGES: Final = (ChallengeType.BLINK,)


def judges_eyes(challenges: Iterable[ChallengeType]) -> bool:
    """Whether a session with these challenges needs the iris model on its frames: without a BLINK
    the worker skips it (about a fifth of a frame's analysis) and no verdict changes."""
    return any(kind in EYE_CHALLENGES for kind in challenges)


class ChallengeStatus(StrEnum):
    PENDING = "PENDING"
    PASSED = "PASSED"
    FAILED = "FAILED"


class FailureReason(StrEnum):
    """Why a challenge (or a session) failed; stable codes for the API's ``reasons``."""

    NO_FACE = "NO_FACE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    FACE_TOO_SMALL = "FACE_TOO_SMALL"
    FACE_OUT_OF_FRAME = "FACE_OUT_OF_FRAME"
    WRONG_DIRECTION = "WRONG_DIRECTION"
    TIMEOUT = "TIMEOUT"
    IDENTITY_CHANGED = "IDENTITY_CHANGED"
    SPOOF_SUSPECTED = "SPOOF_SUSPECTED"


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the challenge engine, in one place.

    How they were chosen (measured with this project's analysis, see docs/liveness.md):

    * Head pose. Over 310 LFW dev-test portraits the estimated yaw has its 25th-75th
      percentiles at -6..+9 degrees and pitch at -7..+6 (after the pitch offset); a person
      "looking at the camera" wobbles by a few degrees. Asked to turn, people turn 20-45
      degrees; the head turns in the real videos (animation driving clips, modest movements)
      change yaw by 15-25 degrees and their nods change pitch by 8-15. A turn therefore needs
      a 15-degree change from the baseline AND 10 degrees that way in absolute terms (so
      turning back from a previous challenge's pose does not count); a look up/down 8 and 4
      degrees (people nod less than they turn, and the estimate compresses pitch a little).
      Left to chance, the videos answer a turn from 4 % of start times, a look from 16 %.
    * Eyes. Open eyes give an eye aspect ratio of 0.18-0.40 (LFW 5th-95th percentiles, iris
      model contours), closed eyes 0.04-0.10 (stills with closed eyes; blinks in the videos
      bottom out at 0.05-0.12). A blink is both eyes below 55 % of their baseline, then both
      back above 75 %, within 1.5 s. The closed frames and the reopened one must keep the pitch
      within 10 degrees of the baseline (looking down lowers the lids: the videos show EAR at
      35-40 % of the baseline on an 8-degree look down) and the face's proportions within 15 %
      (a photo tilted away squashes the eyes, and the whole face with them); a frame in between
      that does not is skipped, not a reset: a tracked and a detected crop of one picture differ
      by up to 4-5 degrees of pitch, and one such frame dropped a real blink (issue 15).
    * Mouth. A closed mouth has an inner-mouth aspect ratio of 0.0-0.15 (LFW median 0.10,
      talking 0.1-0.3); a deliberately open mouth 0.4-0.8. Open mouth: >= 0.35 and >= 0.2
      above the most closed mouth since the challenge began (the baseline, or a later frame: a
      subject still talking when the instruction appears has a half-open baseline, 0.42 in
      liveportrait_d12, then closes the mouth and opens it).
    * Move closer: the face box's longer side grows by 25 % and stays there (chosen, not
      measured: no video has such a movement; talking heads in them vary by about 10 % around
      their median size and never pass it by chance).
    * Nose to target: within 0.08 (normalised frame units) of the target, after the nose
      moved at least 0.10 from where it started.
    * Holds: 3 consecutive frames spanning >= 0.2 s: at the worker's 8 fps that is 3 frames
      (0.25 s); at 30 fps, 7 frames. A blink lasts 0.1-0.4 s, so a blink is not held.
    * Gates: a face smaller than 15 % of the frame's shorter side (or 64 px) is too small for
      the mesh and the anti-spoofing crop; a mesh reaching more than 5 % of the face size past
      the border is out of frame. A violation must last 0.3 s and 2 frames to fail.
    * Time limit: 6 s per challenge, instruction reading time included (the AWS sample allows
      10 s for its single challenge; ours are 2-4 short ones).
    * 3D consistency (:mod:`services.liveness.parallax`, in eye-corner distances): a still head
      reads 0.003-0.030 (5th-95th percentile), turns of 15 degrees or more at least 0.085
      (median 0.135), nods of 8 degrees or more at least 0.031 (median 0.075), an opening
      mouth's lips at least 0.054 (median 0.10); photos and prints moved by hand (turned or
      tilted up to 35 degrees, bent, brought 1.5x closer, slid) at most 0.062 on the nose when
      flat (0.093 for a strongly bent photo turned 35 degrees, which reads as a turn of about 7
      degrees) and 0.053 on the lips (2nd-largest frame of each movement). So the nose
      must leave the plane by 0.065 on 2 frames for a turn, coming closer or pointing the nose,
      by 0.05 for a look (1 in 13 real nods stays under it; photos do not reach a look), the
      lips by 0.055.
    * Mouth area (:mod:`services.liveness.mouth_area`): the mesh can read a still picture's
      mouth as opening (0.25 to 0.49 on an LFW photo, tracked frames against detected ones), so
      an opening must also change the picture of the mouth and chin: similarity to the most
      closed mouth's at most 0.85. Stills held with noise and a sway of up to 8 px stay at 0.82
      or more between any two frames, and no still stream passed at 0.85 (sways up to 24 px);
      wide real openings read 0.14-0.64, small ones 0.70-0.86 (``liveportrait_d6``'s 0.76-0.82,
      which 0.75 rejected: 16 of 85 starts passed before the area, 6 at 0.75, 16 at 0.85).
    * Anti-spoofing: the median MiniFASNet ``real_score`` of the sampled frames below 0.5 is a
      suspected spoof (real camera faces score 0.9-1.0, printed and replayed ones 0.0-0.36).
    """

    time_limit_s: float = 6.0
    baseline_frames: int = 3
    hold_frames: int = 3
    hold_s: float = 0.2
    gate_tolerance_s: float = 0.3
    gate_min_frames: int = 2
    min_relative_size: float = 0.15
    min_face_px: float = 64.0
    max_frame_overflow: float = 0.05
    turn_min_delta_deg: float = 15.0
    turn_min_abs_deg: float = 10.0
    look_min_delta_deg: float = 8.0
    look_min_abs_deg: float = 4.0
    blink_closed_ratio: float = 0.55
    blink_open_ratio: float = 0.75
    blink_max_closed_s: float = 1.5
    blink_max_pitch_change_deg: float = 10.0
    blink_max_aspect_change: float = 0.15
    mouth_open_mar: float = 0.35
    mouth_open_delta: float = 0.2
    closer_min_growth: float = 1.25
    nose_target_radius: float = 0.08
    nose_min_travel: float = 0.10
    nose_target_min_offset: float = 0.22
    nose_target_max_offset: float = 0.30
    depth_frames: int = 2
    min_nose_parallax: float = 0.065
    min_look_parallax: float = 0.05
    min_mouth_deformation: float = 0.055
    max_mouth_area_similarity: float = 0.85
    spoof_real_threshold: float = 0.5
    spoof_min_samples: int = 3


DEFAULT_THRESHOLDS: Final = Thresholds()


@dataclass(frozen=True)
class Challenge:
    """One instruction. ``target`` (NOSE_TO_TARGET only) is in the mirrored view, normalised 0..1."""

    type: ChallengeType
    target: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if (self.type is ChallengeType.NOSE_TO_TARGET) != (self.target is not None):
            raise ValueError("a target is required for NOSE_TO_TARGET, and only for it")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type.value, "target": list(self.target) if self.target is not None else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Challenge:
        target = data.get("target")
        return cls(
            type=ChallengeType(data["type"]),
            target=None if target is None else (float(target[0]), float(target[1])),
        )


def _nose_target(
    rng: random.Random, thresholds: Thresholds, start: tuple[float, float] | None
) -> tuple[float, float]:
    """A point 0.22-0.30 from the centre (or from ``start``), inside [0.12, 0.88]^2."""
    origin = start if start is not None else (0.5, 0.5)
    for _ in range(100):
        angle = rng.uniform(0.0, 2.0 * math.pi)
        radius = rng.uniform(thresholds.nose_target_min_offset, thresholds.nose_target_max_offset)
        x, y = origin[0] + radius * math.cos(angle), origin[1] + radius * math.sin(angle)
        if 0.12 <= x <= 0.88 and 0.12 <= y <= 0.88:
            return round(x, 3), round(y, 3)
    # the start is in a corner: aim across the centre
    x, y = 1.0 - origin[0], 1.0 - origin[1]
    return round(min(max(x, 0.12), 0.88), 3), round(min(max(y, 0.12), 0.88), 3)


def draw_challenges(
    n: int,
    allowed: Iterable[ChallengeType] | None = None,
    rng: random.Random | None = None,
    *,
    nose_start: tuple[float, float] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[Challenge]:
    """``n`` distinct challenges from ``allowed`` (all types by default), in random order.

    ``rng`` defaults to :class:`secrets.SystemRandom` (the operating system's cryptographic
    source); pass a seeded :class:`random.Random` only in tests. A NOSE_TO_TARGET target lies
    0.22-0.30 (normalised) from the centre of the mirrored view, or from ``nose_start`` (the
    user's nose in the mirrored view, when known), so it is never where the nose already is.
    At least one drawn challenge is BLINK or OPEN_MOUTH whenever ``allowed`` holds one (a rigid
    object, photo or statue, cannot change its shape); otherwise at least one needs more than
    the picture moving (not only MOVE_CLOSER and NOSE_TO_TARGET), unless nothing else is allowed.
    Sessions use 2-4 challenges; 1 is accepted for tests and special flows.
    """
    source: random.Random = rng if rng is not None else secrets.SystemRandom()
    pool = list(dict.fromkeys(allowed if allowed is not None else ALL_CHALLENGES))
    if not MIN_CHALLENGES <= n <= MAX_CHALLENGES:
        raise ValueError(f"the number of challenges must be {MIN_CHALLENGES}-{MAX_CHALLENGES}, got {n}")
    if n > len(pool):
        raise ValueError(f"{n} distinct challenges asked, but only {len(pool)} types are allowed")
    if any(c in EXPRESSION_CHALLENGES for c in pool):
        wanted: tuple[ChallengeType, ...] = EXPRESSION_CHALLENGES
    else:
        wanted = tuple(c for c in pool if c not in RIGID_CHALLENGES)
    chosen = source.sample(pool, n)
    while wanted and not any(c in wanted for c in chosen):
        chosen = source.sample(pool, n)  # rejection sampling keeps the draw uniform otherwise
    return [
        Challenge(c, _nose_target(source, thresholds, nose_start))
        if c is ChallengeType.NOSE_TO_TARGET
        else Challenge(c)
        for c in chosen
    ]


@dataclass(frozen=True)
class Verdict:
    """The state of one challenge. ``progress`` (0..1) says how far the user is, for the UI."""

    status: ChallengeStatus
    reason: FailureReason | None = None
    detail: str = ""
    progress: float = 0.0
    decided_at: float | None = None

    @property
    def done(self) -> bool:
        return self.status is not ChallengeStatus.PENDING


PENDING: Final = Verdict(ChallengeStatus.PENDING)
#: A movement challenge's progress until it passes: every condition counts (the change from the
#: baseline and the absolute pose or mouth opening), and reaching them on a frame without the hold
#: (or without leaving the plane, 0.9) is not 1.0. A candidate "progress 1.00" used to be a start
#: that only changed enough from its baseline, and timed out (issue 15).
UNPASSED_MAX_PROGRESS: Final = 0.95


@dataclass(frozen=True)
class Baseline:
    """Median measures of the first neutral frames of a challenge."""

    yaw: float
    pitch: float
    ear_right: float
    ear_left: float
    mar: float
    relative_size: float
    nose: tuple[float, float]
    face_aspect: float
    shape: Shape | None = None
    #: The most closed mouth's area among the baseline frames (None if one has none).
    mouth_area: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, frames: Sequence[FrameAnalysis]) -> Baseline:
        measures = [f.measures for f in frames if f.measures is not None]
        if not measures:
            raise ValueError("a baseline needs frames with a measured face")
        med = statistics.median
        shapes = [m.shape for m in measures if m.shape is not None]
        return cls(
            yaw=med(m.pose.yaw for m in measures),
            pitch=med(m.pose.pitch for m in measures),
            ear_right=med(m.ear_right for m in measures),
            ear_left=med(m.ear_left for m in measures),
            mar=med(m.mar for m in measures),
            relative_size=med(f.relative_size for f in frames),
            nose=(med(m.nose_mirrored[0] for m in measures), med(m.nose_mirrored[1] for m in measures)),
            face_aspect=med(m.face_aspect for m in measures),
            shape=median_shape(shapes) if len(shapes) == len(measures) else None,
            mouth_area=min(measures, key=lambda m: m.mar).mouth_area
            if all(m.mouth_area is not None for m in measures)
            else None,
        )


def frame_gate(frame: FrameAnalysis, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> FailureReason | None:
    """The hard gate one frame violates, if any (before any tolerance in time)."""
    if frame.face_count == 0 or frame.measures is None or frame.box is None:
        return FailureReason.NO_FACE
    if frame.face_count > 1:
        return FailureReason.MULTIPLE_FACES
    if frame.frame_overflow > thresholds.max_frame_overflow:
        return FailureReason.FACE_OUT_OF_FRAME
    x1, y1, x2, y2 = frame.box
    if frame.relative_size < thresholds.min_relative_size or max(x2 - x1, y2 - y1) < thresholds.min_face_px:
        return FailureReason.FACE_TOO_SMALL
    return None


def spoof_suspected(real_scores: Sequence[float], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> bool | None:
    """Whether the sampled anti-spoofing scores say "spoof": their median below the threshold.

    None while fewer than ``spoof_min_samples`` scores exist (no opinion yet).
    """
    if len(real_scores) < thresholds.spoof_min_samples:
        return None
    return statistics.median(real_scores) < thresholds.spoof_real_threshold


@dataclass
class _Streak:
    """Consecutive frames meeting a condition: count and first timestamp."""

    count: int = 0
    since: float = 0.0

    def add(self, t: float, hit: bool) -> None:
        if not hit:
            self.count = 0
        elif self.count == 0:
            self.count, self.since = 1, t
        else:
            self.count += 1

    def lasted(self, t: float, frames: int, seconds: float) -> bool:
        return self.count >= frames and t - self.since >= seconds - 1e-9


@dataclass
class _BlinkState:
    closed_since: float | None = None


@dataclass
class ChallengeEvaluator:
    """Judges one challenge from ``started_at`` (seconds, same clock as the frames' timestamps)."""

    challenge: Challenge
    started_at: float
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    _verdict: Verdict = field(default=PENDING, init=False)
    _baseline_frames: list[FrameAnalysis] = field(default_factory=list, init=False)
    _baseline: Baseline | None = field(default=None, init=False)
    _gates: dict[FailureReason, _Streak] = field(default_factory=dict, init=False)
    _hold: _Streak = field(default_factory=_Streak, init=False)
    _wrong: _Streak = field(default_factory=_Streak, init=False)
    _blink: _BlinkState = field(default_factory=_BlinkState, init=False)
    _last_t: float | None = field(default=None, init=False)
    _max_travel: float = field(default=0.0, init=False)
    _mouth_closed: float | None = field(default=None, init=False)
    _mouth_shape: Shape | None = field(default=None, init=False)
    _mouth_area: bytes | None = field(default=None, init=False)
    _depth_frames: int = field(default=0, init=False)
    _flat: bool = field(default=False, init=False)

    @property
    def verdict(self) -> Verdict:
        return self._verdict

    @property
    def baseline(self) -> Baseline | None:
        return self._baseline

    @property
    def deadline(self) -> float:
        return self.started_at + self.thresholds.time_limit_s

    def snapshot(self) -> EvaluatorState:
        """Everything later frames need, as the stored document (:meth:`resume` reads it back)."""
        return EvaluatorState(
            started_at=self.started_at,
            verdict=_verdict_state(self._verdict),
            baseline_frames=[f.to_dict() for f in self._baseline_frames],
            gates={reason.value: _streak_state(s) for reason, s in self._gates.items()},
            hold=_streak_state(self._hold),
            wrong=_streak_state(self._wrong),
            blink_closed_since=self._blink.closed_since,
            last_t=self._last_t,
            max_travel=self._max_travel,
            mouth_closed=self._mouth_closed,
            mouth_shape=None if self._mouth_shape is None else list(self._mouth_shape),
            mouth_area=None if self._mouth_area is None else area_to_text(self._mouth_area),
            depth_frames=self._depth_frames,
            flat=self._flat,
        )

    @classmethod
    def resume(
        cls, challenge: Challenge, state: EvaluatorState, thresholds: Thresholds = DEFAULT_THRESHOLDS
    ) -> ChallengeEvaluator:
        """The evaluator :meth:`snapshot` described: it judges the next frames as the original would."""
        evaluator = cls(challenge, state.started_at, thresholds)
        evaluator._verdict = _verdict_of(state.verdict)
        evaluator._baseline_frames = [FrameAnalysis.from_dict(f) for f in state.baseline_frames]
        if len(evaluator._baseline_frames) >= thresholds.baseline_frames:
            evaluator._baseline = Baseline.of(evaluator._baseline_frames)
        evaluator._gates = {FailureReason(r): _Streak(s.count, s.since) for r, s in state.gates.items()}
        evaluator._hold = _Streak(state.hold.count, state.hold.since)
        evaluator._wrong = _Streak(state.wrong.count, state.wrong.since)
        evaluator._blink = _BlinkState(state.blink_closed_since)
        evaluator._last_t = state.last_t
        evaluator._max_travel = state.max_travel
        evaluator._mouth_closed = state.mouth_closed
        evaluator._mouth_shape = None if state.mouth_shape is None else tuple(state.mouth_shape)
        evaluator._mouth_area = None if state.mouth_area is None else area_from_text(state.mouth_area)
        evaluator._depth_frames = state.depth_frames
        evaluator._flat = state.flat
        return evaluator

    def expire(self, now: float) -> Verdict:
        """Fail with TIMEOUT if ``now`` is past the deadline and nothing was decided (no frame needed)."""
        if not self._verdict.done and now > self.deadline:
            detail = f"not answered within {self.thresholds.time_limit_s:g} s"
            if self._flat:
                detail += "; the movement was flat (a single plane explains it: a photo or a screen?)"
            self._fail(now, FailureReason.TIMEOUT, detail)
        return self._verdict

    def update(self, t: float, frame: FrameAnalysis, *, identity_ok: bool | None = None) -> Verdict:
        """Feed the analysis of the frame taken at ``t``; frames must come in time order.

        ``identity_ok``: the worker's embedding-consistency check for this frame (None: not
        checked). False fails the challenge at once with IDENTITY_CHANGED, so pass it only
        when the check is conclusive (a frontal enough face, similarity clearly below the
        pack's threshold).
        """
        if self._verdict.done or t < self.started_at:
            return self._verdict
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"frames must come in time order: {t} after {self._last_t}")
        self._last_t = t
        if self.expire(t).done:
            return self._verdict
        if identity_ok is False:
            return self._fail(
                t, FailureReason.IDENTITY_CHANGED, "a different person is in front of the camera"
            )
        gate = frame_gate(frame, self.thresholds)
        for reason in (
            FailureReason.NO_FACE,
            FailureReason.MULTIPLE_FACES,
            FailureReason.FACE_OUT_OF_FRAME,
            FailureReason.FACE_TOO_SMALL,
        ):
            streak = self._gates.setdefault(reason, _Streak())
            streak.add(t, gate is reason)
            if streak.lasted(t, self.thresholds.gate_min_frames, self.thresholds.gate_tolerance_s):
                return self._fail(t, reason, _GATE_DETAILS[reason])
        if gate is not None:
            self._hold.add(t, False)
            self._wrong.add(t, False)
            return self._verdict
        if self._baseline is None:
            self._baseline_frames.append(frame)
            if len(self._baseline_frames) >= self.thresholds.baseline_frames:
                self._baseline = Baseline.of(self._baseline_frames)
            return self._verdict
        if self.challenge.type is ChallengeType.BLINK:
            return self._blink_update(t, frame, self._baseline)
        return self._movement_update(t, frame, self._baseline)

    # -- movement challenges: a signed score, held --------------------------------------------

    def _scores(self, frame: FrameAnalysis, base: Baseline) -> tuple[bool, bool, float]:
        """(goal reached, opposite reached, progress 0..1) for a movement challenge."""
        th = self.thresholds
        m = frame.measures
        assert m is not None  # gated before
        kind = self.challenge.type
        if kind in (ChallengeType.TURN_LEFT, ChallengeType.TURN_RIGHT):
            sign = 1.0 if kind is ChallengeType.TURN_LEFT else -1.0
            delta, absolute = sign * (m.pose.yaw - base.yaw), sign * m.pose.yaw
            goal = delta >= th.turn_min_delta_deg and absolute >= th.turn_min_abs_deg
            wrong = -delta >= th.turn_min_delta_deg and -absolute >= th.turn_min_abs_deg
            return (
                goal,
                wrong,
                min(_share(delta, th.turn_min_delta_deg), _share(absolute, th.turn_min_abs_deg)),
            )
        if kind in (ChallengeType.LOOK_UP, ChallengeType.LOOK_DOWN):
            sign = 1.0 if kind is ChallengeType.LOOK_UP else -1.0
            delta, absolute = sign * (m.pose.pitch - base.pitch), sign * m.pose.pitch
            goal = delta >= th.look_min_delta_deg and absolute >= th.look_min_abs_deg
            wrong = -delta >= th.look_min_delta_deg and -absolute >= th.look_min_abs_deg
            return (
                goal,
                wrong,
                min(_share(delta, th.look_min_delta_deg), _share(absolute, th.look_min_abs_deg)),
            )
        if kind is ChallengeType.OPEN_MOUTH:
            delta = m.mar - self._mouth_reference(m, base)
            goal = m.mar >= th.mouth_open_mar and delta >= th.mouth_open_delta
            return goal, False, min(_share(delta, th.mouth_open_delta), _share(m.mar, th.mouth_open_mar))
        if kind is ChallengeType.MOVE_CLOSER:
            growth = frame.relative_size / max(base.relative_size, 1e-6)
            goal = growth >= th.closer_min_growth
            return goal, False, min(max((growth - 1.0) / (th.closer_min_growth - 1.0), 0.0), 1.0)
        # NOSE_TO_TARGET
        target = self.challenge.target
        assert target is not None
        nose = m.nose_mirrored
        self._max_travel = max(self._max_travel, math.dist(nose, base.nose))
        distance = math.dist(nose, target)
        start_distance = max(math.dist(base.nose, target), 1e-6)
        goal = distance <= th.nose_target_radius and self._max_travel >= th.nose_min_travel
        progress = 1.0 - (distance - th.nose_target_radius) / max(
            start_distance - th.nose_target_radius, 1e-6
        )
        return goal, False, min(max(progress, 0.0), 1.0, _share(self._max_travel, th.nose_min_travel))

    def _mouth_reference(self, m: FaceMeasures, base: Baseline) -> float:
        """The MAR of the most closed mouth since the challenge began, before this frame. The
        baseline's, unless a later frame closed the mouth further: a subject still talking while
        the instruction appears gives a half-open baseline, then closes the mouth and opens it; the
        opening is measured, and the lips' deformation and the area's change judged
        (:meth:`_mouth_moved`), from the closed mouth. This frame becomes the reference when it is
        more closed."""
        reference = base.mar if self._mouth_closed is None else self._mouth_closed
        if m.mar < reference:
            self._mouth_closed, self._mouth_shape, self._mouth_area = m.mar, m.shape, m.mouth_area
        return reference

    def _movement_update(self, t: float, frame: FrameAnalysis, base: Baseline) -> Verdict:
        th = self.thresholds
        goal, wrong, progress = self._scores(frame, base)
        self._hold.add(t, goal)
        self._wrong.add(t, wrong)
        if self._depth_frames < th.depth_frames and self._shows_depth(frame, base):
            self._depth_frames += 1
        if self._hold.lasted(t, th.hold_frames, th.hold_s):
            if self._depth_frames >= th.depth_frames:
                return self._pass(t)
            self._flat = True
            progress = min(progress, 0.9)
        if self._wrong.lasted(t, th.hold_frames, th.hold_s):
            return self._fail(t, FailureReason.WRONG_DIRECTION, _WRONG_DETAILS.get(self.challenge.type, ""))
        progress = min(progress, UNPASSED_MAX_PROGRESS)  # 1.0 only when it passes
        self._verdict = replace(self._verdict, progress=max(self._verdict.progress, progress))
        return self._verdict

    def _shows_depth(self, frame: FrameAnalysis, base: Baseline) -> bool:
        """Whether this frame leaves the plane of the baseline's face (:mod:`services.liveness.parallax`).

        Analyses stored without the mesh points (``shape`` None) cannot be checked and count as
        showing depth, so sessions analysed before the check existed replay as they were judged.
        """
        th = self.thresholds
        shape = frame.measures.shape if frame.measures is not None else None
        if base.shape is None or shape is None:
            return True
        kind = self.challenge.type
        if kind is ChallengeType.OPEN_MOUTH:  # the lips and the area against the most closed mouth so far
            return self._mouth_moved(frame.measures, base)
        if kind in (ChallengeType.LOOK_UP, ChallengeType.LOOK_DOWN):
            return nose_parallax(base.shape, shape) >= th.min_look_parallax
        return nose_parallax(base.shape, shape) >= th.min_nose_parallax

    def _mouth_moved(self, m: FaceMeasures | None, base: Baseline) -> bool:
        """The lips leave the face's plane and the mouth area's picture changes, both against the
        most closed mouth so far (what was not stored counts as moved, as in :meth:`_shows_depth`)."""
        th = self.thresholds
        assert m is not None and m.shape is not None
        if self._mouth_closed is None:
            shape, area = base.shape, base.mouth_area
        else:
            shape, area = self._mouth_shape, self._mouth_area
        deformed = shape is None or mouth_deformation(shape, m.shape) >= th.min_mouth_deformation
        changed = (
            area is None
            or m.mouth_area is None
            or area_similarity(area, m.mouth_area) <= th.max_mouth_area_similarity
        )
        return deformed and changed

    # -- blink: both eyes close, then reopen --------------------------------------------------

    def _blink_update(self, t: float, frame: FrameAnalysis, base: Baseline) -> Verdict:
        th = self.thresholds
        m = frame.measures
        assert m is not None
        ratios = (m.ear_right / max(base.ear_right, 1e-6), m.ear_left / max(base.ear_left, 1e-6))
        # the face keeps its pose and its proportions during a blink; a photo tilted away from
        # the camera squashes the eyes, but squashes the whole face with them
        steady = (
            abs(m.pose.pitch - base.pitch) <= th.blink_max_pitch_change_deg
            and abs(m.face_aspect / max(base.face_aspect, 1e-6) - 1.0) <= th.blink_max_aspect_change
        )
        state = self._blink
        if max(ratios) <= th.blink_closed_ratio and steady:
            if state.closed_since is None:
                state.closed_since = t
            self._verdict = replace(self._verdict, progress=max(self._verdict.progress, 0.5))
        elif state.closed_since is not None:
            if t - state.closed_since > th.blink_max_closed_s:
                state.closed_since = None
            elif steady and min(ratios) >= th.blink_open_ratio:
                return self._pass(t)
        return self._verdict

    # -- decisions ----------------------------------------------------------------------------

    def _pass(self, t: float) -> Verdict:
        self._verdict = Verdict(ChallengeStatus.PASSED, progress=1.0, decided_at=t)
        return self._verdict

    def _fail(self, t: float, reason: FailureReason, detail: str) -> Verdict:
        self._verdict = Verdict(
            ChallengeStatus.FAILED,
            reason=reason,
            detail=detail,
            progress=self._verdict.progress,
            decided_at=t,
        )
        return self._verdict


def _share(value: float, needed: float) -> float:
    """How much of ``needed`` ``value`` reaches, 0..1."""
    return min(max(value / needed, 0.0), 1.0)


def _streak_state(streak: _Streak) -> StreakState:
    return StreakState(count=streak.count, since=streak.since)


def _verdict_state(verdict: Verdict) -> VerdictState:
    return VerdictState(
        status=verdict.status.value,
        reason=None if verdict.reason is None else verdict.reason.value,
        detail=verdict.detail,
        progress=verdict.progress,
        decided_at=verdict.decided_at,
    )


def _verdict_of(state: VerdictState) -> Verdict:
    return Verdict(
        ChallengeStatus(state.status),
        reason=None if state.reason is None else FailureReason(state.reason),
        detail=state.detail,
        progress=state.progress,
        decided_at=state.decided_at,
    )


_GATE_DETAILS: Final = {
    FailureReason.NO_FACE: "no face in the picture",
    FailureReason.MULTIPLE_FACES: "more than one face in the picture",
    FailureReason.FACE_OUT_OF_FRAME: "the face is not entirely inside the picture",
    FailureReason.FACE_TOO_SMALL: "the face is too small (too far from the camera)",
}
_WRONG_DETAILS: Final = {
    ChallengeType.TURN_LEFT: "turned right instead of left",
    ChallengeType.TURN_RIGHT: "turned left instead of right",
    ChallengeType.LOOK_UP: "looked down instead of up",
    ChallengeType.LOOK_DOWN: "looked up instead of down",
}


class ChallengeSequence:
    """Runs challenges one after the other on one stream of frames.

    The first challenge starts at ``started_at``; each next one starts at the timestamp of
    the frame that passed the previous one (the call agent shows the next instruction then).
    The sequence fails at the first failed challenge and passes when all have passed.
    """

    def __init__(
        self,
        challenges: Sequence[Challenge],
        started_at: float,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> None:
        if not challenges:
            raise ValueError("a sequence needs at least one challenge")
        self.challenges = tuple(challenges)
        self.thresholds = thresholds
        self.verdicts: list[Verdict] = []
        self._current = ChallengeEvaluator(self.challenges[0], started_at, thresholds)

    @property
    def index(self) -> int:
        """Index of the challenge being judged (== len(challenges) when all passed)."""
        return len(self.verdicts)

    @property
    def current(self) -> ChallengeEvaluator | None:
        return None if self.done else self._current

    @property
    def done(self) -> bool:
        return len(self.verdicts) == len(self.challenges) or any(
            v.status is ChallengeStatus.FAILED for v in self.verdicts
        )

    @property
    def status(self) -> ChallengeStatus:
        if any(v.status is ChallengeStatus.FAILED for v in self.verdicts):
            return ChallengeStatus.FAILED
        if len(self.verdicts) == len(self.challenges):
            return ChallengeStatus.PASSED
        return ChallengeStatus.PENDING

    @property
    def reasons(self) -> list[FailureReason]:
        return [v.reason for v in self.verdicts if v.reason is not None]

    def _advance(self, verdict: Verdict) -> None:
        if not verdict.done:
            return
        self.verdicts.append(verdict)
        if verdict.status is ChallengeStatus.PASSED and not self.done:
            started = verdict.decided_at if verdict.decided_at is not None else self._current.started_at
            self._current = ChallengeEvaluator(self.challenges[self.index], started, self.thresholds)

    def snapshot(self) -> SequenceState:
        """The verdicts so far and the current challenge's state (:meth:`resume` reads it back)."""
        return SequenceState(
            verdicts=[_verdict_state(v) for v in self.verdicts], current=self._current.snapshot()
        )

    @classmethod
    def resume(
        cls,
        challenges: Sequence[Challenge],
        state: SequenceState,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> ChallengeSequence:
        """The sequence :meth:`snapshot` described, over the same ``challenges``."""
        sequence = cls(challenges, state.current.started_at, thresholds)
        sequence.verdicts = [_verdict_of(v) for v in state.verdicts]
        current = sequence.challenges[min(sequence.index, len(sequence.challenges) - 1)]
        sequence._current = ChallengeEvaluator.resume(current, state.current, thresholds)
        return sequence

    def restart(self, t: float) -> None:
        """The subject reconnected: the current challenge starts again at ``t``, with a fresh
        baseline (the camera may sit elsewhere now) and its full time limit."""
        if not self.done:
            self._current = ChallengeEvaluator(self.challenges[self.index], t, self.thresholds)

    def update(self, t: float, frame: FrameAnalysis, *, identity_ok: bool | None = None) -> Verdict:
        """Feed one frame to the current challenge; returns that challenge's verdict."""
        if self.done:
            return self.verdicts[-1]
        verdict = self._current.update(t, frame, identity_ok=identity_ok)
        self._advance(verdict)
        return verdict

    def expire(self, now: float) -> Verdict | None:
        if self.done:
            return self.verdicts[-1]
        verdict = self._current.expire(now)
        self._advance(verdict)
        return verdict
