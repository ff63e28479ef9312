"""In-memory fakes of the matcher's ports (services/matcher/ports.py): a face engine that knows a
few "images" by their bytes, and an object store of image keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contracts.values import ErrorCode, ImageData, ModelInfo, QualityFilter
from services.matcher.scoring import AnalyzedFace, ComparisonError

MODEL = ModelInfo(pack="fake", licence="MIT", commercial_use=True)


def face(*vector: float, size: float = 100.0, issues: tuple[str, ...] = ()) -> AnalyzedFace:
    return AnalyzedFace(
        box=(0.0, 0.0, size, size), score=0.9, embedding=np.array(vector, dtype=np.float32), issues=issues
    )


#: What the fake engine finds in each image (by its bytes).
FACES: dict[bytes, list[AnalyzedFace]] = {
    b"alice": [face(1.0, 0.0)],
    b"bob": [face(0.0, 1.0)],
    b"alice and bob": [face(1.0, 0.0, size=80.0), face(0.0, 1.0, size=120.0)],
    b"blurry alice": [face(1.0, 0.0, issues=("BLURRY",))],
    b"empty room": [],
}


@dataclass
class FakeFaceEngine:
    """Cosine mapped to 0..1 as ``(c + 1) / 2``; thresholds measured for two false-match rates."""

    thresholds: dict[float, float] = field(default_factory=lambda: {0.001: 0.9, 0.01: 0.8})
    #: (image, max_faces, quality_filter) of each analysis.
    analyzed: list[tuple[bytes, int | None, QualityFilter]] = field(default_factory=list)

    @property
    def model(self) -> ModelInfo:
        return MODEL

    @property
    def default_false_match_rate(self) -> float:
        return 0.001

    def threshold_for_rate(self, rate: float) -> float | None:
        return self.thresholds.get(rate)

    def similarity(self, cosine: float) -> float:
        return (cosine + 1) / 2

    async def analyze(
        self, image: bytes, *, max_faces: int | None, quality_filter: QualityFilter
    ) -> list[AnalyzedFace]:
        self.analyzed.append((image, max_faces, quality_filter))
        if image not in FACES:
            raise ComparisonError(ErrorCode.INVALID_IMAGE, "not a JPEG, PNG or WebP image")
        faces = sorted(FACES[image], key=lambda found: -found.area)
        return faces if max_faces is None else faces[:max_faces]


@dataclass
class FakeImages:
    """Inline images as they are; stored ones from ``stored`` (a missing key: IMAGE_NOT_FOUND)."""

    stored: dict[str, bytes] = field(default_factory=dict)

    async def read(self, image: ImageData) -> bytes:
        if image.inline is not None:
            return image.inline
        assert image.storage_key is not None
        if image.storage_key not in self.stored:
            raise ComparisonError(ErrorCode.IMAGE_NOT_FOUND, "the referenced image is not stored")
        return self.stored[image.storage_key]
