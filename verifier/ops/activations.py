"""Smooth activations of the ELU kind, Softplus, Softsign, Mish, GeLU's tanh form and
HardSigmoid, each stated to
the one relaxation mechanism (ops/relax.py) by its function, derivative and convexity.

* Elu, Selu, Celu: ``g x`` for x >= 0, ``g a (exp(x / s) - 1)`` below (Elu: g = s = 1;
  Selu: g = gamma, s = 1; Celu: g = 1, s = a).  With a >= 0 and g > 0 the exponential
  piece is convex and increasing; the kink at 0 is convex where the slope from the left,
  ``g a / s``, is at most the slope from the right, ``g``, and concave otherwise (Selu's
  defaults): then f is convex up to 0 and linear (concave) after.  Other signs are refused
  by name.
* Softplus ``log(1 + exp(x))``: convex, increasing, slope sigmoid(x) in (0, 1).
* Softsign ``x / (1 + |x|)``: increasing, convex below 0, concave above.
* HardSigmoid ``max(0, min(1, alpha x + beta))``: an affine map then Clip(0, 1), lowered
  by the importer (verifier/importer/lowering.py); this class only registers it.
* HardSwish ``x HardSigmoid(x)`` (alpha 1/6, beta 1/2): concave kinks at -3 and 3,
  convex between.
* PRelu: LeakyReLU with a constant slope per entry (broadcast), each in [0, 1].
* Mish ``x tanh(softplus(x))``: concave below P1 = -2.2563763963607931..., convex on
  [P1, P2], concave above P2 = 1.4905711794854284... (the two roots of f''; f'' < 0 beyond
  them: ``(x + 2) e^x``-like on the left, ``-8 (x - 1) e^(-2x)``-like on the right); one
  minimum, f(C) = -0.3088434130..., at C = -1.1924312145154952...; f' rises from -0.1125 at
  P1 to its maximum 1.0884981612... at P2.  The three constants have no closed form: they
  are the roots to 50 digits (mpmath), rounded to float64 (tests/verifier/test_op_activations.py
  recomputes them).  An inflection off by that rounding, e <= 2^-52 * 2, can misplace a
  line by at most ``2 e (|f'| + |a|)``, about 2e-15 for the slopes the mechanism uses
  (|a| <= 1.09), which the rounding bound, ``16 u (|f| + |x|)`` >= 3.5e-15 near either
  inflection in float64, already covers.
* Gelu with ``approximate="tanh"`` (opset 20), ``x/2 (1 + tanh(c (x + k x^3)))``, c =
  sqrt(2/pi), k = 0.044715: ``f(x) - x/2`` is even, so f'' is even.  Concave below -P,
  convex on [-P, P], concave above, P = 1.4185040087908283... (the root of f''); one
  minimum, f(C) = -0.1700407505..., at C = -0.7524614220710163...; f' rises from
  -0.1289930687 at -P to 1.1289930687 at P.  The tests check f'' on a grid of [-10, 10];
  beyond about |x| = 12 a 50-digit grid cannot resolve f'' (it is below 1e-60), and its
  sign there is concave's: for x > 0,
  ``f = x - x s(-h)`` and for x < 0, ``f = x s(h)``, h = 2c(x + k x^3), s the logistic
  function, and ``x e^(-|h|)`` is convex for x > 0 and concave for x < 0 once |h'| x
  dominates (|x| > 2).  The constants are mpmath roots rounded to float64 (the tests
  recompute them), the same argument as Mish's covering their rounding.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from verifier.ops.base import (
    Input,
    Interval,
    Op,
    OpFormError,
    Relaxation,
    Tensor,
    Var,
    magnitude,
    register,
    tiny,
)
from verifier.ops.nonlinear import LeakyRelu, ScalarOp
from verifier.ops.relax import ReluRelaxation

# ONNX float attributes are float32: the defaults as onnxruntime reads them
SELU_ALPHA = float(np.float32(1.67326319217681884765625))
SELU_GAMMA = float(np.float32(1.05070102214813232421875))


@register
class ExpLinear(ScalarOp):
    """Elu, Selu and Celu (see the module docstring)."""

    onnx_types = ("Elu", "Selu", "Celu")
    onnx_attributes = frozenset({"alpha", "gamma"})
    increasing = True
    exact_derivative_range = True

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        g, a, s = cls._params(attrs)
        if not (math.isfinite(a) and math.isfinite(g)):
            raise OpFormError("alpha and gamma must be finite")
        if attrs["_op_type"] == "Celu" and a <= 0:
            raise OpFormError(f"alpha={a} is not supported (only alpha > 0)")
        if a < 0 or g <= 0:
            raise OpFormError(f"alpha={a}, gamma={g} is not supported (only alpha >= 0 and "
                              "gamma > 0)")

    @staticmethod
    def _params(attrs: dict[str, Any]) -> tuple[float, float, float]:
        """(g, a, s) of ``g x`` / ``g a (exp(x / s) - 1)``."""
        op = attrs["_op_type"]
        if op == "Selu":
            return (float(attrs.get("gamma", SELU_GAMMA)), float(attrs.get("alpha", SELU_ALPHA)),
                    1.0)
        a = float(attrs.get("alpha", 1.0))
        return 1.0, a, a if op == "Celu" else 1.0

    @property
    def params(self) -> tuple[float, float, float]:
        return self._params(self.attrs)

    def max_slope(self, lo: Tensor, hi: Tensor) -> float:
        g, a, s = self.params
        return max(g, g * a / s)

    def f(self, x: Tensor) -> Tensor:
        g, a, s = self.params
        neg = g * a * torch.expm1(torch.clamp(x, max=0) / s)
        return torch.where(x > 0, g * x, neg)

    def df(self, x: Tensor) -> Tensor:
        """From the left at 0 (the exponential piece's slope)."""
        g, a, s = self.params
        return torch.where(x > 0, torch.full_like(x, g),
                           g * a / s * torch.exp(torch.clamp(x, max=0) / s))

    def _concave_kink(self) -> bool:
        g, a, s = self.params
        return g * a / s > g

    def inflections(self, lo: Tensor) -> Tensor:
        if self._concave_kink():
            return torch.zeros_like(lo).unsqueeze(0)
        return super().inflections(lo)

    def inverse_df(self, a_: Tensor, convex: Tensor) -> Tensor:
        """On the exponential piece, ``g a / s exp(x / s) = a_``; the linear piece has one
        slope, reached at its start, 0."""
        g, a, s = self.params
        x = s * torch.log(a_ * s / (g * a))
        return torch.where(convex, torch.clamp(x, max=0), torch.zeros_like(x))

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """``exp(x / s) - 1`` may be computed as it reads, with an absolute error of a few
        ulps of 1 before the scaling by ``g a``; the linear piece rounds one product."""
        g, a, _ = self.params
        return self.rounding_ulps * u * (magnitude(out) + g * magnitude(ins[0]) + g * a) + tiny(u)


@register
class Softplus(ScalarOp):
    onnx_types = ("Softplus",)
    increasing = True
    exact_derivative_range = True
    slope_bound = 1.0

    def f(self, x: Tensor) -> Tensor:
        return torch.logaddexp(x, torch.zeros_like(x))

    def df(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return torch.log(a) - torch.log1p(-a)


@register
class Softsign(ScalarOp):
    onnx_types = ("Softsign",)
    rounding_scale = "result"  # a sum and a division
    increasing = True
    exact_derivative_range = True
    slope_bound = 1.0  # at 0

    def f(self, x: Tensor) -> Tensor:
        return x / (1 + x.abs())

    def df(self, x: Tensor) -> Tensor:
        return 1 / (1 + x.abs()) ** 2

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo).unsqueeze(0)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        r = torch.rsqrt(a) - 1  # |x|
        return torch.where(convex, -r, r)


@register
class HardSigmoid(Op):
    """Registered for import; always lowered to ``Clip(alpha x + beta, 0, 1)``."""

    onnx_types = ("HardSigmoid",)
    onnx_attributes: ClassVar[frozenset[str]] = frozenset({"alpha", "beta"})


@register
class PRelu(LeakyRelu):
    """``x`` for x >= 0, ``slope x`` below, with a constant slope tensor that broadcasts to
    the input (ONNX's unidirectional broadcasting, from the right, as the batch of problems
    does).  Slopes in [0, 1] give LeakyReLU's closed-form lines entry by entry; slopes
    outside (a concave or decreasing piece) are refused by name."""

    onnx_types = ("PRelu",)

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if len(inputs) != 2 or not isinstance(inputs[0], Var) or isinstance(inputs[1], Var):
            raise OpFormError("only the data input may vary; the slope must be constant")
        slope = np.asarray(inputs[1].value, dtype=np.float64)  # type: ignore[union-attr]
        try:
            fits = np.broadcast_shapes(slope.shape, inputs[0].shape) == tuple(inputs[0].shape)
        except ValueError:
            fits = False
        if not fits:
            raise OpFormError(f"the slope of shape {slope.shape} does not broadcast to the "
                              f"input's shape {inputs[0].shape}")
        bad = slope[~((slope >= 0) & (slope <= 1))]
        if bad.size:
            raise OpFormError(f"slope {float(bad.ravel()[0])!r} is not supported (only slopes "
                              "in [0, 1])")

    def _s(self, like: Tensor) -> Tensor:
        return self.const(1, like)

    def derivative(self, shape: tuple[int, ...]) -> None:  # type: ignore[override]
        return None

    def max_slope(self, lo: Tensor, hi: Tensor) -> float:
        return 1.0

    def f(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self._s(x) * x)

    def df(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), self._s(x).expand_as(x))

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return []

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.ones_like(lo, dtype=torch.bool)

    def relax(self, ins: list[Interval], out: Interval) -> Relaxation:
        lo, hi = ins[0]
        s = self._s(lo).expand_as(lo)
        return ReluRelaxation(self.scalar_shape(), lo, hi, s)  # type: ignore[arg-type]

    def split_point(self, lo: Tensor, hi: Tensor) -> Tensor:
        return torch.zeros_like(lo)


