"""A GPU that is wanted but cannot be used falls back to the CPU with the same results.

The service prefers a GPU by default (``FACEPROOF_PREFER_GPU``): TensorRT, then CUDA, then the
CPU. These tests make onnxruntime *claim* that TensorRT and CUDA are available, as a GPU build on a
machine without a working GPU does, and check that the sessions still load, report the CPU
provider (what ``/v1/compare`` answers under ``model``, and ``faceproof bench`` prints) and give
the same embeddings as a CPU-only load. This is the only coverage of the GPU path on machines
without a GPU (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from faces.packs import load_pack
from faces.runtime import CPU, CUDA, TENSORRT, OnnxModel, select_providers
from tests.faces_support import read_image
from tests.paths import MODELS_DIR

pytestmark = pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")


@pytest.fixture
def gpu_claimed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ort.get_available_providers()
    if CUDA in real or TENSORRT in real:
        pytest.skip("a GPU build of onnxruntime is installed: the fallback cannot be forced here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])


@pytest.mark.usefixtures("gpu_claimed")
def test_a_session_asking_for_tensorrt_and_cuda_runs_on_the_cpu() -> None:
    assert select_providers(True) == [TENSORRT, CUDA, CPU]
    model = OnnxModel(MODELS_DIR / "face_detection_yunet_2023mar.onnx", prefer_gpu=True, threads=1)
    assert model.providers == [CPU]
    model.warm_up()


@pytest.mark.usefixtures("gpu_claimed")
def test_a_pack_preferring_the_gpu_falls_back_to_the_cpu_with_the_same_embeddings() -> None:
    image = read_image("people/obama.jpg")
    on_cpu = load_pack("permissive", MODELS_DIR, prefer_gpu=False, threads=1).analyze(image)
    preferring_gpu = load_pack("permissive", MODELS_DIR, prefer_gpu=True, threads=1)
    assert preferring_gpu.info.providers == (CPU,)
    faces = preferring_gpu.analyze(image)
    assert len(faces) == len(on_cpu) == 1
    np.testing.assert_allclose(faces[0].embedding, on_cpu[0].embedding, atol=1e-5)
