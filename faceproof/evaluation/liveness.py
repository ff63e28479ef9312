"""Presentation-attack evaluation: recorded material through the liveness analysis, in ISO/IEC 30107-3 terms.

``faceproof eval liveness --manifest CSV`` (see docs/liveness.md) reads a manifest of videos and
still images labelled ``live`` or ``attack`` (with an attack type), runs each as one liveness
session with a :class:`~faceproof.testing.scripted_subject.ScriptedSubject` answering the
challenges from that material, and reports:

* **APCER** per attack type: the share of that type's attack presentations classified live;
* **BPCER**: the share of bona fide (live) presentations classified as attacks;
* each presentation's decision (isLive, confidence, reasons) and its challenges.

A session here is the liveness worker's own path, not a copy of it: frames at 8 fps, fitted
into 640x480 and JPEG-compressed (quality 85) as the call agent stores them, analysed in order
by the worker's :class:`~services.liveness.frames.FrameProcessor` (detector every 5th frame,
tracking in between; anti-spoofing every 2nd frame, the identity embedding every 4th), the
analysis stored and read back, and judged one frame at a time by the worker's
:func:`~services.liveness.replay.replay_step`: the pre-checks (``readiness``; the CLI's
``--no-prechecks`` leaves them out), challenge 0 issued once ready, each challenge's clock
started at the first frame taken while it was on the subject's screen (``ReplayFrame.shown``),
the identity gate, the frozen-stream check and :func:`~services.liveness.decision.decide`.

Challenges are drawn per presentation with ``random.Random(f"{seed}:{file name}")``, so a run
is reproducible and a presentation gets the same challenges whatever else the manifest holds.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import numpy as np

from contracts.values import ChallengeType
from faceproof.evaluation.intervals import Rate
from faceproof.testing.annotate import VideoSegments, load_video_segments
from faceproof.testing.scripted_subject import (
    WORKER_FPS,
    Image,
    Media,
    ScriptedSubject,
    camera_jpeg,
    is_still,
)
from faceproof.testing.unready import Unready, unready_prefix
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    RIGID_CHALLENGES,
    Challenge,
    ChallengeStatus,
    Thresholds,
    draw_challenges,
    spoof_suspected,
)
from services.liveness.decision import IdentityCheck, LivenessDecision
from services.liveness.frames import FrameProcessor
from services.liveness.progress import ReplayProgress
from services.liveness.readiness import DEFAULT_READINESS, Readiness
from services.liveness.replay import ReplayFrame, ReplayResult, replay_step
from services.liveness.session_models import SessionModels

__all__ = [
    "DEFAULT_ATTACKS",
    "DEFAULT_CHALLENGES",
    "DEFAULT_LIVE",
    "DEFAULT_SEED",
    "DEFAULT_UNREADY_SECONDS",
    "LAYERS",
    "ChallengeResult",
    "ErrorRates",
    "Label",
    "ManifestRow",
    "PresentationResult",
    "challenge_rates",
    "default_manifest",
    "draw_for",
    "error_rates",
    "evaluable_types",
    "evaluate",
    "layer_rates",
    "live_rejections",
    "read_manifest",
    "report",
    "run_session",
    "unready_for",
    "write_manifest",
]

DEFAULT_SEED: Final = 30107
DEFAULT_CHALLENGES: Final = 3
#: ``--unready``: seconds of unready frames before a live row's own.
DEFAULT_UNREADY_SECONDS: Final = 2.5
#: The default manifest for ``../shared/data``: live recordings (glob patterns) ...
DEFAULT_LIVE: Final = (
    "video/liveportrait_d*.mp4",
    "video/fomm_demo_old_*.mp4",
    "video/tpsmm_driving.mp4",
    "video/lestari15_real.mp4",
)
#: ... and attacks (file, attack type).
DEFAULT_ATTACKS: Final = (
    ("video/lestari15_fake.mp4", "replay"),
    ("antispoof/image_F1.jpg", "print"),
    ("antispoof/image_F2.jpg", "print"),
    ("antispoof/doubango_spoof.jpg", "print"),
    ("antispoof/bulk__rgb_fake.jpg", "print"),
    ("faces/people/obama.jpg", "print"),
)
MANIFEST_COLUMNS: Final = ("video", "label", "attack_type")


class Label(StrEnum):
    LIVE = "live"
    ATTACK = "attack"


@dataclass(frozen=True)
class ManifestRow:
    """One presentation: ``path`` resolved against the manifest's folder; ``video`` as written."""

    video: str
    path: Path
    label: Label
    attack_type: str | None
    movements: tuple[ChallengeType, ...] | None = None

    @property
    def still(self) -> bool:
        return is_still(self.path)


