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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

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


@dataclass
class Lines:
    """Lower line a_l x + b_l and upper line a_u x + b_u, elementwise."""

    a_l: Tensor
    b_l: Tensor
    a_u: Tensor
    b_u: Tensor


def _pieces(shape: ScalarShape, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Breakpoints (K+2, *s) of [l, u] at inflections inside it, and per-piece convexity."""
    inf = shape.inflections(l)
    pts = torch.cat([l.unsqueeze(0), inf.clamp(min=l, max=u), u.unsqueeze(0)])
    conv0 = shape.convex_before(l)
    k = torch.arange(pts.shape[0] - 1, device=l.device).view(-1, *([1] * l.dim()))
    convex = torch.where(k % 2 == 0, conv0, ~conv0)
    return pts, convex


def _root(shape: ScalarShape, lo: Tensor, hi: Tensor, a: Tensor, increasing: Tensor) -> Tensor:
    """x in [lo, hi] where f'(x) = a, f' monotone there (clamped to an end if none)."""
    if shape.inverse_df is not None:
        x = shape.inverse_df(a, increasing)
        return torch.minimum(torch.maximum(torch.nan_to_num(x, nan=0.0), lo), hi)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        below = shape.df(mid) < a
        go_right = torch.where(increasing, below, ~below)
        lo = torch.where(go_right, mid, lo)
        hi = torch.where(go_right, hi, mid)
    return (lo + hi) / 2


@torch.no_grad()
def extreme_points(shape: ScalarShape, l: Tensor, u: Tensor, a: Tensor) -> Tensor:
    """Candidates (P, *s) for the extremes of f(x) - a x on [l, u]."""
    pts, convex = _pieces(shape, l, u)
    cands = [l.unsqueeze(0), u.unsqueeze(0)]
    for i in range(pts.shape[0] - 1):
        cands.append(_root(shape, pts[i], pts[i + 1], a, convex[i]).unsqueeze(0))
    return torch.cat(cands)


def intercepts(shape: ScalarShape, l: Tensor, u: Tensor, a: Tensor, lower: bool) -> Tensor:
    """min (lower) or max over [l, u] of f(x) - a x.  Differentiable in ``a`` (the extreme
    point is held fixed, which is the envelope theorem's derivative)."""
    roots = extreme_points(shape, l.detach(), u.detach(), a.detach())[2:]
    xs = torch.cat([l.unsqueeze(0), u.unsqueeze(0), roots])  # the ends keep their gradient
    h = shape.f(xs) - a.unsqueeze(0) * xs
    return h.min(dim=0).values if lower else h.max(dim=0).values


def chord_slope(shape: ScalarShape, l: Tensor, u: Tensor) -> Tensor:
    width = u - l
    safe = torch.where(width > 1e-12, width, torch.ones_like(width))
    return torch.where(width > 1e-12, (shape.f(u) - shape.f(l)) / safe, shape.df(l))


@torch.no_grad()
def convexity_on(shape: ScalarShape, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(convex, concave) masks: f has one convexity on all of [l, u]."""
    inf = shape.inflections(l)
    inside = ((inf > l) & (inf < u)).any(dim=0) if inf.shape[0] else torch.zeros_like(l, dtype=bool)
    conv0 = shape.convex_before(l)
    # convexity at l: flip once per inflection at or left of l
    n_left = (inf <= l).sum(dim=0) if inf.shape[0] else torch.zeros_like(l, dtype=torch.long)
    convex_at_l = torch.where(n_left % 2 == 0, conv0, ~conv0)
    return (~inside) & convex_at_l, (~inside) & ~convex_at_l


def default_slopes(shape: ScalarShape, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """CROWN's choice: in a convex piece the lower line is the tangent at the midpoint and
    the upper the chord (concave: the reverse); across inflections both take the chord slope
    and then the tightest intercepts."""
    chord = chord_slope(shape, l, u)
    mid_slope = shape.df((l + u) / 2)
    convex, concave = convexity_on(shape, l, u)
    a_l = torch.where(convex, mid_slope, chord)
    a_u = torch.where(concave, mid_slope, chord)
    return a_l, a_u


def relax(shape: ScalarShape, l: Tensor, u: Tensor, a_l: Tensor | None = None,
          a_u: Tensor | None = None) -> Lines:
    """Sound lines for f over [l, u] with the given slopes (CROWN's defaults if None).
    Slopes may carry extra leading dims (per output row); l and u broadcast against them."""
    if a_l is None or a_u is None:
        d_l, d_u = default_slopes(shape, l, u)
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
    """Smallest and largest f' on [l, u] (at the ends or an inflection): useful slopes."""
    pts, _ = _pieces(shape, l, u)
    d = shape.df(pts)
    return d.min(dim=0).values, d.max(dim=0).values
