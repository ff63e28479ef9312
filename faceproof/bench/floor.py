"""This CPU's floor for a model: its FLOPs over the GEMM rate one core reaches, measured in the same run.

* :func:`one_core_gflops`: a single 1024x1024x1024 fp32 ``MatMul`` run by onnxruntime on one
  intra-op thread (the same MLAS kernels the models' convolutions use), best of a few runs, per
  second of the thread's CPU time: on a shared machine, wall time measures the other jobs too.
* :func:`model_flops`: multiply-adds x 2 of every ``Conv``, ``Gemm`` and ``MatMul`` in an ONNX
  graph for one input shape, from onnx's shape inference; element-wise work (batch norm, PReLU,
  activations, resizes) is not counted, so the floor is a lower bound no runtime can reach.

``time / (flops / gflops)`` is how far a stage is from that floor (1.0 = at the floor).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Final

import numpy as np
import onnx
from onnx import TensorProto, helper, shape_inference

__all__ = ["model_flops", "one_core_gflops"]

_GEMM_SIZE: Final = 1024


def one_core_gflops(*, repeats: int = 5, size: int = _GEMM_SIZE) -> float:
    """The best fp32 GEMM rate (GFLOP/s) of one onnxruntime intra-op thread on this machine."""
    import onnxruntime as ort

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((size, size), dtype=np.float32) for name in ("a", "b")}
    session.run(None, feeds)
    best = float("inf")
    for _ in range(max(1, repeats)):
        started = time.thread_time()  # one intra-op thread runs in the calling thread
        session.run(None, feeds)
        best = min(best, time.thread_time() - started)
    return 2.0 * size**3 / best / 1e9


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [dim.dim_value for dim in value.type.tensor_type.shape.dim]


@cache
def model_flops(path: Path, input_shape: Sequence[int]) -> int:
    """FLOPs (2 x multiply-adds) of the Conv, Gemm and MatMul nodes of ``path`` for ``input_shape``."""
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {tensor.name: list(tensor.dims) for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    for dim, size in zip(inputs[0].type.tensor_type.shape.dim, input_shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size
    for output in graph.output:
        output.type.tensor_type.ClearField("shape")
    del graph.value_info[:]
    inferred = shape_inference.infer_shapes(model).graph
    shapes = {value.name: _dims(value) for value in [*inferred.value_info, *inferred.input, *inferred.output]}
    shapes.update(initializers)
    total = 0
    for node in graph.node:
        out = shapes.get(node.output[0], [])
        if node.op_type == "Conv" and len(out) == 4 and node.input[1] in shapes:
            kernel = shapes[node.input[1]]  # Cout x Cin/group x kh x kw
            total += 2 * int(np.prod(out)) * int(np.prod(kernel[1:]))
        elif node.op_type in {"Gemm", "MatMul"} and out and node.input[0] in shapes:
            depth = shapes[node.input[0]][-1]
            total += 2 * int(np.prod(out)) * depth
    return total
