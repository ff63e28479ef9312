from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from faces.errors import ModelError
from faces.runtime import CPU, CUDA, TENSORRT, OnnxModel, select_providers
from tests.faces_support import MODELS_DIR


def test_select_providers_cpu_only_unless_gpu_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    assert select_providers(False) == [CPU]
    assert select_providers(True) == [TENSORRT, CUDA, CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    assert select_providers(True) == [CUDA, CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert select_providers(True) == [CPU]


def test_model_properties_run_and_warm_up() -> None:
    model = OnnxModel(MODELS_DIR / "se_mobilefacenet_arcface_emb256.onnx", threads=1)
    assert model.input_name == "image"
    assert model.input_shape[1:] == (112, 112, 3)
    assert model.output_shapes[0][-1] == 256
    assert model.providers == [CPU]
    model.warm_up()
    (output,) = model.run({model.input_name: np.zeros((3, 112, 112, 3), dtype=np.float32)})
    assert output.shape == (3, 256) and output.dtype == np.float32

    scrfd = OnnxModel(MODELS_DIR / "det_500m.onnx", threads=1)
    scrfd.warm_up((1, 3, 320, 320))
    assert len(scrfd.output_names) == 9


def test_missing_and_invalid_files_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        OnnxModel(tmp_path / "absent.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"cannot load garbage\.onnx"):
        OnnxModel(garbage)


def test_bad_input_is_a_model_error() -> None:
    model = OnnxModel(MODELS_DIR / "face_detection_yunet_2023mar.onnx", threads=1)
    with pytest.raises(ModelError, match="failed to run"):
        model.run({model.input_name: np.zeros((1, 3, 10, 10), dtype=np.float32)})
