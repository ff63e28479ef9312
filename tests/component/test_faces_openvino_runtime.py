"""SFace on OpenVINO gives onnxruntime's embeddings, from several threads at once; which runtime runs it;
bfloat16 where the CPU computes it."""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from faces.embedding import MobileFaceNetEmbedder, SfaceEmbedder
from faces.errors import ModelError
from faces.fetch import fetch_models
from faces.opencv_runtime import OPENCV
from faces.openvino_runtime import OPENVINO, OPENVINO_BF16, OpenVinoModel, native_bf16
from faces.packs import load_pack
from faces.runtime import CPU, OnnxModel
from tests.faces_support import pipeline, read_image
from tests.paths import MODELS_DIR

INT8_SFACE = "face_recognition_sface_2021dec_int8bq_ortfix.onnx"
FOLDED_SFACE = "face_recognition_sface_2021dec_int8bq_folded.onnx"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The permissive pack as `faceproof models fetch` installs it: the SFace weights folded to fp32."""
    dest = tmp_path_factory.mktemp("models")
    fetch_models(dest, pack="permissive", from_dir=MODELS_DIR, progress=False)
    return dest


def crops() -> list[np.ndarray]:
    permissive = pipeline("permissive")
    return [
        crop
        for photo in ("people/obama.jpg", "people/biden.jpg", "multi/t1.jpg")
        for _, crop in permissive.locate(read_image(photo))
    ]


def test_openvino_and_onnxruntime_give_the_same_sface_embeddings(installed: Path) -> None:
    faces = crops()
    assert len(faces) >= 8
    model = OpenVinoModel(installed / FOLDED_SFACE, threads=1)
    assert model.providers == [OPENVINO]
    assert model.input_shape == (1, 3, 112, 112) and model.output_names == ["fc1"]
    on_openvino = SfaceEmbedder(model).embed(faces)
    on_onnxruntime = SfaceEmbedder(OnnxModel(installed / FOLDED_SFACE, threads=1)).embed(faces)
    assert float(np.abs(on_openvino - on_onnxruntime).max()) < 1e-5
    assert float(np.min(np.sum(on_openvino * on_onnxruntime, axis=1))) > 0.99999


def test_one_model_serves_several_threads(installed: Path) -> None:
    faces = crops()
    embedder = SfaceEmbedder(OpenVinoModel(installed / FOLDED_SFACE, threads=1))
    alone = embedder.embed(faces)
    with ThreadPoolExecutor(max_workers=3) as pool:
        together = list(pool.map(lambda _: embedder.embed(faces), range(6)))
    for result in together:
        np.testing.assert_array_equal(result, alone)


def test_files_openvino_cannot_read_are_model_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=re.escape("OpenVINO cannot load broken.onnx")):
        OpenVinoModel(broken)
    with pytest.raises(ModelError, match=re.escape(f"OpenVINO cannot load {INT8_SFACE}")):
        OpenVinoModel(MODELS_DIR / INT8_SFACE)  # its per-axis DequantizeLinear of the bias


def test_sface_runs_on_openvino_then_opencv_then_onnxruntime(
    installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_pack("permissive", installed, threads=1).info.providers == (CPU, OPENVINO)
    # the int8bq file (what ../shared/models holds): OpenVINO cannot read it, OpenCV runs it
    assert load_pack("permissive", MODELS_DIR, threads=1).info.providers == (CPU, OPENCV)
    # a GPU preferred (the services' default, FACEPROOF_PREFER_GPU) where onnxruntime has none: the
    # same CPU runtimes (tests/unit/test_faces_runtime_gpu_fallback.py: onnxruntime claiming a GPU)
    assert load_pack("permissive", installed, threads=1, prefer_gpu=True).info.providers == (CPU, OPENVINO)

    # where openvino is not installed, OpenCV runs the folded file: the same embeddings
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    monkeypatch.delitem(sys.modules, "faces.openvino_runtime")
    without = load_pack("permissive", installed, threads=1)
    assert without.info.providers == (CPU, OPENCV)
    faces = crops()
    with_openvino = SfaceEmbedder(OpenVinoModel(installed / FOLDED_SFACE, threads=1)).embed(faces)
    assert float(np.abs(without.embedder.embed(faces) - with_openvino).max()) < 1e-5


def test_bf16_runs_only_where_the_cpu_computes_it_and_keeps_the_embeddings(installed: Path) -> None:
    faces = crops()
    fp32 = SfaceEmbedder(OpenVinoModel(installed / FOLDED_SFACE, threads=1)).embed(faces)
    model = OpenVinoModel(installed / FOLDED_SFACE, threads=1, precision="bf16")
    asked = SfaceEmbedder(model).embed(faces)
    if not native_bf16():  # no AVX-512 BF16 or AMX here: fp32, the same embeddings
        assert model.precision == "f32" and model.providers == [OPENVINO]
        np.testing.assert_array_equal(asked, fp32)
        return
    assert model.precision == "bf16" and model.providers == [OPENVINO_BF16]
    agreement = np.sum(asked * fp32, axis=1)
    assert float(agreement.min()) > 0.998  # 0.999 and above on LFW dev-test (docs/models.md)
    assert float(np.abs(asked - fp32).max()) > 1e-5  # a different computation, not fp32 relabelled
    # every pair's cosine within 0.02 of fp32's (LFW dev-test: mean 0.001, at most 0.016)
    pairs = np.triu_indices(len(faces), 1)
    bf16_cosines = (asked @ asked.T)[pairs]
    fp32_cosines = (fp32 @ fp32.T)[pairs]
    assert float(np.abs(bf16_cosines - fp32_cosines).max()) < 0.02


def test_only_the_embedder_gets_the_precision_asked(installed: Path) -> None:
    pipeline = load_pack("permissive", installed, threads=1, embedder_precision="bf16")
    expected = OPENVINO_BF16 if native_bf16() else OPENVINO
    assert pipeline.info.providers == (CPU, expected)  # YuNet stays on onnxruntime, fp32
    assert load_pack("permissive", installed, threads=1).info.providers == (CPU, OPENVINO)


def test_se_mobilefacenet_runs_on_openvino_with_onnxruntime_s_embeddings() -> None:
    file = MODELS_DIR / "se_mobilefacenet_arcface_emb256.onnx"
    faces = crops()
    on_openvino = MobileFaceNetEmbedder(OpenVinoModel(file, threads=1)).embed(faces)
    on_onnxruntime = MobileFaceNetEmbedder(OnnxModel(file, threads=1)).embed(faces)
    assert float(np.abs(on_openvino - on_onnxruntime).max()) < 1e-4  # its NHWC input read right
    assert load_pack("mobilefacenet", MODELS_DIR, threads=1).info.providers == (CPU, OPENVINO)
    # its calibration does not hold in bf16 (docs/models.md): fp32 whatever is asked
    bf16_asked = load_pack("mobilefacenet", MODELS_DIR, threads=1, embedder_precision="bf16")
    assert bf16_asked.info.providers == (CPU, OPENVINO)
