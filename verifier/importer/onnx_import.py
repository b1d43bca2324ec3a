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

from verifier import ops  # noqa: F401  (registers every op)
from verifier.errors import ModelError, UnsupportedOpError
from verifier.graph import Graph, Node
from verifier.importer import lowering
from verifier.importer.onnx_attrs import MAX_OPSET, MIN_OPSET, check_attributes
from verifier.importer.patterns import FUSED, fuse_patterns
from verifier.importer.quadform import fuse_quadratic_forms
from verifier.ops.base import REGISTRY, Const, Input, OpFormError, Var
from verifier.ops.linear import _conv_pads
from verifier.ops.shape import reshape_target
from verifier.precision import unit_roundoff

# Ops folded away when every input is constant, never kept in the graph.
FOLD_ONLY = {
    "Constant", "Shape", "ConstantOfShape", "Range", "Size",
    "Mod", "ReduceProd", "NonZero", "ArgMax",
    # masks built from constants (a causal attention mask: ConstantOfShape, Trilu, Where)
    "Trilu", "IsNaN", "IsInf",
}
# Ops that make booleans: of a variable, lowered to a Heaviside step (0 or 1); of constants,
# folded by ONNX's reference evaluator, which keeps their type
BOOLEAN = {"Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal", "Not", "And", "Or",
           "Xor"}
RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
# Ops whose fold by ONNX's reference evaluator is plain numpy broadcasting arithmetic.
AXIS_OPS = {"Softmax", "LogSoftmax", "Hardmax", "LayerNormalization", "Concat", "Gather",
            "Split", "Flatten"}
REFERENCE_FOLDS = {"Cast", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"}
BROADCASTING = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"}
FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}


class Sizes:
    """Input and output sizes of a model with static ``input_shape`` / ``output_shape``."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_outputs(self) -> int:
        return math.prod(self.output_shape)


@dataclass(frozen=True, eq=False)
class Model(Sizes):
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

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (for the API and the CLI)."""
        return {
            "sha256": self.sha256,
            "input": {"name": self.input_name, "shape": list(self.input_shape),
                      "dtype": str(self.input_dtype)},
            "output": {"name": self.output_name, "shape": list(self.output_shape)},
            "op_census": self.op_census,
            "n_parameters": self.n_parameters,
            "bounded": True,
        }


