"""The face pipeline: detect, align, embed; and compare embeddings on a calibrated scale.

Everything here is synchronous and CPU/GPU bound: callers run it in a thread pool. A pipeline
is built by :func:`faces.packs.load_pack`; its parts can also be assembled by hand (tests, own
models).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from faces.alignment import align_face
from faces.calibration import Calibration
from faces.detection import Detection, Detector
from faces.embedding import Embedder, cosine

__all__ = ["Face", "FacePipeline", "ModelInfo", "PipelineInfo"]


@dataclass(frozen=True, eq=False)
class Face:
    """A detected face and its L2-normalised embedding (read-only float32 vector)."""

    detection: Detection
    embedding: npt.NDArray[np.float32] = field(repr=False)


@dataclass(frozen=True)
class ModelInfo:
    file: str
    task: str
    architecture: str
    sha256: str
    licence: str
    commercial_use: bool


@dataclass(frozen=True)
class PipelineInfo:
    """What the API and CLI show about the loaded models."""

    pack: str
    licence_summary: str
    commercial_use: bool
    calibrated: bool
    cosine_threshold: float
    similarity_threshold: float
    embedding_dimension: int
    models: tuple[ModelInfo, ...]
    providers: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FacePipeline:
    def __init__(
        self, detector: Detector, embedder: Embedder, calibration: Calibration, info: PipelineInfo
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.calibration = calibration
        self.info = info

    @property
    def cosine_threshold(self) -> float:
        return self.calibration.cosine_threshold

    def analyze(self, image_bgr: npt.NDArray[np.uint8], *, max_faces: int | None = None) -> list[Face]:
        """Faces in an ``H x W x 3`` uint8 BGR image, largest first, at most ``max_faces``."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected an H x W x 3 uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}"
            )
        detections = self.detector.detect(image_bgr)
        if max_faces is not None:
            detections = detections[: max(max_faces, 0)]
        if not detections:
            return []
        crops = [align_face(image_bgr, detection.keypoints) for detection in detections]
        embeddings = self.embedder.embed(crops)
        faces = []
        for detection, row in zip(detections, embeddings, strict=True):
            vector = np.array(row, dtype=np.float32)
            vector.setflags(write=False)
            faces.append(Face(detection=detection, embedding=vector))
        return faces

    def compare_embeddings(self, a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[float, float]:
        """(cosine similarity, calibrated similarity in 0..1)."""
        value = cosine(a, b)
        return value, self.calibration.similarity(value)

    def is_match(self, cosine_similarity: float) -> bool:
        """The pack's decision: same person when the cosine reaches the pack threshold."""
        return cosine_similarity >= self.calibration.cosine_threshold

    def warm_up(self) -> None:
        """Run every model once on blank input, so the first request is not slow."""
        self.detector.detect(np.zeros((640, 640, 3), dtype=np.uint8))
        self.embedder.embed([np.zeros((112, 112, 3), dtype=np.uint8)])
