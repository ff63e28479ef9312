"""A scripted subject: answers liveness challenges by playing its own recorded material.

Used by ``faceproof eval liveness`` (:mod:`faceproof.evaluation.liveness`). The subject holds one
piece of material, a video or a still image (a still is a one-frame video: a print attack), and
for each challenge it is given, it picks what to show **from that material only**, so a replayed
or printed attack gets exactly the same chance to answer as a live recording:

* **Annotated segments.** A video listed in ``video_segments.json`` with segments for the
  challenge's type plays them (mirrored when they come from ``mirrored_segments``), first
  frame held :data:`HOLD_FRAMES` frames (0.5 s: the subject reading the instruction, which
  gives the engine a neutral baseline), then at real speed.
* **Searched segments.** For any other type, and as fallbacks after the annotated ones, the
  subject *rehearses*: it analyses its whole material once at the worker's 8 fps (plain and
  mirrored, after the same 640x480 fitting and JPEG round trip as the session; each frame
  detected, tracked and held, see :class:`Rehearsed`) and tries every start offset
  with a :class:`~services.liveness.challenges.ChallengeEvaluator`, like an attacker seeking
  through a replay. Starts that pass (the most robust first: see :class:`Trial`; then the
  soonest), then starts that made the most progress without risking a wrong direction,
  become candidates (:class:`Trial`); starts that fail otherwise are never played.
* **MOVE_CLOSER and NOSE_TO_TARGET** are answered by moving the picture, as a person (or a hand
  holding a photo) would: from the quietest stretch of the material, the picture is scaled
  up by :data:`CLOSER_GROWTH` about the face centre, or scaled and shifted so the nose lands on
  the target (given in mirrored coordinates: a target on the user's left moves the picture to
  the raw frame's right), over :data:`RAMP_FRAMES` frames (0.75 s), then held. The same
  transformation is applied to live and attack material.

When a candidate has been played to its end and the challenge is still pending, the next one
plays (cycling), so a blink that fell between two sampled frames gets another chance.

Frames come out at :data:`WORKER_FPS` (the call agent's default), fitted into 640x480 (aspect
kept), in order; :func:`camera_round_trip` applies the call agent's JPEG compression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from contracts.values import ChallengeType
from faceproof.testing.annotate import ANNOTATION_MARGIN, VideoSegments, read_frames, stricter
from faces.images import decode_image
from services.liveness.analysis import FrameAnalysis, FrameAnalyzer
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    RIGID_CHALLENGES,
    Challenge,
    ChallengeEvaluator,
    ChallengeStatus,
    FailureReason,
    Thresholds,
)

__all__ = [
    "CLOSER_GROWTH",
    "FRAME_SIZE",
    "HOLD_FRAMES",
    "JPEG_QUALITY",
    "RAMP_FRAMES",
    "STILL_SUFFIXES",
    "WORKER_FPS",
    "Image",
    "Media",
    "Placement",
    "Plan",
    "Rehearsed",
    "ScriptedSubject",
    "Step",
    "Trial",
    "camera_jpeg",
    "camera_round_trip",
    "fit_frame",
    "is_still",
]

Image = npt.NDArray[np.uint8]

#: Frames per second the call agent samples (its default) and the subject plays at.
WORKER_FPS: Final = 8.0
#: The call agent's frame size: material is fitted inside it, aspect ratio kept.
FRAME_SIZE: Final = (640, 480)
#: The call agent stores and analyses JPEG frames of about this quality.
JPEG_QUALITY: Final = 85
#: The first frame of a segment is shown this many frames (0.5 s) before the segment plays.
HOLD_FRAMES: Final = 4
#: MOVE_CLOSER / NOSE_TO_TARGET: frames over which the picture moves (0.75 s).
RAMP_FRAMES: Final = 6
#: MOVE_CLOSER: the picture grows by this factor (the engine asks for 1.25).
CLOSER_GROWTH: Final = 1.45
#: MOVE_CLOSER: the face's box ends at most this share of the frame's shorter side.
CLOSER_MAX_SIZE: Final = 0.8
#: Candidates kept per challenge (annotated first, then searched).
MAX_CANDIDATES: Final = 3
#: Searched candidates start at least this many frames (1 s) apart.
MIN_CANDIDATE_GAP: Final = 8
#: Frames played after a searched candidate's pass (the annotation's 0.3 s end margin).
END_MARGIN_FRAMES: Final = 3
#: Quiet stretch for MOVE_CLOSER / NOSE_TO_TARGET: this many frames (2 s) with the least movement.
QUIET_FRAMES: Final = 16
#: Image files a manifest row may name: played as a static video.
STILL_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".webp"})
_MAX_STILL_PIXELS: Final = 80_000_000


def is_still(path: Path) -> bool:
    """Whether ``path`` names a still image (by its suffix) rather than a video."""
    return path.suffix.lower() in STILL_SUFFIXES


def fit_frame(image: Image, size: tuple[int, int] = FRAME_SIZE) -> Image:
    """``image`` resized to fit inside ``size`` (width, height), aspect ratio kept."""
    height, width = image.shape[:2]
    scale = min(size[0] / width, size[1] / height)
    new_size = (max(round(width * scale), 1), max(round(height * scale), 1))
    if new_size == (width, height):
        return np.ascontiguousarray(image, dtype=np.uint8)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, new_size, interpolation=interpolation), dtype=np.uint8)


def camera_jpeg(image: Image, quality: int = JPEG_QUALITY) -> bytes:
    """The frame as the call agent stores it: JPEG-compressed at ``quality``."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(data)


