"""An ONNX model run by OpenVINO's CPU plugin instead of onnxruntime, for the models it runs faster on CPU.

Measured here (thread CPU time per call, one inference thread, batch of one, median of 30, three
rounds alternating in one process; docs/benchmarks.md, "OpenVINO"): the folded fp32 SFace takes
7.6-8.5 ms on OpenVINO 2026.4 against 14.1-15.9 ms on OpenCV 5's DNN module and 20-22 ms on
onnxruntime 1.31, for the same embedding to 2.4e-6. YuNet is slower on it than on onnxruntime at
every input size tried (3.3-3.6 against 2.7-3.2 ms at 416²), so it stays there;
:data:`faces.packs.CPU_MODEL_RUNTIMES` says which model runs where.

The precision is fp32 unless the caller asks for ``bf16`` and the CPU computes bfloat16 natively
(AVX-512 BF16 or AMX; OpenVINO's default there): for SFace 1.6x faster on an AMD EPYC (Zen 4),
about 2.8x on an Intel Xeon with AMX, with embeddings within cosine 0.999 of fp32's. Only the
embedder is offered it (:func:`faces.packs.load_pack`), where it was measured against the packs'
calibration (docs/models.md, "bfloat16 embeddings"); the liveness models' thresholds were fitted
on fp32.

One compiled model serves every thread: OpenVINO's compiled models are thread safe, its infer
requests are not, so each thread gets its own request, made on its first call. A sync request
runs in the calling thread (its thread CPU time is the call's whole CPU time). CPU pinning is off:
the service shares its cores with other processes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import openvino as ov

from faces.errors import ModelError
from faces.runtime import Dim, ModelSignature, Precision

__all__ = ["OPENVINO", "OPENVINO_BF16", "OpenVinoModel", "native_bf16"]

#: What :attr:`OpenVinoModel.providers` reports (PipelineInfo.providers, the API's model info).
OPENVINO: Final = "OpenVINO-CPU"
#: The same, computing in bfloat16.
OPENVINO_BF16: Final = "OpenVINO-CPU-bf16"

_CONFIG: Final[Mapping[str, str | int | bool]] = {
    "PERFORMANCE_HINT": "LATENCY",
    "NUM_STREAMS": 1,
    "ENABLE_CPU_PINNING": False,
}


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (OpenVINO's ``BF16`` capability)."""
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _shape(port: ov.Output) -> tuple[Dim, ...]:
    return tuple(dim.get_length() if dim.is_static else None for dim in port.get_partial_shape())


class OpenVinoModel(ModelSignature):
    """The surface of :class:`faces.runtime.OnnxModel` that the embedders use, on OpenVINO's CPU plugin.

    ``threads`` sets ``INFERENCE_NUM_THREADS`` (0 keeps OpenVINO's default, a thread per core);
    ``precision``: see the module docstring (:attr:`precision` is what runs).
    """

    def __init__(self, path: Path, *, threads: int = 0, precision: Precision = "f32") -> None:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        core = ov.Core()
        self.precision: Precision = "bf16" if precision == "bf16" and native_bf16() else "f32"
        config = dict(_CONFIG, INFERENCE_PRECISION_HINT=self.precision)
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:
            raise ModelError(f"OpenVINO cannot load {path.name}: {exc}") from exc
        if len(model.inputs) != 1:
            raise ModelError(f"{path.name} has {len(model.inputs)} inputs; face models have exactly one")
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:
            raise ModelError(f"OpenVINO cannot compile {path.name}: {exc}") from exc
        self.path = path
        port = self._compiled.inputs[0]
        self._input = (str(port.get_any_name()), _shape(port))
        self._outputs = [(str(port.get_any_name()), _shape(port)) for port in self._compiled.outputs]
        self._local = threading.local()

    def _request(self) -> ov.InferRequest:
        request: ov.InferRequest | None = getattr(self._local, "request", None)
        if request is None:
            request = self._compiled.create_infer_request()
            self._local.request = request
        return request

    @property
    def providers(self) -> list[str]:
        return [OPENVINO_BF16 if self.precision == "bf16" else OPENVINO]

    def run(self, feeds: Mapping[str, npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        """Run the model on this thread's request; outputs come in the model's declared order."""
        request = self._request()
        try:
            request.infer({self.input_name: feeds[self.input_name]})
            # copies: the request reuses its output buffers on the next call
            return [
                np.array(request.get_output_tensor(index).data, dtype=np.float32)
                for index in range(len(self._outputs))
            ]
        except RuntimeError as exc:
            raise ModelError(f"{self.path.name} failed to run: {exc}") from exc
