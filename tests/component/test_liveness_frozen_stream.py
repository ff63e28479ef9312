"""The frozen-stream check on real recordings: none of the shared videos, sampled at the worker's
8 fps and JPEG-compressed as the worker reads them, repeats a picture for anywhere near a second;
the same recording with one frame held (a paused or frozen injected stream) does, and the
worker's replay of its real analyses then fails with FROZEN_STREAM. A still photo sent through
the real VP8 encoder and decoder (aiortc's, as a WebRTC peer streams it) reads as frozen too,
although the encoder keeps refining the picture."""

from __future__ import annotations

import fractions
import functools
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from contracts.values import ChallengeType, Precheck
from faceproof.testing.scripted_subject import camera_round_trip
from services.liveness.analysis import FrameAnalyzer
from services.liveness.challenges import Challenge
from services.liveness.readiness import running_prechecks
from services.liveness.replay import ReplayFrame, replay
from services.liveness.stream import FROZEN_MIN_RUN, FROZEN_STREAM, FrozenCheck, frame_content
from tests.paths import DATA_DIR, MODELS_DIR, PEOPLE

VIDEOS = sorted((DATA_DIR / "video").glob("*.mp4"))
WORKER_FPS = 8.0
Image = npt.NDArray[np.uint8]


@functools.cache
def frames_of(path: Path) -> tuple[Image, ...]:
    """The recording at about 8 fps, fitted into 640x480 and JPEG round-tripped (as the worker
    reads the call agent's frames)."""
    capture = cv2.VideoCapture(str(path))
    step = (capture.get(cv2.CAP_PROP_FPS) or 30.0) / WORKER_FPS
    frames: list[Image] = []
    wanted, index = 0.0, 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index >= wanted:
            wanted += step
            height, width = frame.shape[:2]
            scale = min(640 / width, 480 / height, 1.0)
            size = (round(width * scale), round(height * scale))
            fitted = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            frames.append(camera_round_trip(np.asarray(fitted, dtype=np.uint8)))
        index += 1
    capture.release()
    return tuple(frames)


def longest_repeat(frames: tuple[Image, ...] | list[Image]) -> int:
    check = FrozenCheck()
    for frame in frames:
        check.update(frame_content(frame))
    return check.longest


def test_the_shared_recordings_are_videos() -> None:
    assert len(VIDEOS) >= 10, VIDEOS


@pytest.mark.parametrize("video", VIDEOS, ids=lambda p: p.stem)
def test_no_real_recording_reads_as_frozen(video: Path) -> None:
    frames = frames_of(video)
    assert len(frames) >= 20
    # the longest run measured is 3 (fomm_demo_old_00, whose source repeats frames): well under 8
    assert longest_repeat(frames) <= FROZEN_MIN_RUN // 2


@pytest.mark.parametrize("video", VIDEOS, ids=lambda p: p.stem)
def test_a_real_recording_with_one_frame_held_for_a_second_reads_as_frozen(video: Path) -> None:
    frames = list(frames_of(video))
    held = frames[:20] + [frames[20]] * (FROZEN_MIN_RUN + 1) + frames[21:]  # frame 20, then the run
    assert longest_repeat(held) >= FROZEN_MIN_RUN
    just_under = frames[:20] + [frames[20]] * FROZEN_MIN_RUN + frames[21:]  # one repeat short
    assert longest_repeat(just_under) < FROZEN_MIN_RUN