def camera_round_trip(image: Image, quality: int = JPEG_QUALITY) -> Image:
    """The frame as the worker reads it back: :func:`camera_jpeg`, decoded."""
    decoded = cv2.imdecode(np.frombuffer(camera_jpeg(image, quality), dtype=np.uint8), cv2.IMREAD_COLOR)
    return np.asarray(decoded, dtype=np.uint8)


@dataclass(frozen=True, eq=False)
class Media:
    """A subject's material at the worker's frame rate: frame ``k`` is what it shows at ``k / 8`` s.

    Frames are fitted into :data:`FRAME_SIZE`; a still has one frame, and every index shows it.
    """

    name: str
    frames: tuple[Image, ...]
    still: bool
    source_fps: float = WORKER_FPS

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError(f"{self.name}: no frames")

    @classmethod
    def from_path(cls, path: Path, *, max_seconds: float | None = None) -> Media:
        """A video sampled at 8 fps (the first ``max_seconds`` only, if given), or a still image."""
        if is_still(path):
            image = decode_image(path.read_bytes(), max_pixels=_MAX_STILL_PIXELS)
            return cls(path.name, (fit_frame(image),), still=True)
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise FileNotFoundError(f"cannot open video {path}")
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 30.0
        capture.release()
        frames: list[Image] = []
        next_tick = 0
        for t, frame in read_frames(path, 0.0, max_seconds):
            fitted: Image | None = None
            while next_tick / WORKER_FPS <= t + 1e-6:  # the first frame at or after each 1/8 s tick
                fitted = fit_frame(frame) if fitted is None else fitted
                frames.append(fitted)
                next_tick += 1
        if not frames:
            raise ValueError(f"{path}: no frames could be decoded")
        return cls(path.name, tuple(frames), still=False, source_fps=fps)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        height, width = self.frames[0].shape[:2]
        return width, height

    @property
    def duration_s(self) -> float:
        return len(self.frames) / WORKER_FPS

    def frame(self, index: int, *, mirrored: bool = False) -> Image:
        """Frame ``index`` (clamped: a replay stops on its last frame), flipped if ``mirrored``."""
        image = self.frames[min(max(index, 0), len(self.frames) - 1)]
        return np.ascontiguousarray(cv2.flip(image, 1)) if mirrored else image


@dataclass(frozen=True)
class Placement:
    """Where the picture sits in the camera's view: scaled by ``scale`` about ``pivot``, then
    moved by ``shift`` (pixels of the frame); the uncovered rest of the frame is black."""

    scale: float = 1.0
    pivot: tuple[float, float] = (0.0, 0.0)
    shift: tuple[float, float] = (0.0, 0.0)

    @property
    def identity(self) -> bool:
        return abs(self.scale - 1.0) < 1e-9 and self.shift == (0.0, 0.0)

    def towards(self, other: Placement, fraction: float) -> Placement:
        """Linear interpolation (``fraction`` 0: self, 1: ``other``; the pivot is ``other``'s)."""
        f = min(max(fraction, 0.0), 1.0)
        return Placement(
            scale=self.scale + (other.scale - self.scale) * f,
            pivot=other.pivot,
            shift=(
                self.shift[0] + (other.shift[0] - self.shift[0]) * f,
                self.shift[1] + (other.shift[1] - self.shift[1]) * f,
            ),
        )

    def apply(self, image: Image) -> Image:
        if self.identity:
            return image
        height, width = image.shape[:2]
        s, (px, py), (dx, dy) = self.scale, self.pivot, self.shift
        matrix = np.array([[s, 0.0, (1.0 - s) * px + dx], [0.0, s, (1.0 - s) * py + dy]], dtype=np.float64)
        warped = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        return np.asarray(warped, dtype=np.uint8)


