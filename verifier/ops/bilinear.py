"""Products and quotients of two variables (attention, gating, normalisation), softmax and
layer normalisation.

Interval product rule: for a in [ac - ar, ac + ar] and b in [bc - br, bc + br],
``a*b in ac*bc +- (|ac|*br + ar*|bc| + ar*br)``; the same holds for matrix products with
``|.|`` entrywise, which is how MatMul of two variables is bounded.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Const, Input, Interval, Op, OpFormError, Tensor, Var, align, axis, register
from .linear import MatMul, MulConst
from .nonlinear import Reciprocal


def interval_mul(a: Interval, b: Interval) -> Interval:
    """Exact elementwise interval product: min and max over the four corner products."""
    p = torch.stack([a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]])
    return p.min(dim=0).values, p.max(dim=0).values


def interval_matmul(a: Interval, b: Interval) -> Interval:
    """Sound interval bound of the matrix product of two interval matrices."""
    ac, ar = (a[0] + a[1]) / 2, (a[1] - a[0]) / 2
    bc, br = (b[0] + b[1]) / 2, (b[1] - b[0]) / 2
    c = ac @ bc
    r = ac.abs() @ br + ar @ bc.abs() + ar @ br
    return c - r, c + r


class Bilinear(Op):
    """Base of products of two variables."""

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if len(inputs) != 2 or not all(isinstance(i, Var) for i in inputs):
            raise OpFormError("internal: expected two variable inputs")


class VarMul(Bilinear):
    onnx_types = ()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        r = len(self.out_shape)
        return align(x, r) * align(y, r)

    def ibp(self, a: Interval, b: Interval) -> Interval:
        r = len(self.out_shape)
        return interval_mul((align(a[0], r), align(a[1], r)), (align(b[0], r), align(b[1], r)))


class VarDiv(Bilinear):
    """x / y as x * (1/y); an interval of y containing 0 gives infinite bounds."""

    onnx_types = ()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        r = len(self.out_shape)
        return align(x, r) / align(y, r)

    def ibp(self, a: Interval, b: Interval) -> Interval:
        r = len(self.out_shape)
        spans = (b[0] <= 0) & (b[1] >= 0)
        inv = (1.0 / b[1], 1.0 / b[0])
        inv = (torch.where(spans, -math.inf, inv[0]), torch.where(spans, math.inf, inv[1]))
        low, high = interval_mul((align(a[0], r), align(a[1], r)),
                                 (align(inv[0], r), align(inv[1], r)))
        return torch.nan_to_num(low, nan=-math.inf), torch.nan_to_num(high, nan=math.inf)


class VarMatMul(Bilinear):
    onnx_types = ()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x @ y

    def ibp(self, a: Interval, b: Interval) -> Interval:
        return interval_matmul(a, b)


def _select_mul(cls: type[Op], attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
    both = all(isinstance(i, Var) for i in inputs)
    if attrs["_op_type"] == "Mul":
        return VarMul if both else MulConst
    if both:
        return VarDiv
    if isinstance(inputs[0], Const):
        if inputs[0].value.size != 1:
            raise OpFormError("a non-scalar constant divided by a variable is not supported")
        return Reciprocal
    return MulConst


def _select_matmul(cls: type[Op], attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
    return VarMatMul if all(isinstance(i, Var) for i in inputs) else MatMul


MulConst.select = classmethod(_select_mul)  # type: ignore[method-assign,assignment]
MatMul.select = classmethod(_select_matmul)  # type: ignore[method-assign,assignment]


@register
class Softmax(Op):
    """softmax along an axis.  Bounds use softmax_i = 1 / (1 + sum_{j!=i} exp(x_j - x_i)):
    the lower bound takes x_j at its upper end and x_i at its lower end, and vice versa."""

    onnx_types = ("Softmax",)

    def _dim(self, x: Tensor) -> int:
        return axis(int(self.attrs.get("axis", -1)), x.dim() - 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(x, dim=self._dim(x))

    def ibp(self, b: Interval) -> Interval:
        lo, hi = b
        d = self._dim(lo)
        lo_t, hi_t = lo.movedim(d, -1), hi.movedim(d, -1)
        n = lo_t.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=lo.device)
        # diff[..., i, j] = x_j - x_i at the extreme that minimises / maximises softmax_i
        worst = (hi_t.unsqueeze(-2) - lo_t.unsqueeze(-1)).masked_fill(eye, -math.inf)
        best = (lo_t.unsqueeze(-2) - hi_t.unsqueeze(-1)).masked_fill(eye, -math.inf)
        low = torch.sigmoid(-torch.logsumexp(worst, dim=-1))
        high = torch.sigmoid(-torch.logsumexp(best, dim=-1))
        return low.movedim(-1, d), high.movedim(-1, d)


@register
class LayerNormalization(Op):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the trailing axes from ``axis``."""

    onnx_types = ("LayerNormalization",)

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if not isinstance(inputs[0], Var) or any(isinstance(i, Var) for i in inputs[1:]):
            raise OpFormError("only the data input may vary; scale and bias must be constant")

    def _dims(self, x: Tensor) -> list[int]:
        rank = x.dim() - 1
        start = axis(int(self.attrs.get("axis", -1)), rank)
        return list(range(start, rank + 1))

    def _affine(self, y: Tensor) -> Tensor:
        if self.has_const(1):
            y = y * self.const(1, y)
        if self.has_const(2):
            y = y + self.const(2, y)
        return y

    def forward(self, x: Tensor) -> Tensor:
        dims = self._dims(x)
        eps = float(self.attrs.get("epsilon", 1e-5))
        centred = x - x.mean(dim=dims, keepdim=True)
        var = (centred * centred).mean(dim=dims, keepdim=True)
        return self._affine(centred / torch.sqrt(var + eps))

    def ibp(self, b: Interval) -> Interval:
        lo, hi = b
        dims = self._dims(lo)
        eps = float(self.attrs.get("epsilon", 1e-5))
        n = math.prod(lo.shape[d] for d in dims)
        c, r = (lo + hi) / 2, (hi - lo) / 2
        # x_i - mean: weight (1 - 1/n) on x_i and -1/n on the others
        dc = c - c.mean(dim=dims, keepdim=True)
        dr = r * (1 - 2 / n) + r.mean(dim=dims, keepdim=True)
        dlo, dhi = dc - dr, dc + dr
        sq_hi = torch.maximum(dlo * dlo, dhi * dhi)
        sq_lo = torch.where((dlo <= 0) & (dhi >= 0), 0.0, torch.minimum(dlo * dlo, dhi * dhi))
        var_lo = sq_lo.mean(dim=dims, keepdim=True)
        var_hi = sq_hi.mean(dim=dims, keepdim=True)
        inv = (1 / torch.sqrt(var_hi + eps), 1 / torch.sqrt(var_lo + eps))
        ylo, yhi = interval_mul((dlo, dhi), (inv[0].expand_as(dlo), inv[1].expand_as(dhi)))
        # a normalised entry never exceeds sqrt(n - 1) in magnitude
        cap = math.sqrt(max(n - 1, 1))
        ylo, yhi = ylo.clamp(min=-cap), yhi.clamp(max=cap)
        if self.has_const(1):
            g = self.const(1, lo)
            ylo, yhi = torch.minimum(ylo * g, yhi * g), torch.maximum(ylo * g, yhi * g)
        if self.has_const(2):
            ylo, yhi = ylo + self.const(2, lo), yhi + self.const(2, lo)
        return ylo, yhi


__all__ = ["VarMul", "VarDiv", "VarMatMul", "Var"]
