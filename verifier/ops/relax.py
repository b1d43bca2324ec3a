"""Sound linear relaxations of scalar functions over intervals (one mechanism for all).

For f on [l, u] we want lines with  a_l x + b_l <= f(x) <= a_u x + b_u  for all x in [l, u].
Any slope works if the intercept is chosen well:  b_l = min_{x in [l,u]} f(x) - a_l x  and
b_u = max_{x in [l,u]} f(x) - a_u x.  The extremes of h(x) = f(x) - a x lie at l, u or where
f'(x) = a; between consecutive inflection points f' is monotone, so each such piece holds at
most one root, found by bisection.  A function therefore only states f, f' and the points
where its convexity changes; the slopes are a choice of tightness, never of soundness.

Tangent lines are the cheap special case: in a convex piece the tangent at any t in [l, u]
is a lower bound (concave: an upper bound); those tangent points are what alpha-CROWN
optimises.

The mechanism needs a *regular* interval: finite ends, f finite at both, and f smooth with
the stated convexity on all of it (no pole, no point where f is undefined).  Elsewhere
(infinite or half-infinite intervals, poles, NaN inputs, overflow) and wherever a computed
line is not finite, the lines are the constants  lo <= f <= hi  of the function's sound
interval bounds, which may be infinite (a slope of 0 with an infinite intercept; CROWN
multiplies intercepts by coefficients with 0 * inf = 0).  A line is never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from verifier.ops.base import ParamInit, Params, Relaxation, nan_to, safe_mul

Tensor = torch.Tensor
BISECTION_STEPS = 40


@dataclass
class ScalarShape:
    """f, f' and the convexity structure: ``inflections(l)`` gives, per element, the sorted
    inflection points to consider (a (K, *shape) tensor, may be empty) and ``convex_before``
    whether f is convex just left of the first of them (alternating after that)."""

    f: Callable[[Tensor], Tensor]
    df: Callable[[Tensor], Tensor]
    inflections: Callable[[Tensor], Tensor]
    convex_before: Callable[[Tensor], Tensor]
    # optional closed form of the root of f'(x) = a on a convex (True) or concave piece
    inverse_df: Callable[[Tensor, Tensor], Tensor] | None = None
    # optional closed form of both intercepts given both slopes
    fast_intercepts: Callable[..., tuple[Tensor, Tensor]] | None = None
    # (width, fmin, fmax): on intervals wider than ``width`` (where ``inflections`` no longer
    # lists every flip) use the constant lines fmin <= f <= fmax
    flat_when_wide: tuple[float, float, float] | None = None
    # where [l, u] is regular for f beyond finite ends and finite f(l), f(u) (poles and
    # points where f is undefined excluded); [SAFE_POINT, SAFE_POINT] must be regular
    regular: Callable[[Tensor, Tensor], Tensor] | None = None
    # sound interval bounds (lo, hi) of f over [l, u], any l <= u (infinite where f is
    # unbounded, (-inf, inf) where f is NaN somewhere): the constant lines off regular intervals
    bounds: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None


SAFE_POINT = 1.0  # stands in for the ends of irregular intervals while lines are computed


@dataclass
class Lines:
    """Lower line a_l x + b_l and upper line a_u x + b_u, elementwise."""

    a_l: Tensor
    b_l: Tensor
    a_u: Tensor
    b_u: Tensor


@torch.no_grad()
def regular(shape: ScalarShape, l: Tensor, u: Tensor) -> Tensor:
    """Where the mechanism's lines are sound on [l, u]: finite ends, f finite at both, and
    the function's own condition (no pole or undefined point inside)."""
    ok = torch.isfinite(l) & torch.isfinite(u)
    if shape.regular is not None:
        ok = ok & shape.regular(l, u)
    safe = torch.full_like(l, SAFE_POINT)
    ends = torch.isfinite(shape.f(torch.where(ok, l, safe))) & \
        torch.isfinite(shape.f(torch.where(ok, u, safe)))
    return ok & ends


