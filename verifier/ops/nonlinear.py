"""Elementwise nonlinear ops (ReLU, sigmoid, tanh, GeLU, sin, cos, exp, log, ...).

Interval bounds of a scalar function over [l, u] are the minimum and maximum of f over the
endpoints and the critical points of f inside [l, u] (where f' changes sign); each function
states its critical points, so the rule is exact for every one of them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

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


@register
class Sigmoid(ScalarOp):
    onnx_types = ("Sigmoid",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)


@register
class Tanh(ScalarOp):
    onnx_types = ("Tanh",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


@register
class Erf(ScalarOp):
    onnx_types = ("Erf",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.erf(x)


@register
class Exp(ScalarOp):
    onnx_types = ("Exp",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.exp(x)


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


@register
class Sqrt(ScalarOp):
    """Square root over the part of the interval where it is defined (x >= 0)."""

    onnx_types = ("Sqrt",)
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.sqrt(x)

    def ibp(self, b: Interval) -> Interval:
        return torch.sqrt(b[0].clamp(min=0)), torch.sqrt(b[1].clamp(min=0))


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


@register
class Abs(ScalarOp):
    onnx_types = ("Abs",)

    def f(self, x: Tensor) -> Tensor:
        return torch.abs(x)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.zeros_like(lo)]


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


class Periodic(ScalarOp):
    """sin(x + phase): critical points at pi/2 - phase + k*pi; the two nearest above lo
    cover every interval shorter than pi, and wider intervals reach both -1 and 1."""

    phase = 0.0

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


@register
class Clip(Op):
    """clamp(x, min, max) with constant limits: non-decreasing."""

    onnx_types = ("Clip",)
    monotone = True

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if any(isinstance(i, Var) for i in inputs[1:]):
            raise OpFormError("the limits must be constant")

    def _limit(self, index: int, name: str, default: float) -> float:
        if self.has_const(index) and self.const_np(index).size:
            return float(self.const_np(index).ravel()[0])
        return _float_attr(self.attrs, name, default)

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(self._limit(1, "min", -math.inf), self._limit(2, "max", math.inf))


@register
class MaxMin(Op):
    """Elementwise Max / Min of variables and constants: non-decreasing in every input."""

    onnx_types = ("Max", "Min")
    monotone = True

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
