"""`faceproof bench liveness-capacity`'s verdicts: when a level of the sweep meets issue 15's target
(every session decided, 8 fps analysed, decision p95 within 300 ms), and which N the sweep reports."""

from __future__ import annotations

import cv2
import numpy as np

from faceproof.bench.capacity import DECISION_TARGET_MS, LevelVerdict, _Jpegs, capacity, meets_target


def level(
    sessions: int = 4, decided: int = 4, fps: float | None = 8.0, p95: float | None = 200.0
) -> LevelVerdict:
    return LevelVerdict(sessions=sessions, decided=decided, analysed_fps_min=fps, decision_p95_ms=p95)


def test_a_level_meets_the_target_when_every_session_kept_up_and_decided_in_time() -> None:
    assert meets_target(level())
    assert meets_target(level(fps=7.6, p95=DECISION_TARGET_MS))  # 95 % of 8 fps, exactly 300 ms


def test_a_backlog_a_late_decision_or_an_undecided_session_misses_it() -> None:
    assert not meets_target(level(fps=7.5))  # the slowest session fell behind
    assert not meets_target(level(p95=300.1))
    assert not meets_target(level(decided=3))
    assert not meets_target(level(fps=None, p95=None, decided=0))
    assert not meets_target(level(p95=None))  # no deciding frame found: nothing to show


def test_capacity_is_the_largest_n_reached_without_a_failure_below_it() -> None:
    assert capacity({1: True, 2: True, 4: True, 6: False, 8: False}) == 4
    assert capacity({8: True, 1: True, 4: True}) == 8  # the order of the sweep does not matter
    assert capacity({1: True, 2: False, 4: True}) == 1  # a failure caps it, a later pass is noise
    assert capacity({1: False, 2: True}) is None
    assert capacity({}) is None


def test_each_distinct_picture_is_encoded_once_and_reads_back_as_itself() -> None:
    jpegs = _Jpegs()
    rng = np.random.default_rng(0)
    first = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    second = first.copy()
    second[0, 0, 0] ^= 1
    data = jpegs(first)
    assert jpegs(first.copy()) is data  # the same picture again: the same bytes, not re-encoded
    assert jpegs(second) is not data
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape == first.shape
    assert float(np.abs(decoded.astype(float) - first.astype(float)).mean()) < 60