def test_the_worker_replay_of_a_frozen_real_stream_fails_with_frozen_stream() -> None:
    analyzer = FrameAnalyzer.from_models_dir(MODELS_DIR, threads=2, use_antispoof=False)
    frames = list(frames_of(DATA_DIR / "video" / "lestari15_real.mp4"))[:24]
    challenges = [Challenge(ChallengeType.TURN_LEFT), Challenge(ChallengeType.BLINK)]

    def session(stream: list[Image]) -> tuple[str, ...]:
        analyzer.reset()
        replay_frames = [
            ReplayFrame(
                sequence=n,
                t=n / WORKER_FPS,
                analysis=analyzer.analyze(frame),
                storage_key=f"sessions/s/frames/{n:08d}.jpg",
                spoof_score=0.9 if n % 2 == 0 else None,
            )
            for n, frame in enumerate(stream)
        ]
        result = replay(challenges, replay_frames, identity_threshold=0.35)
        # the recording ignores the instructions: undecided, or failed; either way, what it says
        return () if result.decision is None else result.decision.reasons

    assert FROZEN_STREAM not in session(frames)
    frozen = frames[:6] + [frames[6]] * (len(frames) * 3)  # paused after 0.75 s, until the time is up
    reasons = session(frozen)
    assert FROZEN_STREAM in reasons and "TIMEOUT" in reasons


def test_a_still_photo_streamed_through_vp8_reads_as_frozen() -> None:
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, VpxPayloadDescriptor
    from aiortc.jitterbuffer import JitterFrame

    still = cv2.imread(str(PEOPLE / "obama.jpg"), cv2.IMREAD_COLOR)
    assert still is not None
    photo = np.asarray(cv2.resize(still, (640, 480)), dtype=np.uint8)
    encoder, decoder = Vp8Encoder(), Vp8Decoder()
    sampled: list[Image] = []
    for n in range(120):  # 4 s of a 30 fps virtual camera showing the photo
        frame = av.VideoFrame.from_ndarray(photo, format="bgr24")
        frame.pts, frame.time_base = n * 3000, fractions.Fraction(1, 90_000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=n == 0)
        data = b"".join(VpxPayloadDescriptor.parse(payload)[1] for payload in payloads)
        for decoded in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            assert isinstance(decoded, av.VideoFrame)
            if n % 4 == 0:  # the call agent's 8 fps (about)
                picture = np.asarray(decoded.to_ndarray(format="bgr24"), dtype=np.uint8)
                sampled.append(camera_round_trip(picture))
    assert len(sampled) == 30
    assert longest_repeat(sampled) == len(sampled) - 1 >= FROZEN_MIN_RUN  # every pair repeats


def in_the_dark(frames: tuple[Image, ...], light: float, seed: int = 0) -> list[Image]:
    """The recording with ``light`` of its light and a dark sensor's noise (2 levels), JPEG 85."""
    rng = np.random.default_rng(seed)
    return [
        camera_round_trip(
            np.asarray(
                np.clip(f.astype(np.float32) * light + rng.normal(0, 2, f.shape), 0, 255), dtype=np.uint8
            )
        )
        for f in frames
    ]


def test_a_real_recording_in_the_dark_repeats_its_picture_and_the_prechecks_refuse_it() -> None:
    """Why the frozen-stream check passes over the frames the pre-checks refuse: a real subject in
    a dark room barely changes the coarse picture (18 repeats in a row in lestari15_real's 30
    frames at a quarter of its light, against 1 in the light), so a few seconds of dark would read
    as an injected still. Every such frame is refused TOO_DARK by the real analyzer, so the
    replay does not count it; frames lit enough to count repeat no more than in the light."""
    analyzer = FrameAnalyzer.from_models_dir(MODELS_DIR, threads=2, use_antispoof=False)
    dark = in_the_dark(frames_of(DATA_DIR / "video" / "lestari15_real.mp4"), 0.25)
    assert longest_repeat(dark) >= FROZEN_MIN_RUN // 2
    assert all(Precheck.TOO_DARK in running_prechecks(analyzer.analyze(f)) for f in dark)

    analyzer.reset()
    dim = in_the_dark(frames_of(DATA_DIR / "video" / "liveportrait_d9.mp4")[:40], 0.4)
    assert not any(running_prechecks(analyzer.analyze(f)) for f in dim)  # counted: face luma ~49
    assert longest_repeat(dim) <= FROZEN_MIN_RUN // 4
