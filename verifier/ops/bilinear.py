"""Products and quotients of two variables (attention, gating, normalisation).

Interval product rule: for a in [ac - ar, ac + ar] and b in [bc - br, bc + br],
``a*b in ac*bc +- (|ac|*br + ar*|bc| + ar*br)``; the same holds for matrix products with
``|.|`` entrywise, which is how MatMul of two variables is bounded.

Infinite bounds: an infinite end is a value a float computation may reach, so 0 * inf
(NaN) and inf - inf in a sum are reachable wherever they appear in the rule; any entry
whose bound comes out NaN is (-inf, inf), never a NaN bound.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from verifier.ops.base import (
    Input,
    Interval,
    Op,
    OpFormError,
    Tensor,
    Var,
    align,
    gamma,
    magnitude,
    nan_to,
    tiny,
)


def interval_mul(a: Interval, b: Interval) -> Interval:
    """Exact elementwise interval product: min and max over the four corner products;
    (-inf, inf) where a corner is NaN (0 * inf: 0 times an infinity may be reached)."""
    p = torch.stack([a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]])
    return _unknown_where_nan(p.min(dim=0).values, p.max(dim=0).values)


def _unknown_where_nan(lo: Tensor, hi: Tensor) -> Interval:
    nan = torch.isnan(lo) | torch.isnan(hi)
    return torch.where(nan, -torch.inf, lo), torch.where(nan, torch.inf, hi)


def interval_matmul(a: Interval, b: Interval) -> Interval:
    """Sound interval bound of the matrix product of two interval matrices."""
    ac, ar = (a[0] + a[1]) / 2, (a[1] - a[0]) / 2
    bc, br = (b[0] + b[1]) / 2, (b[1] - b[0]) / 2
    c = ac @ bc
    r = ac.abs() @ br + ar @ bc.abs() + ar @ br
    return _unknown_where_nan(c - r, c + r)


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

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """One rounded product: u |x y| (twice that, for the slack)."""
        return 2 * u * magnitude(out) + tiny(u)


class VarDiv(Bilinear):
    """x / y; the importer lowers it to x * Reciprocal(y)."""

    onnx_types = ()


class VarMatMul(Bilinear):
    onnx_types = ()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x @ y

    def ibp(self, a: Interval, b: Interval) -> Interval:
        return interval_matmul(a, b)

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """A dot product of k terms: gamma_k |X| |Y|."""
        mx, my = (magnitude(b) for b in ins)
        err = gamma(self.var_shapes[0][-1], u) * (mx @ my)
        return nan_to(err, math.inf) + tiny(u)




__all__ = ["VarMul", "VarDiv", "VarMatMul", "Interval"]