def read_model_bytes(source: bytes | str | Path) -> bytes:
    """The model's bytes from bytes or a file path, gzip undone (VNN-COMP ships models as
    .onnx.gz); ModelError if the compressed file is damaged."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ModelError(f"the gzip-compressed model is damaged: {exc}") from None
    return data


def load_model(source: bytes | str | Path) -> Model:
    """Import an ONNX model from bytes or a file path; raise ModelError saying what is wrong."""
    data = read_model_bytes(source)
    proto = _parse(data)
    _refuse_external_data(proto)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(f"the model uses ONNX opset {opset}; opsets {MIN_OPSET} to "
                         f"{MAX_OPSET} are supported")
    graph = proto.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inp = _single_input(graph, consts)
    in_shape = _static_shape(inp)
    in_dtype = FLOAT_TYPES.get(inp.type.tensor_type.elem_type)
    if in_dtype is None:
        raise ModelError(f"input '{inp.name}' has a non-floating-point element type")
    if len(graph.output) != 1:
        raise ModelError(f"the model has {len(graph.output)} outputs; exactly one is supported")
    out_name = graph.output[0].name
    nodes = fuse_patterns(list(graph.node), consts, {out_name}, {inp.name})
    _check_supported(nodes, consts, inp.name)
    read = {name for n in nodes for name in n.input} | {out_name}
    built = _build(nodes, consts, inp.name, in_shape, opset, read)
    built = fuse_quadratic_forms(built, out_name, unit_roundoff(proto))
    if out_name != inp.name and out_name not in {n.name for n in built}:
        raise ModelError(f"the output '{out_name}' does not depend on the input "
                         f"'{inp.name}' (no computation from the input produces it)")
    g = Graph(inp.name, in_shape, built, out_name, unit_roundoff=unit_roundoff(proto))
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


def _fold(node: onnx.NodeProto, args: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    """Evaluate one all-constant node with ONNX's reference evaluator at the model's opset
    (whose Softmax ignores the flattening of opsets below 13: done here)."""
    if node.op_type == "Softmax" and opset < 13:
        return [_softmax_flat(np.asarray(args[0]), int(_attrs(node).get("axis", 1)))]
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


def _fold_as_ours(node: onnx.NodeProto, consts: dict[str, np.ndarray], opset: int,
                  read: set[str]) -> dict[str, np.ndarray] | None:
    """Fold a node of an op the engine implements with the engine's own semantics (checked
    against onnxruntime; ONNX's reference evaluator gets some forms wrong: Softmax below
    opset 13, Slice with negative steps, ConvTranspose output_shape): its first input, a
    float constant (or integer data of a Slice), becomes the variable of a one-node graph.
    None where the reference evaluator is used instead: other ops, other integer data, and
    forms the engine refuses of the ops whose reference is plain numpy (REFERENCE_FOLDS).
    A form the engine refuses of any other op is refused (OpFormError)."""
    first = node.input[0] if node.input else ""
    value = consts.get(first)
    if node.op_type in FOLD_ONLY | BOOLEAN or node.op_type not in REGISTRY or value is None:
        return None
    value = np.asarray(value)
    floating = np.issubdtype(value.dtype, np.floating)
    if not floating and not (node.op_type == "Slice" and np.issubdtype(value.dtype, np.integer)):
        return None
    others = {k: v for k, v in consts.items() if k != first}
    try:
        nodes = _build_node(node, others, {first: value.shape}, opset, read)
    except OpFormError:
        if node.op_type in REFERENCE_FOLDS:
            return None
        raise
    dtype = value.dtype
    if node.op_type == "Cast":
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(_attrs(node)["to"])))
    x = torch.as_tensor(np.array(value), dtype=torch.float64 if floating else torch.int64)[None]
    built = {n.name for n in nodes}
    with torch.no_grad():
        return {name: Graph(first, value.shape, nodes, name).forward(x)[0].numpy().astype(dtype)
                for name in node.output if name in built}


def _softmax_flat(x: np.ndarray, ax: int) -> np.ndarray:
    """ONNX Softmax below opset 13: over the trailing block of x seen as 2-d at ``ax``."""
    flat = x.reshape(math.prod(x.shape[: ax % x.ndim]), -1).astype(np.float64)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(x.shape).astype(x.dtype)


def _build(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray], input_name: str,
           in_shape: tuple[int, ...], opset: int, read: set[str]) -> list[Node]:
    """The engine's nodes for ``nodes``; ``read`` names every tensor some node or the graph
    output reads."""
    shapes: dict[str, tuple[int, ...]] = {input_name: in_shape}
    consts = dict(consts)
    built: list[Node] = []
    problems = []
    unknown: set[str] = set()  # outputs of refused nodes (and of nodes that read them)
    for pos, node in enumerate(nodes):
        if unknown.intersection(node.input):
            unknown.update(node.output)
            continue
        try:
            built += _build_node(node, consts, shapes, opset, read)
        except OpFormError as exc:
            problems.append((node.op_type, node.name, pos, str(exc)))
            unknown.update(node.output)
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
                shapes: dict[str, tuple[int, ...]], opset: int, read: set[str]) -> list[Node]:
    inputs = _inputs_of(node, consts, shapes)
    variables = [i for i in inputs if isinstance(i, Var)]
    if node.op_type == "Shape" and variables:
        shape = np.array(variables[0].shape, dtype=np.int64)
        start, end = int(_attrs(node).get("start", 0)), _attrs(node).get("end")
        consts[node.output[0]] = shape[start:end]
        return []
    if not variables:
        folded = _fold_as_ours(node, consts, opset, read)
        if folded is None:
            args = [consts[n] if n else None for n in node.input]
            try:
                folded = dict(zip(node.output, _fold(node, args, opset), strict=False))
            except Exception as exc:  # the reference evaluator's own errors: refuse the node
                raise OpFormError(f"its inputs are all constant, but folding it failed: "
                                  f"{type(exc).__name__}: {exc}") from None
        consts.update(folded)
        return []
    if node.op_type in FOLD_ONLY:
        raise OpFormError("only supported when all its inputs are constant")
    if node.doc_string != FUSED:  # fused nodes are ours: exact by construction
        check_attributes(node, opset)
    attrs = _normalize(node.op_type, _attrs(node), inputs, opset)
    if node.op_type == "Split":
        return _build_split(node, attrs, inputs, shapes, opset)
    for i, name in enumerate(node.output[1:], start=1):
        if name in read:
            raise OpFormError(f"output #{i} ('{name}') is used, but only the first output "
                              "is computed")
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
    """Composite ops become primitive nodes (verifier/importer/lowering.py); None for other ops."""
    out = node.output[0]
    if node.op_type == "Softmax":
        x = inputs[0]
        assert isinstance(x, Var)
        nodes = lowering.lower_softmax(out, x, attrs, node.name)
    elif node.op_type == "LayerNormalization":
        _check_broadcasts_to(inputs, "scale and bias")
        nodes = lowering.lower_layernorm(out, inputs, attrs, node.name)
    elif node.op_type in ("DepthToSpace", "SpaceToDepth"):
        assert isinstance(inputs[0], Var)
        nodes = lowering.lower_depth_space(out, inputs[0], attrs, node.name, node.op_type)
    elif node.op_type == "GlobalMaxPool":
        assert isinstance(inputs[0], Var)
        nodes = lowering.lower_global_max_pool(out, inputs[0], node.name)
    elif node.op_type == "Einsum":
        nodes = lowering.lower_einsum(out, inputs, attrs, node.name)
    elif node.op_type in BOOLEAN:
        nodes = lowering.lower_compare(out, inputs, node.op_type, node.name)
    elif node.op_type == "Cast" and int(attrs.get("to", 1)) == onnx.TensorProto.BOOL and \
            isinstance(inputs[0], Var):
        nodes = lowering.lower_cast_bool(out, inputs[0], node.name)
    elif node.op_type == "Where" and isinstance(inputs[0], Var):
        nodes = lowering.lower_where(out, inputs, node.name)
    elif node.op_type in ("ReduceSumSquare", "ReduceL1", "ReduceL2"):
        nodes = lowering.lower_norm_reduce(out, inputs, attrs, node.name, node.op_type)
    elif node.op_type == "InstanceNormalization":
        nodes = lowering.lower_instancenorm(out, inputs, attrs, node.name)
    elif node.op_type == "LogSoftmax":
        assert isinstance(inputs[0], Var)
        nodes = lowering.lower_logsoftmax(out, inputs[0], attrs, node.name)
    elif node.op_type == "HardSigmoid":
        assert isinstance(inputs[0], Var)
        nodes = lowering.lower_hardsigmoid(out, inputs[0], attrs, node.name)
    elif node.op_type == "Mul" and len(inputs) == 2 and isinstance(inputs[0], Var) and \
            inputs[0] == inputs[1]:
        nodes = lowering.lower_square(out, inputs[0], node.name)
    elif node.op_type == "Div" and all(isinstance(i, Var) for i in inputs):
        x, y = inputs
        assert isinstance(x, Var) and isinstance(y, Var)
        nodes = lowering.lower_div(out, x, y, tuple(np.broadcast_shapes(x.shape, y.shape)),
                                    node.name)
    else:
        return None
    for n in nodes:
        shapes[n.name] = n.shape
    return nodes


def _check_broadcasts_to(inputs: list[Input], what: str) -> None:
    """The constant inputs after the first broadcast to the first's shape without growing it."""
    shape = inputs[0].shape if isinstance(inputs[0], Var) else inputs[0].value.shape
    for i in inputs[1:]:
        if isinstance(i, Const) and i.value.size and \
                tuple(np.broadcast_shapes(shape, i.value.shape)) != tuple(shape):
            raise OpFormError(f"{what} of shape {i.value.shape} do not broadcast to the input "
                              f"shape {shape}")


