"""The floating-point precision a model computes in (DESIGN.md: Soundness rule 1).

onnxruntime evaluates each node in its tensors' element type, so the model's value at a point
is the exact function only up to rounding.  The coarsest floating-point type anywhere in the
graph (its input and output, initializers, constants, Cast targets and every intermediate
value after shape inference) sizes the rounding noise every bound must allow for.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

# ONNX element type -> unit roundoff
UNIT_ROUNDOFF: dict[int, float] = {
    TensorProto.FLOAT: 2.0 ** -24, TensorProto.DOUBLE: 2.0 ** -53,
    TensorProto.FLOAT16: 2.0 ** -11, TensorProto.BFLOAT16: 2.0 ** -8}


def _value_types(proto: onnx.ModelProto) -> list[int]:
    graph = proto.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
    except Exception:  # inference is a refinement only; the declared types still count
        inferred = []
    infos = list(graph.input) + list(graph.output) + list(graph.value_info) + list(inferred)
    types = [v.type.tensor_type.elem_type for v in infos if v.type.HasField("tensor_type")]
    types += [t.data_type for t in graph.initializer]
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                types.append(a.t.data_type)
            elif node.op_type in ("Cast", "CastLike") and a.name == "to":
                types.append(a.i)
    return types


def unit_roundoff(proto: onnx.ModelProto) -> float:
    """The largest unit roundoff among the model's floating-point types (2^-24 for a
    float32 model; 2^-53 for one entirely in float64)."""
    found = [UNIT_ROUNDOFF[t] for t in _value_types(proto) if t in UNIT_ROUNDOFF]
    return max(found, default=2.0 ** -24)


def largest_finite(u: float) -> float:
    """The largest finite number of the format with unit roundoff ``u`` (for bfloat16 that
    of float32: the same exponent range)."""
    if u >= 2.0 ** -12:
        return 65504.0 if u == 2.0 ** -11 else 3.3895313892515355e38
    return 3.4028234663852886e38 if u >= 2.0 ** -40 else 1.7976931348623157e308
