"""Quadratic forms ``ReduceSum(d * (d @ P))`` with a constant square P become weighted sums
of squares (docs/design-notes.md, "Quadratic forms are sums of squares").

A Lyapunov function ``V(x) = (x - x0)^T P (x - x0)`` (VNN-COMP's lsnc family) is written
in ONNX as a MatMul by P, a product with the same vector and a sum over the last axis.
Bounded piece by piece, the product is one of two variables whose bounds are taken as
independent (McCormick planes), so V's lower bound is loose even on small boxes.  With
the symmetric part of P decomposed, ``S = V diag(lam) V^T``, the form is

    d^T P d = d^T S d = sum_k lam_k (V^T d)_k^2

a linear map, squares (convex: tangent lines below, chords above) and a weighted sum, which
every bound method and split handles; alpha-CROWN's choice of tangent points reaches the
form's minimum over a box when P is positive definite.  Two errors are charged on the sum
as its rounding bound (SumOfSquares): the decomposition's (V and lam are stored in the
model's float type, so ``S - V diag(lam) V^T`` is not 0; its Frobenius norm bounds it) and
onnxruntime's own rounding of the form it replaces, ``gamma_{2n+2} |d|^T |P| |d|``.  Both
are at most a constant times ``|d|^2``, which the sum of the squares bounds from above
(``|V^T d|^2 >= sigma_min(V)^2 |d|^2``).

A bilinear form ``u^T P w`` (u != w) keeps its product: as a difference of two forms,
``((u + w)/2)^T S ((u + w)/2) - ((u - w)/2)^T S ((u - w)/2)``, its bound was looser than the
product's on lsnc's Lyapunov decrease (-0.37 against -0.19 by CROWN, true minimum 0.009).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from verifier.graph import Node
from verifier.ops.base import Const, Var
from verifier.ops.bilinear import VarMul
from verifier.ops.composite import SumOfSquares
from verifier.ops.linear import MatMul
from verifier.ops.nonlinear import Square
from verifier.ops.shape import Reduce, Reshape

MAX_SIZE = 1024  # larger forms keep their product (an eigendecomposition per import)


def fuse_quadratic_forms(nodes: list[Node], output: str, unit_roundoff: float) -> list[Node]:
    """``nodes`` with every quadratic form rewritten as a sum of squares.  The rewrite
    charges its errors as rounding bounds, so a graph without rounding (``unit_roundoff``
    0: tests' hand-made graphs) keeps its products."""
    if unit_roundoff <= 0:
        return nodes
    by_name = {n.name: n for n in nodes}
    users = Counter(i for n in nodes for i in n.inputs)
    replace: dict[str, list[Node]] = {}
    drop: set[str] = set()
    for node in nodes:
        found = _match(node, by_name, users, output)
        new = None if found is None else _sum_of_squares(node, *found[:2])
        if found is not None and new is not None:
            replace[node.name] = new
            drop.update(n.name for n in found[2])
    out: list[Node] = []
    for n in nodes:
        if n.name not in drop:
            out += replace.get(n.name, [n])
    return out


def _match(r: Node, by_name: dict[str, Node], users: Counter, output: str
           ) -> tuple[Var, np.ndarray, list[Node]] | None:
    """(d, P, [the product, the MatMul]) when ``r`` sums ``d * (d @ P)`` over the last axis
    (and over leading axes of size 1), the intermediate results used by it alone."""
    if not isinstance(r.op, Reduce) or r.op.attrs["_op_type"] != "ReduceSum":
        return None
    mul = by_name.get(r.inputs[0])
    if mul is None or type(mul.op) is not VarMul or users[mul.name] != 1 or \
            mul.name == output:
        return None
    shape = tuple(mul.shape)
    if not shape or not _sums_last_axis(r.op, shape):
        return None
    for k in (0, 1):
        mm = by_name.get(mul.inputs[k])
        if mm is None or type(mm.op) is not MatMul or mm.op.w_index != 1 or \
                users[mm.name] != 1 or mm.name == output or mm.inputs[0] != mul.inputs[1 - k]:
            continue
        p = np.asarray(mm.op.const_np(1))
        n = shape[-1]
        if p.shape != (n, n) or not np.issubdtype(p.dtype, np.floating) or n > MAX_SIZE or \
                tuple(mm.op.var_shapes[0]) != shape or tuple(mm.shape) != shape:
            continue
        return Var(mm.inputs[0], shape), p, [mul, mm]
    return None


def _sums_last_axis(op: Reduce, shape: tuple[int, ...]) -> bool:
    """The ReduceSum sums the last axis and otherwise only axes of size 1."""
    rank = len(shape)
    axes = op.attr_or_input("axes", 1)
    if not axes:
        if int(op.attrs.get("noop_with_empty_axes", 0)):
            return False
        axes = list(range(rank))
    dims = {int(a) % rank for a in axes}
    return rank - 1 in dims and all(shape[d] == 1 for d in dims - {rank - 1})


def _sum_of_squares(r: Node, d: Var, p: np.ndarray) -> list[Node] | None:
    """The nodes computing ``r`` as a weighted sum of squares; None where P is not finite
    or its eigenvectors, as stored, are far from orthogonal."""
    p64 = p.astype(np.float64)
    if not np.isfinite(p64).all():
        return None
    n = p.shape[0]
    sym = (p64 + p64.T) / 2
    lam, vec = np.linalg.eigh(sym)
    lam_t, vec_t = lam.astype(p.dtype), vec.astype(p.dtype)  # as the engine will use them
    v64, l64 = vec_t.astype(np.float64), lam_t.astype(np.float64)
    err = float(np.linalg.norm(sym - (v64 * l64) @ v64.T))  # Frobenius >= spectral norm
    sigma = float(np.linalg.svd(v64, compute_uv=False).min())
    sigma2 = sigma * sigma - 1e-9
    p_norm = float(np.linalg.norm(p64)) * (1 + 1e-12)
    if sigma2 < 0.5 or not np.isfinite(err):
        return None
    err += 1e-12 * p_norm  # the float64 arithmetic of the residual itself
    shape = tuple(d.shape)
    base = r.name + "/quadform"
    z, s = Var(base + "/rotated", shape), Var(base + "/squares", shape)
    rotate = MatMul({"_op_type": "MatMul"}, [d, Const(vec_t)], shape)
    square = Square({"_op_type": "Mul"}, [z, Const(np.array(2.0))], shape)
    total_shape = shape[:-1] + (1,)
    total = SumOfSquares({"_op_type": "MatMul", "_margin": (err, p_norm, 2 * n + 2, sigma2)},
                         [s, Const(lam_t.reshape(n, 1))], total_shape)
    total_name = r.name if total_shape == tuple(r.shape) else base + "/sum"
    nodes = [
        Node(z.name, "MatMul", rotate, [d.name], shape, r.onnx_name),
        Node(s.name, "Mul", square, [z.name], shape, r.onnx_name),
        Node(total_name, "ReduceSum", total, [s.name], total_shape, r.onnx_name),
    ]
    if total_name != r.name:
        back = Reshape({"_op_type": "Reshape"}, [Var(total_name, total_shape)], tuple(r.shape))
        nodes.append(Node(r.name, "ReduceSum", back, [total_name], tuple(r.shape), r.onnx_name))
    return nodes