def _normalize(op_type: str, attrs: dict[str, Any], inputs: list[Input],
               opset: int) -> dict[str, Any]:
    """The node's attributes with the defaults of its opset made explicit where they differ
    between opsets, and padding resolved to explicit pads; refuses values not implemented."""
    if op_type in ("Softmax", "LogSoftmax", "Hardmax"):
        attrs.setdefault("axis", -1 if opset >= 13 else 1)
        attrs["_flatten"] = opset < 13  # softmax over the input flattened to 2-d at axis
    if op_type in AXIS_OPS and "axis" in attrs:
        first = inputs[0]
        rank = len(first.shape if isinstance(first, Var) else first.value.shape)
        top = rank + 1 if op_type == "Flatten" else rank
        if not -rank <= int(attrs["axis"]) < top:
            raise OpFormError(f"attribute 'axis'={attrs['axis']} is out of range for an input "
                              f"of rank {rank}")
    if op_type in ("Conv", "ConvTranspose", "MaxPool", "AveragePool") and attrs.get(
            "auto_pad", "NOTSET") not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise OpFormError(f"attribute 'auto_pad'={attrs['auto_pad']!r} is not an ONNX value")
    if op_type in ("MaxPool", "AveragePool"):
        attrs = _pool_attrs(op_type, attrs, inputs[0].shape)  # type: ignore[union-attr]
    elif op_type in ("Conv", "ConvTranspose"):
        _conv_attrs(attrs, inputs)
    elif op_type in ("MatMul", "Pow"):
        _refuse_rank_growth(op_type, inputs)
    elif op_type == "Pad":
        mode = attrs.get("mode", "constant")
        if mode not in ("constant", "reflect", "edge") and not (mode == "wrap" and opset >= 19):
            raise OpFormError(f"attribute 'mode'={mode!r} is not supported in opset {opset}")
    return attrs


