"""Input clipping by linear bounds (the "clip" half of Clip-and-Verify, NeurIPS 2025).

A domain's CROWN bound gives, per row r of ``C y - d``, a linear function
``L_r(x) = a_r . x + c_r`` with ``L_r(x) <= (C y - d)_r`` on the domain's box, and its
minimum over the box ``m_r`` (the row's lower bound).  A point of the box can violate the
property only inside some disjunct, where every row is <= 0, hence ``L_r(x) <= 0``.  Since
``L_r(x) >= m_r + |a_ri| * (distance of x_i from the end of [l_i, u_i] that minimises
a_ri x_i)``, such a point has x_i within ``-m_r / |a_ri|`` of that end.  So each disjunct
confines the violating points to a sub-box (the intersection over its rows), and the
domain may shrink to the hull of its disjuncts' sub-boxes without losing any of them; a
domain where every disjunct's sub-box is empty (or one of its rows' bound is > 0) holds
no violating point at all.

Rounding: ``m_r`` is a sound lower bound of the real minimum (``concretise`` accounts for
its own rounding), a smaller ``m_r`` only widens the sub-box, and the sub-box's ends are
computed in float64 and then moved outward by a relative margin far above float64's
rounding before the cast to the box's dtype, which rounds outward too.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

# relative outward margin on every clipped end: float64's error in l + g / |a| is a few
# ulps (2^-52 relative); this is over a thousand times that
MARGIN = 2.0 ** -40


def clip_boxes(lower: Tensor, upper: Tensor, A_x: Tensor, rows: Tensor, row_disjunct: Tensor,
               n_disjuncts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The domains' boxes (N, n) cut to where a violation may lie, and (N,) which domains
    hold none.  ``A_x`` (N, R, n): the rows' coefficients on the input; ``rows`` (N, R):
    their sound lower bounds over the boxes; ``row_disjunct`` (N, R): each row's disjunct
    (-1: padding); ``n_disjuncts`` (N,).  The result lies inside the given boxes."""
    N, R, n = A_x.shape
    lo, hi = lower.double(), upper.double()
    a, m = A_x.double(), rows.double()
    usable = torch.isfinite(m) & torch.isfinite(a).all(dim=2) & (row_disjunct >= 0)
    refutes = usable & (m > 0)  # a row above 0: its disjunct holds no violating point
    gap = (-m).clamp(min=0).unsqueeze(2)
    # how far from its minimising end each input may go: gap / |a| (inf where a = 0)
    reach = torch.where(a != 0, gap / a.abs(), torch.inf) * (1 + MARGIN)
    cut_hi = torch.where(a > 0, lo.unsqueeze(1) + reach, torch.inf)
    cut_lo = torch.where(a < 0, hi.unsqueeze(1) - reach, -torch.inf)
    # outward by the margin of the end's magnitude as well (the addition's rounding)
    cut_hi = cut_hi + cut_hi.abs() * MARGIN
    cut_lo = cut_lo - cut_lo.abs() * MARGIN
    keep = usable.unsqueeze(2)
    cut_hi = torch.where(keep, cut_hi, torch.inf)
    cut_lo = torch.where(keep, cut_lo, -torch.inf)
    # per disjunct: the intersection of its rows' cuts (padding rows go to a spare slot)
    D = int(n_disjuncts.max()) if N else 0
    slot = torch.where(row_disjunct < 0, D, row_disjunct).unsqueeze(2).expand(N, R, n)
    d_hi = hi.unsqueeze(1).expand(N, D + 1, n).clone().scatter_reduce(
        1, slot, cut_hi, reduce="amin", include_self=True)[:, :D]
    d_lo = lo.unsqueeze(1).expand(N, D + 1, n).clone().scatter_reduce(
        1, slot, cut_lo, reduce="amax", include_self=True)[:, :D]
    refuted = torch.zeros(N, D + 1, dtype=torch.bool, device=lo.device).scatter_reduce(
        1, slot[:, :, 0], refutes, reduce="amax", include_self=True)[:, :D]
    real = torch.arange(D, device=lo.device).unsqueeze(0) < n_disjuncts.unsqueeze(1)
    alive = real & ~refuted & (d_lo <= d_hi).all(dim=2)  # (N, D)
    empty = ~alive.any(dim=1)
    new_lo = torch.where(alive.unsqueeze(2), d_lo, torch.inf).min(dim=1).values
    new_hi = torch.where(alive.unsqueeze(2), d_hi, -torch.inf).max(dim=1).values
    new_lo = torch.where(empty.unsqueeze(1), lo, new_lo)
    new_hi = torch.where(empty.unsqueeze(1), hi, new_hi)
    out_lo = torch.maximum(lower, _cast(new_lo, lower.dtype, -1))
    out_hi = torch.minimum(upper, _cast(new_hi, upper.dtype, +1))
    return out_lo, out_hi, empty


def _cast(t: Tensor, dtype: torch.dtype, direction: int) -> Tensor:
    """``t`` (float64) in ``dtype``, rounded down (-1) or up (+1) where the cast is inexact."""
    out = t.to(dtype)
    back = out.double()
    wrong = back > t if direction < 0 else back < t
    toward = torch.full_like(out, -torch.inf if direction < 0 else torch.inf)
    return torch.where(wrong, torch.nextafter(out, toward), out)
