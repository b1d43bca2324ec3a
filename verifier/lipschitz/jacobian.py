"""Bounds on every entry of the Jacobian of ``g(x) = C f(x)`` over an input box.

The Jacobian is built as a second graph, the *backward graph*, that runs reverse-mode
differentiation.  Its seed ``s`` is one row of C (a point box).  Each linear op
``y = L(x) + b`` becomes its transpose ``v_x = L^T(v_y)`` and each scalar op
``y = sigma(z)`` becomes the product ``v_z = v_y * d`` of two variables, with
``d = sigma'(z)``.  The graph's output is ``v_x = C_i J(x)``.

A derivative d is either *linked*: computed inside the graph as ``sigma'(z(x))`` from a copy
of the forward graph that reads x (the activation's ``derivative`` op, ops/derivatives.py), so
the derivatives stay tied to x and to one another, as in Shi et al. (NeurIPS 2022); or
*free*: a box variable over ``[min sigma', max sigma']`` on z's interval (for activations
that have no derivative op).  ReLU's derivative is exactly 0 or 1 on stable neurons.

The engine asks each op what it needs: an elementwise op (``Op.elementwise``) its derivative
op, derivative range and largest slope (ScalarOp), a linear op its |L| (``abs_linear``) or the
one sign of its weights (``weight_sign``).

The engine's own CROWN then bounds the graph's output: McCormick planes per product
(centred; exact when one factor is a point), relaxation lines for the derivatives, and the
cotangents' intermediate bounds from CROWN intersected with intervals.  The forward copy's
bounds are computed once per box and handed in (``intermediate.Known.fixed``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch

from verifier.bounds import intermediate
from verifier.bounds.backward import NodeBounds, bound
from verifier.bounds.intermediate import Known
from verifier.bounds.limits import Interrupted
from verifier.graph import Graph, Node
from verifier.ops.base import Interval, Op, Tensor, Var
from verifier.ops.bilinear import VarMul
from verifier.ops.linear import Add, AffineOp
from verifier.ops.nonlinear import ScalarOp
from verifier.ops.shape import Identity

INPUT = "seed_and_derivatives"
ROW_CHUNK = 1024
STOP_ROW_BUDGET = 8192  # (batch x rows) per CROWN call between two checks of a stop
Stop = Callable[[], bool]


def never() -> bool:
    """The default stop check: never stop."""
    return False


def elementwise(op: Op) -> TypeGuard[ScalarOp]:
    """Whether the op is an elementwise function (``Op.elementwise``), whose derivative
    rules ScalarOp declares."""
    return op.elementwise


# -- the linear pieces of the backward graph ---------------------------------------------
def linear_part(op: Op, k: int, x: Tensor) -> Tensor:
    """L_k(x): the op's linear map from variable input k (others zero), bias removed.
    ``x`` is (N, *in_k); the result (N, *out)."""
    zeros = [torch.zeros(1, *s, dtype=x.dtype, device=x.device) for s in op.var_shapes]
    xs = [z.expand(x.shape[0], *z.shape[1:]) for z in zeros]
    xs[k] = x
    return op.forward(*xs) - op.forward(*zeros)


def abs_part(op: Op, k: int, r: Tensor) -> Tensor:
    """|L_k|(r): L_k with every weight replaced by its absolute value (linear in r).

    Ops without ``abs_linear`` are the move/select/sum ops and +-1 arithmetic, whose
    weights from input k all have one sign (``weight_sign``): |L_k| = L_k or -L_k."""
    if op.has_abs_linear():
        rs = [torch.zeros(r.shape[0], *s, dtype=r.dtype, device=r.device)
              for s in op.var_shapes]
        rs[k] = r
        return op.abs_linear(*rs)  # type: ignore[attr-defined]
    sign = op.weight_sign(k)
    if sign is None:
        raise ValueError(f"lipschitz: no absolute-value rule for the linear op "
                         f"{type(op).__name__}")
    return sign * linear_part(op, k, r)


def has_abs_rule(op: Op) -> bool:
    """Whether ``abs_part`` knows |L_k| for every input k of the op."""
    return op.has_abs_linear() or all(
        op.weight_sign(k) is not None for k in range(len(op.var_shapes)))


def transpose_apply(fn: Any, shape: tuple[int, ...], v: Tensor) -> Tensor:
    """v^T (d fn / d x) for a linear fn at x = 0: the transposed map applied to v (N, *out)."""
    with torch.enable_grad():
        x = torch.zeros(v.shape[0], *shape, dtype=v.dtype, device=v.device, requires_grad=True)
        (g,) = torch.autograd.grad(fn(x), x, v, create_graph=v.requires_grad)
    return g


class TransposeOp(AffineOp):
    """``v_in = L_k^T(v_out)``: the transpose of a linear op's map from its input k.

    Its own transpose (used by CROWN on the backward graph) is L_k itself; its absolute
    value is the transpose of |L_k|, so interval bounds stay exact for a box."""

    onnx_types = ()

    def __init__(self, source: Op, k: int, in_shape: tuple[int, ...]):
        super().__init__({}, [Var("v", source.out_shape)], in_shape)
        self.source, self.k = source, k
        self.in_shape = in_shape

    def forward(self, v: Tensor) -> Tensor:
        return self.source.backward(v.unsqueeze(1))[self.k].squeeze(1)  # type: ignore

    def backward(self, A: Tensor) -> list[Tensor]:
        B, R = A.shape[:2]
        y = linear_part(self.source, self.k, A.reshape(B * R, *self.in_shape))
        return [y.reshape(B, R, *y.shape[1:])]

    def bias_term(self, A: Tensor) -> Tensor:
        return A.new_zeros(A.shape[:2])

    def abs_linear(self, r: Tensor) -> Tensor:
        return transpose_apply(lambda x: abs_part(self.source, self.k, x), self.in_shape, r)


class Segment(Identity):
    """A slice ``x[:, :, start:start + size]`` of the flat input, reshaped.  An exact move
    (a subclass of Identity, so CROWN takes its bounds from the input box as they are)."""

    def __init__(self, start: int, shape: tuple[int, ...], in_shape: tuple[int, ...]):
        super().__init__({"_op_type": "Identity"}, [Var("x", in_shape)], shape)
        self.start, self.size = start, math.prod(shape)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)[:, self.start:self.start + self.size]
        return flat.reshape(x.shape[0], *self.out_shape)

    def backward(self, A: Tensor) -> list[Tensor]:
        B, R = A.shape[:2]
        out = A.new_zeros(B, R, math.prod(self.var_shapes[0]))
        out[:, :, self.start:self.start + self.size] = A.reshape(B, R, self.size)
        return [out.reshape(B, R, *self.var_shapes[0])]


# -- building the backward graph ---------------------------------------------------------
@dataclass(eq=False)
class JacobianGraph:
    """The backward graph of ``forward`` and the layout of its flat input.

    Input layout: ``[seed (n_out) | x (n_in) when linked | free derivatives ...]``.  A
    *linked* derivative is computed inside the graph as ``sigma'(z(x))`` from a copy of the
    forward graph, so its relaxation keeps it tied to x and to the other derivatives; a
    *free* one is a box variable over ``[min sigma', max sigma']`` on z's interval (for
    activations without a derivative op).  ``free`` maps those nodes to (start, size).
    ``graph`` is None when the output does not depend on the input (the Jacobian is 0)."""

    forward: Graph
    graph: Graph | None
    n_seed: int
    linked: bool
    free: dict[str, tuple[int, int]]

    @property
    def x_start(self) -> int:
        return self.n_seed


def unsupported(node: Node, why: str) -> ValueError:
    return ValueError(f"lipschitz: op {node.op_type} (node '{node.name}') is not supported: "
                      f"{why}")


def check_supported(graph: Graph) -> None:
    """Raise ValueError naming the first node the Jacobian bound cannot handle."""
    for node in graph.nodes:
        op = node.op
        if op.linear:
            if not has_abs_rule(op):
                raise unsupported(node, "no absolute-value rule for this linear op")
        elif elementwise(op):
            if not op.exact_derivative_range:
                raise unsupported(node, "no derivative range for this nonlinearity")
        else:
            raise unsupported(node, "only linear ops and elementwise nonlinearities "
                              "(ReLU, sigmoid, tanh, GeLU, ...) have Jacobian bounds")


class _Builder:
    """Accumulates the backward graph's nodes in topological order."""

    def __init__(self, fwd: Graph, link: bool):
        self.fwd, self.link = fwd, link
        self.nodes: list[Node] = []
        self.cot: dict[str, str] = {}  # forward node -> backward node holding its cotangent
        self.n_seed = math.prod(fwd.output_shape)
        self.free: dict[str, tuple[int, int]] = {}
        self.in_shape: tuple[int, ...] = (1, 0)  # fixed once every input is placed

    def add(self, name: str, op: Op, inputs: list[str]) -> str:
        self.nodes.append(Node(name, type(op).__name__, op, inputs, op.out_shape))
        return name

    def accumulate(self, target: str, name: str, shape: tuple[int, ...]) -> None:
        old = self.cot.get(target)
        if old is None:
            self.cot[target] = name
            return
        op = Add({"_op_type": "Add"}, [Var(old, shape), Var(name, shape)], shape)
        self.cot[target] = self.add(f"sum:{target}:{len(self.nodes)}", op, [old, name])

    def shape_of(self, name: str) -> tuple[int, ...]:
        if name == self.fwd.input_name:
            return self.fwd.input_shape
        return self.fwd.node(name).shape

    def layout(self) -> None:
        """Place the seed, x (when linked) and every free derivative in the flat input."""
        offset = self.n_seed + (math.prod(self.fwd.input_shape) if self.link else 0)
        for node in self.fwd.nodes:
            if elementwise(node.op) and not (
                    self.link and node.op.derivative(node.shape) is not None):
                size = math.prod(node.shape)
                self.free[node.name] = (offset, size)
                offset += size
        self.in_shape = (1, offset)

    def copy_forward(self) -> None:
        """The forward graph again, reading x from the flat input (names prefixed fwd:)."""
        x = Segment(self.n_seed, self.fwd.input_shape, self.in_shape)
        rename = {self.fwd.input_name: self.add("fwd:" + self.fwd.input_name, x, [INPUT])}
        for node in self.fwd.nodes:
            rename[node.name] = self.add("fwd:" + node.name, node.op,
                                         [rename[i] for i in node.inputs])

    def build(self) -> JacobianGraph:
        check_supported(self.fwd)
        self.layout()
        if self.link:
            self.copy_forward()
        out = self.fwd.output_name
        seed = Segment(0, self.fwd.output_shape, self.in_shape)
        self.cot[out] = self.add("seed", seed, [INPUT])
        for node in reversed(self.fwd.nodes):
            if node.name in self.cot:
                self.step(node)
        result = self.cot.get(self.fwd.input_name)
        graph = None if result is None else Graph(INPUT, self.in_shape, self.nodes, result)
        return JacobianGraph(self.fwd, graph, self.n_seed, self.link, self.free)

    def derivative(self, node: Node, op: ScalarOp) -> str:
        """The node holding the activation's derivative: a free segment of the input, or
        the op's ``derivative`` of the forward copy's z."""
        if node.name in self.free:
            start, _ = self.free[node.name]
            seg = Segment(start, node.shape, self.in_shape)
            return self.add(f"d:{node.name}", seg, [INPUT])
        deriv = op.derivative(node.shape)
        return self.add(f"d:{node.name}", deriv, ["fwd:" + node.inputs[0]])  # type: ignore

    def step(self, node: Node) -> None:
        v = self.cot[node.name]
        if elementwise(node.op):
            d = self.derivative(node, node.op)
            prod = VarMul({"_op_type": "Mul"}, [Var(v, node.shape), Var(d, node.shape)],
                          node.shape)
            name = self.add(f"vjp:{node.name}", prod, [v, d])
            self.accumulate(node.inputs[0], name, self.shape_of(node.inputs[0]))
            return
        for k, inp in enumerate(node.inputs):
            shape = self.shape_of(inp)
            t = TransposeOp(node.op, k, shape)
            name = self.add(f"vjp:{node.name}:{k}", t, [v])
            self.accumulate(inp, name, shape)


