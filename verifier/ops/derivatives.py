"""Derivatives of activations as ops of their own, so that the Lipschitz engine's backward
graph can keep each ``d = sigma'(z)`` tied to the input x through z (Shi et al., NeurIPS
2022) instead of treating it as a free box variable.  An activation names its derivative op
in ``ScalarOp.derivative``.

Each op states what bound propagation needs of a scalar function g = sigma': g itself, its
slope g' = sigma'', the points where g's convexity flips (the zeros of sigma''') and the
points where g' changes sign (the zeros of sigma''); the engine's relaxation machinery
(relax.py) builds sound lines from that.  The step functions (derivatives of ReLU and
LeakyReLU) have a jump at 0, which that machinery cannot see, so they give their lines in
closed form (``step_lines``).
"""

from __future__ import annotations

import math

import torch

from verifier.ops.base import Interval, Relaxation, Tensor, Var
from verifier.ops.nonlinear import ScalarOp
from verifier.ops.relax import FixedLines, Lines

SIGMOID_D_FLIP = math.log(2 + math.sqrt(3))  # sigma''' = 0 at +-1.3170 for the logistic
TANH_D_FLIP = math.atanh(1 / math.sqrt(3))  # tanh''' = 0 at +-0.6585
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


class DerivativeOp(ScalarOp):
    """g(z) = sigma'(z) elementwise, for the activation of a forward node of ``shape``.
    Its interval bounds are exact for its input's interval (``ibp_exact``): lines in terms
    of that input could not do better."""

    onnx_types = ()
    ibp_exact = True

    def __init__(self, shape: tuple[int, ...], source: ScalarOp):
        super().__init__({}, [Var("z", shape)], shape)
        self.source = source

    def _flips(self, lo: Tensor, points: list[float]) -> Tensor:
        return torch.stack([torch.full_like(lo, p) for p in points])


class SigmoidDerivative(DerivativeOp):
    """s(1 - s): maximum 1/4 at 0, convex outside +-1.317 and concave inside."""

    def f(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s)

    def df(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s) * (1 - 2 * s)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.zeros_like(lo)]

    def inflections(self, lo: Tensor) -> Tensor:
        return self._flips(lo, [-SIGMOID_D_FLIP, SIGMOID_D_FLIP])


class TanhDerivative(DerivativeOp):
    """1 - tanh^2: maximum 1 at 0, convex outside +-0.6585 and concave inside."""

    def f(self, x: Tensor) -> Tensor:
        return 1 - torch.tanh(x) ** 2

    def df(self, x: Tensor) -> Tensor:
        t = torch.tanh(x)
        return -2 * t * (1 - t * t)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.zeros_like(lo)]

    def inflections(self, lo: Tensor) -> Tensor:
        return self._flips(lo, [-TANH_D_FLIP, TANH_D_FLIP])


class GeluDerivative(DerivativeOp):
    """Phi(z) + z phi(z): slope phi(z)(2 - z^2) (extremes at +-sqrt 2), convexity flips where
    phi(z)(z^3 - 4z) = 0: concave left of -2, then convex, concave, convex."""

    def f(self, x: Tensor) -> Tensor:
        return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x * x / 2) * INV_SQRT_2PI

    def df(self, x: Tensor) -> Tensor:
        return torch.exp(-x * x / 2) * INV_SQRT_2PI * (2 - x * x)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.full_like(lo, -math.sqrt(2)), torch.full_like(lo, math.sqrt(2))]

    def inflections(self, lo: Tensor) -> Tensor:
        return self._flips(lo, [-2.0, 0.0, 2.0])

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo, dtype=torch.bool)


class StepDerivative(DerivativeOp):
    """``below`` for z <= 0, ``above`` for z > 0 (ReLU: 0 / 1, LeakyReLU: alpha / 1)."""

    def __init__(self, shape: tuple[int, ...], source: ScalarOp, below: float, above: float):
        super().__init__(shape, source)
        self.below, self.above = below, above

    def f(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, self.above, self.below).to(x.dtype)

    def df(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def ibp(self, b: Interval) -> Interval:
        f_lo, f_hi = self.f(b[0]), self.f(b[1])
        return torch.minimum(f_lo, f_hi), torch.maximum(f_lo, f_hi)

    def relax(self, ins: list[Interval], out: Interval) -> Relaxation:
        """The jump at 0 is invisible to the general mechanism: closed-form lines."""
        return FixedLines(self.step_lines(*ins[0]))

    def step_lines(self, lo: Tensor, hi: Tensor) -> Lines:
        """Lines through the jump: with g in {b, a} (b below 0, a above), on an interval
        l <= 0 < u the lower line rises from (0, b) to (u, a) when u >= -l (else it is flat)
        and the upper line from (l, b) to (0, a) when -l >= u (else flat), for a >= b; the
        intercepts are then the exact extremes of g(z) - slope z over [l, u], limits at the
        jump included, so the lines are sound for any slope."""
        jump = self.above - self.below
        unstable = (lo <= 0) & (hi > 0)
        safe_hi = torch.where(hi > 0, hi, torch.ones_like(hi))
        safe_lo = torch.where(lo < 0, lo, -torch.ones_like(lo))
        rise_lo = torch.where(unstable & (hi >= -lo), jump / safe_hi, 0.0)
        rise_up = torch.where(unstable & (-lo >= hi), -jump / safe_lo, 0.0)
        if jump < 0:  # a decreasing step: swap which side each line pivots on
            rise_lo, rise_up = (torch.where(unstable & (-lo >= hi), -jump / safe_lo, 0.0),
                                torch.where(unstable & (hi >= -lo), jump / safe_hi, 0.0))
        return Lines(rise_lo, self._extreme(lo, hi, rise_lo, torch.minimum),
                     rise_up, self._extreme(lo, hi, rise_up, torch.maximum))

    def _extreme(self, lo: Tensor, hi: Tensor, a: Tensor, pick) -> Tensor:  # type: ignore
        """min or max over [lo, hi] of g(z) - a z: at the ends, or the two sides of 0."""
        best = pick(self.f(lo) - a * lo, self.f(hi) - a * hi)
        inside = (lo <= 0) & (hi > 0)
        at_jump = pick(torch.full_like(lo, self.below), torch.full_like(lo, self.above))
        return torch.where(inside, pick(best, at_jump), best)
