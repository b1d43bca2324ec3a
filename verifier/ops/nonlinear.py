"""Elementwise nonlinear ops (ReLU, sigmoid, tanh, GeLU, sin, cos, exp, log, ...).

Interval bounds of a scalar function over [l, u] are the minimum and maximum of f over the
endpoints and the critical points of f inside [l, u] (where f' changes sign); each function
states its critical points, so the rule is exact for every one of them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..relax import ScalarShape
from .base import Const, Input, Interval, Op, OpFormError, Tensor, Var, register

GELU_ARGMIN = -0.7517915246935553  # the unique stationary point of x * Phi(x)


class ScalarOp(Op):
    """y = f(x) elementwise.  ``increasing`` functions bound by their endpoints; others list
    their critical points in ``critical(l, u)`` (a tensor stack of candidate points)."""

    increasing: bool = False

    def f(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.f(x)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        """Points where f' changes sign, each broadcast like lo (may lie outside [lo, hi])."""
        return []

    def df(self, x: Tensor) -> Tensor:
        """f' (a one-sided derivative at kinks), by autograd unless overridden."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.f(xg).sum(), xg)
        return g

    def inflections(self, lo: Tensor) -> Tensor:
        """Points where f's convexity flips, as a (K, *shape) tensor (default: none)."""
        return lo.new_zeros((0, *lo.shape))

    def convex_before(self, lo: Tensor) -> Tensor:
        """Whether f is convex left of the first inflection point."""
        return torch.ones_like(lo, dtype=torch.bool)

    inverse_df = None
    flat_when_wide: tuple[float, float, float] | None = None

    def scalar_shape(self) -> ScalarShape:
        return ScalarShape(self.f, self.df, self.inflections, self.convex_before,
                           self.inverse_df, getattr(self, "fast_lines", None),
                           self.flat_when_wide)

    def domain(self, lo: Tensor, hi: Tensor) -> Interval:
        """The part of [lo, hi] where f is defined (relaxations are built there)."""
        return lo, hi

    def ibp(self, b: Interval) -> Interval:
        lo, hi = b
        if self.increasing:
            return self.f(lo), self.f(hi)
        flo, fhi = self.f(lo), self.f(hi)
        low, high = torch.minimum(flo, fhi), torch.maximum(flo, fhi)
        for c in self.critical(lo, hi):
            inside = (c >= lo) & (c <= hi)
            fc = self.f(torch.where(inside, c, lo))
            low = torch.where(inside, torch.minimum(low, fc), low)
            high = torch.where(inside, torch.maximum(high, fc), high)
        return low, high


def _float_attr(attrs: dict[str, Any], name: str, default: float) -> float:
    return float(attrs.get(name, default))