def read_manifest(path: Path, *, check_files: bool = True) -> list[ManifestRow]:
    """Rows of a ``video,label,attack_type`` CSV; paths relative to the CSV's folder.

    ``label`` is ``live`` or ``attack`` (any case); ``attack_type`` must be empty for live rows
    and is ``unspecified`` when an attack row leaves it empty. An optional ``movements`` column
    lists the challenge types the recording visibly contains (space- or semicolon-separated;
    ``-`` for none; empty: not labelled), for the cooperating evaluation. Blank rows and rows whose video
    starts with ``#`` are skipped. Raises ValueError on a malformed row, or (with
    ``check_files``) when files are missing.
    """
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    fields = [name.strip() for name in reader.fieldnames or []]
    if "video" not in fields or "label" not in fields:
        raise ValueError(f"the manifest needs the columns {', '.join(MANIFEST_COLUMNS)}; it has {fields}")
    rows: list[ManifestRow] = []
    for line, raw in enumerate(reader, start=2):
        values = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if isinstance(v, str)}
        video = values.get("video", "")
        if not video or video.startswith("#"):
            continue
        try:
            label = Label(values.get("label", "").lower())
        except ValueError:
            raise ValueError(
                f"line {line}: label must be live or attack, not {values.get('label')!r}"
            ) from None
        attack_type = values.get("attack_type") or None
        if label is Label.LIVE and attack_type is not None:
            raise ValueError(f"line {line}: a live row has no attack_type (got {attack_type!r})")
        if label is Label.ATTACK and attack_type is None:
            attack_type = "unspecified"
        movements = _movements(values.get("movements", ""), line)
        rows.append(ManifestRow(video, path.parent / video, label, attack_type, movements))
    if check_files:
        missing = [row.video for row in rows if not row.path.is_file()]
        if missing:
            raise ValueError(f"{len(missing)} file(s) not found next to {path}: {', '.join(missing)}")
    return rows


def _movements(raw: str, line: int) -> tuple[ChallengeType, ...] | None:
    if not raw:
        return None
    names = [n.strip().upper() for n in raw.replace(";", " ").split() if n.strip() and n.strip() != "-"]
    try:
        return tuple(ChallengeType(n) for n in names)
    except ValueError:
        raise ValueError(f"line {line}: unknown challenge type in movements {raw!r}") from None


def default_manifest(shared_data: Path) -> list[tuple[Path, Label, str | None]]:
    """The default presentations in a ``shared/data`` folder (those present): see DEFAULT_LIVE/ATTACKS."""
    entries: list[tuple[Path, Label, str | None]] = []
    for pattern in DEFAULT_LIVE:
        entries += [(p, Label.LIVE, None) for p in sorted(shared_data.glob(pattern))]
    entries += [
        (shared_data / f, Label.ATTACK, kind) for f, kind in DEFAULT_ATTACKS if (shared_data / f).is_file()
    ]
    return entries


