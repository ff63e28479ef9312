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
from faces.quality import FaceQuality, PoseCalibration, assess_quality, pose_calibration_for

__all__ = ["Face", "FacePipeline", "ModelInfo", "PipelineInfo"]


@dataclass(frozen=True, eq=False)
class Face:
    """A detected face and its L2-normalised embedding (read-only float32 vector).

    ``quality`` is set when :meth:`FacePipeline.analyze` is asked for it (``with_quality=True``).
    """

    detection: Detection
    embedding: npt.NDArray[np.float32] = field(repr=False)
    quality: FaceQuality | None = None


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

    @property
    def pose_calibration(self) -> PoseCalibration:
        """Head-pose constants for this pipeline's detector (see :mod:`faces.quality`)."""
        detector = next((model for model in self.info.models if model.task == "detector"), None)
        return pose_calibration_for(detector.architecture if detector else None)

    def analyze(
        self,
        image_bgr: npt.NDArray[np.uint8],
        *,
        max_faces: int | None = None,
        with_quality: bool = False,
    ) -> list[Face]:
        """Faces in an ``H x W x 3`` uint8 BGR image, largest first, at most ``max_faces``.

        With ``with_quality``, each face also gets its :class:`~faces.quality.FaceQuality`,
        measured on the same aligned crop the embedder sees (well under 1 ms per face).
        """
        located = self.locate(image_bgr, max_faces=max_faces)
        if not located:
            return []
        detections = [detection for detection, _ in located]
        crops = [crop for _, crop in located]
        embeddings = self.embedder.embed(crops)
        pose = self.pose_calibration if with_quality else None
        faces = []
        for detection, crop, row in zip(detections, crops, embeddings, strict=True):
            vector = np.array(row, dtype=np.float32)
            vector.setflags(write=False)
            quality = assess_quality(image_bgr, detection, crop, pose=pose) if with_quality else None
            faces.append(Face(detection=detection, embedding=vector, quality=quality))
        return faces

    def locate(
        self, image_bgr: npt.NDArray[np.uint8], *, max_faces: int | None = None
    ) -> list[tuple[Detection, npt.NDArray[np.uint8]]]:
        """Detected faces (largest first, at most ``max_faces``) and their aligned 112x112 crops."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected an H x W x 3 uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}"
            )
        detections = self.detector.detect(image_bgr)
        if max_faces is not None:
            detections = detections[: max(max_faces, 0)]
        return [(detection, align_face(image_bgr, detection.keypoints)) for detection in detections]

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
