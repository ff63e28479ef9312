"""`faceproof bench liveness-step`'s arithmetic (the run itself needs models, a video and a
database: docs/benchmarks.md has its numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceproof.bench.environment import BenchError
from faceproof.bench.liveness_step import NEVER_DECIDED, StepBench, _summary, run_step_bench


def test_summary_is_the_median_and_spread_of_the_sessions_means_and_of_their_last_steps() -> None:
    # three sessions of 12 steps: (wall s, CPU s) per step
    sessions = [
        [(0.010, 0.004)] * 2 + [(0.020, 0.008)] * 10,
        [(0.030, 0.006)] * 12,
        [(0.001, 0.001)] * 12,
    ]
    summary = _summary(sessions)
    assert summary["ms_per_frame"] == pytest.approx(18.333, abs=1e-3)
    assert summary["ms_per_frame_min_max"] == [1.0, 30.0]
    assert summary["cpu_ms_per_frame"] == pytest.approx(6.0)
    assert summary["last_10_steps_ms"] == pytest.approx(20.0)
    assert summary["last_10_steps_cpu_ms_min_max"] == [1.0, 8.0]


def test_sizes_and_repeats_must_be_positive() -> None:
    with pytest.raises(BenchError):
        run_step_bench(StepBench(models_dir=Path("."), video=Path("v.mp4"), sizes=(0, 10)))
    with pytest.raises(BenchError):
        run_step_bench(StepBench(models_dir=Path("."), video=Path("v.mp4"), repeats=0))


def test_the_bench_sessions_thresholds_never_end_a_challenge() -> None:
    assert NEVER_DECIDED.time_limit_s >= 3600 and NEVER_DECIDED.turn_min_delta_deg > 180
    assert NEVER_DECIDED.gate_min_frames > 1000