def write_manifest(path: Path, entries: Iterable[tuple[Path, Label, str | None]]) -> Path:
    """Write a manifest at ``path`` with every file relative to its folder (POSIX separators)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for file, label, attack_type in entries:
        relative = Path(os.path.relpath(file.resolve(), folder)).as_posix()
        writer.writerow([relative, label.value, attack_type or ""])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


# -- error rates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRates:
    """ISO/IEC 30107-3 error rates (fractions 0..1; None where there is nothing to count)."""

    bona_fide: int
    bpcer: float | None
    attacks: dict[str, int]
    apcer: dict[str, float]

    @property
    def apcer_max(self) -> float | None:
        """The highest APCER over the attack types (the standard's figure for a PAD subsystem)."""
        return max(self.apcer.values()) if self.apcer else None


def error_rates(presentations: Iterable[tuple[Label, str | None, bool]]) -> ErrorRates:
    """BPCER and APCER per attack type from (label, attack type, classified live) triples.

    APCER(type) = attacks of that type classified live / attacks of that type;
    BPCER = live presentations classified attack / live presentations.
    """
    bona_fide = rejected = 0
    attacks: dict[str, int] = {}
    accepted: dict[str, int] = {}
    for label, attack_type, is_live in presentations:
        if label is Label.LIVE:
            bona_fide += 1
            rejected += not is_live
        else:
            kind = attack_type or "unspecified"
            attacks[kind] = attacks.get(kind, 0) + 1
            accepted[kind] = accepted.get(kind, 0) + bool(is_live)
    return ErrorRates(
        bona_fide=bona_fide,
        bpcer=rejected / bona_fide if bona_fide else None,
        attacks=dict(sorted(attacks.items())),
        apcer={kind: accepted[kind] / count for kind, count in sorted(attacks.items())},
    )


# -- sessions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChallengeResult:
    challenge: Challenge
    status: ChallengeStatus
    reason: str | None
    seconds: float | None
    played: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.challenge.type.value,
            "target": list(self.challenge.target) if self.challenge.target is not None else None,
            "status": self.status.value,
            "reason": self.reason,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "played": list(self.played),
        }


@dataclass(frozen=True)
class SessionResult:
    decision: LivenessDecision
    challenges: tuple[ChallengeResult, ...]
    frames: int
    spoof_scores: tuple[float, ...]
    identity_min_cosine: float | None
    #: When challenge 0's clock started (seconds from the first frame; None: never, NOT_READY).
    started_s: float | None = 0.0
    #: The pre-checks' problems while the subject was not ready, each time they changed (t, codes).
    guidance: tuple[tuple[float, tuple[str, ...]], ...] = ()


def run_session(
    subject: ScriptedSubject,
    challenges: Sequence[Challenge],
    models: SessionModels,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    readiness: Readiness | None = DEFAULT_READINESS,
    lead_in: Sequence[Image] = (),
) -> SessionResult:
    """One liveness session with ``subject`` answering ``challenges``, judged by the worker's own
    session step: each frame JPEG-compressed, analysed by a
    :class:`~services.liveness.frames.FrameProcessor`, its analysis stored and read back, then one
    :func:`~services.liveness.replay.replay_step` per frame (pre-checks, challenge clock, frozen
    stream, identity gate, decision), each frame saying which challenge the subject had on screen.

    ``readiness``: the pre-checks the worker runs (None: challenge 0 starts on the first frame, as
    a worker without pre-checks would). ``lead_in``: pictures shown before the subject's own (an
    unready start, :mod:`faceproof.testing.unready`); the subject starts answering after them.
    """
    subject.prepare(challenges)
    analyzer = models.analyzer
    processor = FrameProcessor(analyzer, models.embedder, concurrency=1, detect_every=analyzer.detect_every)
    try:
        return _Session(subject, challenges, models, thresholds, readiness, processor).run(lead_in)
    finally:
        processor.close()


