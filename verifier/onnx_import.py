"""ONNX import (DESIGN.md: Graph): validation, constant folding, composite patterns, ops.

``load_model`` turns ONNX bytes into a ``Model``: the engine's ``Graph`` plus what the rest
of the system needs to know about the model (hash, shapes, op census, parameter count).
Every problem is reported before any bound is computed: unsupported ops all at once, by
op type, node name and position.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from . import ops  # noqa: F401  (registers every op)
from .errors import ModelError, UnsupportedOpError
from .graph import Graph, Node
from .ops import composite
from .ops.base import REGISTRY, Const, Input, OpFormError, Var
from .ops.shape import reshape_target
from .patterns import fuse_patterns

# Ops folded away when every input is constant, never kept in the graph.
FOLD_ONLY = {
    "Constant", "Shape", "ConstantOfShape", "Equal", "Where", "Range", "Size", "Less",
    "Greater", "Not", "And", "Or", "Floor", "Ceil", "Round", "Mod", "ReduceProd",
    "NonZero", "Sign", "ArgMax", "ReduceMax", "ReduceMin",
}
RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
BROADCASTING = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"}
FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}


@dataclass(frozen=True, eq=False)
class Model:
    """An imported model: the graph plus facts about the original ONNX file."""

    graph: Graph
    onnx_bytes: bytes
    sha256: str
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: np.dtype
    output_name: str
    output_shape: tuple[int, ...]
    op_census: dict[str, int]
    n_parameters: int
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_outputs(self) -> int:
        return math.prod(self.output_shape)

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (for the API and the CLI)."""
        return {
            "sha256": self.sha256,
            "input": {"name": self.input_name, "shape": list(self.input_shape),
                      "dtype": str(self.input_dtype)},
            "output": {"name": self.output_name, "shape": list(self.output_shape)},
            "op_census": self.op_census,
            "n_parameters": self.n_parameters,
        }


def load_model(source: bytes | str | Path) -> Model:
    """Import an ONNX model from bytes or a file path; raise ModelError saying what is wrong."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    if data[:2] == b"\x1f\x8b":  # gzip (VNN-COMP ships models as .onnx.gz)
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ModelError(f"the gzip-compressed model is damaged: {exc}") from None
    proto = _parse(data)
    _refuse_external_data(proto)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    graph = proto.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inp = _single_input(graph, consts)
    in_shape = _static_shape(inp)
    in_dtype = FLOAT_TYPES.get(inp.type.tensor_type.elem_type)
    if in_dtype is None:
        raise ModelError(f"input '{inp.name}' has a non-floating-point element type")
    if len(graph.output) != 1:
        raise ModelError(f"the model has {len(graph.output)} outputs; exactly one is supported")
    nodes = fuse_patterns(list(graph.node), consts)
    _check_supported(nodes, consts, inp.name)
    built = _build(nodes, consts, inp.name, in_shape, opset)
    out_name = graph.output[0].name
    if out_name in consts:
        raise ModelError(f"the output '{out_name}' does not depend on the input")
    g = Graph(inp.name, in_shape, built, out_name)
    return Model(
        graph=g,
        onnx_bytes=data,
        sha256=hashlib.sha256(data).hexdigest(),
        input_name=inp.name,
        input_shape=in_shape,
        input_dtype=np.dtype(in_dtype),
        output_name=out_name,
        output_shape=g.output_shape,
        op_census=dict(Counter(n.op_type for n in graph.node)),
        n_parameters=int(sum(np.asarray(v).size for v in consts.values()
                             if np.issubdtype(np.asarray(v).dtype, np.floating))),
    )


def _parse(data: bytes) -> onnx.ModelProto:
    if not data:
        raise ModelError("the model file is empty")
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(f"not an ONNX model (it does not parse as ONNX protobuf: {exc})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError("not an ONNX model (no graph found; is the file truncated?)")
    return proto


def _refuse_external_data(proto: onnx.ModelProto) -> None:
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data:
            raise ModelError(
                f"tensor '{t.name}' refers to external data; models must carry their weights "
                "inside the file")


def _single_input(graph: onnx.GraphProto, consts: dict[str, np.ndarray]) -> onnx.ValueInfoProto:
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(f"the model must have exactly one input; it has {len(inputs)} ({names})")
    return inputs[0]


def _static_shape(inp: onnx.ValueInfoProto) -> tuple[int, ...]:
    """The input's shape with symbolic (batch) dimensions set to 1."""
    dims = inp.type.tensor_type.shape.dim
    if not inp.type.tensor_type.HasField("shape"):
        raise ModelError(f"input '{inp.name}' has no declared shape")
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    symbolic = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
    if len(symbolic) > 1:
        raise ModelError(
            f"input '{inp.name}' has {len(symbolic)} dimensions of unknown size "
            f"(positions {symbolic}); only a leading batch dimension may be symbolic")
    return shape


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {"_op_type": node.op_type}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


