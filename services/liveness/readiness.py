"""Get ready: the pre-checks a subject passes before the first challenge's clock starts.

Pure logic, like :mod:`services.liveness.challenges`: frames (their analyses) and their times in,
"ready at t", "still not ready: these problems" or "never got ready" out. The replay
(:mod:`services.liveness.replay`) runs it on a session's first frames; while it is not ready the
worker publishes ReadinessChecked with the problems (the call agent draws a "get ready"
instruction naming them); once it is ready, challenge 0 is issued and its clock starts.

A frame's problems (:func:`prechecks`, :class:`contracts.values.Precheck`), most important first:

* the challenges' own frame gates (:func:`services.liveness.challenges.frame_gate`): no face,
  several faces, the face cut off by the frame's border, the face too small;
* too far (stricter than the gate, so that a subject who starts ready stays above the gate while
  turning) and too close (MOVE_CLOSER asks for 25 % growth, which must still fit in the frame);
* too dark, backlit (from :mod:`services.liveness.lighting`);
* not looking at the camera (the head turned or tilted away: every challenge's baseline must be a
  neutral, frontal face).

Once the subject is ready the check goes on, with fewer problems (:func:`running_prechecks`): the
challenges' own gates and too dark, the conditions under which a frame's measures, anti-spoofing
score and identity embedding cannot be trusted whatever the challenge asks. The replay refuses
such a frame (no challenge progress, no baseline, no sample) while the challenge's clock runs on,
and the worker names the problem as before the challenges. Too far (above the gate), too close,
backlit and not looking at the camera are dropped: the challenges ask for exactly those movements
(MOVE_CLOSER, turns, looks; a turn towards a window changes the scene's light), and a face in the
shadow of a bright scene is judged by its own light, TOO_DARK.

The subject is ready after ``ready_frames`` consecutive frames without a problem spanning at
least ``ready_s`` (then the replay issues challenge 0, whose clock starts when the subject can
see it: services/liveness/replay.py); past ``limit_s`` without that,
the session fails with NOT_READY and the problems seen most often (at most two).

Thresholds, checked against the shared face videos (../shared/data/video, 11 clips, every 6th
frame fitted into 640x480 as the call agent stores them): face sizes 0.38-0.80 of the frame's
shorter side, |yaw| and |pitch| of their neutral parts under 12 degrees, face luma 42-148 and
scene luma up to 190. None of their neutral frames trips a pre-check. The lighting limits are
chosen, not measured on failures (no dark or backlit recording is in the data): a face under 40
of 255 is too dark for the mesh's eye and mouth measures, and a scene 80 brighter than a face
under 100 is the silhouette a window behind the subject makes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from contracts.values import Precheck
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import DEFAULT_THRESHOLDS, FailureReason, Thresholds, frame_gate
from services.liveness.decision import NOT_READY
from services.liveness.progress import ReadinessState

__all__ = ["DEFAULT_READINESS", "NOT_READY", "Readiness", "ReadinessCheck", "prechecks", "running_prechecks"]

#: How many of the most frequent problems a NOT_READY failure reports.
REPORTED_PROBLEMS: Final = 2


@dataclass(frozen=True)
class Readiness:
    """Every pre-check threshold, in one place (see the module docstring for how they were set)."""

    min_relative_size: float = 0.25
    max_relative_size: float = 0.9
    #: the darkest shared clip (lestari15_real, a real person) measures 40-42 as stored and just
    #: under 40 after a VP8 round trip: a limit of 40 refused them, hence the margin
    min_face_luma: float = 28.0
    backlight_margin: float = 80.0
    backlit_max_face_luma: float = 100.0
    max_yaw_deg: float = 20.0
    max_pitch_deg: float = 20.0
    ready_frames: int = 3
    ready_s: float = 0.25
    #: Seconds from the session's start (the subject's first frame) to get ready, or NOT_READY.
    limit_s: float = 30.0


DEFAULT_READINESS: Final = Readiness()

_GATES: Final = {
    FailureReason.NO_FACE: Precheck.NO_FACE,
    FailureReason.MULTIPLE_FACES: Precheck.MULTIPLE_FACES,
    FailureReason.FACE_OUT_OF_FRAME: Precheck.FACE_OUT_OF_FRAME,
    FailureReason.FACE_TOO_SMALL: Precheck.FACE_TOO_SMALL,
}


def prechecks(
    frame: FrameAnalysis,
    readiness: Readiness = DEFAULT_READINESS,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[Precheck, ...]:
    """What is wrong in this frame for starting a challenge, most important first (empty: ready)."""
    gate = frame_gate(frame, thresholds)
    if gate is FailureReason.NO_FACE or gate is FailureReason.MULTIPLE_FACES:
        return (_GATES[gate],)
    problems: list[Precheck] = []
    if gate is FailureReason.FACE_OUT_OF_FRAME:
        problems.append(Precheck.FACE_OUT_OF_FRAME)
    if gate is FailureReason.FACE_TOO_SMALL or frame.relative_size < readiness.min_relative_size:
        problems.append(Precheck.FACE_TOO_SMALL)
    elif frame.relative_size > readiness.max_relative_size:
        problems.append(Precheck.FACE_TOO_CLOSE)
    face, scene = frame.face_luma, frame.scene_luma
    if _too_dark(frame, readiness):
        problems.append(Precheck.TOO_DARK)
    elif (
        face is not None
        and scene is not None
        and face < readiness.backlit_max_face_luma
        and scene - face >= readiness.backlight_margin
    ):
        problems.append(Precheck.BACKLIT)
    pose = frame.measures.pose if frame.measures is not None else None
    if pose is not None and (
        abs(pose.yaw) > readiness.max_yaw_deg or abs(pose.pitch) > readiness.max_pitch_deg
    ):
        problems.append(Precheck.NOT_LOOKING_AT_CAMERA)
    return tuple(problems)


def running_prechecks(
    frame: FrameAnalysis,
    readiness: Readiness = DEFAULT_READINESS,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[Precheck, ...]:
    """What refuses a frame once the challenges run (empty: it counts): the challenges' own gate
    (:func:`~services.liveness.challenges.frame_gate`, whose 15 % size limit is the mesh's and
    the anti-spoofing crop's) and too dark (eye ratios and mouth read on a face of luma 16 are
    noise: ``liveportrait_d9`` "blinked" in the dark, docs/liveness.md)."""
    gate = frame_gate(frame, thresholds)
    if gate is FailureReason.NO_FACE or gate is FailureReason.MULTIPLE_FACES:
        return (_GATES[gate],)
    problems = [] if gate is None else [_GATES[gate]]
    if _too_dark(frame, readiness):
        problems.append(Precheck.TOO_DARK)
    return tuple(problems)


def _too_dark(frame: FrameAnalysis, readiness: Readiness) -> bool:
    return frame.face_luma is not None and frame.face_luma < readiness.min_face_luma


@dataclass
class ReadinessCheck:
    """The pre-check phase of one session, from ``started_at`` (same clock as the frames)."""

    started_at: float = 0.0
    readiness: Readiness = DEFAULT_READINESS
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    #: The time of the frame that made the subject ready (None: not yet).
    ready_at: float | None = None
    #: The NOT_READY problems (None: not failed).
    failed: tuple[str, ...] | None = None
    #: The problems of the latest frame and of the one before it (once ready: the problems that
    #: refuse a frame while the challenges run, :func:`running_prechecks`).
    problems: tuple[Precheck, ...] = ()
    previous: tuple[Precheck, ...] | None = None
    _seen: Counter[Precheck] = field(default_factory=Counter)
    _clean: int = 0
    _clean_since: float = 0.0

    @property
    def pending(self) -> bool:
        return self.ready_at is None and self.failed is None

    def snapshot(self) -> ReadinessState:
        """Everything later frames need, as the stored document (:meth:`resume` reads it back)."""
        return ReadinessState(
            started_at=self.started_at,
            ready_at=self.ready_at,
            failed=None if self.failed is None else list(self.failed),
            problems=[p.value for p in self.problems],
            previous=None if self.previous is None else [p.value for p in self.previous],
            seen={p.value: n for p, n in self._seen.items()},
            clean=self._clean,
            clean_since=self._clean_since,
        )

    @classmethod
    def resume(
        cls, state: ReadinessState, readiness: Readiness, thresholds: Thresholds = DEFAULT_THRESHOLDS
    ) -> ReadinessCheck:
        """The check :meth:`snapshot` described: it judges the next frames as the original would."""
        check = cls(
            state.started_at,
            readiness,
            thresholds,
            ready_at=state.ready_at,
            failed=None if state.failed is None else tuple(state.failed),
            problems=tuple(Precheck(p) for p in state.problems),
            previous=None if state.previous is None else tuple(Precheck(p) for p in state.previous),
        )
        check._seen = Counter({Precheck(p): n for p, n in state.seen.items()})
        check._clean, check._clean_since = state.clean, state.clean_since
        return check

    def restart(self) -> None:
        """A new connection (reconnect): the clean streak starts again (the limit does not)."""
        self._clean = 0

    def update(self, t: float, frame: FrameAnalysis) -> None:
        if self.failed is not None:
            return
        if self.ready_at is not None:
            self.previous = self.problems
            self.problems = running_prechecks(frame, self.readiness, self.thresholds)
            return
        self.previous, self.problems = self.problems, prechecks(frame, self.readiness, self.thresholds)
        self._seen.update(self.problems)
        if self.problems:
            self._clean = 0
        else:
            if self._clean == 0:
                self._clean_since = t
            self._clean += 1
            if (
                self._clean >= self.readiness.ready_frames
                and t - self._clean_since >= self.readiness.ready_s - 1e-9
            ):
                self.ready_at = t
                return
        if t - self.started_at >= self.readiness.limit_s:
            ranked = sorted(self._seen.items(), key=lambda item: (-item[1], list(Precheck).index(item[0])))
            self.failed = tuple(problem.value for problem, _ in ranked[:REPORTED_PROBLEMS])
