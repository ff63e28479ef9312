"""The frame counter `faceproof bench room` writes into the subject's frames survives what the
call agent does to a frame (scaled into 640x480, JPEG at quality 85)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceproof.bench.room import read_stamp, stamp


@pytest.mark.parametrize("counter", [0, 1, 77, 4095, 65535])
@pytest.mark.parametrize("size", [(512, 512), (720, 1280)])
def test_the_counter_reads_back_after_scaling_and_jpeg(counter: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(counter)
    image = rng.integers(60, 200, size=(*size, 3), dtype=np.uint8)
    scale = min(1.0, 640 / size[1], 480 / size[0])
    scaled = cv2.resize(stamp(image, counter), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", scaled, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    decoded = np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), dtype=np.uint8)
    assert read_stamp(decoded, scaled.shape[1] / size[1]) == counter


def test_a_frame_without_a_counter_reads_as_none() -> None:
    assert read_stamp(np.full((480, 640, 3), 128, dtype=np.uint8), 1.0) is None
