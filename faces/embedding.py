"""Face embedding: the :class:`Embedder` port and the ONNX embedders for aligned 112x112 crops.

Each model differs only in how the crop becomes a tensor (:class:`InputSpec`); batching is
used when the model's batch dimension is dynamic, otherwise faces run one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from faces.errors import ModelError
from faces.runtime import Model

__all__ = [
    "ARCFACE_SPEC",
    "MOBILEFACENET_SPEC",
    "SFACE_SPEC",
    "ArcFaceEmbedder",
    "Embedder",
    "InputSpec",
    "MobileFaceNetEmbedder",
    "OnnxEmbedder",
    "SfaceEmbedder",
    "cosine",
]

FACE_SIZE: Final = 112


class Embedder(Protocol):
    """Turns aligned 112x112 BGR face crops into L2-normalised rows (N x dimension, float32)."""

    @property
    def dimension(self) -> int: ...

    def embed(self, aligned_bgr_faces: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class InputSpec:
    """How a crop becomes the model input: channel order, layout and ``(x - mean) / std``."""

    layout: Literal["NCHW", "NHWC"]
    rgb: bool
    mean: float
    std: float


#: OpenCV Zoo SFace: RGB 0-255, NCHW (as ``cv2.FaceRecognizerSF`` feeds it).
SFACE_SPEC: Final = InputSpec(layout="NCHW", rgb=True, mean=0.0, std=1.0)
#: SE-MobileFaceNet (Keras_insightface export): RGB ``(x - 127.5) / 128``, NHWC.
MOBILEFACENET_SPEC: Final = InputSpec(layout="NHWC", rgb=True, mean=127.5, std=128.0)
#: InsightFace ArcFace models (w600k_mbf, w600k_r50): RGB ``(x - 127.5) / 127.5``, NCHW.
ARCFACE_SPEC: Final = InputSpec(layout="NCHW", rgb=True, mean=127.5, std=127.5)


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    va = np.asarray(a, dtype=np.float64).reshape(-1)
    vb = np.asarray(b, dtype=np.float64).reshape(-1)
    norms = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb) / norms if norms > 0 else 0.0


def l2_normalise(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


class OnnxEmbedder:
    """An embedding model with one image input and one N x D output."""

    def __init__(self, model: Model, spec: InputSpec, *, max_batch: int = 32) -> None:
        shape = model.input_shape
        spatial = shape[2:4] if spec.layout == "NCHW" else shape[1:3]
        if len(shape) != 4 or any(isinstance(d, int) and d != FACE_SIZE for d in spatial):
            raise ModelError(f"{model.path.name}: expected a 112x112 {spec.layout} input, got {shape}")
        output_dim = model.output_shapes[0][-1]
        if not isinstance(output_dim, int):
            raise ModelError(f"{model.path.name}: the embedding size is not fixed ({model.output_shapes[0]})")
        batch = shape[0]
        self.model = model
        self.spec = spec
        self.batch_size = batch if isinstance(batch, int) else max(1, max_batch)
        self._dimension = output_dim

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, aligned_bgr_faces: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        if not aligned_bgr_faces:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunks = [
            self._run(aligned_bgr_faces[start : start + self.batch_size])
            for start in range(0, len(aligned_bgr_faces), self.batch_size)
        ]
        return l2_normalise(np.concatenate(chunks, axis=0))

    def _run(self, faces: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        batch = np.stack([self._check(face) for face in faces]).astype(np.float32)
        if self.spec.rgb:
            batch = batch[..., ::-1]
        batch = (batch - self.spec.mean) / self.spec.std
        if self.spec.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        output = self.model.run({self.model.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return output.reshape(len(faces), -1)

    @staticmethod
    def _check(face: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        if face.shape != (FACE_SIZE, FACE_SIZE, 3):
            raise ValueError(f"aligned faces must be {FACE_SIZE}x{FACE_SIZE}x3, got {face.shape}")
        return face


class SfaceEmbedder(OnnxEmbedder):
    """OpenCV Zoo SFace (128-D, Apache-2.0); the model takes one face per run."""

    def __init__(self, model: Model, *, max_batch: int = 32) -> None:
        super().__init__(model, SFACE_SPEC, max_batch=max_batch)


class MobileFaceNetEmbedder(OnnxEmbedder):
    """SE-MobileFaceNet trained with ArcFace loss (256-D); dynamic batch."""

    def __init__(self, model: Model, *, max_batch: int = 32) -> None:
        super().__init__(model, MOBILEFACENET_SPEC, max_batch=max_batch)


class ArcFaceEmbedder(OnnxEmbedder):
    """InsightFace ArcFace recognition models (``w600k_mbf``, ``w600k_r50``; 512-D)."""

    def __init__(self, model: Model, *, max_batch: int = 32) -> None:
        super().__init__(model, ARCFACE_SPEC, max_batch=max_batch)