class _Session:
    """The frame loop of :func:`run_session`: the subject plays, the worker's step judges."""

    def __init__(
        self,
        subject: ScriptedSubject,
        challenges: Sequence[Challenge],
        models: SessionModels,
        thresholds: Thresholds,
        readiness: Readiness | None,
        processor: FrameProcessor,
    ) -> None:
        self.subject = subject
        self.challenges = tuple(challenges)
        self.thresholds = thresholds
        self.readiness = readiness
        self.processor = processor
        self.identity_threshold = models.identity_threshold
        #: Observes the embeddings the replay's identity gate judges, for the report's lowest cosine.
        self.identity = IdentityCheck(models.identity_threshold)
        self.guidance: list[tuple[float, tuple[str, ...]]] = []

    def step(self, progress: ReplayProgress, frames: Sequence[ReplayFrame]) -> ReplayResult:
        return replay_step(
            self.challenges,
            progress,
            frames,
            identity_threshold=self.identity_threshold,
            thresholds=self.thresholds,
            readiness=self.readiness,
        )

    def frame(self, sequence: int, picture: Image, shown: int) -> ReplayFrame:
        analysed = self.processor.analyse_now("evaluation", sequence, camera_jpeg(picture))
        analysis = FrameAnalysis.from_dict(analysed.analysis.to_dict())  # stored, read back
        embedding = None if analysed.embedding is None else np.asarray(analysed.embedding, np.float32)
        if embedding is not None and self.identity.wants(analysis):
            self.identity.check(embedding)
        return ReplayFrame(
            sequence,
            sequence / WORKER_FPS,
            analysis,
            spoof_score=analysed.spoof_score,
            embedding=embedding,
            shown=shown,
        )

    def run(self, lead_in: Sequence[Image]) -> SessionResult:
        result = self.step(ReplayProgress(), [])  # without pre-checks, challenge 0 is issued at once
        shown = len(result.issued) - 1
        self.subject.instruct(0)  # getting ready, the subject shows challenge 0's first picture
        ready_s = self.readiness.limit_s if self.readiness is not None else 0.0
        limit = (
            len(lead_in)
            + math.ceil((ready_s + len(self.challenges) * self.thresholds.time_limit_s) * WORKER_FPS)
            + 8
        )
        sequence = 0
        while result.decision is None:
            if sequence > limit:
                raise RuntimeError(f"no decision after {sequence} frames")
            picture = lead_in[sequence] if sequence < len(lead_in) else self.subject.next_frame()
            result = self.step(result.progress, [self.frame(sequence, picture, shown)])
            if result.guidance is not None and result.guidance.changed:
                self.guidance.append((sequence / WORKER_FPS, result.guidance.problems))
            if len(result.issued) - 1 > shown:  # the agent shows the issued challenge from the next frame
                shown = len(result.issued) - 1
                self.subject.instruct(shown)
            sequence += 1
        return self.result(result, sequence)

    def result(self, result: ReplayResult, frames: int) -> SessionResult:
        assert result.decision is not None
        challenges = []
        for index, outcome in enumerate(result.outcomes):
            verdict = result.verdicts[index] if index < len(result.verdicts) else None
            seconds = None
            if verdict is not None and verdict.decided_at is not None and index < len(result.issued):
                seconds = verdict.decided_at - result.issued[index].t
            played = tuple(self.subject.played.get(index, [])) if index < len(result.issued) else ()
            challenges.append(
                ChallengeResult(outcome.challenge, outcome.status, outcome.reason, seconds, played)
            )
        return SessionResult(
            decision=result.decision,
            challenges=tuple(challenges),
            frames=frames,
            spoof_scores=result.spoof_scores,
            identity_min_cosine=self.identity.min_cosine,
            started_s=result.issued[0].t if result.issued else None,
            guidance=tuple(self.guidance),
        )


def evaluable_types(segments: VideoSegments) -> tuple[ChallengeType, ...]:
    """Challenge types the evaluation draws by default: those with an annotated segment in some
    video, plus those the subject synthesises by moving the picture (MOVE_CLOSER, NOSE_TO_TARGET)."""
    annotated = {kind for kind in ChallengeType if segments.for_challenge(kind)}
    return tuple(kind for kind in ChallengeType if kind in annotated or kind in RIGID_CHALLENGES)