@register
class HardSwish(ScalarOp):
    """``x max(0, min(1, x / 6 + 1 / 2))``: 0 up to -3, ``x (x + 3) / 6`` (convex) on
    [-3, 3], x from 3 on.  Both kinks are concave (the slope drops from 0 to -1/2 at -3 and
    from 3/2 to 1 at 3), so f is concave (linear) up to -3, convex on [-3, 3] and concave
    (linear) after: two inflections, at the kinks."""

    onnx_types = ("HardSwish",)

    def f(self, x: Tensor) -> Tensor:
        return x * torch.clamp(x / 6 + 0.5, 0, 1)

    def df(self, x: Tensor) -> Tensor:
        mid = (2 * x + 3) / 6
        return torch.where(x <= -3, torch.zeros_like(x), torch.where(x < 3, mid,
                                                                     torch.ones_like(x)))

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.full_like(lo, -1.5)]  # the minimum, -3/8

    def max_slope(self, lo: Tensor, hi: Tensor) -> float:
        return 1.5

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.stack([torch.full_like(lo, -3.0), torch.full_like(lo, 3.0)])

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo, dtype=torch.bool)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        """On the convex piece (2 x + 3) / 6 = a; the linear pieces have one slope each."""
        return torch.where(convex, 3 * a - 1.5, torch.zeros_like(a))