def jacobian_graph(graph: Graph, link: bool = True) -> JacobianGraph:
    """The backward graph of ``graph`` (raises ValueError on ops it cannot differentiate);
    ``link`` keeps derivatives tied to x where a derivative op exists."""
    return _Builder(graph, link).build()


# -- bounding ----------------------------------------------------------------------------
def derivative_range(op: ScalarOp, lo: Tensor, hi: Tensor) -> Interval:
    """[min f', max f'] over [lo, hi], as the op gives it (``ScalarOp.derivative_range``)."""
    return op.derivative_range(lo, hi)


def forward_boxes(graph: Graph, lower: Tensor, upper: Tensor, stop: Stop = never
                  ) -> dict[str, Interval]:
    """CROWN intermediate bounds of every node of the forward graph over the boxes (raises
    verifier.bounds.crown.Interrupted once ``stop()`` holds)."""
    with torch.no_grad():
        return intermediate.compute(graph, lower, upper, stop=stop).box


def backward_input_box(jg: JacobianGraph, C: Tensor, lower: Tensor, upper: Tensor,
                       stop: Stop = never) -> tuple[Tensor, Tensor, dict[str, Interval]]:
    """The backward graph's input box for K forward boxes and R rows of C, (K*R, n), and
    the forward copy's node bounds repeated for each row."""
    K, R = lower.shape[0], C.shape[0]
    box = forward_boxes(jg.forward, lower, upper, stop)
    seed = C.unsqueeze(0).expand(K, R, -1)
    lo, hi = [seed], [seed]
    given: dict[str, Interval] = {}
    if jg.linked:
        lo.append(lower.unsqueeze(1).expand(K, R, -1))
        hi.append(upper.unsqueeze(1).expand(K, R, -1))
        for name, (b_lo, b_hi) in box.items():
            given["fwd:" + name] = (b_lo.repeat_interleave(R, 0), b_hi.repeat_interleave(R, 0))
    for name, (_, size) in jg.free.items():
        node = jg.forward.node(name)
        z_lo, z_hi = box[node.inputs[0]]
        d_lo, d_hi = derivative_range(node.op, *node.op.domain(z_lo, z_hi))  # type: ignore
        lo.append(d_lo.reshape(K, 1, size).expand(K, R, size))
        hi.append(d_hi.reshape(K, 1, size).expand(K, R, size))
    return torch.cat(lo, -1).reshape(K * R, -1), torch.cat(hi, -1).reshape(K * R, -1), given