@register
class Relu(ScalarOp):
    onnx_types = ("Relu",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def df(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    def fast_lines(self, lo: Tensor, hi: Tensor, a_l: Tensor, a_u: Tensor
                   ) -> tuple[Tensor, Tensor]:
        """Exact intercepts: the extremes of relu(x) - a x on [l, u] lie at l, u or 0."""
        inside = (lo < 0) & (hi > 0)

        def extreme(a: Tensor, pick) -> Tensor:  # type: ignore[no-untyped-def]
            best = pick(torch.relu(lo) - a * lo, torch.relu(hi) - a * hi)
            return torch.where(inside, pick(best, torch.zeros_like(best)), best)

        return extreme(a_l, torch.minimum), extreme(a_u, torch.maximum)


@register
class LeakyRelu(ScalarOp):
    onnx_types = ("LeakyRelu",)

    @property
    def slope(self) -> float:
        return _float_attr(self.attrs, "alpha", 0.01)

    def f(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.slope * x)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.zeros_like(lo)] if self.slope < 0 else []

    def df(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, 1.0, self.slope).to(x.dtype)

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.full_like(lo, self.slope <= 1, dtype=torch.bool)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return torch.zeros_like(a)


@register
class Sigmoid(ScalarOp):
    onnx_types = ("Sigmoid",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo).unsqueeze(0)

    def df(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        root = torch.sqrt((1 - 4 * a).clamp(min=0))
        s = torch.where(convex, 1 - root, 1 + root) / 2
        return torch.log(s) - torch.log1p(-s)


@register
class Tanh(ScalarOp):
    onnx_types = ("Tanh",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo).unsqueeze(0)

    def df(self, x: Tensor) -> Tensor:
        return 1 - torch.tanh(x) ** 2

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        t = torch.sqrt((1 - a).clamp(min=0))
        return torch.atanh(torch.where(convex, -t, t))


@register
class Erf(ScalarOp):
    onnx_types = ("Erf",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.erf(x)

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo).unsqueeze(0)

    def df(self, x: Tensor) -> Tensor:
        return 2 / math.sqrt(math.pi) * torch.exp(-x * x)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        r = torch.sqrt(-torch.log(a * math.sqrt(math.pi) / 2))
        return torch.where(convex, -r, r)


@register
class Exp(ScalarOp):
    onnx_types = ("Exp",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.exp(x)

    def df(self, x: Tensor) -> Tensor:
        return torch.exp(x)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return torch.log(a)


@register
class Log(ScalarOp):
    """Natural log; bounds assume the input is positive (a non-positive lower bound gives
    -inf, which is sound and makes the bound useless)."""

    onnx_types = ("Log",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.log(x)

    def ibp(self, b: Interval) -> Interval:
        return torch.log(b[0].clamp(min=0)), torch.log(b[1].clamp(min=0))

    def df(self, x: Tensor) -> Tensor:
        return 1 / x

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo, dtype=torch.bool)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return 1 / a

    def domain(self, lo: Tensor, hi: Tensor) -> Interval:
        return lo.clamp(min=1e-30), hi.clamp(min=1e-30)


@register
class Sqrt(ScalarOp):
    """Square root over the part of the interval where it is defined (x >= 0)."""

    onnx_types = ("Sqrt",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.sqrt(x)

    def ibp(self, b: Interval) -> Interval:
        return torch.sqrt(b[0].clamp(min=0)), torch.sqrt(b[1].clamp(min=0))

    def df(self, x: Tensor) -> Tensor:
        return 0.5 / torch.sqrt(x)

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo, dtype=torch.bool)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return 0.25 / (a * a)

    def domain(self, lo: Tensor, hi: Tensor) -> Interval:
        return lo.clamp(min=0), hi.clamp(min=0)


@register
class Reciprocal(ScalarOp):
    """1/x: decreasing on each side of 0; an interval containing 0 gives (-inf, inf)."""

    onnx_types = ("Reciprocal",)

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.scale = float(inputs[0].value.ravel()[0]) if isinstance(inputs[0], Const) else 1.0

    def f(self, x: Tensor) -> Tensor:
        return self.scale / x

    def ibp(self, b: Interval) -> Interval:
        lo, hi = b
        a, c = 1.0 / hi, 1.0 / lo
        spans = (lo <= 0) & (hi >= 0)
        inf = torch.full_like(lo, math.inf)
        low = torch.where(spans, -inf, a)
        high = torch.where(spans, inf, c)
        if self.scale >= 0:
            return low * self.scale, high * self.scale
        return high * self.scale, low * self.scale

    def df(self, x: Tensor) -> Tensor:
        return -self.scale / (x * x)

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo).unsqueeze(0)

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.full_like(lo, self.scale < 0, dtype=torch.bool)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        r = torch.sqrt(-self.scale / a)
        left = convex == (self.scale < 0)
        return torch.where(left, -r, r)


@register
class Abs(ScalarOp):
    onnx_types = ("Abs",)

    def f(self, x: Tensor) -> Tensor:
        return torch.abs(x)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.zeros_like(lo)]

    def df(self, x: Tensor) -> Tensor:
        return torch.sign(x)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return torch.zeros_like(a)


@register
class Gelu(ScalarOp):
    """GeLU, exact (erf) form: x * Phi(x).  Decreasing left of GELU_ARGMIN, increasing right."""

    onnx_types = ("Gelu",)

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        approx = attrs.get("approximate", "none")
        if (approx.decode() if isinstance(approx, bytes) else approx) != "none":
            raise OpFormError("only the exact (erf) GeLU is supported")

    def f(self, x: Tensor) -> Tensor:
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.full_like(lo, GELU_ARGMIN)]

    def df(self, x: Tensor) -> Tensor:
        return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x * x / 2) / math.sqrt(
            2 * math.pi)

    def inflections(self, lo: Tensor) -> Tensor:
        r = math.sqrt(2)
        return torch.stack([torch.full_like(lo, -r), torch.full_like(lo, r)])

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo, dtype=torch.bool)