def _check_supported(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray],
                     input_name: str) -> None:
    problems = []
    for pos, node in enumerate(nodes):
        if node.domain not in ("", "ai.onnx"):
            problems.append((node.op_type, node.name, pos, f"custom domain '{node.domain}'"))
        elif node.op_type not in REGISTRY and node.op_type not in FOLD_ONLY:
            problems.append((node.op_type, node.name, pos, "not supported"))
    if problems:
        raise UnsupportedOpError(problems)


def _fold(node: onnx.NodeProto, args: list[np.ndarray], opset: int) -> list[np.ndarray]:
    """Evaluate one all-constant node with ONNX's reference evaluator at the model's opset."""
    feeds = {n: np.asarray(a) for n, a in zip(node.input, args, strict=True) if n}
    inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in feeds.items()
    ]
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    evaluator = ReferenceEvaluator(model)
    return [np.asarray(v) for v in evaluator.run(None, feeds)]


def _build(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray], input_name: str,
           in_shape: tuple[int, ...], opset: int) -> list[Node]:
    shapes: dict[str, tuple[int, ...]] = {input_name: in_shape}
    consts = dict(consts)
    built: list[Node] = []
    problems = []
    for pos, node in enumerate(nodes):
        try:
            built += _build_node(node, consts, shapes, opset)
        except OpFormError as exc:
            problems.append((node.op_type, node.name, pos, str(exc)))
        except ModelError:
            raise
        except Exception as exc:  # a malformed node: name it rather than crash
            raise ModelError(f"node #{pos} '{node.name}' ({node.op_type}) cannot be imported: "
                             f"{type(exc).__name__}: {exc}") from None
    if problems:
        raise UnsupportedOpError(problems)
    return built


def _inputs_of(node: onnx.NodeProto, consts: dict[str, np.ndarray],
               shapes: dict[str, tuple[int, ...]]) -> list[Input]:
    out: list[Input] = []
    for name in node.input:
        if name == "":
            out.append(Const(np.zeros(0, dtype=np.float32)))
        elif name in consts:
            out.append(Const(consts[name]))
        elif name in shapes:
            out.append(Var(name, shapes[name]))
        else:
            raise ModelError(f"input '{name}' of node '{node.name}' is produced by no node")
    while out and isinstance(out[-1], Const) and out[-1].value.size == 0 and not node.input[-1]:
        out.pop()
    return out