@dataclass
class JacobianBounds:
    """Entrywise bounds of C J(x) over each box, (K, R, n_in), and the backward graph's
    node bounds (batch K*R) that produced them, for further linear objectives over the same
    boxes, with the forward copy's bounds they were given."""

    lower: Tensor
    upper: Tensor
    nodes: NodeBounds | None
    given: dict[str, Interval]


def bound_jacobian(jg: JacobianGraph, C: Tensor, lower: Tensor, upper: Tensor,
                   columns: list[int] | None = None, stop: Stop = never) -> JacobianBounds:
    """Entrywise bounds of C J(x) over each of the K input boxes ``lower``/``upper`` (K, n):
    all n columns, or only the listed input ``columns``.  CROWN's bounds on the backward
    graph, intersected with its interval bounds (both sound, so their meet is).  Raises
    verifier.bounds.crown.Interrupted once ``stop()`` holds (checked between CROWN's row chunks)."""
    K, R, n = lower.shape[0], C.shape[0], lower[0].numel()
    cols = list(range(n)) if columns is None else columns
    if jg.graph is None:
        zero = lower.new_zeros(K, R, len(cols))
        return JacobianBounds(zero, zero, None, {})
    s_lo, s_hi, given = backward_input_box(jg, C, lower.flatten(1), upper.flatten(1), stop)
    with torch.no_grad():
        nb = intermediate.compute(jg.graph, s_lo, s_hi, known=Known(fixed=given), stop=stop)
        eye = torch.eye(n, dtype=lower.dtype, device=lower.device)[cols]
        rows = torch.cat([eye, -eye]).reshape(1, 2 * len(cols), *jg.forward.input_shape)
        lb = torch.cat([_bound_rows(nb, jg.graph.output_name, chunk.expand(K * R, *chunk.shape[1:]),
                                    stop)
                        for chunk in torch.split(rows, _row_chunk(K * R, stop), dim=1)], -1)
    m = len(cols)
    i_lo, i_hi = (t.flatten(1)[:, cols] for t in nb.box[jg.graph.output_name])
    j_lo, j_hi = torch.maximum(lb[:, :m], i_lo), torch.minimum(-lb[:, m:], i_hi)
    return JacobianBounds(j_lo.reshape(K, R, m), j_hi.reshape(K, R, m), nb, given)