def draw_for(
    name: str,
    count: int,
    seed: int,
    allowed: Sequence[ChallengeType],
    nose_start: tuple[float, float] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[Challenge]:
    """The challenges of presentation ``name`` (its file name): seeded, so runs repeat."""
    rng = random.Random(f"{seed}:{name}")
    return draw_challenges(count, allowed, rng, nose_start=nose_start, thresholds=thresholds)


@dataclass(frozen=True)
class PresentationResult:
    row: ManifestRow
    session: SessionResult
    seconds: float
    #: The unready start shown before the row's material (``--unready``), if any.
    unready: Unready | None = None

    @property
    def decision(self) -> LivenessDecision:
        return self.session.decision

    def to_dict(self) -> dict[str, Any]:
        session = self.session
        median = session.decision.spoof_median
        return {
            "video": self.row.video,
            "label": self.row.label.value,
            "attack_type": self.row.attack_type,
            **session.decision.to_dict(),
            "challenges": [c.to_dict() for c in session.challenges],
            "spoof_median": None if median is None else round(median, 4),
            "identity_min_cosine": None
            if session.identity_min_cosine is None
            else round(session.identity_min_cosine, 4),
            "frames": session.frames,
            "seconds": round(self.seconds, 2),
            "unready": None if self.unready is None else self.unready.value,
            "started_s": None if session.started_s is None else round(session.started_s, 3),
            "guidance": [{"t": round(t, 3), "problems": list(p)} for t, p in session.guidance],
        }


def evaluate(
    rows: Sequence[ManifestRow],
    models: SessionModels,
    *,
    challenges: int = DEFAULT_CHALLENGES,
    seed: int = DEFAULT_SEED,
    allowed: Sequence[ChallengeType] | None = None,
    max_seconds: float | None = None,
    segments: VideoSegments | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    on_result: Callable[[PresentationResult], None] | None = None,
    cooperating: bool = False,
    readiness: Readiness | None = DEFAULT_READINESS,
    unready: Sequence[Unready] = (),
    unready_seconds: float = DEFAULT_UNREADY_SECONDS,
    unready_after_ready: bool = False,
) -> list[PresentationResult]:
    """Run every row as a session; ``on_result`` hears each result as it is ready.

    ``cooperating``: a row with a ``movements`` label draws only from those types (at most
    ``challenges`` of them); a live row labelled with none of the allowed types is left out
    (nobody asked it anything it did). Rows without the label draw from every allowed type.
    ``readiness``: the worker's pre-checks (None: without them). ``unready``: every live row
    starts with ``unready_seconds`` of its own first frames made unready by one of these
    conditions (:func:`unready_for`), then plays as usual; ``unready_after_ready``: after
    ``Readiness.ready_frames`` copies of the row's first frame, so that the subject is ready and
    challenge 0 starts on the unready frames (the light going out, the face slipping away as the
    challenges begin; the subject answers after them).
    """
    segments = segments if segments is not None else load_video_segments()
    types = tuple(allowed) if allowed is not None else evaluable_types(segments)
    results = []
    for row in rows:
        pool = types
        if cooperating and row.movements is not None:
            pool = tuple(t for t in types if t in row.movements)
            if not pool:
                continue
        started = time.perf_counter()
        media = Media.from_path(row.path, max_seconds=max_seconds)
        subject = ScriptedSubject(media, models.analyzer, segments=segments, thresholds=thresholds)
        count = min(challenges, len(pool))
        drawn = draw_for(row.path.name, count, seed, pool, subject.nose_start(), thresholds)
        condition = unready_for(row, unready, seed) if unready else None
        lead_in = (
            _lead_in(subject, condition, unready_seconds, seed, after_ready=unready_after_ready)
            if condition is not None
            else ()
        )
        session = run_session(
            subject, drawn, models, thresholds=thresholds, readiness=readiness, lead_in=lead_in
        )
        result = PresentationResult(
            row, session, time.perf_counter() - started, condition if lead_in else None
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def unready_for(row: ManifestRow, conditions: Sequence[Unready], seed: int) -> Unready | None:
    """The unready start of ``row``: None for attacks, else one of ``conditions`` drawn with
    ``random.Random(f"{seed}:{file name}:unready")`` (reproducible, whatever else the manifest holds)."""
    if row.label is not Label.LIVE or not conditions:
        return None
    return random.Random(f"{seed}:{row.path.name}:unready").choice(list(conditions))


def _lead_in(
    subject: ScriptedSubject, condition: Unready, seconds: float, seed: int, *, after_ready: bool = False
) -> tuple[Image, ...]:
    """``seconds`` of the subject's first frames made unready (none when no frame shows a face);
    ``after_ready``: after ``ready_frames`` copies of its first frame as it is (the pre-checks pass
    on them, so challenge 0 starts on the unready frames)."""
    box = next((r.detected.box for r in subject.rehearsal() if r.detected.box is not None), None)
    if box is None:
        return ()
    ready = (subject.media.frames[0],) * DEFAULT_READINESS.ready_frames if after_ready else ()
    return ready + unready_prefix(
        subject.media.frames, box, condition, round(seconds * WORKER_FPS), seed=seed
    )


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def report(
    results: Sequence[PresentationResult],
    *,
    seed: int,
    challenges: int,
    types: Sequence[ChallengeType],
    prechecks: bool = True,
    unready: Sequence[Unready] = (),
    unready_after_ready: bool = False,
) -> dict[str, Any]:
    """The JSON report: ``videos``, ``bpcer``, ``apcer`` per attack type, ``decisions``, and context;
    ``layers``: the same rates for each layer alone and combined, ``per_challenge`` false
    reject / accept rates and ``live_rejections`` (live rows by their first reason), each with
    its 95 % Clopper-Pearson interval (see :func:`layer_rates`)."""
    rates = error_rates((r.row.label, r.row.attack_type, r.decision.is_live) for r in results)
    return {
        "prechecks": prechecks,
        "unready": [u.value for u in unready],
        "unready_after_ready": unready_after_ready,
        "layers": layer_rates(results),
        "per_challenge": challenge_rates(results),
        "live_rejections": live_rejections(results),
        "videos": len(results),
        "bpcer": _rate(rates.bpcer),
        "apcer": {kind: round(rate, 4) for kind, rate in rates.apcer.items()},
        "apcer_max": _rate(rates.apcer_max),
        "bona_fide": rates.bona_fide,
        "attacks": rates.attacks,
        "seed": seed,
        "challenges": challenges,
        "types": [t.value for t in types],
        "decisions": [r.to_dict() for r in results],
    }


# -- each layer alone, and per challenge type -------------------------------------------------

#: What each layer alone says about a presentation: every challenge passed (the challenge engine
#: with passive anti-spoofing switched off); the anti-spoofing median at or above its threshold
#: (anti-spoofing alone); the decision (both).
LAYERS: Final[dict[str, Callable[[PresentationResult], bool]]] = {
    "challenges": lambda r: all(c.status is ChallengeStatus.PASSED for c in r.session.challenges),
    "antispoof": lambda r: spoof_suspected(r.session.spoof_scores) is False,
    "combined": lambda r: r.decision.is_live,
}


def layer_rates(results: Sequence[PresentationResult]) -> dict[str, Any]:
    """Per layer: ``bpcer`` and ``apcer`` per attack type, each ``{rate, errors, count, ci95}``."""
    out: dict[str, Any] = {}
    for name, accepts in LAYERS.items():
        live = [accepts(r) for r in results if r.row.label is Label.LIVE]
        by_type: dict[str, list[bool]] = {}
        for r in results:
            if r.row.label is Label.ATTACK:
                by_type.setdefault(r.row.attack_type or "unspecified", []).append(accepts(r))
        out[name] = {
            "bpcer": Rate(sum(not a for a in live), len(live)).to_dict(),
            "apcer": {kind: Rate(sum(v), len(v)).to_dict() for kind, v in sorted(by_type.items())},
        }
    return out


def live_rejections(results: Sequence[PresentationResult]) -> dict[str, Any]:
    """Per first reason of a rejected live row (TIMEOUT, NOT_READY, a gate, ...): that many of
    the live rows, ``{rate, errors, count, ci95}``."""
    live = [r for r in results if r.row.label is Label.LIVE]
    reasons: dict[str, int] = {}
    for r in live:
        if not r.decision.is_live:
            first = r.decision.reasons[0] if r.decision.reasons else "-"
            reasons[first] = reasons.get(first, 0) + 1
    return {reason: Rate(n, len(live)).to_dict() for reason, n in sorted(reasons.items())}


def challenge_rates(results: Sequence[PresentationResult]) -> dict[str, Any]:
    """Per challenge type, over the challenges a session reached (passed or failed, not left
    pending behind an earlier failure): ``frr`` on live rows (failed / reached) and ``far`` on
    attacks (passed / reached), with their reasons for failing."""
    out: dict[str, Any] = {}
    for kind in ChallengeType:
        counts = {Label.LIVE: [0, 0], Label.ATTACK: [0, 0]}
        reasons: dict[str, int] = {}
        for r in results:
            for c in r.session.challenges:
                if c.challenge.type is not kind or c.status is ChallengeStatus.PENDING:
                    continue
                passed = c.status is ChallengeStatus.PASSED
                counts[r.row.label][0] += (not passed) if r.row.label is Label.LIVE else passed
                counts[r.row.label][1] += 1
                if not passed and r.row.label is Label.LIVE:
                    reasons[c.reason or "-"] = reasons.get(c.reason or "-", 0) + 1
        out[kind.value] = {
            "frr": Rate(*counts[Label.LIVE]).to_dict(),
            "far": Rate(*counts[Label.ATTACK]).to_dict(),
            "live_failures": reasons,
        }
    return out
