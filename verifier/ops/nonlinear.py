"""Elementwise nonlinear ops (ReLU, sigmoid, tanh, GeLU, sin, cos, exp, log, ...).

Interval bounds of a scalar function over [l, u] are the minimum and maximum of f over the
endpoints and the critical points of f inside [l, u] (where f' changes sign); each function
states its critical points, so the rule is exact for every one of them.

Any interval may come in: infinite or half-infinite, containing a pole, NaN.  An interval
is closed in the extended reals (an infinite end is a value a float computation may reach,
by overflow or a pole) and f is taken as floating point evaluates it there.  Where f is
unbounded the bound is infinite; where f is NaN for some point of the interval (log or
sqrt of a negative, a fractional power of a negative, sin of an infinity, ...) the bounds
are (-inf, inf), which never proves anything.  Nothing is clamped.  ``regular`` says
where the relaxation mechanism (relax.py) applies; elsewhere the lines are the constants
of these interval bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from verifier.ops.base import (
    F32_0_01,
    Const,
    Input,
    Interval,
    Op,
    OpFormError,
    Relaxation,
    Tensor,
    Var,
    axis,
    magnitude,
    register,
    tiny,
)
from verifier.ops.branching import load_table, split_points
from verifier.ops.relax import (
    ReluRelaxation,
    ScalarRelaxation,
    ScalarShape,
    one_inflection_intercepts,
    slope_range,
)

GELU_ARGMIN = -0.7517915246935553  # the unique stationary point of x * Phi(x)


class ScalarOp(Op):
    """y = f(x) elementwise.  ``increasing`` functions bound by their endpoints; others list
    their critical points in ``critical(l, u)`` (a tensor stack of candidate points)."""

    elementwise = True
    increasing: bool = False
    #: ``derivative_range`` is exact: f' is monotone between the listed inflection points of
    #: f (or piecewise constant), so its extremes over [l, u] lie at l, u or those points
    exact_derivative_range: ClassVar[bool] = False
    #: max |f'| over the real line, where it is finite and known (None: ``max_slope`` takes
    #: it from the derivative range over the interval)
    slope_bound: ClassVar[float | None] = None
    #: what the rounding bound scales with: "result" (|f|), "unit" (|f| + 1) or "argument"
    #: (|f| + |x|: argument reduction, or an error absolute in x)
    rounding_scale: ClassVar[str] = "argument"

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """``rounding_ulps * u * scale + tiny``, the scale per ``rounding_scale``."""
        if self.rounding_ulps == 0:
            return None
        mag = magnitude(out)
        if self.rounding_scale == "unit":
            mag = mag + 1
        elif self.rounding_scale == "argument":
            mag = mag + magnitude(ins[0])
        return self.rounding_ulps * u * mag + tiny(u)

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

    #: optional closed form of the root of f'(x) = a on a convex (True) or concave piece
    inverse_df: Callable[[Tensor, Tensor], Tensor] | None = None
    flat_when_wide: tuple[float, float, float] | None = None

    def scalar_shape(self) -> ScalarShape:
        return ScalarShape(self.f, self.df, self.inflections, self.convex_before,
                           self.inverse_df, getattr(self, "fast_lines", None),
                           self.flat_when_wide, regular=self.regular,
                           bounds=lambda lo, hi: self.ibp((lo, hi)))

    def regular(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Where [lo, hi] (finite) holds no pole and no point where f is undefined, so the
        relaxation mechanism applies (default: everywhere)."""
        return torch.ones_like(lo, dtype=torch.bool)

    def domain(self, lo: Tensor, hi: Tensor) -> Interval:
        """The interval relaxations are built over: all of [lo, hi] (never clamped; the
        mechanism itself handles the parts where f is unbounded or undefined)."""
        return lo, hi

    def derivative(self, shape: tuple[int, ...]) -> ScalarOp | None:
        """The op computing f' elementwise for a node of ``shape`` (ops/derivatives.py), so
        that a Jacobian's backward graph keeps f'(z) tied to z; None where there is none."""
        return None

    def derivative_range(self, lo: Tensor, hi: Tensor) -> Interval:
        """[min f', max f'] over [lo, hi]: at the ends or an inflection point of f (exact
        where ``exact_derivative_range``)."""
        return slope_range(self.scalar_shape(), lo, hi)

    def max_slope(self, lo: Tensor, hi: Tensor) -> float:
        """max |f'| over the real line (``slope_bound``); for functions whose slope is
        unbounded (exp), over [lo, hi]."""
        if self.slope_bound is not None:
            return self.slope_bound
        d_lo, d_hi = self.derivative_range(*self.domain(lo, hi))
        return float(torch.maximum(d_lo.abs(), d_hi.abs()).max())

    def relax(self, ins: list[Interval], out: Interval) -> Relaxation:
        """The one relaxation mechanism's lines over the input's interval (ops/relax.py)."""
        return ScalarRelaxation(self.scalar_shape(), *self.domain(*ins[0]))

    def split_point(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Where branch-and-bound splits [lo, hi]: the point of the function's table of
        branching points (ops/branching.py) that shrinks the relaxation gap most."""
        key = repr(sorted((k, v) for k, v in self.attrs.items() if not k.startswith("_")))
        return split_points(load_table(type(self).__name__, key, self.scalar_shape()), lo, hi)

    def ibp(self, b: Interval) -> Interval:
        """Sound bounds over any [lo, hi]; (-inf, inf) wherever a NaN would come out."""
        return unknown_where_nan(*self.interval(*b))

    def interval(self, lo: Tensor, hi: Tensor) -> Interval:
        """Bounds of f over [lo, hi] from the ends and the critical points inside."""
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


def unknown_where_nan(lo: Tensor, hi: Tensor) -> Interval:
    """(-inf, inf) in every entry where either bound is NaN (f NaN somewhere, or a NaN
    input): nothing is known there, and NaN must never reach a proof."""
    nan = torch.isnan(lo) | torch.isnan(hi)
    return torch.where(nan, -math.inf, lo), torch.where(nan, math.inf, hi)


def unknown(lo: Tensor) -> Interval:
    """(-inf, inf) everywhere, shaped like ``lo``."""
    inf = torch.full_like(lo, math.inf)
    return -inf, inf


def _nan_below(lo: Tensor, limit: float, low: Tensor, high: Tensor) -> Interval:
    """(low, high), or (-inf, inf) where the interval reaches below ``limit`` (f NaN)."""
    below = lo < limit
    return torch.where(below, -math.inf, low), torch.where(below, math.inf, high)


def _float_attr(attrs: dict[str, Any], name: str, default: float) -> float:
    return float(attrs.get(name, default))


@register
class Relu(ScalarOp):
    onnx_types = ("Relu",)
    rounding_ulps = 0.0  # max(x, 0) is exact
    increasing = True
    exact_derivative_range = True
    slope_bound = 1.0

    def derivative(self, shape: tuple[int, ...]) -> ScalarOp:
        """The step 0 for z <= 0, 1 for z > 0."""
        from verifier.ops.derivatives import StepDerivative

        return StepDerivative(shape, self, 0.0, 1.0)

    def f(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def df(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    def relax(self, ins: list[Interval], out: Interval) -> Relaxation:
        return ReluRelaxation(self.scalar_shape(), *ins[0], 0.0)

    def insensitive(self, k: int, ins: list[Interval]) -> Tensor | None:
        """Stable entries (l >= 0 or u <= 0): the relaxation is the active piece, exact."""
        return (ins[0][0] >= 0) | (ins[0][1] <= 0)

    def split_point(self, lo: Tensor, hi: Tensor) -> Tensor:
        """The kink."""
        return torch.zeros_like(lo)

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
    rounding_ulps, rounding_scale = 2.0, "result"  # one product
    exact_derivative_range = True

    def derivative(self, shape: tuple[int, ...]) -> ScalarOp:
        """The step alpha for z <= 0, 1 for z > 0."""
        from verifier.ops.derivatives import StepDerivative

        return StepDerivative(shape, self, self.slope, 1.0)

    def max_slope(self, lo: Tensor, hi: Tensor) -> float:
        return max(1.0, abs(self.slope))

    @property
    def slope(self) -> float:
        return _float_attr(self.attrs, "alpha", F32_0_01)

    def f(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.slope * x)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.zeros_like(lo)] if self.slope < 0 else []

    def relax(self, ins: list[Interval], out: Interval) -> Relaxation:
        """ReLU's closed form for slopes in [0, 1]; the general mechanism otherwise (the
        upper line stays CROWN's, as for ReLU)."""
        if 0 <= self.slope <= 1:
            return ReluRelaxation(self.scalar_shape(), *ins[0], self.slope)
        return ScalarRelaxation(self.scalar_shape(), *ins[0], upper_free=False)

    def insensitive(self, k: int, ins: list[Interval]) -> Tensor | None:
        """Stable entries (l >= 0 or u <= 0): the relaxation is the active piece, exact."""
        return (ins[0][0] >= 0) | (ins[0][1] <= 0)

    def split_point(self, lo: Tensor, hi: Tensor) -> Tensor:
        """The kink."""
        return torch.zeros_like(lo)

    def df(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, 1.0, self.slope).to(x.dtype)

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.full_like(lo, self.slope <= 1, dtype=torch.bool)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return torch.zeros_like(a)


@register
class Sigmoid(ScalarOp):
    onnx_types = ("Sigmoid",)
    rounding_scale = "unit"  # measured: at most 2.8 ulps of 1, whatever |f|
    increasing = True
    exact_derivative_range = True
    slope_bound = 0.25  # at 0

    def derivative(self, shape: tuple[int, ...]) -> ScalarOp:
        from verifier.ops.derivatives import SigmoidDerivative

        return SigmoidDerivative(shape, self)

    def f(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo).unsqueeze(0)

    def df(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        # s (1 - s) = a: the smaller root s = (1 - sqrt(1 - 4a)) / 2, written without the
        # cancellation that makes it 0 for tiny a (very wide intervals); x = -+logit(s)
        s = 2 * a / (1 + torch.sqrt((1 - 4 * a).clamp(min=0)))
        x = torch.log(s) - torch.log1p(-s)
        return torch.where(convex, x, -x)

    def fast_lines(self, lo: Tensor, hi: Tensor, a_l: Tensor, a_u: Tensor
                   ) -> tuple[Tensor, Tensor]:
        return one_inflection_intercepts(self.f, self.inverse_df, lo, hi, a_l, a_u)


@register
class Tanh(ScalarOp):
    onnx_types = ("Tanh",)
    rounding_scale = "result"  # measured: at most 4.6 ulps of |f|
    increasing = True
    exact_derivative_range = True
    slope_bound = 1.0  # at 0

    def derivative(self, shape: tuple[int, ...]) -> ScalarOp:
        from verifier.ops.derivatives import TanhDerivative

        return TanhDerivative(shape, self)

    def f(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo).unsqueeze(0)

    def df(self, x: Tensor) -> Tensor:
        return 1 - torch.tanh(x) ** 2

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        # tanh(x) = t = sqrt(1 - a); atanh(t) = (log1p(t) - log(1 - t)) / 2 with
        # 1 - t = a / (1 + t), exact also for tiny a (very wide intervals)
        t = torch.sqrt((1 - a).clamp(min=0))
        x = (torch.log1p(t) - torch.log(a / (1 + t))) / 2
        return torch.where(convex, -x, x)

    def fast_lines(self, lo: Tensor, hi: Tensor, a_l: Tensor, a_u: Tensor
                   ) -> tuple[Tensor, Tensor]:
        return one_inflection_intercepts(self.f, self.inverse_df, lo, hi, a_l, a_u)


@register
class Erf(ScalarOp):
    onnx_types = ("Erf",)
    increasing = True
    exact_derivative_range = True
    slope_bound = 2 / math.sqrt(math.pi)  # at 0

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
    rounding_scale = "result"  # measured: at most 2.8 ulps of |f|
    increasing = True
    exact_derivative_range = True

    def relative_rounding(self, ins: list[Interval], u: float) -> float | None:
        """exp > 0 rounds relatively: [(1 - k u) e^x, (1 + k u) e^x], finite below even
        where e^x overflows above (the softmax lowering meets that)."""
        return self.rounding_ulps * u

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        return torch.full_like(out[0], tiny(u))

    def f(self, x: Tensor) -> Tensor:
        return torch.exp(x)

    def df(self, x: Tensor) -> Tensor:
        return torch.exp(x)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return torch.log(a)


@register
class Log(ScalarOp):
    """Natural log: increasing on [0, inf] with log(0) = -inf; NaN below 0, so an interval
    reaching below 0 gives (-inf, inf)."""

    onnx_types = ("Log",)
    rounding_scale = "unit"  # measured: at most 3.5 ulps of |f|, absolute near 1
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.log(x)

    def interval(self, lo: Tensor, hi: Tensor) -> Interval:
        return _nan_below(lo, 0.0, torch.log(lo), torch.log(hi))

    def regular(self, lo: Tensor, hi: Tensor) -> Tensor:
        return lo > 0

    def df(self, x: Tensor) -> Tensor:
        return 1 / x

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo, dtype=torch.bool)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return 1 / a


@register
class Sqrt(ScalarOp):
    """Square root: increasing on [0, inf]; NaN below 0, so an interval reaching below 0
    gives (-inf, inf)."""

    onnx_types = ("Sqrt",)
    rounding_ulps, rounding_scale = 4.0, "result"  # correctly rounded
    increasing = True

    def f(self, x: Tensor) -> Tensor:
        return torch.sqrt(x)

    def interval(self, lo: Tensor, hi: Tensor) -> Interval:
        return _nan_below(lo, 0.0, torch.sqrt(lo), torch.sqrt(hi))

    def regular(self, lo: Tensor, hi: Tensor) -> Tensor:
        return lo >= 0

    def df(self, x: Tensor) -> Tensor:
        return 0.5 / torch.sqrt(x)

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo, dtype=torch.bool)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return (0.5 / a) ** 2  # not 0.25 / a^2: a^2 may be subnormal on huge intervals


