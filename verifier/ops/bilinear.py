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
    ParamInit,
    Params,
    Relaxation,
    Tensor,
    Var,
    align,
    gamma,
    magnitude,
    nan_to,
    safe_mul,
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
    ac, ar = a[0] / 2 + a[1] / 2, a[1] / 2 - a[0] / 2  # halves first: no overflow
    bc, br = b[0] / 2 + b[1] / 2, b[1] / 2 - b[0] / 2
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

    def relax(self, ins: list[Interval], out: Interval) -> Relaxation:
        return CentrePlanes(ins, self.out_shape, self.var_shapes, out)

    def insensitive(self, k: int, ins: list[Interval]) -> Tensor | None:
        """Entries of factor k where the other factor is a point (x c is linear in x)."""
        r = len(self.out_shape)
        o_lo, o_hi = (align(t, r) for t in ins[1 - k])
        mine = align(ins[k][0], r)
        point = ~((o_hi - o_lo) > 0)
        point = point.expand(*torch.broadcast_shapes(point.shape, mine.shape))
        dims = tuple(i for i in range(1, point.dim()) if mine.shape[i] == 1 and
                     point.shape[i] != 1)
        if dims:
            point = point.all(dim=dims, keepdim=True)
        return point.reshape(ins[k][0].shape)


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

    def relax(self, ins: list[Interval], out: Interval) -> Relaxation:
        return LowerCornerPlanes(ins)


