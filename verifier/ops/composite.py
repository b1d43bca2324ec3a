"""The primitive ops composite ONNX ops are lowered to (verifier/importer/lowering.py does the
lowering): PairDiff (softmax's differences), Centre and ScaleShift (LayerNormalization's
affine steps), Rsqrt; and the placeholder classes that register Softmax and
LayerNormalization for import."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from verifier.ops.base import (
    F32_1E_5,
    REGISTRY,
    Interval,
    Op,
    Tensor,
    axis,
    gamma,
    magnitude,
    nan_to,
    register,
    tiny,
)
from verifier.ops.linear import AffineOp, MatMul
from verifier.ops.nonlinear import ScalarOp


class PairDiff(AffineOp):
    """D[..., i, j, ...] = x_j - x_i along one ONNX axis (i at that axis, j right after)."""

    onnx_types = ()

    def rounding_terms(self) -> int:
        return 1

    def _dim(self, x: Tensor) -> int:
        return axis(int(self.attrs["axis"]), len(self.var_shapes[0]))

    def _pairs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(x_j, x_i, diagonal mask), broadcast to the pair shape."""
        d = self._dim(x)
        n = x.shape[d]
        diag = torch.eye(n, dtype=torch.bool, device=x.device)
        diag = diag.reshape(*([1] * d), n, n, *([1] * (x.dim() - d - 1)))
        return x.unsqueeze(d), x.unsqueeze(d + 1), diag

    def forward(self, x: Tensor) -> Tensor:
        """x_j - x_i, with two -inf entries (a masked attention score beside another, whose
        weight e^(x_j - x_i) is 0 off the diagonal): -inf off the diagonal, 0 on it (the
        difference is formed exactly there), where the subtraction is NaN."""
        xj, xi, diag = self._pairs(x)
        both = (xj == -math.inf) & (xi == -math.inf)
        masked = torch.where(diag, 0.0, -math.inf).to(x.dtype)
        return torch.where(both, masked, xj - xi)

    def ibp(self, b: Interval) -> Interval:
        """[lo_j - hi_i, hi_j - lo_i] entry by entry, 0 on the diagonal; where a side is NaN
        (inf - inf), that side is unbounded, except two points at -inf (``forward``)."""
        (lj, li, diag), (hj, hi_, _) = self._pairs(b[0]), self._pairs(b[1])
        lo = nan_to(lj - hi_, -math.inf)
        hi = nan_to(hj - li, math.inf)
        points = (lj == -math.inf) & (hj == -math.inf) & (li == -math.inf) & (hi_ == -math.inf)
        lo = torch.where(points, -math.inf, lo)
        hi = torch.where(points, -math.inf, hi)
        return torch.where(diag, 0.0, lo).to(lo.dtype), torch.where(diag, 0.0, hi).to(lo.dtype)

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """One subtraction; none where an operand is a point at +-inf (the result is
        exactly +-inf or the masked pair's -inf) and on the diagonal."""
        err = super().rounding_error(ins, out, u)
        if err is None:
            return None
        lo, hi = ins[0]
        point_inf = (lo == hi) & torch.isinf(lo)
        pj, pi, diag = self._pairs(point_inf)
        return torch.where(pj | pi | diag, 0.0, err)

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

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """At least ``gamma_(n + 2) (|x| + mean |x|)``, whatever order x - mean(x) is formed in:
        onnxruntime's normalisation kernels fuse the centring into a scale and shift,
        ``x s' + (b - mean s')``, which cancels even where the exact centre is 0 (a group of
        one entry: 3e-6 off b; |L| |x| is 0 there)."""
        mag = magnitude(ins[0])
        dims = self._dims(mag)
        n = math.prod(mag.shape[d] for d in dims)
        fused = gamma(n + 2, u) * (mag + mag.mean(dim=dims, keepdim=True)) + tiny(u)
        own = super().rounding_error(ins, out, u)  # the affine bound, never loosened
        return fused if own is None else torch.maximum(fused, own)


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


class SumOfSquares(MatMul):
    """``s @ c``: the weighted sum, over the last axis, of the squares a quadratic form was
    rewritten into (verifier/importer/quadform.py).  Its rounding bound
    also carries the rewrite's two errors, at most ``coef * |z|^2 <= coef * sum(s)``:
    attribute ``_margin`` = (decomposition error, |P|_F, rounded steps of onnxruntime's
    evaluation of the form, sigma_min(V)^2 lowered by a safety margin)."""

    onnx_types: ClassVar[tuple[str, ...]] = ()

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        own = super().rounding_error(ins, out, u)
        err, p_norm, steps, sigma2 = self.attrs["_margin"]
        coef = (err + gamma(steps, u) * p_norm) / sigma2
        charged = coef * magnitude(ins[0]).sum(-1, keepdim=True)
        return charged if own is None else own + charged


@register
class Softmax(Op):
    """Registered for import; always lowered (verifier/importer/lowering.py)."""

    onnx_types = ("Softmax",)


@register
class LogSoftmax(Op):
    """Registered for import; always lowered (verifier/importer/lowering.py)."""

    onnx_types = ("LogSoftmax",)
    onnx_attributes = frozenset({"axis"})


@register
class LayerNormalization(Op):
    """Registered for import; always lowered (verifier/importer/lowering.py)."""

    onnx_types = ("LayerNormalization",)


@register
class InstanceNormalization(Op):
    """Registered for import; always lowered, as LayerNormalization over the spatial axes
    (verifier/importer/lowering.py)."""

    onnx_types = ("InstanceNormalization",)
    onnx_attributes = frozenset({"epsilon"})


@register
class Einsum(Op):
    """Registered for import; two-operand forms are always lowered to a batched MatMul
    with sums, transposes and reshapes around it (verifier/importer/lowering.py)."""

    onnx_types = ("Einsum",)
    onnx_attributes = frozenset({"equation"})


__all__ = ["REGISTRY", "PairDiff", "Centre", "ScaleShift", "Rsqrt", "SumOfSquares"]
