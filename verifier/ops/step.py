"""Step functions: Sign, Floor, Ceil and Round (half to even, as ONNX and torch.round).

Each f is non-decreasing and piecewise constant, with jumps at points p where the one-sided
limits differ, f(p-) < f(p+), and f(p) is one of them (Floor: f(p+), Ceil: f(p-), Round:
the even one, Sign: 0, halfway).  All four are exact in floating point (``rounding_ulps``
0): the result is an integer (or -1, 0, 1) that the input's format holds.

**Lines.**  For a slope a >= 0, h(x) = f(x) - a x is non-increasing between two jumps and
rises at each, so over the closed interval [l, u] its extremes lie at the ends or at the
jumps, approached from the side that gives the extreme:

    inf h = min( h(l), h(u), min over jumps p in (l, u] of f(p-) - a p )
    sup h = max( h(l), h(u), max over jumps p in [l, u) of f(p+) - a p )

and  a x + inf h <= f(x) <= a x + sup h  for every real x in [l, u].  Floor, Ceil and
Round jump on a lattice p = k + o with f(p-) = p + s- and f(p+) = p + s+ (Floor: o = 0,
s = (-1, 0); Ceil: (0, 1); Round: o = 1/2, s = (-1/2, 1/2)), so f(p+-) - a p is linear in
p and its extreme over the jumps of a range is at the first or the last of them; Sign has
the one jump at 0 (-1, 0, 1).  The intercepts are taken outward by the rounding of
``f - a x`` (4 u (|f| + |a x|) + an underflow floor), so the lines hold for the real
interval whatever the slope: slopes are a choice of tightness, never of soundness.

The slopes: the lower line is best at the midpoint m when it supports the lower convex hull
of f's graph there, whose vertices are among (l, f(l)), (u, f(u)) and the bottom corners
(p, f(p-)) of the jumps, collinear (slope 1) on a lattice; so the hull's edge at m joins
two of (l, f(l)), the first and the last bottom corner, (u, f(u)).  Each pair's slope
(and 0) is tried, and the line highest at m kept; the upper line likewise with the top
corners (p, f(p+)), lowest at m.  Special cases: f(l) = f(u) (no jump: the constant,
exact); an infinite or NaN end: the constants of the interval bounds (slope 0, intercepts
possibly infinite); magnitudes beyond ``2^(mantissa - 2)``, where the lattice is not held
exactly by the bound's format: x + s- <= f(x) <= x + s+, true for every real x.

**Branching.**  Branch-and-bound splits [l, u] at the jump nearest the middle into the
closed [l, p] and [p, u], which share p.  The child on the side f(p) belongs to (Floor's
right child, Ceil's left, Round's per the parity of f(p)) is constant: exact, no gap.  The
other child keeps f(p) at one end only: a step of height f(p+) - f(p-) over a single point,
relaxed by a constant line on one side and the chord to that point on the other, whose gap
falls from the jump's height at p to 0 at the far end (half the parent's one-jump gap on
average).  Sign's split at 0 leaves both children that shape, with half the jump each.

**Derivatives.**  f' is 0 between jumps and unbounded (a Dirac) at one: no finite slope
bounds f across a jump, so the Lipschitz engine must refuse these ops
(``exact_derivative_range`` is False, ``derivative`` None, and the ranges they give are
[0, inf] across a jump).

**Hardmax** (a step function of a vector): along ``axis``, 1 at the first index of the
maximum and 0 elsewhere; below opset 13 over the input flattened to 2-d at ``axis`` (as
Softmax then).  Its exact range per entry over a box: entry i can be 1 iff some point has
x_i > x_j for all j < i and x_i >= x_j for all j > i, that is (x_i at its top, the others at
their bottoms) ``hi_i > lo_j`` (j < i) and ``hi_i >= lo_j`` (j > i); it can be 0 iff some
j < i has ``hi_j >= lo_i`` or some j > i has ``hi_j > lo_i``.  So its interval is {0}, {1}
or [0, 1] per entry, exact (the comparisons hold for infinite ends too; a NaN anywhere in
a group gives [0, 1] for the group).  No linear bound improves on it; branch-and-bound
splits the inputs that feed it.  A search follows softmax's gradient through it (its own
is 0 almost everywhere).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from verifier.ops.base import Input, Interval, Op, Relaxation, Tensor, axis, register, tiny
from verifier.ops.nonlinear import ScalarOp
from verifier.ops.relax import FixedLines, Lines

# the jumps of a range: (first, last, whether there is one), each shaped like the range's ends
Jumps = tuple[Tensor, Tensor, Tensor]


class StepOp(ScalarOp):
    """A non-decreasing step function (see the module docstring for its lines)."""

    increasing = True
    rounding_ulps = 0.0  # the result is an integer the input's format holds: exact
    # IBP over the input's interval is f's exact range there: the backward pass from this
    # node could only give a line's value at an end of that interval, never more
    ibp_exact = True
    exact_derivative_range = False  # no finite derivative bound across a jump
    #: f(p-) - p and f(p+) - p at every jump p (where f(x) - x lies, on a lattice)
    shift: ClassVar[tuple[float, float]] = (0.0, 0.0)

    def search_forward(self, x: Tensor) -> Tensor:
        """f's values with the identity's gradient (a straight-through estimator): f' is 0
        wherever it exists, which leaves a gradient search of a binarised or quantised
        network nothing to follow; ``x - x.detach()`` is exactly 0, so the values are f's."""
        return self.forward(x).detach() + (x - x.detach())

    # -- the jumps -----------------------------------------------------------------------
    def jumps(self, lo: Tensor, hi: Tensor, open_left: bool) -> Jumps:
        """The first and last jump in (lo, hi] (``open_left``) or in [lo, hi)."""
        raise NotImplementedError

    def limits(self, p: Tensor) -> tuple[Tensor, Tensor]:
        """f(p-) and f(p+) at jumps p."""
        return p + self.shift[0], p + self.shift[1]

    def exact_below(self, like: Tensor) -> float:
        """Magnitude below which ``jumps`` is exact in ``like``'s format (inf: always)."""
        return math.inf

    # -- lines ---------------------------------------------------------------------------
    @torch.no_grad()
    def lines(self, lo: Tensor, hi: Tensor) -> Lines:
        """Sound lines a_l x + b_l <= f(x) <= a_u x + b_u over every closed [lo, hi]."""
        lo, hi = lo.detach(), hi.detach()
        regular = torch.isfinite(lo) & torch.isfinite(hi)
        zero = torch.zeros_like(lo)
        l, u = torch.where(regular, lo, zero), torch.where(regular, hi, zero)
        a_l, b_l = self._best_line(l, u, lower=True)
        a_u, b_u = self._best_line(l, u, lower=False)
        wide = torch.maximum(l.abs(), u.abs()) >= self.exact_below(l)
        one = torch.ones_like(l)
        a_l, a_u = torch.where(wide, one, a_l), torch.where(wide, one, a_u)
        b_l = torch.where(wide, self.shift[0], b_l)
        b_u = torch.where(wide, self.shift[1], b_u)
        f_lo, flat = self.f(l), self.holds_no_jump(l, u)
        a_l, a_u = torch.where(flat, zero, a_l), torch.where(flat, zero, a_u)
        b_l, b_u = torch.where(flat, f_lo, b_l), torch.where(flat, f_lo, b_u)
        good = regular & torch.isfinite(a_l) & torch.isfinite(b_l) & \
            torch.isfinite(a_u) & torch.isfinite(b_u)
        low, high = self.ibp((lo, hi))
        return Lines(torch.where(good, a_l, zero), torch.where(good, b_l, low),
                     torch.where(good, a_u, zero), torch.where(good, b_u, high))

    def _vertices(self, l: Tensor, u: Tensor, lower: bool) -> list[tuple[Tensor, Tensor]]:
        """(l, f(l)), the first and the last bottom (lower) or top corner (p, f(p-+)) of
        the jumps in (l, u] (lower) or [l, u) (stand-ins (l, f(l)) where there is none), and
        (u, f(u)): the candidate vertices of the hull, and the points where f(x) - a x has
        its extremes for any a >= 0."""
        first, last, some = self.jumps(l, u, open_left=lower)
        end = (l, self.f(l))
        corners = [(torch.where(some, p, l),
                    torch.where(some, self.limits(p)[0 if lower else 1], end[1]))
                   for p in (first, last)]
        return [end, *corners, (u, self.f(u))]

    def _best_line(self, l: Tensor, u: Tensor, lower: bool) -> tuple[Tensor, Tensor]:
        """Among slope 0 and the slopes joining two candidate hull vertices, the sound line
        highest (lower) or lowest (upper) at the midpoint."""
        pts = self._vertices(l, u, lower)
        slopes = [torch.zeros_like(l)]
        slopes += [_slope(pts[i], pts[j]) for i in range(4) for j in range(i + 1, 4)]
        a = torch.stack(slopes)  # (K, *l.shape)
        b = _intercepts(pts, a, lower)
        at_mid = a * (l / 2 + u / 2) + b
        at_mid = torch.where(torch.isfinite(at_mid), at_mid, -math.inf if lower else math.inf)
        pick = (at_mid.argmax(0) if lower else at_mid.argmin(0)).unsqueeze(0)
        return a.gather(0, pick)[0], b.gather(0, pick)[0]

    def relax(self, ins: list[Interval], out: Interval) -> Relaxation:
        """The closed-form lines of the staircase over the input's interval."""
        return FixedLines(self.lines(*ins[0]))

    def holds_no_jump(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Where f is constant on [lo, hi]: f(lo) = f(hi), f being non-decreasing."""
        return self.f(lo) == self.f(hi)

    def insensitive(self, k: int, ins: list[Interval]) -> Tensor | None:
        """Entries whose interval holds no jump: the lines are f's constant there, whatever
        tighter bounds come."""
        return self.holds_no_jump(*ins[0])

    def split_point(self, lo: Tensor, hi: Tensor) -> Tensor:
        """The jump strictly inside (lo, hi) nearest the middle; the middle if none (or
        where the format no longer holds the jumps exactly)."""
        mid = lo / 2 + hi / 2
        best, gap = mid, torch.full_like(mid, math.inf)
        exact = torch.maximum(lo.abs(), hi.abs()) < self.exact_below(lo)
        for p in self.nearest_jumps(mid):
            d = (p - mid).abs()
            take = exact & (p > lo) & (p < hi) & (d < gap)
            best, gap = torch.where(take, p, best), torch.where(take, d, gap)
        return best

    def nearest_jumps(self, x: Tensor) -> list[Tensor]:
        """Jumps around x, the nearest among them."""
        raise NotImplementedError

    # -- derivatives ---------------------------------------------------------------------
    def derivative_range(self, lo: Tensor, hi: Tensor) -> Interval:
        """f' is 0 between jumps and unbounded at one: [0, 0] where [lo, hi] holds no jump,
        else [0, inf]."""
        flat = self.holds_no_jump(lo, hi)
        return torch.zeros_like(lo), torch.where(flat, 0.0, math.inf).to(lo.dtype)

    def max_slope(self, lo: Tensor, hi: Tensor) -> float:
        """0 where no interval holds a jump, else inf."""
        return float(self.derivative_range(lo, hi)[1].max())


def _intercepts(pts: list[tuple[Tensor, Tensor]], a: Tensor, lower: bool) -> Tensor:
    """min (lower) or max of y - a x over the points (x, y), for slopes a (K, *x.shape),
    each value taken outward by the rounding of its computation: |fl(y - a x) - (y - a x)|
    <= u (|y| + 2 |a x|) to first order, the margin's own subtraction within the rest of
    4 u (|y| + |a x|), and an underflow floor."""
    u = torch.finfo(a.dtype).eps / 2
    h = torch.stack([y - a * x for x, y in pts])
    err = torch.stack([4 * u * (y.abs() + (a * x).abs()) for x, y in pts]) + tiny(u)
    return (h - err).amin(0) if lower else (h + err).amax(0)


def _slope(p: tuple[Tensor, Tensor], q: tuple[Tensor, Tensor]) -> Tensor:
    """The slope from point p to point q right of it, clamped at 0 (f rises); 0 where q is
    not right of p."""
    dx = q[0] - p[0]
    right = dx > 0
    s = (q[1] - p[1]) / torch.where(right, dx, torch.ones_like(dx))
    return torch.where(right, s, 0.0).clamp(min=0)


class LatticeStep(StepOp):
    """Jumps at every k + ``offset``, k an integer."""

    offset: ClassVar[float] = 0.0

    def exact_below(self, like: Tensor) -> float:
        """2^(mantissa - 2): below it the lattice points near x, and x's floor +- 2, are
        held exactly (the floor of x plus the offset, then whole steps)."""
        return 0.25 / torch.finfo(like.dtype).eps

    def _base(self, x: Tensor) -> Tensor:
        """floor(x) + offset: within one step of x (below it by less than 1, or above by
        less than the offset)."""
        return torch.floor(x) + self.offset

    def jumps(self, lo: Tensor, hi: Tensor, open_left: bool) -> Jumps:
        b = self._base(lo)
        first = torch.where(b > lo if open_left else b >= lo, b, b + 1)
        c = self._base(hi)
        last = torch.where(c <= hi if open_left else c < hi, c, c - 1)
        return first, last, first <= last

    def nearest_jumps(self, x: Tensor) -> list[Tensor]:
        b = self._base(x)
        return [b - 1, b, b + 1]


@register
class Floor(LatticeStep):
    """floor(x): jumps at the integers, f(p) = p = f(p+)."""

    onnx_types = ("Floor",)
    shift = (-1.0, 0.0)

    def f(self, x: Tensor) -> Tensor:
        return torch.floor(x)


@register
class Ceil(LatticeStep):
    """ceil(x): jumps at the integers, f(p) = p = f(p-)."""

    onnx_types = ("Ceil",)
    shift = (0.0, 1.0)

    def f(self, x: Tensor) -> Tensor:
        return torch.ceil(x)


@register
class Round(LatticeStep):
    """Round half to even: jumps at k + 1/2, f(p) the even one of p -+ 1/2."""

    onnx_types = ("Round",)
    offset = 0.5
    shift = (-0.5, 0.5)

    def f(self, x: Tensor) -> Tensor:
        return torch.round(x)


@register
class Sign(StepOp):
    """sign(x): -1, 0, 1, one jump at 0 (f(0-) = -1, f(0) = 0, f(0+) = 1); NaN stays NaN
    (as in onnxruntime; torch.sign gives 0)."""

    onnx_types = ("Sign",)

    def f(self, x: Tensor) -> Tensor:
        return torch.where(torch.isnan(x), x, torch.sign(x))

    def jumps(self, lo: Tensor, hi: Tensor, open_left: bool) -> Jumps:
        zero = torch.zeros_like(lo)
        inside = (lo < 0) & (hi >= 0) if open_left else (lo <= 0) & (hi > 0)
        return zero, zero, inside

    def limits(self, p: Tensor) -> tuple[Tensor, Tensor]:
        return p - 1, p + 1

    def nearest_jumps(self, x: Tensor) -> list[Tensor]:
        return [torch.zeros_like(x)]


class Heaviside(StepOp):
    """1 where x > 0 (``strict``) or x >= 0, else 0 (NaN: 0, as a comparison with NaN is
    false); one jump at 0 from 0 to 1, f(0) = 0 (strict) or 1.  What a comparison of a
    variable becomes (``lowering.lower_compare``); no ONNX op of its own."""

    onnx_types = ()

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.strict = bool(attrs["strict"])

    def f(self, x: Tensor) -> Tensor:
        return (x > 0 if self.strict else x >= 0).to(x.dtype)

    def ibp(self, b: Interval) -> Interval:
        """f at the ends; [0, 1] where an end is NaN (an unknown bound: f(NaN) is 0, which
        would read as a decided comparison)."""
        lo, hi = b
        unknown = torch.isnan(lo) | torch.isnan(hi)
        return (torch.where(unknown, 0.0, self.f(lo)).to(lo.dtype),
                torch.where(unknown, 1.0, self.f(hi)).to(hi.dtype))

    def jumps(self, lo: Tensor, hi: Tensor, open_left: bool) -> Jumps:
        zero = torch.zeros_like(lo)
        inside = (lo < 0) & (hi >= 0) if open_left else (lo <= 0) & (hi > 0)
        return zero, zero, inside

    def limits(self, p: Tensor) -> tuple[Tensor, Tensor]:
        return p, p + 1

    def nearest_jumps(self, x: Tensor) -> list[Tensor]:
        return [torch.zeros_like(x)]


@register
class Compare(Op):
    """Registered for import; a comparison with a variable input is always lowered to a
    difference and a Heaviside step (verifier/importer/lowering.py), Equal to the product
    of two such steps, Not to 1 - x, And, Or and Xor to products and sums of their 0/1
    inputs."""

    onnx_types = ("Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal", "Not", "And",
                  "Or", "Xor")


@register
class Hardmax(Op):
    """One-hot of the first maximum along ``axis`` (module docstring)."""

    onnx_types = ("Hardmax",)
    onnx_attributes = frozenset({"axis"})
    rounding_ulps = 0.0  # 0 or 1: exact
    ibp_exact = True

    def _grouped(self, x: Tensor) -> Tensor:
        """The batched x with its groups along the last dim (flattened below opset 13)."""
        ax = axis(int(self.attrs.get("axis", -1)), x.dim() - 1)
        if self.attrs.get("_flatten"):
            return x.reshape(*x.shape[:ax], -1)
        return x.movedim(ax, -1)

    def _back(self, y: Tensor, like: Tensor) -> Tensor:
        if self.attrs.get("_flatten"):
            return y.reshape(like.shape)
        return y.movedim(-1, axis(int(self.attrs.get("axis", -1)), like.dim() - 1))

    def forward(self, x: Tensor) -> Tensor:
        g = self._grouped(x)
        hot = torch.zeros_like(g).scatter_(-1, g.argmax(dim=-1, keepdim=True), 1.0)
        return self._back(hot, x)

    def search_forward(self, x: Tensor) -> Tensor:
        soft = self._back(torch.softmax(self._grouped(x), dim=-1), x)
        return self.forward(x).detach() + (soft - soft.detach())

    def ibp(self, b: Interval) -> Interval:
        lo, hi = (self._grouped(t) for t in b)
        before_lo, after_lo = _exclusive_max(lo)
        before_hi, after_hi = _exclusive_max(hi)
        n = lo.shape[-1]
        first = torch.arange(n, device=lo.device) == 0
        last = torch.arange(n, device=lo.device) == n - 1
        can_one = (first | (hi > before_lo)) & (last | (hi >= after_lo))
        can_zero = (~first & (before_hi >= lo)) | (~last & (after_hi > lo))
        nan = (torch.isnan(lo) | torch.isnan(hi)).any(dim=-1, keepdim=True)
        out_lo = torch.where(can_zero | nan, 0.0, 1.0).to(lo.dtype)
        out_hi = torch.where(can_one | nan, 1.0, 0.0).to(lo.dtype)
        return self._back(out_lo, b[0]), self._back(out_hi, b[0])


def _exclusive_max(x: Tensor) -> tuple[Tensor, Tensor]:
    """(max over j < i, max over j > i) of x along the last dim, -inf where there is none."""
    pad = torch.full_like(x[..., :1], -math.inf)
    before = torch.cat([pad, x[..., :-1]], dim=-1).cummax(dim=-1).values
    after = torch.cat([x[..., 1:], pad], dim=-1).flip(-1).cummax(dim=-1).values.flip(-1)
    return before, after
