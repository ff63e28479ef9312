"""Model execution: one onnxruntime session with explicit providers, threads and warm-up.

This module knows nothing about faces; detectors and embedders do their own pre- and
post-processing around :meth:`OnnxModel.run`. Sessions are created only by the constructor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from faces.errors import ModelError

__all__ = [
    "CPU",
    "CUDA",
    "TENSORRT",
    "Dim",
    "Model",
    "ModelSignature",
    "OnnxModel",
    "Precision",
    "select_providers",
]

TENSORRT: Final = "TensorrtExecutionProvider"
CUDA: Final = "CUDAExecutionProvider"
CPU: Final = "CPUExecutionProvider"

#: The floating-point precision asked of a CPU runtime: ``bf16`` is honoured only where the CPU
#: computes bfloat16 natively (AVX-512 BF16, AMX) and only by OpenVINO; everything else runs fp32.
Precision = Literal["f32", "bf16"]

#: A tensor dimension as onnxruntime reports it: a number, or a symbolic name / None when dynamic.
Dim = int | str | None

_LOAD_ERRORS: Final = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.RuntimeException,
    ort_state.EPFail,
)
_QUIET: Final = 3  # onnxruntime log severity: errors only (the SFace int8 file warns hundreds of times)


class Model(Protocol):
    """What detectors and embedders need of a loaded model: :class:`OnnxModel`,
    :class:`faces.opencv_runtime.OpenCvModel` or :class:`faces.openvino_runtime.OpenVinoModel`."""

    path: Path

    @property
    def input_name(self) -> str: ...

    @property
    def input_shape(self) -> tuple[Dim, ...]: ...

    @property
    def output_names(self) -> list[str]: ...

    @property
    def output_shapes(self) -> list[tuple[Dim, ...]]: ...

    @property
    def providers(self) -> list[str]: ...

    def run(self, feeds: Mapping[str, npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]: ...

    def warm_up(self, shape: Sequence[int] | None = None) -> None: ...


def select_providers(prefer_gpu: bool) -> list[str]:
    """Execution providers in priority order: TensorRT, then CUDA when installed and wanted; CPU last."""
    providers: list[str] = []
    if prefer_gpu:
        available = set(ort.get_available_providers())
        providers = [name for name in (TENSORRT, CUDA) if name in available]
    return [*providers, CPU]


class ModelSignature:
    """What every runtime's model shares: its one input and its outputs (name and shape, read at
    load into ``_input`` and ``_outputs``), and the warm-up. Subclasses load and :meth:`run`."""

    _input: tuple[str, tuple[Dim, ...]]
    _outputs: list[tuple[str, tuple[Dim, ...]]]

    @property
    def input_name(self) -> str:
        return self._input[0]

    @property
    def input_shape(self) -> tuple[Dim, ...]:
        return self._input[1]

    @property
    def output_names(self) -> list[str]:
        return [name for name, _ in self._outputs]

    @property
    def output_shapes(self) -> list[tuple[Dim, ...]]:
        return [shape for _, shape in self._outputs]

    def run(self, feeds: Mapping[str, npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        raise NotImplementedError

    def warm_up(self, shape: Sequence[int] | None = None) -> None:
        """Run one zero input, so the first real request does not pay for lazy initialisation.

        Dynamic dimensions become 1 unless ``shape`` gives the full input shape.
        """
        dims = (
            tuple(shape)
            if shape is not None
            else tuple(d if isinstance(d, int) else 1 for d in self.input_shape)
        )
        self.run({self.input_name: np.zeros(dims, dtype=np.float32)})


class OnnxModel(ModelSignature):
    """An ``onnxruntime.InferenceSession`` for one model file.

    ``threads`` sets ``intra_op_num_threads`` (0 keeps onnxruntime's default, one per core).
    ``providers`` overrides :func:`select_providers` when given. ``free_spatial_dims`` loads the
    graph with its input height and width left free (:func:`faces.graphs.free_spatial_dims`), for
    fully convolutional detectors exported at one fixed size; the file itself is not changed.
    """

    def __init__(
        self,
        path: Path,
        *,
        prefer_gpu: bool = False,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        free_spatial_dims: bool = False,
    ) -> None:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        source: str | bytes = str(path)
        if free_spatial_dims:
            from faces.graphs import free_spatial_dims as freed

            source = freed(path)
        options = ort.SessionOptions()
        options.log_severity_level = _QUIET
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
        # Idle pool threads sleep rather than spin: measured on 2 shared cores (YuNet 640x640, 2 intra-op
        # threads), spinning doubled the CPU per call (19.8 against 10.5 ms) and tripled the wall time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = list(providers) if providers is not None else select_providers(prefer_gpu)
        try:
            self._session = ort.InferenceSession(source, sess_options=options, providers=chosen)
        except _LOAD_ERRORS as exc:
            raise ModelError(f"onnxruntime cannot load {path.name}: {exc}") from exc
        self.path = path
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{path.name} has {len(inputs)} inputs; face models have exactly one")
        self._input = (str(inputs[0].name), tuple(inputs[0].shape))
        self._outputs = [(str(output.name), tuple(output.shape)) for output in self._session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """The providers the session actually uses."""
        return [str(name) for name in self._session.get_providers()]

    def run(self, feeds: Mapping[str, npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        """Run the model; outputs come in the model's declared order."""
        try:
            outputs = self._session.run(None, dict(feeds))
        except _LOAD_ERRORS as exc:
            raise ModelError(f"{self.path.name} failed to run: {exc}") from exc
        return [np.asarray(output, dtype=np.float32) for output in outputs]
