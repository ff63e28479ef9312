"""Exact (Clopper-Pearson) confidence intervals for error rates counted on few presentations.

A rate of 0 out of 13 says little on its own: the two-sided 95 % Clopper-Pearson interval
is [0, 0.247]. Pure Python (binomial tails summed exactly, bounds found by bisection), so the
evaluation needs no statistics package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Rate", "clopper_pearson", "rate"]


def _upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1.0 - p) ** (n - i) for i in range(k, n + 1))


def _bisect(predicate_low: Any, low: float = 0.0, high: float = 1.0) -> float:
    for _ in range(60):
        middle = (low + high) / 2
        if predicate_low(middle):
            low = middle
        else:
            high = middle
    return (low + high) / 2


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The two-sided exact interval for ``k`` events in ``n`` trials (n >= 1)."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1.0 - confidence
    # lower: the p at which P(X >= k) = alpha / 2; upper: the p at which P(X <= k) = alpha / 2
    lower = 0.0 if k == 0 else _bisect(lambda p: _upper_tail(k, n, p) < alpha / 2)
    upper = 1.0 if k == n else _bisect(lambda p: 1.0 - _upper_tail(k + 1, n, p) > alpha / 2)
    return lower, upper


@dataclass(frozen=True)
class Rate:
    """``errors`` of ``count`` presentations, with the 95 % Clopper-Pearson interval."""

    errors: int
    count: int

    @property
    def value(self) -> float | None:
        return self.errors / self.count if self.count else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return clopper_pearson(self.errors, self.count) if self.count else None

    def to_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {
            "rate": None if self.value is None else round(self.value, 4),
            "errors": self.errors,
            "count": self.count,
            "ci95": None if interval is None else [round(interval[0], 4), round(interval[1], 4)],
        }

    def __str__(self) -> str:
        interval = self.interval
        if interval is None or self.value is None:
            return "n/a"
        return f"{self.errors}/{self.count} = {self.value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def rate(errors: int, count: int) -> Rate:
    return Rate(errors, count)