def _sum_to(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum the broadcast dims of coefficients x (B, R, *s') down to (B, R, *shape)."""
    extra = x.dim() - 2 - len(shape)
    if extra > 0:
        x = x.sum(dim=tuple(range(2, 2 + extra)))
    dims = tuple(i for i in range(2, x.dim()) if shape[i - 2] == 1 and x.shape[i] != 1)
    return x.sum(dim=dims, keepdim=True) if dims else x


class CentrePlanes(Relaxation):
    """x y over the box [lx, ux] x [ly, uy], with centres xc, yc and radii rx, ry:
    x y >= yc x + xc y - xc yc - rx ry  and  x y <= yc x + xc y - xc yc + rx ry
    (x y - (yc x + xc y - xc yc) = (x - xc)(y - yc), at most rx ry in magnitude).

    These are the averages of McCormick's two planes on each side; alpha-CROWN's
    parameters (p_l, p_u in [0, 1], 1/2 the centre planes) choose any convex combination.
    With s = 2 p_l - 1 and t = 2 p_u - 1 in [-1, 1]:

        x y >= centre_lower + s (ry (x - xc) + rx (y - yc))
        x y <= centre_upper + t (ry (x - xc) - rx (y - yc))

    s = -1 is the plane through (lx, ly) and the box's edges x = lx, y = ly (ly x + lx y -
    lx ly), s = 1 the one through (ux, uy); t = 1 is uy x + lx y - lx uy, t = -1 ly x + ux y
    - ux ly.  Each is a convex combination of two valid planes, so valid on the box.
    ``choose`` sets them to the plane tightest at a given point (the bound's minimiser)."""

    def __init__(self, ins: list[Interval], out_shape: tuple[int, ...],
                 in_shapes: list[tuple[int, ...]], out: Interval | None = None):
        r = len(out_shape)
        (lx, ux), (ly, uy) = ((align(lo, r).unsqueeze(1), align(hi, r).unsqueeze(1))
                              for lo, hi in ins)
        # an entry with an infinite or NaN factor bound: the planes would be NaN there;
        # it is met as the output's interval instead (slopes 0)
        finite = torch.isfinite(lx) & torch.isfinite(ux) & torch.isfinite(ly) & \
            torch.isfinite(uy)
        self.irregular = None
        if out is not None and not bool(finite.all()):
            self.irregular = ~finite, out[0].unsqueeze(1), out[1].unsqueeze(1)
            lx, ux, ly, uy = (torch.where(finite, t, 0.0) for t in (lx, ux, ly, uy))
        self.xc, self.rx, self.yc, self.ry = (lx + ux) / 2, (ux - lx) / 2, (ly + uy) / 2, \
            (uy - ly) / 2
        self.in_shapes = in_shapes
        shape = torch.broadcast_shapes(self.xc.shape, self.yc.shape)
        self.shape = (shape[0], *shape[2:])  # (B, *out)

    def backward(self, A: Tensor, params: Params | None = None) -> tuple[list[Tensor], Tensor]:
        if params is None:
            A_x = _sum_to(A * self.yc, self.in_shapes[0])
            A_y = _sum_to(A * self.xc, self.in_shapes[1])
            bias = -(A * (self.xc * self.yc)) - A.abs() * (self.rx * self.ry)
        else:
            s, t = (2 * p.clamp(0, 1) - 1 for p in params)
            pos, neg = A.clamp(min=0), A.clamp(max=0)
            ps, nt = pos * s, neg * t
            A_x = _sum_to(A * self.yc + self.ry * (ps + nt), self.in_shapes[0])
            A_y = _sum_to(A * self.xc + self.rx * (ps - nt), self.in_shapes[1])
            bias = -(A * (self.xc * self.yc)) - A.abs() * (self.rx * self.ry) \
                - ps * (self.xc * self.ry + self.rx * self.yc) \
                - nt * (self.xc * self.ry - self.rx * self.yc)
        if self.irregular is not None:
            bad, lo, hi = self.irregular
            const = safe_mul(A.clamp(min=0), lo) + safe_mul(A.clamp(max=0), hi)
            bias = torch.where(bad, const, bias)
        return [A_x, A_y], bias.flatten(2).sum(-1)

    def initial_params(self) -> ParamInit | None:
        """The centre planes (1/2); the shape is the output's, (B, *out)."""
        half = torch.full(self.shape, 0.5, dtype=self.xc.dtype, device=self.xc.device)
        return ParamInit(half, half.clone())

    def choose(self, x: Tensor, y: Tensor) -> Params:
        """(B, R, *out) parameters whose planes are the tightest of the family at the
        factors' values ``x`` and ``y`` (B, R, *out; a bound's minimiser per row): the
        lower plane's extra term s (ry (x - xc) + rx (y - yc)) is largest with s the sign
        of the bracket, the upper one's smallest with t minus the sign of its own."""
        dx, dy = x - self.xc, y - self.yc
        s = torch.sign(self.ry * dx + self.rx * dy)
        t = -torch.sign(self.ry * dx - self.rx * dy)
        return (s + 1) / 2, (t + 1) / 2


class LowerCornerPlanes(Relaxation):
    """Z = X Y, every product x y bounded by the McCormick planes through x's lower end:
    x y >= ly x + lx y - lx ly  and  x y <= uy x + lx y - lx uy.  Both planes give y the
    slope lx, so y's coefficient does not depend on the sign of A.  On the shared vit
    model these planes gave tighter CROWN bounds than the centre plane and than the other
    pairs (docs/design-notes.md)."""

    def __init__(self, ins: list[Interval]):
        (self.lx, _), (self.ly, self.uy) = ((lo.unsqueeze(1), hi.unsqueeze(1))
                                            for lo, hi in ins)

    def backward(self, A: Tensor, params: Params | None = None) -> tuple[list[Tensor], Tensor]:
        lx, ly, uy = self.lx, self.ly, self.uy
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        A_x = pos @ ly.transpose(-1, -2) + neg @ uy.transpose(-1, -2)
        A_y = lx.transpose(-1, -2) @ A
        bias = -(pos * (lx @ ly)) - (neg * (lx @ uy))
        return [A_x, A_y], bias.flatten(2).sum(-1)




__all__ = ["VarMul", "VarDiv", "VarMatMul", "Interval"]