@dataclass(frozen=True)
class Step:
    """One frame the subject shows: material frame ``index``, mirrored or not, placed."""

    index: int
    mirrored: bool = False
    placement: Placement = field(default_factory=Placement)


@dataclass(frozen=True)
class Plan:
    """A candidate answer: the frames to show, and where they come from (for the report)."""

    steps: tuple[Step, ...]
    source: str


@dataclass(frozen=True)
class Rehearsed:
    """The subject's analyses of one frame of its material, the three ways the worker may see it:
    ``detected`` (the detector ran on it), ``tracked`` (mesh crop built from the previous frame's
    mesh) and ``held`` (tracked from a mesh of this very picture, as when a frame is shown
    again). They differ: up to about 5 degrees of head pose on one picture, and a one-frame
    blink reads half as deep on a tracked frame as on a detected one, so a trial replays them
    in the worker's detection rhythm."""

    detected: FrameAnalysis
    tracked: FrameAnalysis
    held: FrameAnalysis


@dataclass(frozen=True)
class Trial:
    """How a start offset did in the rehearsal.

    ``robustness``: the share of 2 x ``detect_every`` judgements it passes, with the engine's
    thresholds and 10 % stricter ones (the annotation's margin), the detector running on each
    possible phase of the worker's detection rhythm (the subject cannot know it, and a one-frame
    blink reads differently on a tracked frame); ``robust``: all of them. ``safe``: short of passing,
    it does not fail otherwise than by timing out, even with 10 % looser thresholds, on any phase
    of the detection rhythm (playing it does not risk WRONG_DIRECTION or a gate).
    """

    start: int
    mirrored: bool
    status: ChallengeStatus
    frames_to_pass: int | None
    progress: float
    robustness: float = 0.0
    safe: bool = False

    @property
    def robust(self) -> bool:
        return self.robustness >= 1.0

    @property
    def passed(self) -> bool:
        return self.status is ChallengeStatus.PASSED

    def rank(self) -> tuple[int, float, float, int]:
        if self.passed and self.frames_to_pass is not None:
            return 0, -self.robustness, float(self.frames_to_pass), self.start
        return 1, 0.0, -self.progress, self.start


