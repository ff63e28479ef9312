"""Pure comparison logic: which faces are compared and how a result is formed. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from contracts.values import ErrorCode, FaceBox, ScoredFace


@dataclass(frozen=True)
class AnalyzedFace:
    box: tuple[float, float, float, float]
    score: float
    embedding: npt.NDArray[np.float32]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_box(self) -> FaceBox:
        x1, y1, x2, y2 = (round(v, 1) for v in self.box)
        return FaceBox(box=(x1, y1, x2, y2), score=round(self.score, 4))


class ComparisonError(Exception):
    """A permanent reason why two images cannot be compared (reported, not retried)."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Comparison:
    similarity: float
    match: bool
    threshold: float
    source_face: FaceBox
    target_faces: list[ScoredFace]


def cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator else 0.0


def compare_faces(
    source: Sequence[AnalyzedFace],
    targets: Sequence[AnalyzedFace],
    *,
    similarity: Callable[[float], float],
    threshold: float,
) -> Comparison:
    """Compare the largest source face with every target face.

    ``similarity`` maps a cosine to the pack's calibrated 0..1 scale; a face matches when its
    similarity is at or above ``threshold`` (same scale).
    """
    if not source:
        raise ComparisonError(ErrorCode.NO_FACE_IN_SOURCE, "no face was found in the source image")
    if not targets:
        raise ComparisonError(ErrorCode.NO_FACE_IN_TARGET, "no face was found in the target image")
    probe = max(source, key=lambda face: face.area)
    scored = []
    for face in targets:
        value = round(similarity(cosine(probe.embedding, face.embedding)), 6)
        box = face.to_box()
        scored.append(ScoredFace(box=box.box, score=box.score, similarity=value, match=value >= threshold))
    best = max(scored, key=lambda face: face.similarity)
    return Comparison(
        similarity=best.similarity,
        match=best.match,
        threshold=threshold,
        source_face=probe.to_box(),
        target_faces=scored,
    )