def _refuse_rank_growth(op_type: str, inputs: list[Input]) -> None:
    """A constant operand of higher rank than the variable one would broadcast against the
    batch of problems: refuse it (MatMul: but a matrix times a vector is fine)."""
    var = [len(i.shape) for i in inputs if isinstance(i, Var)]
    const = [i.value.ndim for i in inputs if isinstance(i, Const)]
    if len(var) != 1 or not const:
        return
    rv, rc = var[0], const[0]
    if rc > rv and not (op_type == "MatMul" and rv == 1 and rc == 2):
        raise OpFormError(f"a constant operand of rank {rc} with a variable of rank {rv} is "
                          "not supported")


def _refuse_dilated_same(attrs: dict[str, Any]) -> None:
    """SAME_* with dilations: the ONNX spec counts the dilated kernel, onnxruntime does not
    (pooling) or refuses (Conv); the meaning is not settled, so refuse it."""
    if str(attrs.get("auto_pad", "NOTSET")).startswith("SAME") and any(
            int(d) != 1 for d in attrs.get("dilations", [])):
        raise OpFormError(f"attribute 'auto_pad'={attrs['auto_pad']!r} together with "
                          f"'dilations'={list(attrs['dilations'])} is not supported")


def _conv_attrs(attrs: dict[str, Any], inputs: list[Input]) -> None:
    _refuse_dilated_same(attrs)
    if len(inputs) < 2 or not isinstance(inputs[1], Const):
        return  # the op's check refuses variable weights
    spatial = list(inputs[1].value.shape[2:])
    if "kernel_shape" in attrs and [int(k) for k in attrs["kernel_shape"]] != spatial:
        raise OpFormError(f"attribute 'kernel_shape'={list(attrs['kernel_shape'])} differs "
                          f"from the weights' spatial shape {spatial}")
    if attrs.get("auto_pad") == "VALID":
        attrs["pads"] = [0] * (2 * len(spatial))
    auto = str(attrs.get("auto_pad", "NOTSET"))
    if attrs["_op_type"] == "ConvTranspose" and isinstance(inputs[0], Var) and (
            "output_shape" in attrs or auto.startswith("SAME")):
        _transpose_output_shape(attrs, inputs[0].shape[2:], spatial)


