"""Where the liveness worker runs the detector, when one worker or two share a session's frames:
real models, a real recording, the frames as the call agent stores them (JPEG)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import cv2

from faceproof.testing.annotate import read_frames
from services.liveness.analysis import DEFAULT_DETECT_EVERY
from services.liveness.frames import AnalysedFrame, FrameProcessor
from services.liveness.session_models import SessionModels
from tests.paths import DATA_DIR, MODELS_DIR

FRAMES = 80


@functools.cache
def models() -> SessionModels:
    return SessionModels.load(MODELS_DIR, threads=1)


@functools.cache
def jpegs() -> list[bytes]:
    frames = [frame for _, frame in read_frames(DATA_DIR / "video" / "liveportrait_d3.mp4")][:FRAMES]
    return [bytes(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1]) for frame in frames]


def analyse(workers: int, deal: Sequence[int]) -> dict[int, AnalysedFrame]:
    """Each frame analysed by worker ``deal[sequence]`` (a processor of its own, the models shared)."""
    return asyncio.run(_analyse(workers, deal))


async def _analyse(workers: int, deal: Sequence[int]) -> dict[int, AnalysedFrame]:
    m = models()
    processors = [FrameProcessor(m.analyzer, m.embedder, concurrency=1) for _ in range(workers)]
    try:
        return {
            sequence: await processors[deal[sequence]].analyse("s-1", sequence, jpeg, eyes=False)
            for sequence, jpeg in enumerate(jpegs())
        }
    finally:
        for processor in processors:
            processor.close()


def detected(frames: dict[int, AnalysedFrame], sequences: Sequence[int]) -> list[int]:
    return [n for n in sequences if frames[n].analysis.detected]


def test_one_worker_in_order_detects_every_fifth_frame() -> None:
    frames = analyse(1, [0] * FRAMES)
    assert all(frames[n].analysis.measures is not None for n in frames)  # a face on every frame
    assert detected(frames, range(FRAMES)) == list(range(0, FRAMES, DEFAULT_DETECT_EVERY))


def test_two_workers_sharing_a_session_track_from_their_own_frame_two_back() -> None:
    # the broker's round robin: one worker gets the even sequences, the other the odd ones
    frames = analyse(2, [n % 2 for n in range(FRAMES)])
    assert all(frames[n].analysis.measures is not None for n in frames)
    for worker in (0, 1):
        own = list(range(worker, FRAMES, 2))
        runs = detected(frames, own)
        # the detector's cadence whatever the split: every 5th sequence, and no worker tracks on
        # a detection 5 or more sequences old (the mouth area's box is as fresh as on one worker)
        assert set(range(0, FRAMES, DEFAULT_DETECT_EVERY)) & set(own) <= set(runs)
        for n in own:
            last = max(d for d in runs if d <= n)
            assert n - last < DEFAULT_DETECT_EVERY
        # and the rest tracked: before, every frame of a shared session ran the detector
        assert len(runs) <= 0.45 * len(own)


def test_a_worker_that_missed_more_than_one_frame_detects() -> None:
    # a worker that gets every third frame has nothing recent to track from
    frames = analyse(3, [n % 3 for n in range(FRAMES)])
    assert detected(frames, range(FRAMES)) == list(range(FRAMES))
