"""Which ONNX attributes the importer implements, op by op (DESIGN.md: validate at import).

The rule: every attribute of a supported op, at every opset the importer accepts, is either
implemented exactly (``IMPLEMENTED``), has no effect on the one output the engine computes
(``INERT``: training-only settings, precision of side outputs), or is accepted only while it
holds the default value the ONNX schema of that opset gives it.  An attribute that the schema
does not define at all is refused too.  An op class may state its own (``Op.onnx_attributes``,
``Op.inert_attributes``), as new ops do.  docs/onnx-ops.md is the table in words.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import defs, helper

from verifier.ops.base import REGISTRY, OpFormError

MIN_OPSET = 7  # numpy-style broadcasting, no consumed_inputs: the semantics implemented
MAX_OPSET = defs.onnx_opset_version()

_POOL = frozenset({"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides"})

IMPLEMENTED: dict[str, frozenset[str]] = {
    "AveragePool": _POOL | {"count_include_pad"},
    "BatchNormalization": frozenset({"epsilon"}),
    "Cast": frozenset({"to"}),
    "Clip": frozenset({"min", "max"}),
    "Concat": frozenset({"axis"}),
    "Conv": frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}),
    "ConvTranspose": frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads",
                                "strides", "output_padding", "output_shape"}),
    "Flatten": frozenset({"axis"}),
    "Gather": frozenset({"axis"}),
    "Gelu": frozenset({"approximate"}),
    "Gemm": frozenset({"alpha", "beta", "transA", "transB"}),
    "LayerNormalization": frozenset({"axis", "epsilon"}),
    "LeakyRelu": frozenset({"alpha"}),
    "MaxPool": _POOL,
    "Pad": frozenset({"mode", "pads", "value"}),
    "ReduceMean": frozenset({"axes", "keepdims", "noop_with_empty_axes"}),
    "ReduceSum": frozenset({"axes", "keepdims", "noop_with_empty_axes"}),
    "Reshape": frozenset({"allowzero"}),
    "Slice": frozenset({"starts", "ends", "axes"}),
    "Softmax": frozenset({"axis"}),
    "Split": frozenset({"axis", "split", "num_outputs"}),
    "Squeeze": frozenset({"axes"}),
    "Transpose": frozenset({"perm"}),
    "Unsqueeze": frozenset({"axes"}),
}

# Attributes without effect on the output the engine computes, whatever their value.
INERT: dict[str, frozenset[str]] = {
    "BatchNormalization": frozenset({"momentum"}),  # running-statistics update (training)
    "Cast": frozenset({"saturate", "round_mode"}),  # float8 targets only, which are refused
    "Dropout": frozenset({"ratio", "seed"}),  # inference: the identity
    "LayerNormalization": frozenset({"stash_type"}),  # precision of the Mean/InvStdDev outputs
    "MaxPool": frozenset({"storage_order"}),  # layout of the Indices output (refused if used)
}

# Ops whose later outputs are training or index side results the engine does not produce.
SIDE_OUTPUTS = {"BatchNormalization", "Dropout", "LayerNormalization", "MaxPool"}


def schema(op_type: str, opset: int) -> onnx.defs.OpSchema:
    """The ONNX schema of ``op_type`` in force at ``opset`` (OpFormError if there is none)."""
    try:
        found = defs.get_schema(op_type, opset, "")
    except defs.SchemaError:
        raise OpFormError(f"{op_type} is not an operator of ONNX opset {opset}") from None
    if found.deprecated:  # Upsample from 10: onnxruntime rejects the model
        raise OpFormError(f"{op_type} is deprecated at ONNX opset {opset} (onnxruntime "
                          "rejects it)")
    return found


def check_attributes(node: onnx.NodeProto, opset: int) -> None:
    """Raise OpFormError naming the first attribute of ``node`` that is not implemented."""
    sch = schema(node.op_type, opset)
    done = IMPLEMENTED.get(node.op_type, frozenset()) | INERT.get(node.op_type, frozenset())
    cls = REGISTRY.get(node.op_type)
    if cls is not None:  # a newer op states its attributes in its class
        done = done | cls.onnx_attributes | cls.inert_attributes
    for attr in node.attribute:
        if attr.name not in sch.attributes:
            raise OpFormError(f"attribute '{attr.name}' is not defined for {node.op_type} in "
                              f"opset {opset}")
        if attr.name in done:
            continue
        default = sch.attributes[attr.name].default_value
        value = _value(attr)
        if default.type == onnx.AttributeProto.UNDEFINED or value != _value(default):
            raise OpFormError(f"attribute '{attr.name}'={value!r} is not supported "
                              f"(only its default is)")


def _value(attr: onnx.AttributeProto) -> Any:
    v = helper.get_attribute_value(attr)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    return v