@register
class Reciprocal(ScalarOp):
    """c/x: monotone on each side of 0; an interval containing 0 (the pole, +-inf by the
    sign of zero, and 0/0 = NaN when c = 0) gives (-inf, inf)."""

    onnx_types = ("Reciprocal",)
    rounding_ulps, rounding_scale = 4.0, "result"  # one division (two as c * (1/x))

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.scale = float(inputs[0].value.ravel()[0]) if isinstance(inputs[0], Const) else 1.0

    def f(self, x: Tensor) -> Tensor:
        return self.scale / x

    def interval(self, lo: Tensor, hi: Tensor) -> Interval:
        flo, fhi = self.f(lo), self.f(hi)
        spans = (lo <= 0) & (hi >= 0)
        low, high = torch.minimum(flo, fhi), torch.maximum(flo, fhi)
        return torch.where(spans, -math.inf, low), torch.where(spans, math.inf, high)

    def regular(self, lo: Tensor, hi: Tensor) -> Tensor:
        return (lo > 0) | (hi < 0)

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
    rounding_ulps = 0.0  # exact
    exact_derivative_range = True
    slope_bound = 1.0

    def f(self, x: Tensor) -> Tensor:
        return torch.abs(x)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.zeros_like(lo)]

    def split_point(self, lo: Tensor, hi: Tensor) -> Tensor:
        """The kink."""
        return torch.zeros_like(lo)

    def df(self, x: Tensor) -> Tensor:
        return torch.sign(x)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        return torch.zeros_like(a)


