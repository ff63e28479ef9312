"""Pure comparison logic: which faces are compared and how a result is formed. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from contracts.values import (
    ErrorCode,
    ErrorInfo,
    FaceBox,
    FaceQualityInfo,
    Fusion,
    ReferenceScore,
    ScoredFace,
    Threshold,
    ThresholdSource,
)


@dataclass(frozen=True)
class AnalyzedFace:
    box: tuple[float, float, float, float]
    score: float
    embedding: npt.NDArray[np.float32]
    quality: FaceQualityInfo | None = None
    #: Why the face is below the requested quality bar; empty when it passes.
    issues: tuple[str, ...] = ()

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_box(self) -> FaceBox:
        x1, y1, x2, y2 = (round(v, 1) for v in self.box)
        return FaceBox(
            box=(x1, y1, x2, y2), score=round(self.score, 4), quality=self.quality, quality_issues=self.issues
        )


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
    source_face: FaceBox
    target_faces: list[ScoredFace]


@dataclass(frozen=True)
class ReferencesComparison:
    similarity: float
    match: bool
    probe_face: FaceBox
    references: list[ReferenceScore]


def choose_threshold(
    requested: float | None,
    false_match_rate: float | None,
    *,
    default_rate: float,
    threshold_for_rate: Callable[[float], float | None],
) -> Threshold:
    """The caller's threshold, else the pack's threshold for the caller's (or the default) rate."""
    if requested is not None:
        return Threshold(value=requested, source=ThresholdSource.REQUEST)
    rate = default_rate if false_match_rate is None else false_match_rate
    value = threshold_for_rate(rate)
    if value is None:
        raise ComparisonError(
            ErrorCode.UNSUPPORTED_FALSE_MATCH_RATE,
            f"the model pack has no measured threshold for a false-match rate of {rate:g}",
        )
    source = ThresholdSource.DEFAULT if false_match_rate is None else ThresholdSource.TARGET_FALSE_MATCH_RATE
    return Threshold(value=round(value, 6), source=source, false_match_rate=rate)


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
    probe = _usable_probe(source, "source")
    if not targets:
        raise ComparisonError(ErrorCode.NO_FACE_IN_TARGET, "no face was found in the target image")
    if all(face.issues for face in targets):
        raise ComparisonError(
            ErrorCode.TARGET_FACES_BELOW_QUALITY,
            f"{len(targets)} target face(s) found, all below the quality bar ({_issues(targets)})",
        )
    scored = []
    for face in targets:
        value = None if face.issues else round(similarity(cosine(probe.embedding, face.embedding)), 6)
        matched = value is not None and value >= threshold
        scored.append(ScoredFace(**face.to_box().model_dump(), similarity=value, match=matched))
    best = max(scored, key=lambda face: -1.0 if face.similarity is None else face.similarity)
    assert best.similarity is not None
    return Comparison(
        similarity=best.similarity, match=best.match, source_face=probe.to_box(), target_faces=scored
    )


def match_references(
    probe: Sequence[AnalyzedFace],
    references: Sequence[Sequence[AnalyzedFace] | ErrorInfo],
    *,
    similarity: Callable[[float], float],
    threshold: float,
    fusion: Fusion,
) -> ReferencesComparison:
    """Score the largest probe face against the largest face of each reference, then fuse.

    MAX: the best reference decides (any of these photos). MEAN: the average over the references
    where a face was found (all of them together). References without a usable face are reported
    with their error and left out of the fusion; if none is left, NO_FACE_IN_REFERENCES.
    """
    best_probe = _usable_probe(probe, "probe")
    scores: list[ReferenceScore] = []
    for index, reference in enumerate(references):
        if isinstance(reference, ErrorInfo):
            scores.append(ReferenceScore(index=index, error=reference))
        elif not reference:
            error = ErrorInfo(code=ErrorCode.NO_FACE_IN_TARGET, detail="no face was found in this reference")
            scores.append(ReferenceScore(index=index, error=error))
        elif (face := max(reference, key=lambda candidate: candidate.area)).issues:
            detail = f"the reference face is below the quality bar ({_issues([face])})"
            error = ErrorInfo(code=ErrorCode.TARGET_FACES_BELOW_QUALITY, detail=detail)
            scores.append(ReferenceScore(index=index, face=face.to_box(), error=error))
        else:
            value = round(similarity(cosine(best_probe.embedding, face.embedding)), 6)
            scores.append(ReferenceScore(index=index, similarity=value, face=face.to_box()))
    values = [score.similarity for score in scores if score.similarity is not None]
    if not values:
        raise ComparisonError(ErrorCode.NO_FACE_IN_REFERENCES, "no face was found in any reference image")
    fused = max(values) if fusion is Fusion.MAX else sum(values) / len(values)
    fused = round(fused, 6)
    return ReferencesComparison(
        similarity=fused, match=fused >= threshold, probe_face=best_probe.to_box(), references=scores
    )


def _usable_probe(faces: Sequence[AnalyzedFace], name: str) -> AnalyzedFace:
    """The largest face, which must pass the quality bar."""
    if not faces:
        raise ComparisonError(ErrorCode.NO_FACE_IN_SOURCE, f"no face was found in the {name} image")
    probe = max(faces, key=lambda face: face.area)
    if probe.issues:
        raise ComparisonError(
            ErrorCode.SOURCE_FACE_BELOW_QUALITY,
            f"the largest {name} face is below the quality bar ({_issues([probe])})",
        )
    return probe


def _issues(faces: Sequence[AnalyzedFace]) -> str:
    return ", ".join(sorted({issue for face in faces for issue in face.issues}))