class ScriptedSubject:
    """Answers challenges with its own :class:`Media` (see the module docstring).

    Call :meth:`prepare` with the session's challenges **before** the session (it rehearses with
    ``analyzer``, whose tracking state the session then resets), then, during the session,
    :meth:`instruct` when challenge ``index`` is shown and :meth:`next_frame` for every frame.
    """

    def __init__(
        self,
        media: Media,
        analyzer: FrameAnalyzer,
        *,
        segments: VideoSegments | None = None,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> None:
        self.media = media
        self.analyzer = analyzer
        self.segments = segments
        self.thresholds = thresholds
        self._rehearsals: dict[bool, tuple[Rehearsed, ...]] = {}
        self._searches: dict[Challenge, list[Trial]] = {}
        self._plans: dict[int, tuple[Plan, ...]] = {}
        self._current: tuple[Plan, ...] = ()
        self._plan_index = 0
        self._step_index = 0
        self._index = -1
        #: Per challenge index, the sources of the candidates played (in order).
        self.played: dict[int, list[str]] = {}

    # -- rehearsal ---------------------------------------------------------------------------

    def rehearsal(self, *, mirrored: bool = False) -> tuple[Rehearsed, ...]:
        """The subject's own analysis of every frame of its material (plain or mirrored)."""
        if mirrored not in self._rehearsals:
            analyzer = self.analyzer
            rehearsed = []
            analyzer.reset()
            for k in range(len(self.media.frames)):
                frame = camera_round_trip(self.media.frame(k, mirrored=mirrored))
                tracked = analyzer.analyze(frame)  # from the previous frame's (held) mesh
                detected = analyzer.analyze(frame, force_detect=True)
                held = analyzer.analyze(frame)  # from this frame's own mesh
                rehearsed.append(Rehearsed(detected, tracked, held))
            analyzer.reset()
            self._rehearsals[mirrored] = tuple(rehearsed)
        return self._rehearsals[mirrored]

    def nose_start(self) -> tuple[float, float] | None:
        """The nose in the mirrored view on the first frame with a face (for drawing a target)."""
        for rehearsed in self.rehearsal():
            analysis = rehearsed.detected
            if analysis.measures is not None:
                return analysis.measures.nose_mirrored
        return None

    def prepare(self, challenges: Sequence[Challenge]) -> None:
        """Choose the candidates for every challenge (rehearsing as needed)."""
        self._plans = {i: tuple(self.candidates(c)) for i, c in enumerate(challenges)}

    def prepare_one(self, index: int, challenge: Challenge, *, search: bool = True) -> None:
        """Choose the candidates for challenge ``index`` alone: a live session reveals its
        challenges one at a time. ``search=False`` plays annotated segments only (no rehearsal)
        and holds still when there are none."""
        if search or challenge.type in RIGID_CHALLENGES:
            self._plans[index] = tuple(self.candidates(challenge))
            return
        plans = self._annotated_plans(challenge.type)
        hold = Plan(tuple(Step(0) for _ in range(HOLD_FRAMES)), "nothing annotated: holds still")
        self._plans[index] = tuple(plans) or (hold,)

    def candidates(self, challenge: Challenge) -> list[Plan]:
        """The plans to try for ``challenge``, best first (never empty)."""
        if challenge.type in RIGID_CHALLENGES:
            return [self._moving_plan(challenge)]
        plans = self._annotated_plans(challenge.type)
        plans += self._searched_plans(challenge, MAX_CANDIDATES - len(plans))
        if not plans:
            plans = [Plan(tuple(Step(0) for _ in range(HOLD_FRAMES)), "nothing answers: holds still")]
        return plans

    def _limit_frames(self) -> int:
        return math.ceil(self.thresholds.time_limit_s * WORKER_FPS)

    def _annotated_plans(self, kind: ChallengeType) -> list[Plan]:
        if self.segments is None or self.media.still:
            return []
        plans: list[Plan] = []
        for mirrored, table in ((False, self.segments.segments), (True, self.segments.mirrored_segments)):
            for start_s, end_s in table.get(self.media.name, {}).get(kind, []):
                if end_s > self.media.duration_s + 1e-6 or len(plans) >= MAX_CANDIDATES:
                    continue
                first, last = round(start_s * WORKER_FPS), math.ceil(end_s * WORKER_FPS)
                steps = [Step(first, mirrored)] * HOLD_FRAMES
                steps += [Step(k, mirrored) for k in range(first, last + 1)]
                side = " mirrored" if mirrored else ""
                plans.append(Plan(tuple(steps), f"annotated {start_s:g}-{end_s:g} s{side}"))
        return plans

    def _judge(
        self, challenge: Challenge, start: int, mirrored: bool, thresholds: Thresholds, phase: int = 0
    ) -> tuple[ChallengeStatus, FailureReason | None, float | None, float]:
        frames = self.rehearsal(mirrored=mirrored)
        last = len(frames) - 1
        every = self.analyzer.detect_every
        evaluator = ChallengeEvaluator(challenge, 0.0, thresholds)
        previous = -1
        for i in range(math.ceil(thresholds.time_limit_s * WORKER_FPS) + 1):
            # the plan: the first frame held HOLD_FRAMES frames, then the material from its start
            index = start if i < HOLD_FRAMES else min(start + i - HOLD_FRAMES, last)
            rehearsed = frames[index]
            if i % every == phase:
                analysis = rehearsed.detected
            else:
                analysis = rehearsed.held if index == previous else rehearsed.tracked
            previous = index
            if evaluator.update(i / WORKER_FPS, analysis).done:
                break
        verdict = evaluator.expire(thresholds.time_limit_s + 1.0)
        return verdict.status, verdict.reason, verdict.decided_at, verdict.progress

    def trial(self, challenge: Challenge, start: int, *, mirrored: bool = False) -> Trial:
        """Judge the rehearsed frames from ``start`` (first frame held) for ``challenge``."""
        status, reason, decided_at, progress = self._judge(challenge, start, mirrored, self.thresholds)
        if status is ChallengeStatus.PASSED and decided_at is not None:
            judgements = [
                self._judge(challenge, start, mirrored, thresholds, phase)[0]
                for thresholds in (self.thresholds, stricter(self.thresholds))
                for phase in range(self.analyzer.detect_every)
            ]
            robustness = sum(j is ChallengeStatus.PASSED for j in judgements) / len(judgements)
            frames_to_pass = round(decided_at * WORKER_FPS) - HOLD_FRAMES
            return Trial(start, mirrored, status, frames_to_pass, progress, robustness=robustness)
        safe = False
        if reason is FailureReason.TIMEOUT:
            looser = stricter(self.thresholds, 1 / ANNOTATION_MARGIN)
            safe = all(
                self._judge(challenge, start, mirrored, looser, phase)[1] in (None, FailureReason.TIMEOUT)
                for phase in range(self.analyzer.detect_every)
            )
        return Trial(start, mirrored, status, None, progress, safe=safe)

    def search(self, challenge: Challenge) -> list[Trial]:
        """Every start offset (plain and mirrored), best first: those that pass (robust ones first,
        then the soonest), then the safe ones that made the most progress; the rest left out."""
        if challenge not in self._searches:
            starts = range(1 if self.media.still else len(self.media.frames))
            trials = [
                self.trial(challenge, start, mirrored=mirrored)
                for mirrored in (False, True)
                for start in starts
            ]
            self._searches[challenge] = sorted((t for t in trials if t.passed or t.safe), key=Trial.rank)
        return list(self._searches[challenge])

    def _searched_plans(self, challenge: Challenge, count: int) -> list[Plan]:
        if count <= 0:
            return []
        chosen: list[Trial] = []
        for trial in self.search(challenge):
            if all(
                trial.mirrored != other.mirrored or abs(trial.start - other.start) >= MIN_CANDIDATE_GAP
                for other in chosen
            ):
                chosen.append(trial)
            if len(chosen) == count:
                break
        plans = []
        for trial in chosen:
            length = (
                trial.frames_to_pass + END_MARGIN_FRAMES
                if trial.frames_to_pass is not None
                else self._limit_frames() - HOLD_FRAMES
            )
            steps = [Step(trial.start, trial.mirrored)] * HOLD_FRAMES
            steps += [Step(trial.start + j, trial.mirrored) for j in range(max(length, 1))]
            side = " mirrored" if trial.mirrored else ""
            how = (
                f"passes {trial.robustness:.0%} of judgements"
                if trial.passed
                else f"progress {trial.progress:.2f}"
            )
            plans.append(
                Plan(tuple(steps), f"searched from {trial.start / WORKER_FPS:g} s{side} ({how} in rehearsal)")
            )
        return plans

    # -- moving the picture ------------------------------------------------------------------

    def quiet_start(self) -> int:
        """The start of the stretch where the face moves least (one measured face throughout)."""
        frames = [r.detected for r in self.rehearsal()]
        if self.media.still:
            return 0
        best, best_spread = 0, math.inf
        for start in range(max(len(frames) - QUIET_FRAMES, 0) + 1):
            window = frames[start : start + QUIET_FRAMES]
            first = window[0].measures
            if first is None or any(f.measures is None or f.face_count != 1 for f in window):
                continue
            spread = max(
                math.dist(f.measures.nose, first.nose)
                + abs(f.relative_size - window[0].relative_size)
                + abs(f.measures.pose.yaw - first.pose.yaw) / 90.0
                for f in window
                if f.measures is not None
            )
            if spread < best_spread - 1e-9:
                best, best_spread = start, spread
        return best

    def _moving_plan(self, challenge: Challenge) -> Plan:
        start = self.quiet_start()
        analysis = self.rehearsal()[start].detected
        if analysis.box is None or analysis.measures is None:
            return Plan(tuple(Step(start) for _ in range(HOLD_FRAMES)), "no face to move: holds still")
        width, height = self.media.size
        x1, y1, x2, y2 = analysis.box
        if challenge.type is ChallengeType.MOVE_CLOSER:
            size = max(analysis.relative_size, 1e-6)
            first_scale = min(1.0, CLOSER_MAX_SIZE / (CLOSER_GROWTH * size))
            pivot = ((x1 + x2) / 2, (y1 + y2) / 2)
            begin = Placement(first_scale, pivot)
            end_scale = first_scale * CLOSER_GROWTH
            end = Placement(
                end_scale, pivot, _inside_shift((x1, y1, x2, y2), pivot, end_scale, (width, height))
            )
            source = f"from {start / WORKER_FPS:g} s, picture scaled x{first_scale:.2f} to x{end_scale:.2f}"
        else:
            assert challenge.target is not None
            nose = (analysis.measures.nose[0] * width, analysis.measures.nose[1] * height)
            # the target is drawn in the mirrored view: the raw frame's x is 1 - x
            goal = ((1.0 - challenge.target[0]) * width, challenge.target[1] * height)
            scale = _fitting_scale((x1, y1, x2, y2), nose, goal, (width, height))
            begin = Placement(1.0, nose)
            end = Placement(scale, nose, (goal[0] - nose[0], goal[1] - nose[1]))
            source = f"from {start / WORKER_FPS:g} s, picture moved to the target (x{scale:.2f})"
        steps = [Step(start, False, begin)] * HOLD_FRAMES
        steps += [
            Step(start + j, False, begin.towards(end, j / RAMP_FRAMES))
            for j in range(1, self._limit_frames() - HOLD_FRAMES + 1)
        ]
        return Plan(tuple(steps), source)

    # -- playing -----------------------------------------------------------------------------

    def instruct(self, index: int) -> None:
        """Challenge ``index`` (of those given to :meth:`prepare`) is shown now."""
        if index not in self._plans:
            raise KeyError(f"challenge {index} was not prepared")
        self._index = index
        self._current = self._plans[index]
        self._plan_index = 0
        self._step_index = 0
        self.played[index] = []

    def next_frame(self) -> Image:
        """The next camera picture (before the call agent's JPEG compression)."""
        if not self._current:
            raise RuntimeError("instruct() the subject first")
        plan = self._current[self._plan_index % len(self._current)]
        if self._step_index >= len(plan.steps):
            self._plan_index += 1
            self._step_index = 0
            plan = self._current[self._plan_index % len(self._current)]
        if self._step_index == 0 and plan.source not in self.played[self._index]:
            self.played[self._index].append(plan.source)
        step = plan.steps[self._step_index]
        self._step_index += 1
        return step.placement.apply(self.media.frame(step.index, mirrored=step.mirrored))


def _margin_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The face box grown 15 % a side (the mesh reaches past the detector's box)."""
    x1, y1, x2, y2 = box
    mx, my = 0.15 * (x2 - x1), 0.15 * (y2 - y1)
    return x1 - mx, y1 - my, x2 + mx, y2 + my


def _inside_shift(
    box: tuple[float, float, float, float], pivot: tuple[float, float], scale: float, size: tuple[int, int]
) -> tuple[float, float]:
    """The shift that keeps ``box`` scaled about ``pivot`` inside the frame, where it fits."""
    x1, y1, x2, y2 = _margin_box(box)
    px, py = pivot
    sx1, sy1 = px + scale * (x1 - px), py + scale * (y1 - py)
    sx2, sy2 = px + scale * (x2 - px), py + scale * (y2 - py)

    def axis(low: float, high: float, limit: int) -> float:
        if high - low >= limit:
            return (limit - low - high) / 2  # too big: centre it
        if low < 0:
            return -low
        if high > limit:
            return limit - high
        return 0.0

    return axis(sx1, sx2, size[0]), axis(sy1, sy2, size[1])


def _fitting_scale(
    box: tuple[float, float, float, float],
    nose: tuple[float, float],
    goal: tuple[float, float],
    size: tuple[int, int],
) -> float:
    """The largest scale (at most 1) at which ``box``, scaled about ``nose`` moved to ``goal``,
    stays inside the frame."""
    x1, y1, x2, y2 = _margin_box(box)
    scale = 1.0
    # (how far the box reaches from the nose, how much room there is at the goal) per side
    for reach, room in (
        (nose[0] - x1, goal[0]),
        (x2 - nose[0], size[0] - goal[0]),
        (nose[1] - y1, goal[1]),
        (y2 - nose[1], size[1] - goal[1]),
    ):
        if reach > 1e-6:
            scale = min(scale, max(room, 1.0) / reach)
    return max(scale, 0.2)
