"""Time the per-frame analysis on 640x480 frames: detection, mesh, eyes, anti-spoofing.

    nice -n 10 .venv/bin/python -m faceproof.bench.liveness_stages --models-dir ../shared/models \\
        --video ../shared/data/video/liveportrait_d9.mp4 --threads 2

Frames are letterboxed to 640x480 (the call agent's default capture size). Prints median and mean
milliseconds per frame for each stage, with detection on every frame and every 5th frame.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from faceproof.testing.annotate import read_frames
from services.liveness.analysis import FrameAnalyzer

__all__ = ["letterbox_to", "main"]


def letterbox_to(frame: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """Scale to fit ``width x height`` keeping the aspect ratio; pad the rest with black."""
    h, w = frame.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = round(w * scale), round(h * scale)
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    canvas[y : y + new_h, x : x + new_w] = resized
    return canvas


def _stats(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {statistics.fmean(values):.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args(argv)
    frames = [letterbox_to(f, 640, 480) for _, f in read_frames(args.video)][: args.frames]
    print(f"{len(frames)} frames of {args.video.name} at 640x480, {args.threads} threads; ms median / mean")
    for detect_every in (1, 5):
        analyzer = FrameAnalyzer.from_models_dir(
            args.models_dir, threads=args.threads, detect_every=detect_every
        )
        analyzer.analyze(frames[0])  # warm-up
        analyzer.reset()
        detect, mesh, eyes, total, spoof = [], [], [], [], []
        for frame in frames:
            analysis = analyzer.analyze(frame)
            timings = analysis.timings
            if analysis.detected:
                detect.append(timings.detect_ms)
            mesh.append(timings.mesh_ms)
            eyes.append(timings.eyes_ms)
            total.append(timings.total_ms)
            if analysis.box is not None:
                start = time.perf_counter()
                analyzer.spoof_score(frame, analysis.box)
                spoof.append((time.perf_counter() - start) * 1000.0)
        print(
            f"detect_every={detect_every}: detection {_stats(detect)} (on {len(detect)} frames), "
            f"mesh {_stats(mesh)}, eyes {_stats(eyes)}, per frame {_stats(total)}; "
            f"anti-spoofing (2 models) {_stats(spoof)}"
        )


if __name__ == "__main__":
    main()