def _sanitised(shape: ScalarShape, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(regular mask, l, u) with the ends of irregular intervals moved to SAFE_POINT, so the
    mechanism computes no NaN there (not even in a gradient); its result is replaced."""
    ok = regular(shape, l, u)
    safe = torch.full_like(l, SAFE_POINT)
    return ok, torch.where(ok, l, safe), torch.where(ok, u, safe)


def _constant_lines(shape: ScalarShape, ok: Tensor, l: Tensor, u: Tensor, lines: Lines) -> Lines:
    """``lines`` where ``ok`` and all four numbers are finite, else the constant lines of the
    interval bounds of f over [l, u] (slope 0, intercepts possibly infinite)."""
    good = ok & torch.isfinite(lines.a_l) & torch.isfinite(lines.b_l) & \
        torch.isfinite(lines.a_u) & torch.isfinite(lines.b_u)
    if shape.bounds is not None:
        lo, hi = shape.bounds(l, u)
    else:
        lo, hi = torch.full_like(l, -math.inf), torch.full_like(u, math.inf)
    lo = torch.where(torch.isnan(lo) | torch.isnan(hi), -math.inf, lo)
    hi = torch.where(torch.isnan(lo) | torch.isnan(hi), math.inf, hi)
    zero = torch.zeros((), dtype=lines.a_l.dtype, device=lines.a_l.device)
    return Lines(torch.where(good, lines.a_l, zero), torch.where(good, lines.b_l, lo),
                 torch.where(good, lines.a_u, zero), torch.where(good, lines.b_u, hi))


def _pieces(shape: ScalarShape, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Breakpoints (K+2, *s) of [l, u] at inflections inside it, and per-piece convexity."""
    inf = shape.inflections(l)
    pts = torch.cat([l.unsqueeze(0), inf.clamp(min=l, max=u), u.unsqueeze(0)])
    conv0 = shape.convex_before(l)
    k = torch.arange(pts.shape[0] - 1, device=l.device).view(-1, *([1] * l.dim()))
    convex = torch.where(k % 2 == 0, conv0, ~conv0)
    return pts, convex


def _root(shape: ScalarShape, lo: Tensor, hi: Tensor, a: Tensor, increasing: Tensor
          ) -> tuple[Tensor, Tensor]:
    """(x, r): x in [lo, hi] where f'(x) = a, f' monotone there (clamped to an end if none),
    found to within r (0 for a closed form; bisection's last bracket otherwise)."""
    if shape.inverse_df is not None:
        x = shape.inverse_df(a, increasing)
        x = torch.minimum(torch.maximum(torch.nan_to_num(x, nan=0.0), lo), hi)
        return x, torch.zeros_like(x)
    for _ in range(BISECTION_STEPS):
        mid = lo / 2 + hi / 2  # halves first: no overflow near the largest float
        below = shape.df(mid) < a
        go_right = torch.where(increasing, below, ~below)
        lo = torch.where(go_right, mid, lo)
        hi = torch.where(go_right, hi, mid)
    return lo / 2 + hi / 2, hi / 2 - lo / 2


@torch.no_grad()
def extreme_points(shape: ScalarShape, l: Tensor, u: Tensor, a: Tensor,
                   lower: bool | None = None) -> tuple[Tensor, Tensor]:
    """Candidates (P, *s) for the extremes of h(x) = f(x) - a x on [l, u], and how far from
    each the extreme it stands for may lie (0 at the ends and for closed-form roots).
    ``lower`` True: for the minimum only, so pieces where f is concave everywhere are
    skipped (h is concave there: its minimum on the piece is at an end, which is l, u or
    the end of a convex piece whose own candidate is at most h there); False: for the
    maximum only, convex pieces skipped alike."""
    pts, convex = _pieces(shape, l, u)
    cands = [l.unsqueeze(0), u.unsqueeze(0)]
    radii = [torch.zeros_like(l).unsqueeze(0)] * 2
    for i in range(pts.shape[0] - 1):
        if lower is not None and not bool((convex[i] == lower).any()):
            continue
        x, r = _root(shape, pts[i], pts[i + 1], a, convex[i])
        cands.append(x.unsqueeze(0))
        radii.append(r.unsqueeze(0))
    return torch.cat(cands), torch.cat(radii)


def intercepts(shape: ScalarShape, l: Tensor, u: Tensor, a: Tensor, lower: bool) -> Tensor:
    """min (lower) or max over [l, u] of f(x) - a x.  Differentiable in ``a`` (the extreme
    point is held fixed, which is the envelope theorem's derivative).

    A root x found only to within r (bisection, which on a very wide piece leaves a wide
    bracket) counts as h(x) -+ |h'(x)| r: where h = f - a x is convex (the lower line's
    case) h(x*) >= h(x) + h'(x)(x* - x) >= h(x) - |h'(x)| r, concave alike for the upper."""
    cands, radii = extreme_points(shape, l.detach(), u.detach(), a.detach(), lower)
    roots, radii = cands[2:], radii[2:]
    xs = torch.cat([l.unsqueeze(0), u.unsqueeze(0), roots])  # the ends keep their gradient
    h = shape.f(xs) - a.unsqueeze(0) * xs
    with torch.no_grad():
        slack = torch.where(radii > 0, (shape.df(roots) - a.unsqueeze(0)).abs() * radii, 0.0)
        slack = torch.cat([slack.new_zeros((2, *slack.shape[1:])), slack])  # ends: exact
    h = h - slack if lower else h + slack
    return h.min(dim=0).values if lower else h.max(dim=0).values


def one_inflection_intercepts(f: Callable[[Tensor], Tensor],
                              inverse_df: Callable[[Tensor, Tensor], Tensor],
                              l: Tensor, u: Tensor, a_l: Tensor, a_u: Tensor
                              ) -> tuple[Tensor, Tensor]:
    """``intercepts`` for both lines of an f convex left of 0 and concave right of it
    (sigmoid, tanh) whose f'(x) = a has a closed-form root on each side: the minimum of
    h = f - a_l x is at l, u or the root in the convex piece [l, min(u, 0)] (h is concave
    on the other piece, so its least value there is at an end), the maximum of f - a_u x
    alike on the concave piece.  A root outside its piece (or none: NaN) is clamped to the
    piece, where h is monotone then; a point of [l, u] is a candidate either way, so the
    extreme is never missed.  The same candidates as ``extreme_points`` without its
    per-piece loop; differentiable in the slopes and the ends (roots held fixed)."""
    with torch.no_grad():
        zero = torch.zeros((), dtype=l.dtype, device=l.device)
        convex_end = torch.maximum(l, torch.minimum(u, zero))  # [l, convex_end]
        concave_start = torch.minimum(u, torch.maximum(l, zero))  # [concave_start, u]
        yes = torch.ones((), dtype=torch.bool, device=l.device)
        r_l = torch.nan_to_num(inverse_df(a_l.detach(), yes), nan=0.0)
        r_l = torch.minimum(torch.maximum(r_l, l.detach()), convex_end.detach())
        r_u = torch.nan_to_num(inverse_df(a_u.detach(), ~yes), nan=0.0)
        r_u = torch.minimum(torch.maximum(r_u, concave_start.detach()), u.detach())
    f_l, f_u = f(l), f(u)
    b_l = torch.minimum(torch.minimum(f_l - a_l * l, f_u - a_l * u), f(r_l) - a_l * r_l)
    b_u = torch.maximum(torch.maximum(f_l - a_u * l, f_u - a_u * u), f(r_u) - a_u * r_u)
    return b_l, b_u


def chord_slope(shape: ScalarShape, l: Tensor, u: Tensor) -> Tensor:
    """(f(u) - f(l)) / (u - l) (f'(l) on very narrow intervals); 0 off regular intervals."""
    ok, l, u = _sanitised(shape, l, u)
    return torch.where(ok, _chord(shape, l, u), 0.0)


def _chord(shape: ScalarShape, l: Tensor, u: Tensor) -> Tensor:
    width = u - l
    safe = torch.where(width > 1e-12, width, torch.ones_like(width))
    chord = torch.where(width > 1e-12, (shape.f(u) - shape.f(l)) / safe, shape.df(l))
    return torch.where(torch.isfinite(chord), chord, 0.0)


@torch.no_grad()
def convexity_on(shape: ScalarShape, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(convex, concave) masks: f has one convexity on all of [l, u]."""
    inf = shape.inflections(l)
    inside = ((inf > l) & (inf < u)).any(dim=0) if inf.shape[0] else torch.zeros_like(
        l, dtype=torch.bool)
    conv0 = shape.convex_before(l)
    # convexity at l: flip once per inflection at or left of l
    n_left = (inf <= l).sum(dim=0) if inf.shape[0] else torch.zeros_like(l, dtype=torch.long)
    convex_at_l = torch.where(n_left % 2 == 0, conv0, ~conv0)
    return (~inside) & convex_at_l, (~inside) & ~convex_at_l


def default_slopes(shape: ScalarShape, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """CROWN's choice: in a convex piece the lower line is the tangent at the midpoint and
    the upper the chord (concave: the reverse); across inflections both take the chord slope
    and then the tightest intercepts.  Off regular intervals: 0 (relax() then gives the
    constant lines)."""
    ok, l, u = _sanitised(shape, l, u)
    a_l, a_u = _default_slopes(shape, l, u)
    return torch.where(ok, a_l, 0.0), torch.where(ok, a_u, 0.0)


def _default_slopes(shape: ScalarShape, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    chord = _chord(shape, l, u)
    mid_slope = shape.df((l + u) / 2)
    mid_slope = torch.where(torch.isfinite(mid_slope), mid_slope, chord)
    convex, concave = convexity_on(shape, l, u)
    a_l = torch.where(convex, mid_slope, chord)
    a_u = torch.where(concave, mid_slope, chord)
    return a_l, a_u


def relax(shape: ScalarShape, l: Tensor, u: Tensor, a_l: Tensor | None = None,
          a_u: Tensor | None = None) -> Lines:
    """Sound lines for f over [l, u] with the given slopes (CROWN's defaults if None).
    Slopes may carry extra leading dims (per output row); l and u broadcast against them.
    Off regular intervals, and wherever a line comes out non-finite, the constant lines of
    f's interval bounds (see the module docstring)."""
    ok, ls, us = _sanitised(shape, l, u)
    return _constant_lines(shape, ok, l, u, _relax_regular(shape, ls, us, a_l, a_u))


def _relax_regular(shape: ScalarShape, l: Tensor, u: Tensor, a_l: Tensor | None,
                   a_u: Tensor | None) -> Lines:
    """The mechanism's lines on regular intervals [l, u]."""
    if a_l is None or a_u is None:
        d_l, d_u = _default_slopes(shape, l, u)
        a_l = d_l if a_l is None else a_l
        a_u = d_u if a_u is None else a_u
    if shape.fast_intercepts is not None:
        b_l, b_u = shape.fast_intercepts(l, u, a_l, a_u)
        return Lines(a_l, b_l, a_u, b_u)
    wide = None
    if shape.flat_when_wide is not None:
        limit, fmin, fmax = shape.flat_when_wide
        wide = (u - l) > limit
        a_l, a_u = torch.where(wide, 0.0, a_l), torch.where(wide, 0.0, a_u)
    lb, ub = torch.broadcast_tensors(l, a_l)[0], torch.broadcast_tensors(u, a_u)[0]
    b_l = intercepts(shape, lb, torch.broadcast_tensors(u, a_l)[0], a_l, lower=True)
    b_u = intercepts(shape, torch.broadcast_tensors(l, a_u)[0], ub, a_u, lower=False)
    if wide is not None:
        b_l, b_u = torch.where(wide, fmin, b_l), torch.where(wide, fmax, b_u)
    return Lines(a_l, b_l, a_u, b_u)


def slope_range(shape: ScalarShape, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Smallest and largest f' on [l, u] (at the ends or an inflection): useful slopes.
    Where f' is NaN at one of those points (an infinite end, a point where f is undefined)
    the range is (-inf, inf)."""
    pts, _ = _pieces(shape, l, u)
    d = shape.df(pts)
    unknown = torch.isnan(d).any(dim=0)
    return (torch.where(unknown, -math.inf, d.min(dim=0).values),
            torch.where(unknown, math.inf, d.max(dim=0).values))


# -- the relaxations elementwise ops hand to the backward pass ------------------------------
def _row(t: Tensor) -> Tensor:
    """(B, *shape) -> (B, 1, *shape): one line for every row of coefficients."""
    return t.unsqueeze(1)


def _backward_lines(A: Tensor, ln: Lines) -> tuple[list[Tensor], Tensor]:
    """A . f(x) >= (A+ a_l + A- a_u) . x + A+ . b_l + A- . b_u: positive coefficients take
    the lower line, negative ones the upper (0 times an infinite intercept is 0)."""
    pos, neg = A.clamp(min=0), A.clamp(max=0)
    bias = safe_mul(pos, ln.b_l) + safe_mul(neg, ln.b_u)
    return [pos * ln.a_l + neg * ln.a_u], bias.flatten(2).sum(-1)


class ScalarRelaxation(Relaxation):
    """f by the mechanism's lines over [lo, hi] (B, *shape).  CROWN: the default slopes.
    alpha-CROWN: parameters t in [0, 1] give slopes smin + t (smax - smin) within the range
    of f' on [lo, hi], except the chord on the side where f curves away from it (the best
    line there); any slope is sound, since the intercepts are computed for it."""

    def __init__(self, shape: ScalarShape, lo: Tensor, hi: Tensor, upper_free: bool = True):
        self.shape, self.lo, self.hi, self.upper_free = shape, lo, hi, upper_free
        self._lines: Lines | None = None
        self._kept: tuple[Tensor, ...] | None = None

    def lines(self) -> Lines:
        if self._lines is None:
            with torch.no_grad():
                raw = relax(self.shape, self.lo, self.hi)
            self._lines = Lines(*(_row(t) for t in (raw.a_l, raw.b_l, raw.a_u, raw.b_u)))
        return self._lines

    def backward(self, A: Tensor, params: Params | None = None) -> tuple[list[Tensor], Tensor]:
        return _backward_lines(A, self.lines_for(params))

    def lines_for(self, params: Params | None) -> Lines:
        """The lines for alpha-CROWN's parameters (B, R, *shape); None: CROWN's."""
        if params is None:
            return self.lines()
        smin, smax, chord, convex, concave = self._ranges()
        a_l = smin + params[0].clamp(0, 1) * (smax - smin)
        a_u = smin + params[1].clamp(0, 1) * (smax - smin)
        a_l = torch.where(concave, chord, a_l)
        a_u = torch.where(convex, chord, a_u)
        return relax(self.shape, _row(self.lo), _row(self.hi), a_l, a_u)

    def _ranges(self) -> tuple[Tensor, ...]:
        """What the lines for parameters need besides them (B, 1, *shape): the slope range,
        the chord's slope and where f is convex or concave throughout; kept when the
        bounds are constants (alpha-CROWN's steps over fixed intermediate bounds ask for
        them at every step)."""
        if self._kept is not None:
            return self._kept
        shape, lo, hi = self.shape, self.lo, self.hi
        smin, smax = slope_range(shape, lo, hi)
        chord = chord_slope(shape, lo, hi)
        convex, concave = convexity_on(shape, lo.detach(), hi.detach())
        ranges = tuple(_row(t) for t in (smin, smax, chord, convex, concave))
        if not (lo.requires_grad or hi.requires_grad):
            self._kept = ranges
        return ranges

    @torch.no_grad()
    def initial_params(self) -> ParamInit | None:
        """CROWN's default slopes as parameters; None where f' is (nearly) constant on
        every interval (nothing to choose)."""
        a_l, a_u = default_slopes(self.shape, self.lo, self.hi)
        smin, smax = slope_range(self.shape, self.lo, self.hi)
        if not bool((smax - smin > 1e-9).any()):
            return None
        span = (smax - smin).clamp(min=1e-12)
        t_l, t_u = (((a - smin) / span).clamp(0, 1) for a in (a_l, a_u))
        return ParamInit(t_l, t_u, self.upper_free)


class ReluRelaxation(ScalarRelaxation):
    """ReLU and LeakyReLU (slope s in [0, 1] below 0) in closed form: the general rule's
    lines with fewer ops and an exact gradient (the general rule's intercept, a minimum
    over candidate points, ties at the slopes' ends and averages one-sided derivatives
    there).  Unstable (l < 0 < u): the upper line is the chord, the lower a x with a in
    [s, 1] (CROWN: 1 when u > -l, else s; alpha-CROWN: s + (1 - s) t); stable: the line of
    the active piece.  Over infinite or NaN bounds: the constant lines f(l), f(u)."""

    def __init__(self, shape: ScalarShape, lo: Tensor, hi: Tensor, s: float | Tensor):
        """``s``: one slope, or one per entry (B, *shape) (PRelu)."""
        super().__init__(shape, lo, hi, upper_free=False)  # the chord is the best upper line
        self.s = _row(s) if isinstance(s, Tensor) else s
        unstable = (lo < 0) & (hi > 0)
        stable = torch.where(lo >= 0, 1.0, s).to(lo.dtype)
        width = torch.where(unstable, hi - lo, torch.ones_like(hi))
        a_u = torch.where(unstable, (hi - s * lo) / width, stable)
        b_u = torch.where(unstable, lo * (s - a_u), torch.zeros_like(lo))
        a_l = torch.where(unstable, torch.where(hi > -lo, 1.0, s).to(lo.dtype), stable)
        b_l = torch.zeros_like(lo)
        bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
        self.irregular = bool(bad.any())
        if self.irregular:
            unstable = unstable & ~bad
            slope = torch.as_tensor(s, dtype=lo.dtype, device=lo.device)
            # s * (-inf) is NaN where s = 0: f(-inf) is 0 there, -inf where s > 0
            f_lo, f_hi = (nan_to(torch.where(t >= 0, t, slope * t), fill)
                          for t, fill in ((lo, -math.inf), (hi, math.inf)))
            f_lo = torch.where(lo == -math.inf, torch.where(slope > 0, -math.inf, 0.0), f_lo)
            a_l, a_u = (torch.where(bad, 0.0, a) for a in (a_l, a_u))
            b_l, b_u = torch.where(bad, f_lo, b_l), torch.where(bad, f_hi, b_u)
        self._lines = Lines(*(_row(t) for t in (a_l, b_l, a_u, b_u)))
        self.unstable = _row(unstable)

    def lines_for(self, params: Params | None) -> Lines:
        ln = self.lines()
        if params is None:
            return ln
        a_l = torch.where(self.unstable, self.s + (1 - self.s) * params[0].clamp(0, 1), ln.a_l)
        return Lines(a_l, ln.b_l, ln.a_u, ln.b_u)

    def backward(self, A: Tensor, params: Params | None = None) -> tuple[list[Tensor], Tensor]:
        ln = self.lines_for(params)
        if self.irregular:  # constant lines, possibly infinite intercepts
            return _backward_lines(A, ln)
        # two clamps and products: on CPU 2-3x faster than where(A > 0, a_l, a_u) * A with
        # the intercept by bmm (measured on shapes from (1, 200, 200) to (16384, 2, 40))
        pos, neg = A.clamp(min=0), A.clamp(max=0)  # b_l is 0: only the upper intercept
        return [pos * ln.a_l + neg * ln.a_u], (neg * ln.b_u).flatten(2).sum(-1)


class FixedLines(Relaxation):
    """Lines (B, *shape) given in closed form by the op, with no free parameters."""

    def __init__(self, lines: Lines):
        self._lines = Lines(*(_row(t) for t in (lines.a_l, lines.b_l, lines.a_u, lines.b_u)))

    def lines(self) -> Lines:
        return self._lines

    def backward(self, A: Tensor, params: Params | None = None) -> tuple[list[Tensor], Tensor]:
        return _backward_lines(A, self._lines)
