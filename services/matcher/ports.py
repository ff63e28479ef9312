"""What the matcher's handlers need from the outside world."""

from __future__ import annotations

from typing import Protocol

from contracts.values import ImageData, ModelInfo, QualityFilter
from services.matcher.scoring import AnalyzedFace


class FaceEngine(Protocol):
    """Face detection and embedding. Raises ComparisonError for images it cannot use."""

    @property
    def model(self) -> ModelInfo: ...

    @property
    def default_false_match_rate(self) -> float: ...

    def threshold_for_rate(self, rate: float) -> float | None:
        """The similarity threshold for a false-match rate, or None when the pack cannot say."""
        ...

    def similarity(self, cosine: float) -> float: ...

    async def analyze(
        self, image: bytes, *, max_faces: int | None, quality_filter: QualityFilter
    ) -> list[AnalyzedFace]:
        """Faces, largest first, with quality and the issues that put them below the bar."""
        ...


class ImageSource(Protocol):
    """Bytes of an image carried inline or stored. Raises ComparisonError when missing."""

    async def read(self, image: ImageData) -> bytes: ...