def _transpose_output_shape(attrs: dict[str, Any], size: tuple[int, ...],
                            kernel: list[int]) -> None:
    """ConvTranspose's ``output_shape`` (or SAME_*'s, the input's size times the stride) as
    explicit pads and output_padding, as onnxruntime reads it: the total padding
    ``stride (in - 1) + extent - out`` split in two (the odd one at the end, at the start
    for SAME_LOWER), or, where the output is larger than that, the excess as output_padding,
    which must stay below the stride (onnxruntime rejects the model otherwise); SAME_*
    without output_shape adds none (no padding: the output is then stride (in - 1) +
    extent, short of in * stride)."""
    n = len(kernel)
    strides = [int(v) for v in attrs.get("strides", [1] * n)]
    dil = [int(v) for v in attrs.get("dilations", [1] * n)]
    auto = str(attrs.get("auto_pad", "NOTSET"))
    if any(int(v) for v in attrs.get("output_padding", [])):
        raise OpFormError(f"attribute 'output_padding'={list(attrs['output_padding'])} "
                          "together with 'output_shape' or auto_pad SAME_* is not supported")
    if "output_shape" in attrs:
        out = [int(v) for v in attrs["output_shape"]]
        if len(out) != n:  # onnxruntime's shape inference rejects other lengths
            raise OpFormError(f"attribute 'output_shape'={out}: {n} spatial sizes expected")
    else:
        out = [size[i] * strides[i] for i in range(n)]
    pads, extra = [0] * (2 * n), [0] * n
    for i in range(n):
        total = strides[i] * (size[i] - 1) + (kernel[i] - 1) * dil[i] + 1 - out[i]
        if total < 0 and "output_shape" not in attrs:
            continue  # SAME_* alone: onnxruntime pads by max(0, total), adds nothing
        if total < 0:
            extra[i] = -total
            if extra[i] >= strides[i]:
                raise OpFormError(f"attribute 'output_shape'={out}: axis {i} is {extra[i]} "
                                  f"larger than the input and stride give, not below the "
                                  f"stride {strides[i]} (onnxruntime rejects it)")
            continue
        small, large = total // 2, total - total // 2
        pads[i], pads[i + n] = (small, large) if auto == "SAME_UPPER" else (large, small)
    attrs.pop("output_shape", None)
    attrs.update(pads=pads, output_padding=extra, auto_pad="NOTSET")


def _pool_attrs(op_type: str, attrs: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    """Explicit kernel, strides, dilations and pads (auto_pad resolved); ceil_mode as pads
    at the end to onnxruntime's count of windows (``_overhang``: those pads, per axis)."""
    _refuse_dilated_same(attrs)
    k = [int(v) for v in attrs["kernel_shape"]]
    n = len(k)
    if len(shape) != n + 2 or n > (2 if op_type == "MaxPool" else 3):
        raise OpFormError(f"attribute 'kernel_shape'={k} on an input of shape {shape} is not "
                          "supported (1-d and 2-d pooling, and 3-d average pooling)")
    strides = [int(v) for v in attrs.get("strides", [1] * n)]
    dil = [int(v) for v in attrs.get("dilations", [1] * n)]
    pads = [int(v) for v in _conv_pads(attrs, shape[2:], tuple(k), strides, dil)]
    ceil = int(attrs.get("ceil_mode", 0))
    overhang = [0] * n  # per axis: the end pad that ceil_mode's last window adds
    for i in range(n):
        extent = (k[i] - 1) * dil[i] + 1
        span = shape[2 + i] + pads[i] + pads[i + n] - extent
        if span < 0:
            raise OpFormError(f"attribute 'kernel_shape'={k}: the window is larger than the "
                              "padded input")
        if max(pads[i], pads[i + n]) >= extent:
            raise OpFormError(f"attribute 'pads'={pads}: a window lies wholly in the padding")
        if ceil and span % strides[i]:
            # onnxruntime's count: ceil, less a last window starting past the input and its
            # leading pad; the overhang is padded to that count, with -inf for MaxPool (never
            # the max) and zeros for AveragePool, whose divisor leaves it out
            count = -(-span // strides[i]) + 1
            if (count - 1) * strides[i] >= shape[2 + i] + pads[i]:
                count -= 1
            overhang[i] = max(0, (count - 1) * strides[i] - span)
            pads[i + n] += overhang[i]
    out = dict(attrs, kernel_shape=k, strides=strides, dilations=dil, pads=pads,
               auto_pad="NOTSET", ceil_mode=0)
    if any(overhang):
        out["_overhang"] = overhang
    out.pop("storage_order", None)  # the layout of the Indices output only
    return out


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
    if int(attrs.get("num_outputs", n_out)) != n_out:
        raise OpFormError(f"attribute 'num_outputs'={attrs['num_outputs']} differs from the "
                          f"node's {n_out} outputs")
    if sizes is None:  # equal parts; from opset 18 the last may be smaller
        step = -(-x.shape[ax] // n_out)
        sizes = [min(step, x.shape[ax] - i * step) for i in range(n_out)]
    if len(sizes) != n_out or sum(sizes) != x.shape[ax] or min(sizes) < 0:
        raise OpFormError(f"split sizes {list(sizes)} do not cut axis {ax} of size "
                          f"{x.shape[ax]} into {n_out} parts")
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