@register
class Gelu(ScalarOp):
    """GeLU, exact (erf) form: x * Phi(x).  Decreasing left of GELU_ARGMIN, increasing right."""

    onnx_types = ("Gelu",)
    exact_derivative_range = True
    slope_bound = 1.1289957  # Phi(sqrt 2) + sqrt 2 phi(sqrt 2), rounded up

    def derivative(self, shape: tuple[int, ...]) -> ScalarOp:
        from verifier.ops.derivatives import GeluDerivative

        return GeluDerivative(shape, self)

    @classmethod
    def select(cls, attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
        """The tanh approximation (opset 20's ``approximate="tanh"``) is its own function."""
        from verifier.ops.activations import GeluTanh

        approx = attrs.get("approximate", "none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        return GeluTanh if approx == "tanh" else cls

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        approx = attrs.get("approximate", "none")
        if (approx.decode() if isinstance(approx, bytes) else approx) != "none":
            raise OpFormError(f"attribute 'approximate'={approx!r} is not an ONNX value "
                              "(none or tanh)")

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
    cover every interval shorter than pi, and wider intervals reach both -1 and 1.  So do
    intervals far from 0 (``far``), where k*pi is no longer accurate enough; an infinite
    end gives (-inf, inf) (sin of an infinity is NaN)."""

    phase = 0.0
    flat_when_wide = (2 * math.pi, -1.0, 1.0)  # three listed flips cover 2*pi
    exact_derivative_range = True
    slope_bound = 1.0

    def derivative_range(self, lo: Tensor, hi: Tensor) -> Interval:
        """The listed flips cover 2*pi only: on intervals of width pi or more, [-1, 1]."""
        dmin, dmax = super().derivative_range(lo, hi)
        wide = (hi - lo) >= math.pi
        return torch.where(wide, -1.0, dmin), torch.where(wide, 1.0, dmax)

    def f(self, x: Tensor) -> Tensor:
        return torch.sin(x + self.phase)

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        base = math.pi / 2 - self.phase
        k = torch.ceil((lo - base) / math.pi)
        first = base + k * math.pi
        return [first, first + math.pi]

    def interval(self, lo: Tensor, hi: Tensor) -> Interval:
        low, high = super().interval(lo, hi)
        wide = ((hi - lo) >= 2 * math.pi) | (self._magnitude(lo, hi) > self.far(lo))
        low, high = torch.where(wide, -1.0, low), torch.where(wide, 1.0, high)
        infinite = ~(torch.isfinite(lo) & torch.isfinite(hi))
        return torch.where(infinite, -math.inf, low), torch.where(infinite, math.inf, high)

    @staticmethod
    def far(x: Tensor) -> float:
        """|x| beyond which k*pi (error about |x| eps) may miss a peak by a visible amount:
        below it the miss is under sqrt(eps) / 2, so sin there is within eps / 8 of +-1."""
        return 0.5 / math.sqrt(torch.finfo(x.dtype).eps)

    @staticmethod
    def _magnitude(lo: Tensor, hi: Tensor) -> Tensor:
        return torch.maximum(lo.abs(), hi.abs())

    def regular(self, lo: Tensor, hi: Tensor) -> Tensor:
        return self._magnitude(lo, hi) <= self.far(lo)

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
    """x ** p for a constant p.  Integer p > 0: even powers have a minimum at 0, odd ones
    increase.  Integer p < 0: a pole at 0 (+inf for even p; +-inf by the side for odd p, so
    an interval containing 0 gives (-inf, inf)), monotone on each side.  Non-integer p is
    NaN for x < 0 (an interval reaching below 0 gives (-inf, inf)) and monotone on x >= 0."""

    onnx_types: ClassVar[tuple[str, ...]] = ("Pow",)

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

    def _integer(self) -> bool:
        return math.isfinite(self.p) and self.p == int(self.p)

    def interval(self, lo: Tensor, hi: Tensor) -> Interval:
        p = self.p
        if p == 0:  # pow(x, 0) = 1 for every x, NaN and infinities included
            return torch.ones_like(lo), torch.ones_like(hi)
        if not self._integer():  # monotone on [0, inf]
            ends = (self.f(lo), self.f(hi)) if p > 0 else (self.f(hi), self.f(lo))
            return _nan_below(lo, 0.0, *ends)
        low, high = super().interval(lo, hi)  # ends and 0 (the minimum, or the pole)
        if p < 0 and int(p) % 2 == 1:  # odd negative: -inf and +inf on either side of 0
            spans = (lo <= 0) & (hi >= 0)
            return torch.where(spans, -math.inf, low), torch.where(spans, math.inf, high)
        return low, high

    def regular(self, lo: Tensor, hi: Tensor) -> Tensor:
        p = self.p
        if self._integer():
            return (lo > 0) | (hi < 0) if p < 0 else torch.ones_like(lo, dtype=torch.bool)
        return lo > 0 if p < 0 else lo >= 0

    def critical(self, lo: Tensor, hi: Tensor) -> list[Tensor]:
        return [torch.zeros_like(lo)]

    def _even(self) -> bool:
        return self._integer() and self.p > 0 and int(self.p) % 2 == 0

    def relative_rounding(self, ins: list[Interval], u: float) -> float | None:
        """An even power is >= 0 in floating point too and rounds relatively, by the same
        16 (1 + |p|) ulps, now of the result alone: a variance's lower bound stays >= 0
        (an additive bound took it below 0, and LayerNorm's rsqrt with it to a pole)."""
        return self.rounding_ulps * (1 + abs(self.p)) * u if self._even() else None

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """pow(x, p) as p products or exp(p log x): error grows with |p| (16 (1 + |p|) ulps);
        for even p relative (``relative_rounding``), with the underflow floor here."""
        if self._even():
            return torch.full_like(out[0], tiny(u))
        err = super().rounding_error(ins, out, u)
        return None if err is None else err * (1 + abs(self.p))

    def df(self, x: Tensor) -> Tensor:
        return self.p * torch.pow(x, self.p - 1)

    def _odd(self) -> bool:
        """Odd integer p other than 1: convexity flips at 0 (concave before it)."""
        return self._integer() and int(self.p) % 2 == 1 and self.p != 1

    def inflections(self, lo: Tensor) -> Tensor:
        return torch.zeros_like(lo).unsqueeze(0) if self._odd() else super().inflections(lo)

    def convex_before(self, lo: Tensor) -> Tensor:
        p = self.p
        convex = self._odd() is False and (p >= 1 or p < 0)
        return torch.full_like(lo, convex, dtype=torch.bool) if not self._odd() else \
            torch.zeros_like(lo, dtype=torch.bool)


class Square(PowConst):
    """x * x, one variable times itself (lowered from ``Mul(x, x)``, importer/lowering.py):
    Pow's function, relaxation and splits, with the rounding of the one product
    onnxruntime computes: the result, >= 0, rounds relatively (``fl(x x) = x^2 (1 + d)``,
    |d| <= u, charged twice as the products of variables are), and the underflow floor."""

    onnx_types: ClassVar[tuple[str, ...]] = ()

    def relative_rounding(self, ins: list[Interval], u: float) -> float | None:
        return 2 * u

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        return torch.full_like(out[0], tiny(u))


@register
class Clip(ScalarOp):
    """clamp(x, lo, hi) with constant limits: convex up to the midpoint, concave after."""

    onnx_types = ("Clip",)
    rounding_ulps = 0.0  # exact
    increasing = True
    exact_derivative_range = True
    slope_bound = 1.0

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

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        """The kink of the piece (the lower limit on the convex one, the upper on the
        concave one): with the ends, the kinks hold every extreme of f(x) - a x."""
        low, high = self.limits
        return torch.where(convex, torch.full_like(a, low), torch.full_like(a, high))


class MaxMinConst(ScalarOp):
    """max(x, c) (convex) or min(x, c) (concave) for one variable and a constant."""

    onnx_types = ()
    rounding_ulps = 0.0  # exact
    increasing = True
    exact_derivative_range = True
    slope_bound = 1.0

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.c_index = 0 if isinstance(inputs[0], Const) else 1
        self.is_max = attrs["_op_type"] == "Max"

    def f(self, x: Tensor) -> Tensor:
        from verifier.ops.base import align

        c = self.const(self.c_index, x)
        x = align(x, len(self.out_shape)) if self.out_shape else x
        return torch.maximum(x, c) if self.is_max else torch.minimum(x, c)

    def convex_before(self, lo: Tensor) -> Tensor:
        return torch.full_like(lo, self.is_max, dtype=torch.bool)

    def _kink(self, like: Tensor) -> Tensor:
        """The constant c, broadcast like the output for ``like``."""
        return torch.zeros_like(self.f(like)) + self.const(self.c_index, like)

    def df(self, x: Tensor) -> Tensor:
        c = self._kink(x)
        return (x > c if self.is_max else x < c).to(x.dtype)

    def inverse_df(self, a: Tensor, convex: Tensor) -> Tensor:
        """The kink: with the ends, it holds every extreme of f(x) - a x."""
        return self._kink(a)


@register
class MaxMin(Op):
    """Elementwise Max / Min of variables and constants: non-decreasing in every input."""

    onnx_types = ("Max", "Min")
    rounding_ulps = 0.0  # exact
    monotone = True

    @classmethod
    def select(cls, attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
        n_var = sum(isinstance(i, Var) for i in inputs)
        return MaxMinConst if n_var == 1 and len(inputs) == 2 else cls

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.n_inputs = len(inputs)

    def forward(self, *xs: Tensor) -> Tensor:
        from verifier.ops.base import align

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
    rounding_ulps = 0.0  # exact
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


@register
class ReduceMaxMin(Op):
    """ReduceMax / ReduceMin of a variable over constant axes (attribute up to opset 17,
    input from 18): exact, and non-decreasing in every entry, so its interval is the
    reduction of its input's bounds; the backward pass meets it as that interval."""

    onnx_types = ("ReduceMax", "ReduceMin")
    onnx_attributes = frozenset({"axes", "keepdims", "noop_with_empty_axes"})
    rounding_ulps = 0.0  # exact
    monotone = True

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if any(isinstance(i, Var) for i in inputs[1:]):
            raise OpFormError("the axes must be constant")

    def _dims(self, rank: int) -> list[int] | None:
        """The reduced dimensions of a batched tensor; None: none (the identity)."""
        axes = [int(a) for a in self.attrs["axes"]] if "axes" in self.attrs else \
            [int(a) for a in self.const_np(1).ravel()] if self.has_const(1) else []
        if not axes:
            if int(self.attrs.get("noop_with_empty_axes", 0)):
                return None
            axes = list(range(rank))
        return sorted({axis(a, rank) for a in axes})

    def forward(self, x: Tensor) -> Tensor:
        dims = self._dims(x.dim() - 1)
        if dims is None:
            return x
        keep = bool(int(self.attrs.get("keepdims", 1)))
        if self.attrs["_op_type"] == "ReduceMax":
            return x.amax(dim=dims, keepdim=keep)
        return x.amin(dim=dims, keepdim=keep)


@register
class GlobalMaxPool(Op):
    """Registered for import; always lowered to ReduceMax over the spatial axes
    (verifier/importer/lowering.py)."""

    onnx_types = ("GlobalMaxPool",)
