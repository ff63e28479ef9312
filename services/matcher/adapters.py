"""Adapters: the ONNX face pipeline and object storage behind the matcher's ports."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from contracts.values import ErrorCode, ImageData, ModelInfo
from faces.errors import ImageTooLargeError, InvalidImageError
from faces.images import decode_image
from faces.pipeline import FacePipeline
from infra.storage.base import ObjectStore
from infra.storage.errors import ObjectNotFound
from services.matcher.scoring import AnalyzedFace, ComparisonError


class OnnxFaceEngine:
    """Runs the pipeline on a small thread pool, off the event loop."""

    def __init__(self, pipeline: FacePipeline, *, max_pixels: int, workers: int) -> None:
        self._pipeline = pipeline
        self._max_pixels = max_pixels
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="matcher")
        info = pipeline.info
        self._model = ModelInfo(
            pack=info.pack, licence=info.licence_summary, commercial_use=info.commercial_use
        )

    @property
    def model(self) -> ModelInfo:
        return self._model

    @property
    def threshold(self) -> float:
        return self._pipeline.calibration.threshold

    def similarity(self, cosine: float) -> float:
        return self._pipeline.calibration.similarity(cosine)

    async def analyze(self, image: bytes, *, max_faces: int | None) -> list[AnalyzedFace]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._analyze, image, max_faces)

    def _analyze(self, image: bytes, max_faces: int | None) -> list[AnalyzedFace]:
        try:
            pixels = decode_image(image, max_pixels=self._max_pixels)
        except ImageTooLargeError as error:
            raise ComparisonError(ErrorCode.IMAGE_TOO_LARGE, str(error)) from error
        except InvalidImageError as error:
            raise ComparisonError(ErrorCode.INVALID_IMAGE, str(error)) from error
        return [
            AnalyzedFace(box=face.detection.box, score=face.detection.score, embedding=face.embedding)
            for face in self._pipeline.analyze(pixels, max_faces=max_faces)
        ]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class StoredImages:
    """Images inline in the message, or read from object storage."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def read(self, image: ImageData) -> bytes:
        if image.inline is not None:
            return image.inline
        assert image.storage_key is not None
        try:
            return await self._store.get(image.storage_key)
        except ObjectNotFound as error:
            raise ComparisonError(ErrorCode.IMAGE_NOT_FOUND, "the referenced image is not stored") from error
