"""ONNX graph rewrites done once, with the onnx tools from PyPI: weight folding and free input sizes.

* :func:`fold_weights` turns a weight-quantized graph (``DequantizeLinear`` on constant int8
  weights, as in OpenCV Zoo's SFace int8bq file) into a plain fp32 graph: each such node is
  evaluated once by onnx's reference implementation and replaced by its fp32 result, initializers
  listed as graph inputs stop being inputs (onnxruntime cannot fold those), and onnxslim folds
  what became constant (weight reshapes, batch norms into convolutions). The maths is the int8
  graph's own: the embeddings agree to about 1e-6, and the fp32 graph runs about twice as fast.
  ``faceproof models fetch`` runs it when it installs a derived model (``derived_from`` in the
  catalog) and checks the result's SHA-256 like any other file.
* :func:`free_spatial_dims` makes a fully convolutional detector with a fixed input size (YuNet:
  1x3x640x640) take any height and width, so an image is detected at its own scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from faces.errors import ModelError

__all__ = ["fold_weights", "free_spatial_dims", "write_folded"]

_DEQUANTIZE: Final = "DequantizeLinear"
_READ_ERRORS: Final = (OSError, ValueError, DecodeError)


def _constant_dequantize(
    node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], opsets: list[onnx.OperatorSetIdProto]
) -> onnx.TensorProto:
    """The fp32 tensor a DequantizeLinear node of constant inputs produces (onnx's reference maths)."""
    graph = helper.make_graph(
        [node],
        "dequantize",
        [],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
        initializer=[initializers[name] for name in node.input if name],
    )
    model = helper.make_model(graph, opset_imports=opsets)
    (value,) = ReferenceEvaluator(model).run(None, {})
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), node.output[0])


def fold_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp32 copy of ``model`` with its constant DequantizeLinear nodes and batch norms folded."""
    import onnxslim  # only at install time: it is slow to import

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    del graph.input[:]
    graph.input.extend(inputs)
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == _DEQUANTIZE and all(not name or name in initializers for name in node.input):
            graph.initializer.append(_constant_dequantize(node, initializers, list(model.opset_import)))
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    folded = onnxslim.slim(model)
    if not isinstance(folded, onnx.ModelProto):
        raise ModelError("onnxslim did not return a model")
    if any(node.op_type == _DEQUANTIZE for node in folded.graph.node):
        raise ModelError("the graph still has DequantizeLinear nodes after folding")
    return folded


def write_folded(source: Path, target: Path) -> None:
    """Fold ``source`` (see :func:`fold_weights`) and write the result to ``target``."""
    try:
        model = onnx.load(str(source))
    except _READ_ERRORS as exc:
        raise ModelError(f"cannot read {source.name} as ONNX: {exc}") from exc
    onnx.save(fold_weights(model), str(target))


def free_spatial_dims(path: Path) -> bytes:
    """The model at ``path`` with its input's height and width (and every recorded shape) left free.

    Only for fully convolutional graphs whose reshapes use -1 and whose resizes use scales
    (YuNet 2023mar is one); the caller picks input sizes the strides divide.
    """
    try:
        model = onnx.load(str(path))
    except _READ_ERRORS as exc:
        raise ModelError(f"cannot read {path.name} as ONNX: {exc}") from exc
    graph = model.graph
    if len(graph.input) != 1:
        raise ModelError(f"{path.name}: expected one input")
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelError(f"{path.name}: expected an NCHW input")
    for dim, name in zip(dims[2:], ("height", "width"), strict=True):
        dim.ClearField("dim_value")
        dim.dim_param = name
    for output in graph.output:
        output.type.tensor_type.ClearField("shape")
    del graph.value_info[:]
    return bytes(model.SerializeToString())
