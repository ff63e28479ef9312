"""Frame sampling by frame time, fitting into 640x480 and JPEG encoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from services.call_agent.sampling import ArrivalLimit, FrameSampler, encode_jpeg, fit_image, fit_size


def kept(sampler: FrameSampler, times: list[float]) -> list[float]:
    return [t for t in times if sampler.keep(t)]


def test_a_30_fps_stream_is_sampled_at_8_fps() -> None:
    times = [i / 30 for i in range(90)]  # 3 s
    result = kept(FrameSampler(8.0), times)
    assert 23 <= len(result) <= 25
    gaps = np.diff(result)
    assert gaps.min() >= 1 / 30 and gaps.max() <= 2 / 8


def test_a_stream_at_the_sampling_rate_keeps_every_frame_despite_jitter() -> None:
    rng = np.random.default_rng(1)
    times = [i / 8 + float(rng.uniform(-0.03, 0.03)) for i in range(40)]
    assert len(kept(FrameSampler(8.0), times)) == 40


def test_repeated_or_slightly_late_times_are_dropped_and_a_clock_reset_starts_afresh() -> None:
    sampler = FrameSampler(8.0)
    assert sampler.keep(100.0)
    assert not sampler.keep(100.0)
    assert not sampler.keep(99.9)
    assert sampler.keep(100.125)
    assert sampler.keep(0.0)  # a new stream: time jumped back by minutes
    assert sampler.keep(0.125)


def test_wants_says_what_keep_would_do_and_changes_nothing() -> None:
    sampler = FrameSampler(8.0)
    assert sampler.wants(100.0) and sampler.wants(100.0)
    assert sampler.keep(100.0)
    assert not sampler.wants(100.0) and sampler.wants(100.125)


def test_arrivals_are_bounded_by_the_agents_clock_after_a_burst() -> None:
    limit = ArrivalLimit(rate=10.0, burst=16.0)
    burst = [limit.take(0.0) for _ in range(20)]
    assert burst.count(True) == 16  # frames that arrive together after a stall
    steady = [limit.take(1.0 + i / 30) for i in range(90)]  # 30 a second for 3 s
    assert 38 <= steady.count(True) <= 41  # the 10 refilled in the second before, then 10 a second


def test_a_camera_at_the_frame_rate_never_meets_the_limit() -> None:
    limit = ArrivalLimit(rate=10.0, burst=16.0)
    assert all(limit.take(i / 8) for i in range(80))


def test_fps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameSampler(0.0)


@pytest.mark.parametrize(
    ("size", "fitted"),
    [
        ((1280, 720), (640, 360)),
        ((1920, 1080), (640, 360)),
        ((480, 640), (360, 480)),
        ((640, 480), (640, 480)),
        ((320, 240), (320, 240)),  # never upscaled
        ((1000, 480), (640, 307)),
        ((4000, 10), (640, 2)),
    ],
)
def test_fit_size_keeps_the_aspect_within_640x480(size: tuple[int, int], fitted: tuple[int, int]) -> None:
    assert fit_size(*size) == fitted


def test_fit_image_and_jpeg_round_trip() -> None:
    image = np.zeros((720, 1280, 3), dtype=np.uint8)
    image[:, :640] = (0, 0, 255)  # BGR red on the left
    fitted = fit_image(image)
    assert fitted.shape == (360, 640, 3)
    data = encode_jpeg(fitted, 85)
    assert data[:2] == b"\xff\xd8"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (360, 640, 3)
    assert decoded[180, 100, 2] > 200 and decoded[180, 100, 0] < 60  # still red on the left (not mirrored)
    assert decoded[180, 500].max() < 60
    small = np.zeros((100, 80, 3), dtype=np.uint8)
    assert fit_image(small) is small