def _row_chunk(batch: int, stop: Stop) -> int:
    """Rows per CROWN call: ROW_CHUNK, or, when a stop is checked, few enough that one call
    (batch x rows) is short and the stop is heard soon.  CROWN bounds each row on its own,
    so the chunking changes how the work is cut, not the bounds."""
    if stop is never:
        return ROW_CHUNK
    return max(1, min(ROW_CHUNK, STOP_ROW_BUDGET // max(batch, 1)))


def _bound_rows(nb: NodeBounds, name: str, A: Tensor, stop: Stop) -> Tensor:
    """``bound(nb, name, A)``, after checking ``stop`` (one check per chunk of rows)."""
    if stop():
        raise Interrupted
    return bound(nb, name, A)


def interval_jacobian(bounds: JacobianBounds, jg: JacobianGraph) -> Interval | None:
    """Plain interval products for comparison: the backward graph's interval bounds, (K*R, n),
    with the same derivative ranges (the forward copy keeps its given bounds) but no linear
    bounds on the cotangents."""
    nb = bounds.nodes
    if nb is None or jg.graph is None:
        return None
    box = {jg.graph.input_name: (nb.lower, nb.upper)}
    for node in jg.graph.nodes:
        lo, hi = node.op.ibp(*[box[i] for i in node.inputs])
        given = bounds.given.get(node.name)
        if given is not None:
            lo, hi = torch.maximum(lo, given[0]), torch.minimum(hi, given[1])
        box[node.name] = (lo, hi)
    lo, hi = box[jg.graph.output_name]
    return lo.flatten(1), hi.flatten(1)


def abs_chord(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Slope a and intercept b with |t| <= a t + b on [lo, hi] (the chord; exact when the
    sign is fixed)."""
    width = hi - lo
    safe = torch.where(width > 0, width, torch.ones_like(width))
    a = torch.where(lo >= 0, 1.0, torch.where(hi <= 0, -1.0, (hi + lo) / safe))
    b = torch.where((lo >= 0) | (hi <= 0), 0.0, -2 * hi * lo / safe)
    return a.to(lo.dtype), b.to(lo.dtype)


def joint_l1_upper(bounds: JacobianBounds, jg: JacobianGraph) -> Tensor | None:
    """Upper bound (K*R,) of sum_j |(C J)_ij| as one linear objective: with
    |t| <= a_j t + b_j per entry, max sum_j a_j J_ij comes from one CROWN row, which shares
    the relaxation error across entries instead of paying it once per entry."""
    if bounds.nodes is None or jg.graph is None:
        return None
    lo, hi = (t.flatten(0, 1) for t in (bounds.lower, bounds.upper))
    a, b = abs_chord(lo, hi)
    A = (-a).reshape(a.shape[0], 1, *jg.forward.input_shape)
    with torch.no_grad():
        lb = bound(bounds.nodes, jg.graph.output_name, A)[:, 0]
    return -lb + b.sum(-1)