class Periodic(ScalarOp):
    """sin(x + phase): critical points at pi/2 - phase + k*pi; the two nearest above lo
    cover every interval shorter than pi, and wider intervals reach both -1 and 1."""

    phase = 0.0
    flat_when_wide = (2 * math.pi, -1.0, 1.0)  # three listed flips cover 2*pi

    def f(self, x: Tensor) -> Tensor:
        return torch.sin(x + self.phase)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        base = math.pi / 2 - self.phase
        k = torch.ceil((lo - base) / math.pi)
        first = base + k * math.pi
        return [first, first + math.pi]

    def ibp(self, b: Interval) -> Interval:
        low, high = super().ibp(b)
        wide = (b[1] - b[0]) >= 2 * math.pi
        return torch.where(wide, -1.0, low), torch.where(wide, 1.0, high)

    def df(self, x: Tensor) -> Tensor:
        return torch.cos(x + self.phase)

    def inflections(self, lo: Tensor) -> Tensor:
        # sin(x + phase) flips convexity where x + phase = k*pi; three flips cover 2*pi
        k = torch.ceil((lo + self.phase) / math.pi)
        first = k * math.pi - self.phase
        return torch.stack([first, first + math.pi, first + 2 * math.pi])

    def convex_before(self, lo: Tensor) -> Tensor:
        k = torch.ceil((lo + self.phase) / math.pi)
        return torch.remainder(k, 2) == 0


@register
class Sin(Periodic):
    onnx_types = ("Sin",)


@register
class Cos(Periodic):
    onnx_types = ("Cos",)
    phase = math.pi / 2

    def f(self, x: Tensor) -> Tensor:
        return torch.cos(x)


@register
class PowConst(ScalarOp):
    """x ** p for a constant p.  Integer p: even powers have a minimum at 0, odd ones
    increase.  Non-integer p is taken on x >= 0 (where it is defined)."""

    onnx_types = ("Pow",)

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if not isinstance(inputs[0], Var) or not isinstance(inputs[1], Const):
            raise OpFormError("only a variable raised to a constant exponent is supported")
        if inputs[1].value.size != 1:
            raise OpFormError("the exponent must be a single constant")

    @property
    def p(self) -> float:
        return float(self.const_np(1).ravel()[0])

    def f(self, x: Tensor) -> Tensor:
        return torch.pow(x, self.p)

    def ibp(self, b: Interval) -> Interval:
        lo, hi = b
        p = self.p
        if p == int(p) and int(p) % 2 == 0 and p > 0:
            return super().ibp(b)
        if p == int(p) and int(p) % 2 == 1 and p > 0:
            return self.f(lo), self.f(hi)
        if p == 0:
            return torch.ones_like(lo), torch.ones_like(hi)
        lo, hi = lo.clamp(min=0), hi.clamp(min=0)
        if p > 0:
            return self.f(lo), self.f(hi)
        return self.f(hi), self.f(lo)  # negative exponent: decreasing on x > 0

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.zeros_like(lo)]

    def df(self, x: Tensor) -> Tensor:
        return self.p * torch.pow(x, self.p - 1)

    def _odd(self) -> bool:
        return self.p == int(self.p) and int(self.p) % 2 == 1 and self.p > 1

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo).unsqueeze(0) if self._odd() else super().inflections(lo)

    def convex_before(self, lo: Tensor) -> Tensor:
        p = self.p
        convex = self._odd() is False and (p >= 1 or p < 0)
        return torch.full_like(lo, convex, dtype=torch.bool) if not self._odd() else \
            torch.zeros_like(lo, dtype=torch.bool)

    def domain(self, lo: Tensor, hi: Tensor) -> Interval:
        if self.p == int(self.p) and self.p > 0:
            return lo, hi
        return lo.clamp(min=1e-30 if self.p < 0 else 0), hi.clamp(min=1e-30 if self.p < 0 else 0)


