"""From cosine similarity to a calibrated 0..1 similarity score, and the decision threshold.

``similarity = 1 / (1 + exp(-(a * cosine + b)))`` with ``a`` and ``b`` fitted by logistic
regression (Platt scaling) on labelled pairs, so that the score reads as an estimate of the
probability that two faces are the same person, *on data like the fitting pairs* (LFW).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

__all__ = ["DEFAULT_FALSE_MATCH_RATE", "Calibration"]

#: The false-match rate the default decision threshold stands for.
DEFAULT_FALSE_MATCH_RATE = 1e-3


@dataclass(frozen=True)
class Calibration:
    """Platt parameters ``a`` and ``b`` and the cosine decision threshold of an embedder."""

    a: float
    b: float
    cosine_threshold: float
    #: Measured (false-match rate, cosine threshold) points, rates decreasing; see docs/models.md.
    fmr_cosines: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if not self.a > 0:
            raise ValueError("a must be positive so that similarity grows with cosine")
        rates = [rate for rate, _ in self.fmr_cosines]
        if rates != sorted(rates, reverse=True) or any(not 0 < rate < 1 for rate in rates):
            raise ValueError("fmr_cosines must list rates in (0, 1), largest first")

    def cosine_for_false_match_rate(self, rate: float) -> float | None:
        """The cosine threshold for a target false-match rate, interpolated on log(rate).

        ``None`` when the rate lies outside the measured range (the pack cannot promise it).
        Without measurements only the default rate is known: ``cosine_threshold``.
        """
        if not self.fmr_cosines:
            return self.cosine_threshold if math.isclose(rate, DEFAULT_FALSE_MATCH_RATE) else None
        points = self.fmr_cosines
        for (high_rate, low_cos), (low_rate, high_cos) in itertools.pairwise(points):
            if low_rate <= rate <= high_rate:
                t = (math.log(high_rate) - math.log(rate)) / (math.log(high_rate) - math.log(low_rate))
                return low_cos + t * (high_cos - low_cos)
        only_rate, only_cos = points[0]
        return only_cos if len(points) == 1 and math.isclose(rate, only_rate) else None

    def similarity(self, cosine: float) -> float:
        """Calibrated similarity in (0, 1) for a cosine similarity in [-1, 1]."""
        z = self.a * cosine + self.b
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)  # the same value, without overflow for very negative z
        return e / (1.0 + e)

    @property
    def threshold(self) -> float:
        """The decision threshold on the similarity scale: ``similarity(cosine_threshold)``."""
        return self.similarity(self.cosine_threshold)
