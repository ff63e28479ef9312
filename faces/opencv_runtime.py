"""An ONNX model run by OpenCV's DNN module instead of onnxruntime, for the models it runs faster on CPU.

Measured here (thread CPU time, one thread, batch of one; ``faceproof bench matcher``'s floor
section and docs/benchmarks.md): SFace (the folded fp32 file) takes about 16 ms in OpenCV 5's DNN
engine against about 30 ms in onnxruntime 1.31 with every graph optimisation, for the same
embedding to 1.5e-6. OpenVINO (:mod:`faces.openvino_runtime`) is faster again and runs SFace
where it is installed and reads the file; OpenCV runs it otherwise (the int8bq file, which
OpenVINO cannot read). For YuNet, SCRFD and SE-MobileFaceNet onnxruntime is as fast or faster (or
OpenCV cannot run them), so they stay there; :data:`faces.packs.CPU_MODEL_RUNTIMES` says which.

An OpenCV ``Net`` must not run in two threads at once: each thread gets its own copy of the net,
made on its first call (the matcher runs two or three threads; about 40 MB each for SFace).
OpenCV's thread count is one setting per process (``cv2.setNumThreads``): ``threads`` sets it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
import onnx
from google.protobuf.message import DecodeError

from faces.errors import ModelError
from faces.runtime import Dim, ModelSignature

__all__ = ["OPENCV", "OpenCvModel"]

#: What :attr:`OpenCvModel.providers` reports (PipelineInfo.providers, the API's model info).
OPENCV: Final = "OpenCV-DNN-CPU"


def _shape(value: onnx.ValueInfoProto) -> tuple[Dim, ...]:
    return tuple(
        dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
        for dim in value.type.tensor_type.shape.dim
    )


class OpenCvModel(ModelSignature):
    """The surface of :class:`faces.runtime.OnnxModel` that the embedders use, on ``cv2.dnn``."""

    def __init__(self, path: Path, *, threads: int = 0) -> None:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        try:
            graph = onnx.load(str(path), load_external_data=False).graph
        except (OSError, ValueError, DecodeError) as exc:
            raise ModelError(f"cannot read {path.name} as ONNX: {exc}") from exc
        constants = {tensor.name for tensor in graph.initializer}
        inputs = [value for value in graph.input if value.name not in constants]
        if len(inputs) != 1:
            raise ModelError(f"{path.name} has {len(inputs)} inputs; face models have exactly one")
        self.path = path
        self._input = (str(inputs[0].name), _shape(inputs[0]))
        self._outputs = [(str(output.name), _shape(output)) for output in graph.output]
        if threads > 0:
            cv2.setNumThreads(threads)
        self._local = threading.local()
        self._net()  # fail here, not on the first request, if OpenCV cannot run it

    def _net(self) -> cv2.dnn.Net:
        net: cv2.dnn.Net | None = getattr(self._local, "net", None)
        if net is None:
            try:
                net = cv2.dnn.readNetFromONNX(str(self.path))
            except cv2.error as exc:
                raise ModelError(f"OpenCV cannot load {self.path.name}: {exc}") from exc
            self._local.net = net
        return net

    @property
    def providers(self) -> list[str]:
        return [OPENCV]

    def run(self, feeds: Mapping[str, npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        """Run the model on this thread's net; outputs come in the model's declared order."""
        net = self._net()
        try:
            net.setInput(feeds[self.input_name])
            outputs = net.forward(self.output_names)
        except cv2.error as exc:
            raise ModelError(f"{self.path.name} failed to run: {exc}") from exc
        return [np.asarray(output, dtype=np.float32) for output in outputs]
