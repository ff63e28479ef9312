"""Latency summaries: percentiles of samples in seconds, reported in milliseconds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

__all__ = ["evenly", "ms_summary", "percentile_ms", "rate"]

T = TypeVar("T")


def percentile_ms(samples_s: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100, linear interpolation) of ``samples_s``, in ms, 3 decimals."""
    if not samples_s:
        raise ValueError("no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    return round(float(np.percentile(np.asarray(samples_s, dtype=np.float64), q)) * 1000.0, 3)


def ms_summary(samples_s: Sequence[float]) -> dict[str, float]:
    """``{"p50", "p95", "p99", "mean", "n"}`` of samples in seconds; times in ms."""
    if not samples_s:
        raise ValueError("no samples")
    return {
        "p50": percentile_ms(samples_s, 50),
        "p95": percentile_ms(samples_s, 95),
        "p99": percentile_ms(samples_s, 99),
        "mean": round(float(np.mean(samples_s)) * 1000.0, 3),
        "n": len(samples_s),
    }


def rate(count: int, seconds: float) -> float:
    """Events per second, 2 decimals; 0 when nothing was timed."""
    return round(count / seconds, 2) if seconds > 0 else 0.0


def evenly(items: Sequence[T], count: int) -> list[T]:
    """``count`` items spread evenly over ``items``, in order (all of them when there are fewer)."""
    if count <= 0:
        raise ValueError("count must be positive")
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(index * step)] for index in range(count)]
