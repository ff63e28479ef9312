"""Find, in real face videos, the segments that answer each challenge; write video_segments.json.

The scripted test subject answers a challenge by playing a segment of a real video. This script
finds those segments with the liveness analysis itself: every video is analysed frame by frame
(detector on every frame), then for every candidate start time (a 0.1 s grid) and every
challenge type a :class:`~services.liveness.challenges.ChallengeEvaluator` judges the frames from
that start. A start makes a segment when the challenge PASSES under every sampling the worker
may apply: all frames, 8 fps at three phases (sampled from the every-frame analysis, and
analysed again on their own with the worker's tracking between detections), each both as
recorded and with the first frame held for 0.5 s before it (the subject showing the segment's
first frame while the instruction appears, so the baseline is neutral); under the engine's
thresholds and under 10 % stricter ones (a margin for what compression and resizing do to the
measures); within 3 s of the start. The segment ends 0.3 s after the latest pass. Per type,
the shortest segments that do not overlap are kept (at most ``--per-type`` per video). The
same search runs on the horizontally mirrored videos (``mirrored_segments``).

NOSE_TO_TARGET is not searched: its target is random, and the subject answers it by moving
the picture so the nose lands on the target. MOVE_CLOSER is searched, but none of the videos
has a face that grows by 25 %; the subject answers it by scaling the picture up (both shown in
tests/component/test_liveness_video.py and docs/liveness.md).

    nice -n 10 .venv/bin/python -m faceproof.testing.annotate \\
        --models-dir ../shared/models --videos ../shared/data/video \\
        --out faceproof/testing/video_segments.json

:func:`load_video_segments` reads the file back.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Final, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from contracts.values import ChallengeType
from services.liveness.analysis import FrameAnalysis, FrameAnalyzer
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    Challenge,
    ChallengeEvaluator,
    ChallengeStatus,
    Thresholds,
)

__all__ = [
    "SEARCHED",
    "SEGMENTS_FILE",
    "AnalysedVideo",
    "VideoInfo",
    "VideoSegments",
    "analyze_video",
    "find_segments",
    "load_video_segments",
    "read_frames",
    "stricter",
]

SEGMENTS_FILE: Final = "video_segments.json"
WORKER_FPS: Final = 8.0
#: Sampling phases, as fractions of the worker's sampling period.
PHASES: Final = (0.0, 1 / 3, 2 / 3)
START_STEP_S: Final = 0.1
END_MARGIN_S: Final = 0.3
#: A challenge must pass within this time from the segment's start (the time limit is 6 s; a
#: subject needs slack for latency).
MAX_PASS_S: Final = 3.0
#: Segments must also pass with thresholds this much stricter (see :func:`stricter`).
ANNOTATION_MARGIN: Final = 1.1
HOLD_FIRST_FRAME_S: Final = 0.5
SPOOF_EVERY_S: Final = 0.5
#: The challenge types searched for (NOSE_TO_TARGET depends on a random target).
SEARCHED: Final = tuple(c for c in ChallengeType if c is not ChallengeType.NOSE_TO_TARGET)


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    width: int
    height: int
    frames: int
    real_score_median: float | None

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0


@dataclass(frozen=True)
class VideoSegments:
    """The annotation file: per video its info and, per challenge type, ``[start_s, end_s]`` lists."""

    videos: dict[str, VideoInfo]
    segments: dict[str, dict[ChallengeType, list[tuple[float, float]]]]
    mirrored_segments: dict[str, dict[ChallengeType, list[tuple[float, float]]]]

    def for_challenge(
        self, challenge: ChallengeType, *, include_mirrored: bool = True
    ) -> list[tuple[str, float, float, bool]]:
        """(video, start_s, end_s, mirrored) of every segment answering ``challenge``.

        ``mirrored``: play the video flipped horizontally.
        """
        found = [
            (video, start, end, False)
            for video, by_type in self.segments.items()
            for start, end in by_type.get(challenge, [])
        ]
        if include_mirrored:
            found += [
                (video, start, end, True)
                for video, by_type in self.mirrored_segments.items()
                for start, end in by_type.get(challenge, [])
            ]
        return found


def load_video_segments(path: Path | None = None) -> VideoSegments:
    """Read ``video_segments.json`` (by default the one shipped next to this module)."""
    if path is None:
        text = resources.files("faceproof.testing").joinpath(SEGMENTS_FILE).read_text(encoding="utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    videos = {
        name: VideoInfo(
            fps=float(v["fps"]),
            width=int(v["width"]),
            height=int(v["height"]),
            frames=int(v["frames"]),
            real_score_median=None if v.get("real_score_median") is None else float(v["real_score_median"]),
        )
        for name, v in data["videos"].items()
    }
    return VideoSegments(
        videos=videos,
        segments=_parse_segments(data["segments"]),
        mirrored_segments=_parse_segments(data.get("mirrored_segments", {})),
    )


def _parse_segments(raw: dict[str, Any]) -> dict[str, dict[ChallengeType, list[tuple[float, float]]]]:
    return {
        name: {
            ChallengeType(kind): [(float(s), float(e)) for s, e in spans] for kind, spans in by_type.items()
        }
        for name, by_type in raw.items()
    }


def read_frames(
    path: Path, start_s: float = 0.0, end_s: float | None = None, *, mirrored: bool = False
) -> Iterator[tuple[float, npt.NDArray[np.uint8]]]:
    """(timestamp, BGR frame) of a video from ``start_s`` to ``end_s``, timestamps = index / fps.

    ``mirrored`` flips every frame horizontally (a left turn becomes a right turn).
    """
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 30.0
        first = max(round(start_s * fps), 0)
        if first:
            capture.set(cv2.CAP_PROP_POS_FRAMES, first)
        index = first
        while end_s is None or index / fps <= end_s + 1e-9:
            ok, frame = capture.read()
            if not ok:
                break
            if mirrored:
                frame = cv2.flip(frame, 1)
            yield index / fps, np.ascontiguousarray(frame, dtype=np.uint8)
            index += 1
    finally:
        capture.release()


Stream = list[tuple[float, FrameAnalysis]]
_T = TypeVar("_T")


def _sample(pairs: Iterable[tuple[float, _T]], first: float, period: float) -> list[tuple[float, _T]]:
    """The first item at or after each tick ``first + k * period`` (a worker sampling at 1/period)."""
    sampled: list[tuple[float, _T]] = []
    tick = first
    for t, item in pairs:
        if t >= tick - 1e-9:
            sampled.append((t, item))
            tick = first + (math.floor((t - first) / period + 1e-9) + 1) * period
    return sampled


@dataclass(frozen=True)
class AnalysedVideo:
    """A video's info, every frame's analysis (detector on every frame), and the 8 fps streams a
    worker would see (3 phases), analysed with tracking between detections as the worker does."""

    info: VideoInfo
    frames: Stream
    tracked: tuple[Stream, ...]


def analyze_video(
    analyzer: FrameAnalyzer,
    path: Path,
    *,
    mirrored: bool = False,
    tracker: FrameAnalyzer | None = None,
) -> AnalysedVideo:
    """Analyse every frame with ``analyzer`` (which should detect on every frame) and, with
    ``tracker``, the 8 fps streams at phases 0, 1/3 and 2/3 of a sampling period."""
    capture = cv2.VideoCapture(str(path))
    fps = float(capture.get(cv2.CAP_PROP_FPS)) or 30.0
    capture.release()
    analyzer.reset()
    frames: Stream = []
    scores: list[float] = []
    next_spoof = 0.0
    width = height = 0
    for t, frame in read_frames(path, mirrored=mirrored):
        height, width = frame.shape[:2]
        analysis = analyzer.analyze(frame)
        frames.append((t, analysis))
        if analysis.box is not None and analyzer.antispoof is not None and t >= next_spoof:
            scores.append(analyzer.spoof_score(frame, analysis.box))
            next_spoof = t + SPOOF_EVERY_S
    info = VideoInfo(
        fps=fps,
        width=width,
        height=height,
        frames=len(frames),
        real_score_median=round(statistics.median(scores), 4) if scores else None,
    )
    tracked: list[Stream] = []
    if tracker is not None and fps > WORKER_FPS:
        period = 1.0 / WORKER_FPS
        for phase in PHASES:
            tracker.reset()
            sampled = _sample(read_frames(path, mirrored=mirrored), phase * period, period)
            tracked.append([(t, tracker.analyze(frame)) for t, frame in sampled])
    return AnalysedVideo(info=info, frames=frames, tracked=tuple(tracked))


def _schedules(video: AnalysedVideo, start: float) -> Iterator[tuple[Stream, float]]:
    """(stream, hold_s): the frame streams a worker may see from ``start``.

    All frames; 8 fps at 3 phases sampled from them; the tracked 8 fps streams. Each as
    recorded (hold 0) and with its first frame repeated for ``HOLD_FIRST_FRAME_S`` before it
    (later timestamps shifted by the hold).
    """
    window = [(t, f) for t, f in video.frames if t >= start - 1e-9]
    if not window:
        return
    period = 1.0 / WORKER_FPS
    variants = [(window, 1.0 / video.info.fps)]
    if video.info.fps > WORKER_FPS:
        variants += [(_sample(window, start + phase * period, period), period) for phase in PHASES]
    variants += [([(t, f) for t, f in stream if t >= start - 1e-9], period) for stream in video.tracked]
    for stream, step in variants:
        if not stream:
            continue
        yield stream, 0.0
        first_t, first = stream[0]
        count = round(HOLD_FIRST_FRAME_S / step)
        hold = count * step
        held = [(first_t + i * step, first) for i in range(count)]
        yield held + [(t + hold, f) for t, f in stream], hold


def _passes_at(
    video: AnalysedVideo, start: float, challenge: Challenge, thresholds: Thresholds
) -> float | None:
    """The latest pass time (in video time) over every schedule, or None if one does not pass."""
    latest = start
    for stream, hold in _schedules(video, start):
        evaluator = ChallengeEvaluator(challenge, stream[0][0], thresholds)
        for t, frame in stream:
            if evaluator.update(t, frame).done:
                break
        verdict = evaluator.verdict
        if verdict.status is not ChallengeStatus.PASSED or verdict.decided_at is None:
            return None
        latest = max(latest, verdict.decided_at - hold)
    return latest


def stricter(thresholds: Thresholds, factor: float = ANNOTATION_MARGIN) -> Thresholds:
    """``thresholds`` asking ``factor`` times more movement (and a deeper blink, a closer nose)."""
    th = thresholds
    return replace(
        th,
        turn_min_delta_deg=th.turn_min_delta_deg * factor,
        turn_min_abs_deg=th.turn_min_abs_deg * factor,
        look_min_delta_deg=th.look_min_delta_deg * factor,
        look_min_abs_deg=th.look_min_abs_deg * factor,
        blink_closed_ratio=th.blink_closed_ratio / factor,
        blink_open_ratio=min(th.blink_open_ratio * factor, 0.95),
        mouth_open_mar=th.mouth_open_mar * factor,
        mouth_open_delta=th.mouth_open_delta * factor,
        closer_min_growth=1.0 + (th.closer_min_growth - 1.0) * factor,
        nose_target_radius=th.nose_target_radius / factor,
        nose_min_travel=th.nose_min_travel * factor,
    )


def find_segments(
    video: AnalysedVideo,
    challenge_type: ChallengeType,
    *,
    per_type: int = 3,
    thresholds: Sequence[Thresholds] = (DEFAULT_THRESHOLDS, stricter(DEFAULT_THRESHOLDS)),
) -> list[tuple[float, float]]:
    """Non-overlapping ``[start_s, end_s]`` segments that pass ``challenge_type`` (shortest first)
    under every one of ``thresholds`` (by default: the engine's, and 10 % stricter ones, so a
    segment still passes after video compression and resizing nudge the measures)."""
    if challenge_type is ChallengeType.NOSE_TO_TARGET:
        raise ValueError("NOSE_TO_TARGET segments depend on the target; they are not searched")
    if not video.frames:
        return []
    duration = video.frames[-1][0]
    challenge = Challenge(challenge_type)
    candidates: list[tuple[float, float]] = []
    start = 0.0
    while start < duration:
        times = [_passes_at(video, start, challenge, th) for th in thresholds]
        passed = None if None in times else max(t for t in times if t is not None)
        if passed is not None and passed - start <= MAX_PASS_S:
            end = min(passed + END_MARGIN_S, duration)
            candidates.append((round(start, 2), round(end, 2)))
        start += START_STEP_S
    candidates.sort(key=lambda span: (span[1] - span[0], span[0]))
    chosen: list[tuple[float, float]] = []
    for span in candidates:
        if all(span[1] <= other[0] or span[0] >= other[1] for other in chosen):
            chosen.append(span)
        if len(chosen) == per_type:
            break
    return sorted(chosen)


def _segments_of(video: AnalysedVideo, per_type: int) -> dict[str, list[list[float]]]:
    found = {
        kind.value: [list(span) for span in find_segments(video, kind, per_type=per_type)]
        for kind in SEARCHED
    }
    return {kind: spans for kind, spans in found.items() if spans}


def annotate(
    videos: Sequence[Path],
    analyzer: FrameAnalyzer,
    tracker: FrameAnalyzer | None = None,
    *,
    per_type: int = 3,
    mirrored: bool = True,
) -> dict[str, Any]:
    """The annotation document: video infos, segments, and segments of the mirrored videos."""
    infos: dict[str, Any] = {}
    segments: dict[str, Any] = {}
    mirrored_segments: dict[str, Any] = {}
    for path in videos:
        video = analyze_video(analyzer, path, tracker=tracker)
        info = video.info
        infos[path.name] = {
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "frames": info.frames,
            "duration_s": round(info.duration_s, 2),
            "real_score_median": info.real_score_median,
        }
        segments[path.name] = _segments_of(video, per_type)
        line = f"{path.name}: {info.frames} frames at {info.fps:g} fps, real_score {info.real_score_median}"
        line += f"; {_summary(segments[path.name])}"
        if mirrored:
            flipped = analyze_video(analyzer, path, mirrored=True, tracker=tracker)
            mirrored_segments[path.name] = _segments_of(flipped, per_type)
            line += f"; mirrored: {_summary(mirrored_segments[path.name])}"
        print(line, flush=True)
    return {
        "$comment": (
            "Segments [start_s, end_s] of the real videos in ../shared/data/video that pass each challenge "
            "type with the liveness analysis; mirrored_segments: the same for the video flipped "
            "horizontally. Generated by faceproof/testing/annotate.py (see docs/liveness.md); "
            "do not edit by hand."
        ),
        "videos": infos,
        "segments": segments,
        "mirrored_segments": mirrored_segments,
    }


def _summary(found: dict[str, list[list[float]]]) -> str:
    return ", ".join(f"{kind} {len(spans)}" for kind, spans in found.items()) or "none"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--videos", type=Path, required=True, help="folder of .mp4 files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-type", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-mirrored", action="store_true", help="skip the mirrored videos")
    args = parser.parse_args(argv)
    analyzer = FrameAnalyzer.from_models_dir(args.models_dir, threads=args.threads, detect_every=1)
    tracker = FrameAnalyzer.from_models_dir(args.models_dir, threads=args.threads, use_antispoof=False)
    videos = sorted(args.videos.glob("*.mp4"))
    result = annotate(videos, analyzer, tracker, per_type=args.per_type, mirrored=not args.no_mirrored)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
