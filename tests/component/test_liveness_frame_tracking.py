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


def test_a_session_that_sent_no_frame_for_a_while_leaves_no_tracking_state() -> None:
    """Its last face mesh is dropped once it was idle TRACK_IDLE_S (an ended or erased session's
    landmarks do not stay in the worker's memory); a frame after that is detected afresh."""
    import time

    from services.liveness.frames import TRACK_IDLE_S

    async def run() -> tuple[int, int, bool]:
        m = models()
        processor = FrameProcessor(m.analyzer, m.embedder, concurrency=1)
        try:
            for sequence in range(3):
                await processor.analyse("idle", sequence, jpegs()[sequence], eyes=False)
            await processor.analyse("busy", 0, jpegs()[0], eyes=False)
            now = time.monotonic()
            kept = processor.forget_idle(now + TRACK_IDLE_S / 2)  # nobody idle long enough yet
            dropped = processor.forget_idle(now + TRACK_IDLE_S + 1)
            again = await processor.analyse("idle", 3, jpegs()[3], eyes=False)  # would be tracked
            return kept, dropped, again.analysis.detected
        finally:
            processor.close()

    kept, dropped, detected_again = asyncio.run(run())
    assert (kept, dropped) == (0, 2)
    assert detected_again
