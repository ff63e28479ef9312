"""SFace on OpenCV's DNN module gives onnxruntime's embeddings, from several threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from faces.embedding import SfaceEmbedder
from faces.errors import ModelError
from faces.opencv_runtime import OPENCV, OpenCvModel
from faces.runtime import OnnxModel
from tests.faces_support import MODELS_DIR, pipeline, read_image

SFACE = MODELS_DIR / "face_recognition_sface_2021dec_int8bq_ortfix.onnx"


def crops() -> list[np.ndarray]:
    permissive = pipeline("permissive")
    return [
        crop
        for photo in ("people/obama.jpg", "people/biden.jpg", "multi/t1.jpg")
        for _, crop in permissive.locate(read_image(photo))
    ]


def test_opencv_and_onnxruntime_give_the_same_sface_embeddings() -> None:
    faces = crops()
    assert len(faces) >= 8
    model = OpenCvModel(SFACE, threads=1)
    assert model.providers == [OPENCV]
    assert model.input_shape == (1, 3, 112, 112) and model.output_names == ["fc1"]
    on_opencv = SfaceEmbedder(model).embed(faces)
    on_onnxruntime = SfaceEmbedder(OnnxModel(SFACE, threads=1)).embed(faces)
    assert float(np.abs(on_opencv - on_onnxruntime).max()) < 1e-5


def test_one_model_serves_several_threads() -> None:
    faces = crops()
    embedder = SfaceEmbedder(OpenCvModel(SFACE, threads=1))
    alone = embedder.embed(faces)
    with ThreadPoolExecutor(max_workers=3) as pool:
        together = list(pool.map(lambda _: embedder.embed(faces), range(6)))
    for result in together:
        np.testing.assert_array_equal(result, alone)


def test_a_file_opencv_cannot_read_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        OpenCvModel(broken)