def _build_node(node: onnx.NodeProto, consts: dict[str, np.ndarray],
                shapes: dict[str, tuple[int, ...]], opset: int) -> list[Node]:
    inputs = _inputs_of(node, consts, shapes)
    variables = [i for i in inputs if isinstance(i, Var)]
    if node.op_type == "Shape" and variables:
        shape = np.array(variables[0].shape, dtype=np.int64)
        start, end = int(_attrs(node).get("start", 0)), _attrs(node).get("end")
        consts[node.output[0]] = shape[start:end]
        return []
    if not variables:
        args = [consts[n] if n else None for n in node.input]
        for name, value in zip(node.output, _fold(node, args, opset), strict=False):
            consts[name] = value
        return []
    if node.op_type in FOLD_ONLY:
        raise OpFormError("only supported when all its inputs are constant")
    attrs = _attrs(node)
    if node.op_type == "Split":
        return _build_split(node, attrs, inputs, shapes, opset)
    lowered = _lower(node, attrs, inputs, shapes)
    if lowered is not None:
        return lowered
    cls = REGISTRY[node.op_type].select(attrs, inputs)
    cls.check(attrs, inputs)
    out_shape = _out_shape(node.op_type, attrs, inputs)
    op = cls(attrs, inputs, out_shape)
    if out_shape is None:
        probe = [torch.zeros(1, *v.shape, dtype=torch.float64) for v in variables]
        out_shape = tuple(op.forward(*probe).shape[1:])
        op.out_shape = out_shape
    shapes[node.output[0]] = out_shape
    return [Node(node.output[0], node.op_type, op, [v.name for v in variables], out_shape,
                 node.name)]


def _lower(node: onnx.NodeProto, attrs: dict[str, Any], inputs: list[Input],
           shapes: dict[str, tuple[int, ...]]) -> list[Node] | None:
    """Composite ops become primitive nodes (ops/composite.py); None for other ops."""
    out = node.output[0]
    if node.op_type == "Softmax":
        x = inputs[0]
        assert isinstance(x, Var)
        nodes = composite.lower_softmax(out, x, attrs, node.name)
    elif node.op_type == "LayerNormalization":
        nodes = composite.lower_layernorm(out, inputs, attrs, node.name)
    elif node.op_type == "Div" and all(isinstance(i, Var) for i in inputs):
        x, y = inputs
        assert isinstance(x, Var) and isinstance(y, Var)
        nodes = composite.lower_div(out, x, y, tuple(np.broadcast_shapes(x.shape, y.shape)),
                                    node.name)
    else:
        return None
    for n in nodes:
        shapes[n.name] = n.shape
    return nodes


def _out_shape(op_type: str, attrs: dict[str, Any], inputs: list[Input]) -> Any:
    """The ONNX output shape when it follows from shapes alone (else None: probe it)."""
    in_shapes = [i.shape if isinstance(i, Var) else i.value.shape for i in inputs]
    if op_type in RESHAPES:
        cvals = [i.value if isinstance(i, Const) else None for i in inputs]
        return reshape_target(op_type, attrs, in_shapes[0], cvals)
    if op_type in BROADCASTING:
        return tuple(np.broadcast_shapes(*in_shapes))
    if op_type == "Concat":
        ax = int(attrs["axis"]) % len(in_shapes[0])
        first = list(in_shapes[0])
        first[ax] = sum(s[ax] for s in in_shapes)
        return tuple(first)
    if op_type == "Expand":
        target = tuple(int(v) for v in inputs[1].value.ravel())  # type: ignore[union-attr]
        return tuple(np.broadcast_shapes(in_shapes[0], target))
    return None


def _build_split(node: onnx.NodeProto, attrs: dict[str, Any], inputs: list[Input],
                 shapes: dict[str, tuple[int, ...]], opset: int) -> list[Node]:
    x = inputs[0]
    assert isinstance(x, Var)
    ax = int(attrs.get("axis", 0)) % len(x.shape)
    sizes = attrs.get("split")
    if sizes is None and len(inputs) > 1 and isinstance(inputs[1], Const) and inputs[1].value.size:
        sizes = inputs[1].value.ravel().tolist()
    n_out = len(node.output)
    if sizes is None:
        step = -(-x.shape[ax] // n_out)
        sizes = [min(step, x.shape[ax] - i * step) for i in range(n_out)]
    out, start = [], 0
    cls = REGISTRY["Split"]
    for name, size in zip(node.output, sizes, strict=True):
        shape = x.shape[:ax] + (int(size),) + x.shape[ax + 1:]
        part_attrs = dict(attrs, axis=ax, _split_start=start)
        op = cls(part_attrs, [x], shape)
        shapes[name] = shape
        out.append(Node(name, "Split", op, [x.name], shape, node.name))
        start += int(size)
    return out
