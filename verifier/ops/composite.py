"""Composite ops, lowered at import into primitive nodes that every bound method handles.

* Softmax:  softmax_i = 1 / sum_j exp(x_j - x_i)  (PairDiff -> Exp -> ReduceSum ->
  Reciprocal).  With the differences formed exactly (D_ii = 0), interval and linear bounds
  of this form are much tighter than those of exp(x) / sum(exp(x)).
* LayerNormalization:  c = x - mean(x);  y = c * (mean(c^2) + eps)^(-1/2) * gamma + beta.
* x / y for two variables:  x * Reciprocal(y).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..graph import Node
from .base import F32_1E_5, REGISTRY, Const, Input, Op, OpFormError, Tensor, Var, axis, register
from .bilinear import VarMul
from .linear import AffineOp
from .nonlinear import Exp, PowConst, Reciprocal, ScalarOp
from .shape import Reduce, Reshape


class PairDiff(AffineOp):
    """D[..., i, j, ...] = x_j - x_i along one ONNX axis (i at that axis, j right after)."""

    onnx_types = ()

    def rounding_terms(self) -> int:
        return 1

    def _dim(self, x: Tensor) -> int:
        return axis(int(self.attrs["axis"]), len(self.var_shapes[0]))

    def forward(self, x: Tensor) -> Tensor:
        d = self._dim(x)
        return x.unsqueeze(d) - x.unsqueeze(d + 1)

    def abs_linear(self, r: Tensor) -> Tensor:
        d = self._dim(r)
        n = r.shape[d]
        off = 1 - torch.eye(n, dtype=r.dtype, device=r.device)
        off = off.reshape(*([1] * d), n, n, *([1] * (r.dim() - d - 1)))
        return (r.unsqueeze(d) + r.unsqueeze(d + 1)) * off


class Centre(AffineOp):
    """x - mean(x) over the trailing ONNX axes from ``axis``."""

    onnx_types = ()

    def _dims(self, x: Tensor) -> list[int]:
        start = axis(int(self.attrs.get("axis", -1)), x.dim() - 1)
        return list(range(start, x.dim()))

    def forward(self, x: Tensor) -> Tensor:
        return x - x.mean(dim=self._dims(x), keepdim=True)

    def abs_linear(self, r: Tensor) -> Tensor:
        dims = self._dims(r)
        n = math.prod(r.shape[d] for d in dims)
        return r * (1 - 2 / n) + r.sum(dim=dims, keepdim=True) / n


class ScaleShift(AffineOp):
    """x * gamma + beta with constant gamma (input 1) and beta (input 2), either optional."""

    onnx_types = ()

    def rounding_terms(self) -> int:
        return 2

    def forward(self, x: Tensor) -> Tensor:
        if self.has_const(1):
            x = x * self.const(1, x)
        return x + self.const(2, x) if self.has_const(2) else x

    def abs_linear(self, r: Tensor) -> Tensor:
        return r * self.const(1, r).abs() if self.has_const(1) else r


class Rsqrt(ScalarOp):
    """(x + eps)^(-1/2): convex and decreasing on x > -eps, +inf at x = -eps (the pole: with
    eps = 0 a variance of 0 gives +inf), NaN below (an interval reaching there gives
    (-inf, inf)).  eps is never assumed positive, nor the variance clamped."""

    onnx_types = ()
    rounding_scale = "result"  # sqrt and a division: a few ulps of |f|

    @property
    def eps(self) -> float:
        return float(self.attrs.get("epsilon", F32_1E_5))

    def f(self, x: Tensor) -> Tensor:
        return torch.rsqrt(x + self.eps)

    def df(self, x: Tensor) -> Tensor:
        return -0.5 * torch.pow(x + self.eps, -1.5)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return torch.pow(-2 * a, -2.0 / 3.0) - self.eps

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        shifted = lo + self.eps
        high = torch.where(shifted == 0, math.inf, self.f(lo))  # rsqrt(-0.0) is -inf
        below = shifted < 0
        return torch.where(below, -math.inf, self.f(hi)), torch.where(below, math.inf, high)

    def regular(self, lo: Tensor, hi: Tensor) -> Tensor:
        return lo + self.eps > 0


def _node(name: str, op: Op, inputs: list[str], onnx_name: str, op_type: str) -> Node:
    return Node(name, op_type, op, inputs, op.out_shape, onnx_name)


def lower_softmax(out: str, x: Var, attrs: dict[str, Any], onnx_name: str) -> list[Node]:
    """Softmax over ONNX ``axis``; with ``_flatten`` (opset < 13) over the whole trailing
    block from ``axis`` on, as ONNX then defines it (the input seen as 2-d at ``axis``)."""
    rank = len(x.shape)
    ax = int(attrs.get("axis", -1)) % rank
    if not attrs.get("_flatten") or ax == rank - 1:
        return _softmax_nodes(out, x, ax, onnx_name)
    flat_shape = x.shape[:ax] + (math.prod(x.shape[ax:]),)
    flat, inner = out + "/flat", out + "/flat_softmax"
    reshape = {"_op_type": "Reshape"}
    nodes = [_node(flat, Reshape(reshape, [x], flat_shape), [x.name], onnx_name, "Softmax")]
    nodes += _softmax_nodes(inner, Var(flat, flat_shape), ax, onnx_name)
    back = Reshape(reshape, [Var(inner, flat_shape)], x.shape)
    return nodes + [_node(out, back, [inner], onnx_name, "Softmax")]


def _softmax_nodes(out: str, x: Var, ax: int, onnx_name: str) -> list[Node]:
    """Softmax over the one axis ``ax`` (non-negative) of ``x``."""
    n = x.shape[ax]
    pair_shape = x.shape[: ax + 1] + (n,) + x.shape[ax + 1:]
    base = {"_op_type": "Softmax"}
    pd = PairDiff(dict(base, axis=ax), [x], pair_shape)
    ex = Exp(base, [Var(out + "/diff", pair_shape)], pair_shape)
    sm = Reduce({"_op_type": "ReduceSum", "axes": [ax + 1], "keepdims": 0},
                [Var(out + "/exp", pair_shape)], x.shape)
    rc = Reciprocal(base, [Var(out + "/sum", x.shape)], x.shape)
    return [
        _node(out + "/diff", pd, [x.name], onnx_name, "Softmax"),
        _node(out + "/exp", ex, [out + "/diff"], onnx_name, "Softmax"),
        _node(out + "/sum", sm, [out + "/exp"], onnx_name, "Softmax"),
        _node(out, rc, [out + "/sum"], onnx_name, "Softmax"),
    ]


def lower_layernorm(out: str, inputs: list[Input], attrs: dict[str, Any],
                    onnx_name: str) -> list[Node]:
    x = inputs[0]
    if not isinstance(x, Var) or any(isinstance(i, Var) for i in inputs[1:]):
        raise OpFormError("only the data input may vary; scale and bias must be constant")
    rank = len(x.shape)
    ax = int(attrs.get("axis", -1)) % rank
    stat_shape = x.shape[:ax] + (1,) * (rank - ax)
    base = {"_op_type": "LayerNormalization", "axis": ax,
            "epsilon": float(attrs.get("epsilon", F32_1E_5))}
    c, sq, var, rs, prod = (out + s for s in ("/centre", "/square", "/var", "/rsqrt", "/norm"))
    nodes = [
        _node(c, Centre(base, [x], x.shape), [x.name], onnx_name, "LayerNormalization"),
        _node(sq, PowConst(base, [Var(c, x.shape), Const(np.array(2.0))], x.shape), [c],
              onnx_name, "LayerNormalization"),
        _node(var, Reduce({"_op_type": "ReduceMean", "axes": list(range(ax, rank)),
                           "keepdims": 1}, [Var(sq, x.shape)], stat_shape), [sq],
              onnx_name, "LayerNormalization"),
        _node(rs, Rsqrt(base, [Var(var, stat_shape)], stat_shape), [var], onnx_name,
              "LayerNormalization"),
        _node(prod, VarMul({"_op_type": "Mul"}, [Var(c, x.shape), Var(rs, stat_shape)],
                           x.shape), [c, rs], onnx_name, "LayerNormalization"),
    ]
    gamma = inputs[1] if len(inputs) > 1 else Const(np.zeros(0))
    beta = inputs[2] if len(inputs) > 2 else Const(np.zeros(0))
    consts = [Var(prod, x.shape)] + [g for g in (gamma, beta)]
    ss = ScaleShift(base, consts, x.shape)  # type: ignore[arg-type]
    for idx, inp in ((1, gamma), (2, beta)):
        if isinstance(inp, Const) and inp.value.size == 0:
            ss._consts.pop(idx, None)
    nodes.append(_node(out, ss, [prod], onnx_name, "LayerNormalization"))
    return nodes


def lower_div(out: str, x: Var, y: Var, out_shape: tuple[int, ...], onnx_name: str) -> list[Node]:
    rec = Reciprocal({"_op_type": "Reciprocal"}, [y], y.shape)
    mul = VarMul({"_op_type": "Mul"}, [x, Var(out + "/reciprocal", y.shape)], out_shape)
    return [
        _node(out + "/reciprocal", rec, [y.name], onnx_name, "Div"),
        _node(out, mul, [x.name, out + "/reciprocal"], onnx_name, "Div"),
    ]


@register
class Softmax(Op):
    """Registered for import; always lowered (see lower_softmax)."""

    onnx_types = ("Softmax",)


@register
class LayerNormalization(Op):
    """Registered for import; always lowered (see lower_layernorm)."""

    onnx_types = ("LayerNormalization",)


__all__ = ["REGISTRY", "lower_softmax", "lower_layernorm", "lower_div"]
