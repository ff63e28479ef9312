"""Adapters: the ONNX face pipeline and object storage behind the matcher's ports."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from contracts.values import ErrorCode, FaceQualityInfo, ImageData, ModelInfo, QualityFilter
from domain.ports import ObjectStore
from faces.calibration import DEFAULT_FALSE_MATCH_RATE
from faces.detection import Detection
from faces.errors import ImageTooLargeError, InvalidImageError
from faces.images import decode_image
from faces.pipeline import FacePipeline
from faces.quality import FaceQuality, assess_quality, failed_checks
from infra.storage.errors import ObjectNotFound
from infra.telemetry.metrics import inference
from services.matcher.batching import MicroBatcher
from services.matcher.scoring import AnalyzedFace, ComparisonError

Crop = npt.NDArray[np.uint8]


class OnnxFaceEngine:
    """Decode, detect and align on a small thread pool; embed faces from concurrent messages in batches."""

    def __init__(
        self, pipeline: FacePipeline, *, max_pixels: int, workers: int, batch_size: int, batch_wait_s: float
    ) -> None:
        self._pipeline = pipeline
        self._max_pixels = max_pixels
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="matcher")
        self._embeddings: MicroBatcher[Crop, npt.NDArray[np.float32]] = MicroBatcher(
            self._embed,
            executor=self._executor,
            max_batch=batch_size,
            max_wait_s=batch_wait_s,
            concurrency=workers,
        )
        info = pipeline.info
        self._model = ModelInfo(
            pack=info.pack, licence=info.licence_summary, commercial_use=info.commercial_use
        )

    @property
    def model(self) -> ModelInfo:
        return self._model

    @property
    def default_false_match_rate(self) -> float:
        return DEFAULT_FALSE_MATCH_RATE

    def threshold_for_rate(self, rate: float) -> float | None:
        calibration = self._pipeline.calibration
        cosine = calibration.cosine_for_false_match_rate(rate)
        return None if cosine is None else calibration.similarity(cosine)

    def similarity(self, cosine: float) -> float:
        return self._pipeline.calibration.similarity(cosine)

    async def analyze(
        self, image: bytes, *, max_faces: int | None, quality_filter: QualityFilter
    ) -> list[AnalyzedFace]:
        loop = asyncio.get_running_loop()
        with self._embeddings.expecting():
            located = await loop.run_in_executor(self._executor, self._locate, image, max_faces)
        embeddings = await self._embeddings.submit([crop for _, crop, _ in located])
        return [
            AnalyzedFace(
                box=detection.box,
                score=detection.score,
                embedding=embedding,
                quality=_quality_info(quality),
                issues=tuple(failed_checks(quality, quality_filter)),
            )
            for (detection, _, quality), embedding in zip(located, embeddings, strict=True)
        ]

    def _locate(self, image: bytes, max_faces: int | None) -> list[tuple[Detection, Crop, FaceQuality]]:
        with inference("detect"):
            return self._locate_faces(image, max_faces)

    def _locate_faces(self, image: bytes, max_faces: int | None) -> list[tuple[Detection, Crop, FaceQuality]]:
        try:
            pixels = decode_image(image, max_pixels=self._max_pixels)
        except ImageTooLargeError as error:
            raise ComparisonError(ErrorCode.IMAGE_TOO_LARGE, str(error)) from error
        except InvalidImageError as error:
            raise ComparisonError(ErrorCode.INVALID_IMAGE, str(error)) from error
        pose = self._pipeline.pose_calibration
        return [
            (detection, crop, assess_quality(pixels, detection, crop, pose=pose))
            for detection, crop in self._pipeline.locate(pixels, max_faces=max_faces)
        ]

    def _embed(self, crops: list[Crop]) -> list[npt.NDArray[np.float32]]:
        with inference("embed", batch=len(crops)):
            return list(self._pipeline.embedder.embed(crops))

    async def close(self) -> None:
        await self._embeddings.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _quality_info(quality: FaceQuality) -> FaceQualityInfo:
    return FaceQualityInfo(
        size_px=round(quality.size_px, 1),
        sharpness=round(quality.sharpness, 2),
        brightness=round(quality.brightness, 1),
        yaw=round(quality.yaw, 1),
        pitch=round(quality.pitch, 1),
        roll=round(quality.roll, 1),
    )


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
