"""From cosine similarity to a calibrated 0..1 similarity score, and the decision threshold.

``similarity = 1 / (1 + exp(-(a * cosine + b)))`` with ``a`` and ``b`` fitted by logistic
regression (Platt scaling) on labelled pairs, so that the score reads as an estimate of the
probability that two faces are the same person, *on data like the fitting pairs* (LFW).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Calibration"]


@dataclass(frozen=True)
class Calibration:
    """Platt parameters ``a`` and ``b`` and the cosine decision threshold of an embedder."""

    a: float
    b: float
    cosine_threshold: float

    def __post_init__(self) -> None:
        if not self.a > 0:
            raise ValueError("a must be positive so that similarity grows with cosine")

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