MISH_P1, MISH_P2 = -2.256376396360793, 1.4905711794854284  # inflections (module docstring)
MISH_MIN_AT = -1.1924312145154952


@register
class Mish(ScalarOp):
    """``x tanh(softplus(x))`` (opset 18): concave, convex, concave (module docstring)."""

    onnx_types = ("Mish",)
    exact_derivative_range = True
    slope_bound = 1.0885  # f'(MISH_P2) = 1.08849816...

    def f(self, x: Tensor) -> Tensor:
        return x * torch.tanh(torch.logaddexp(x, torch.zeros_like(x)))

    def df(self, x: Tensor) -> Tensor:
        """``tanh(sp) + x (1 - tanh(sp)^2) sigmoid(x)`` with sp = softplus(x)."""
        t = torch.tanh(torch.logaddexp(x, torch.zeros_like(x)))
        return t + x * (1 - t * t) * torch.sigmoid(x)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.full_like(lo, MISH_MIN_AT)]

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.stack([torch.full_like(lo, MISH_P1), torch.full_like(lo, MISH_P2)])

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo, dtype=torch.bool)


GELU_TANH_P = 1.4185040087908283  # the inflections are -P and P (module docstring)
GELU_TANH_MIN_AT = -0.7524614220710163
_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715


class GeluTanh(ScalarOp):
    """GeLU's tanh approximation, Gelu with ``approximate="tanh"`` (opset 20; chosen by
    ``Gelu.select``): concave, convex on [-P, P], concave (module docstring).  No
    derivative op: a Lipschitz job on it is refused by name."""

    onnx_types = ()
    onnx_attributes = frozenset({"approximate"})
    exact_derivative_range = True
    slope_bound = 1.1289931  # f'(P) = 1.12899306865877..., rounded up

    def f(self, x: Tensor) -> Tensor:
        return 0.5 * x * (1.0 + torch.tanh(_GELU_C * (x + _GELU_K * x * x * x)))

    def df(self, x: Tensor) -> Tensor:
        t = torch.tanh(_GELU_C * (x + _GELU_K * x * x * x))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_C * (1 + 3 * _GELU_K * x * x)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.full_like(lo, GELU_TANH_MIN_AT)]

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.stack([torch.full_like(lo, -GELU_TANH_P),
                            torch.full_like(lo, GELU_TANH_P)])

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo, dtype=torch.bool)
