"""The ONNX model, read on its own into a small graph of flat float64 vectors.

Every tensor is a flat vector (row-major, the batch dimension of 1 included); every node is
either an ``Affine`` map ``y = sum_i W_i x_i + b`` (Gemm, MatMul, Add, Sub, Mul, Div; a
``W_i`` is a dense (m, n) matrix or an (n,) diagonal) or an ``Activation`` ``h = f(z)``
(Relu, Sigmoid, Tanh).  Flatten, Reshape and Identity only rename a tensor.  The float32
constants of the model are exactly representable in float64; the only inexact step is
``Div``'s reciprocal, whose error the node's noise term covers (``Affine.repr_err``).
Anything else is refused by name: the checker trusts no op it does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from checker.arith import U64, UNIT_ROUNDOFF


class Unusable(Exception):
    """A file cannot be used: unreadable, not a proof, or a model outside the trusted set."""


@dataclass(frozen=True)
class Affine:
    """``y = sum_i W_i x_i + b``.  ``dot``: the float evaluation rounds n-term dot
    products (Gemm, MatMul) rather than one elementwise operation (Add, Sub, Mul, Div)."""

    node: str
    op: str
    inputs: tuple[int, ...]
    mats: tuple[np.ndarray, ...]
    bias: np.ndarray
    output: int
    dot: bool
    terms: int = 1  # the length of the model's dot products (``dot`` only)
    repr_err: float = 0.0  # relative error of the float64 W against the model's exact op


@dataclass(frozen=True)
class Activation:
    """``h = f(z)`` elementwise; ``z_name``/``h_name`` are the ONNX tensor names."""

    node: str
    op: str
    input: int
    output: int
    z_name: str
    h_name: str


Node = Affine | Activation


@dataclass
class Graph:
    """Tensors by id (0 is the model's input); nodes in the ONNX file's (topological) order."""

    sizes: list[int]
    nodes: list[Node]
    output: int
    unit_roundoff: float

    @property
    def activations(self) -> list[Activation]:
        return [n for n in self.nodes if isinstance(n, Activation)]


@dataclass
class _Reader:
    """Reading state: each ONNX name is a constant array or a (tensor id, shape) variable."""

    sizes: list[int] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    vars: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)

    def new(self, name: str, shape: tuple[int, ...]) -> int:
        self.sizes.append(int(np.prod(shape, dtype=np.int64)))
        self.vars[name] = (len(self.sizes) - 1, shape)
        return len(self.sizes) - 1


Args = list[tuple[int, tuple[int, ...]] | np.ndarray]


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'} ({node.op_type})"


def _broadcast(node: onnx.NodeProto, c: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Constant ``c`` broadcast to a variable's shape, flattened; it may not enlarge it."""
    try:
        if np.broadcast_shapes(c.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise Unusable(f"{_where(node)}: constant of shape {c.shape} does not broadcast to "
                         f"the variable's shape {shape}") from None
    return np.broadcast_to(c, shape).astype(np.float64).ravel()


def _elementwise(r: _Reader, node: onnx.NodeProto, args: Args, out: str) -> None:
    """Add, Sub, Mul, Div with one or two variable operands."""
    op = node.op_type
    (x, y) = args
    if isinstance(x, tuple) and isinstance(y, tuple) and op in ("Add", "Sub"):
        if x[1] != y[1]:
            raise Unusable(f"{_where(node)}: operands of shapes {x[1]} and {y[1]}")
        n = r.sizes[x[0]]
        sign = 1.0 if op == "Add" else -1.0
        mats = (np.ones(n), np.full(n, sign))
        r.nodes.append(Affine(node.name, op, (x[0], y[0]), mats, np.zeros(n),
                              r.new(out, x[1]), False))
        return
    if isinstance(x, tuple) and isinstance(y, np.ndarray):
        var, c, const_first = x, _broadcast(node, y, x[1]), False
    elif isinstance(y, tuple) and isinstance(x, np.ndarray) and op in ("Add", "Sub", "Mul"):
        var, c, const_first = y, _broadcast(node, x, y[1]), True
    else:
        raise Unusable(f"{_where(node)}: needs a variable and a constant operand")
    n = r.sizes[var[0]]
    repr_err = 0.0
    if op == "Add":
        W, b = np.ones(n), c
    elif op == "Sub":
        W, b = (np.full(n, -1.0), c) if const_first else (np.ones(n), -c)
    elif op == "Mul":
        W, b = c, np.zeros(n)
    else:
        if not np.all(c != 0):
            raise Unusable(f"{_where(node)}: division by a constant with a zero")
        W, b, repr_err = 1.0 / c, np.zeros(n), 2 * U64
    r.nodes.append(Affine(node.name, op, (var[0],), (W,), b, r.new(out, var[1]), False,
                          repr_err=repr_err))


def _gemm(r: _Reader, node: onnx.NodeProto, args: Args, out: str) -> None:
    """Gemm with alpha = beta = 1, transA = 0 and constant B (and C)."""
    at = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0 or at.get("transA", 0):
        raise Unusable(f"{_where(node)}: only alpha = beta = 1 and transA = 0 are trusted")
    x, B = args[0], args[1]
    if not (isinstance(x, tuple) and isinstance(B, np.ndarray)) or len(x[1]) != 2:
        raise Unusable(f"{_where(node)}: needs a 2-D variable A and a constant B")
    B = B.T if at.get("transB", 0) else B
    rows, m = x[1][0], B.shape[1]
    C = args[2] if len(args) > 2 else np.zeros(m)
    if not isinstance(C, np.ndarray) or B.shape[0] != x[1][1]:
        raise Unusable(f"{_where(node)}: needs a constant C and B with {x[1][1]} rows")
    W = np.kron(np.eye(rows), B.T.astype(np.float64))
    b = _broadcast(node, C, (rows, m))
    r.nodes.append(Affine(node.name, "Gemm", (x[0],), (W,), b, r.new(out, (rows, m)), True,
                          terms=B.shape[0]))


def _matmul(r: _Reader, node: onnx.NodeProto, args: Args, out: str) -> None:
    """MatMul of a variable and a 2-D constant, either way round."""
    x, y = args
    shape: tuple[int, ...]
    if isinstance(x, tuple) and isinstance(y, np.ndarray) and y.ndim == 2 \
            and len(x[1]) == 1 and x[1][0] == y.shape[0]:  # vector @ matrix
        W, shape, terms = y.T, (int(y.shape[1]),), y.shape[0]
    elif isinstance(y, tuple) and isinstance(x, np.ndarray) and x.ndim == 2 \
            and len(y[1]) == 1 and y[1][0] == x.shape[1]:  # matrix @ vector
        W, shape, terms = x, (int(x.shape[0]),), x.shape[1]
    elif isinstance(x, tuple) and isinstance(y, np.ndarray) and y.ndim == 2 \
            and x[1] and x[1][-1] == y.shape[0]:
        rows = int(np.prod(x[1][:-1], dtype=np.int64))
        W, shape, terms = np.kron(np.eye(rows), y.T), x[1][:-1] + (y.shape[1],), y.shape[0]
    elif isinstance(y, tuple) and isinstance(x, np.ndarray) and x.ndim == 2 \
            and len(y[1]) >= 2 and y[1][-2] == x.shape[1]:
        cols = y[1][-1]
        W, shape = np.kron(x, np.eye(cols)), y[1][:-2] + (x.shape[0], cols)
        terms = x.shape[1]
        if np.prod(y[1][:-2], dtype=np.int64) != 1:
            raise Unusable(f"{_where(node)}: batched constant-left MatMul")
    else:
        raise Unusable(f"{_where(node)}: needs a variable and a 2-D constant of "
                         f"matching shapes")
    var = x if isinstance(x, tuple) else y
    assert isinstance(var, tuple)
    r.nodes.append(Affine(node.name, "MatMul", (var[0],), (W.astype(np.float64),),
                          np.zeros(W.shape[0]), r.new(out, shape), True, terms=terms))


def _activation(r: _Reader, node: onnx.NodeProto, args: Args, out: str) -> None:
    (x,) = args
    if not isinstance(x, tuple):
        raise Unusable(f"{_where(node)}: constant input")
    r.nodes.append(Activation(node.name, node.op_type, x[0], r.new(out, x[1]),
                              node.input[0], out))


def _move(r: _Reader, node: onnx.NodeProto, args: Args, out: str) -> None:
    """Identity, Flatten, Reshape: the same flat vector under a new shape."""
    x = args[0]
    at = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    shape = x[1] if isinstance(x, tuple) else x.shape
    if node.op_type == "Flatten":
        axis = at.get("axis", 1) % (len(shape) + 1) if shape else 0
        new: tuple[int, ...] = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
    elif node.op_type == "Reshape":
        if len(args) != 2 or not isinstance(args[1], np.ndarray) or at.get("allowzero", 0):
            raise Unusable(f"{_where(node)}: needs a constant shape")
        want = [shape[i] if d == 0 else int(d) for i, d in enumerate(args[1].tolist())]
        if -1 in want:
            known = int(np.prod([d for d in want if d != -1]))
            want[want.index(-1)] = int(np.prod(shape)) // max(known, 1)
        new = tuple(want)
    else:
        new = shape
    if int(np.prod(new)) != int(np.prod(shape)):
        raise Unusable(f"{_where(node)}: cannot reshape {shape} to {new}")
    if isinstance(x, tuple):
        r.vars[out] = (x[0], new)
    else:
        r.consts[out] = x.reshape(new)


Handler = Callable[[_Reader, onnx.NodeProto, Args, str], None]
#: the trusted ops: ONNX op type -> (reader, fewest inputs, most inputs)
HANDLERS: dict[str, tuple[Handler, int, int]] = {
    "Gemm": (_gemm, 2, 3), "MatMul": (_matmul, 2, 2), "Add": (_elementwise, 2, 2),
    "Sub": (_elementwise, 2, 2), "Mul": (_elementwise, 2, 2), "Div": (_elementwise, 2, 2),
    "Relu": (_activation, 1, 1), "Sigmoid": (_activation, 1, 1), "Tanh": (_activation, 1, 1),
    "Flatten": (_move, 1, 1), "Reshape": (_move, 2, 2), "Identity": (_move, 1, 1),
}


#: the attributes each trusted op may carry (each one read by its handler); any other
#: attribute is refused by name rather than ignored
ATTRIBUTES: dict[str, frozenset[str]] = {
    "Gemm": frozenset({"alpha", "beta", "transA", "transB"}),
    "Flatten": frozenset({"axis"}), "Reshape": frozenset({"allowzero"}),
}


def _constant(name: str, value: np.ndarray) -> np.ndarray:
    """A constant of the model; NaN or an infinity in it is refused (no bound survives it)."""
    if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
        raise Unusable(f"constant {name!r} holds NaN or an infinity")
    return value


def _elem_type(t: Any) -> str:
    return str(onnx.TensorProto.DataType.Name(t))


def read_model(path: str) -> Graph:
    """Read the ONNX file at ``path`` (see the module doc for what is trusted)."""
    try:
        model = onnx.load(path)
    except Exception as exc:  # onnx raises several types for a bad file
        raise Unusable(f"cannot read the model {path}: {exc}") from None
    g, r = model.graph, _Reader()
    types: set[str] = set()
    for init in g.initializer:
        r.consts[init.name] = _constant(init.name, numpy_helper.to_array(init))
        types.add(_elem_type(init.data_type))
    inputs = [i for i in g.input if i.name not in r.consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise Unusable("the model must have exactly one (non-constant) input and one output")
    tt = inputs[0].type.tensor_type
    types |= {_elem_type(tt.elem_type), _elem_type(g.output[0].type.tensor_type.elem_type)}
    shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim)
    r.new(inputs[0].name, shape)
    for node in g.node:
        _read_node(r, node, types)
    floats = [UNIT_ROUNDOFF[t] for t in types if t in UNIT_ROUNDOFF]
    others = {t for t in types if t not in UNIT_ROUNDOFF and t not in ("INT64", "INT32")}
    if others or not floats:
        raise Unusable(f"element types {sorted(others) or 'none'} are not trusted")
    if g.output[0].name not in r.vars:
        raise Unusable(f"the output {g.output[0].name} is not computed from the input")
    return Graph(r.sizes, r.nodes, r.vars[g.output[0].name][0], max(floats))


def _read_node(r: _Reader, node: onnx.NodeProto, types: set[str]) -> None:
    """Add one ONNX node (or constant) to the graph being read."""
    if node.op_type == "Constant":
        attr = {a.name: a for a in node.attribute}
        if "value" not in attr:
            raise Unusable(f"{_where(node)}: only the 'value' attribute is trusted")
        if set(attr) != {"value"}:
            raise Unusable(f"{_where(node)}: only the 'value' attribute is trusted")
        r.consts[node.output[0]] = _constant(node.output[0],
                                             numpy_helper.to_array(attr["value"].t))
        types.add(_elem_type(attr["value"].t.data_type))
        return
    if node.op_type not in HANDLERS or node.domain not in ("", "ai.onnx"):
        raise Unusable(f"op {node.op_type} at node {node.name or '(unnamed)'} is not in "
                         f"the checker's trusted set")
    args: Args = []
    for name in node.input:
        if name in r.consts:
            args.append(r.consts[name])
        elif name in r.vars:
            args.append(r.vars[name])
        else:
            raise Unusable(f"{_where(node)}: input {name!r} is not defined before it")
    extra = {a.name for a in node.attribute} - ATTRIBUTES.get(node.op_type, frozenset())
    if extra:
        raise Unusable(f"{_where(node)}: attribute(s) {sorted(extra)} are not in the "
                         f"checker's trusted set")
    handler, fewest, most = HANDLERS[node.op_type]
    if len(node.output) != 1 or not fewest <= len(args) <= most:
        raise Unusable(f"{_where(node)}: {len(args)} inputs and {len(node.output)} outputs")
    handler(r, node, args, node.output[0])