@register
class Clip(ScalarOp):
    """clamp(x, lo, hi) with constant limits: convex up to the midpoint, concave after."""

    onnx_types = ("Clip",)
    increasing = True

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if any(isinstance(i, Var) for i in inputs[1:]):
            raise OpFormError("the limits must be constant")

    def _limit(self, index: int, name: str, default: float) -> float:
        if self.has_const(index) and self.const_np(index).size:
            return float(self.const_np(index).ravel()[0])
        return _float_attr(self.attrs, name, default)

    @property
    def limits(self) -> tuple[float, float]:
        return self._limit(1, "min", -math.inf), self._limit(2, "max", math.inf)

    def f(self, x: Tensor) -> Tensor:
        return x.clamp(*self.limits)

    def df(self, x: Tensor) -> Tensor:
        a, b = self.limits
        return ((x > a) & (x < b)).to(x.dtype)

    def inflections(self, lo: Tensor) -> Tensor:
        a, b = self.limits
        if math.isfinite(a) and math.isfinite(b):
            return torch.full_like(lo, (a + b) / 2).unsqueeze(0)
        return super().inflections(lo)

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.full_like(lo, math.isfinite(self.limits[0]), dtype=torch.bool)


class MaxMinConst(ScalarOp):
    """max(x, c) (convex) or min(x, c) (concave) for one variable and a constant."""

    onnx_types = ()
    increasing = True

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.c_index = 0 if isinstance(inputs[0], Const) else 1
        self.is_max = attrs["_op_type"] == "Max"

    def f(self, x: Tensor) -> Tensor:
        from .base import align

        c = self.const(self.c_index, x)
        x = align(x, len(self.out_shape)) if self.out_shape else x
        return torch.maximum(x, c) if self.is_max else torch.minimum(x, c)

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.full_like(lo, self.is_max, dtype=torch.bool)


@register
class MaxMin(Op):
    """Elementwise Max / Min of variables and constants: non-decreasing in every input."""

    onnx_types = ("Max", "Min")
    monotone = True

    @classmethod
    def select(cls, attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
        n_var = sum(isinstance(i, Var) for i in inputs)
        return MaxMinConst if n_var == 1 and len(inputs) == 2 else cls

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.n_inputs = len(inputs)

    def forward(self, *xs: Tensor) -> Tensor:
        from .base import align

        it = iter(xs)
        args = [self.const(i, xs[0]) if self.has_const(i) else align(next(it), len(self.out_shape))
                for i in range(self.n_inputs)]
        fn = torch.maximum if self.attrs["_op_type"] == "Max" else torch.minimum
        out = args[0]
        for a in args[1:]:
            out = fn(out, a)
        return out


@register
class MaxPool(Op):
    """2-d (or 1-d) max pooling: non-decreasing in every input."""

    onnx_types = ("MaxPool",)
    monotone = True

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if int(attrs.get("storage_order", 0)):
            raise OpFormError("storage_order=1 is not supported")

    def forward(self, x: Tensor) -> Tensor:
        k = list(self.attrs["kernel_shape"])
        n = len(k)
        strides = list(self.attrs.get("strides", [1] * n))
        pads = list(self.attrs.get("pads", [0] * (2 * n)))
        dil = list(self.attrs.get("dilations", [1] * n))
        xb = x.reshape(-1, *x.shape[-(n + 1):])
        torch_pads: list[int] = []
        for i in reversed(range(n)):
            torch_pads += [pads[i], pads[i + n]]
        xb = torch.nn.functional.pad(xb, torch_pads, value=-math.inf)
        pool = torch.nn.functional.max_pool2d if n == 2 else torch.nn.functional.max_pool1d
        y = pool(xb, k, strides, 0, dil, ceil_mode=bool(self.attrs.get("ceil_mode", 0)))
        return y.reshape(*x.shape[: -(n + 1)], *y.shape[1:])
