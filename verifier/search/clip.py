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


def pair_bounds(lower: Tensor, upper: Tensor, A_x: Tensor, rows: Tensor,
                row_disjunct: Tensor, per: Tensor) -> Tensor | None:
    """(N, D) per disjunct, a lower bound of ``min over the box of max(L_j, L_k)`` for the
    best pair of its rows (-inf where it has no pair or ``per``, its bound so far, is
    above 0 already), or None where no disjunct has two rows.  A point violates a
    disjunct only where all its rows are <= 0, so a disjunct is refuted where
    ``max_r L_r(x) > 0`` on the whole box; the largest row minimum (``disjunct_bounds``)
    only sees one row at a time.  For two rows the exact value is ``max over w in [0, 1]
    of min over the box of (w L_j + (1 - w) L_k)`` (LP duality), a concave piecewise
    linear function of w whose kinks lie where a coefficient of the combination changes
    sign; every kink and both ends are tried.  On lsnc each disjunct is a bad output
    within the Lyapunov sublevel set (``V(x) <= rho``): a box across the level set's
    boundary is refuted by neither row alone.

    ``L_r(x) = a_r . x + c_r`` with ``c_r = m_r - min_box(a_r . x)``: the minimum over the
    box is ``m_r``, the row's sound bound (as in ``clip_boxes``).  Any weights give a
    sound bound; the float64 arithmetic's error is subtracted: every term is at most the
    sum ``S`` of the magnitudes below, and each of the value's ``2 n + 6`` roundings costs
    at most ``2^-53`` of a partial sum, so ``S (2 n + 12) 2^-52`` covers them and the
    weights' own rounding (``1 - w`` within ``2^-53`` of exact)."""
    N, R, n = A_x.shape
    rd = row_disjunct
    upper_tri = torch.ones(R, R, dtype=torch.bool, device=rd.device).triu(1)
    same = (rd.unsqueeze(2) == rd.unsqueeze(1)) & (rd >= 0).unsqueeze(2) & upper_tri
    pj, pk = same.any(dim=0).nonzero(as_tuple=True)
    if pj.numel() == 0:
        return None
    finite = torch.isfinite(rows) & torch.isfinite(A_x).all(dim=2) & \
        torch.isfinite(lower).all(dim=1, keepdim=True) & \
        torch.isfinite(upper).all(dim=1, keepdim=True)
    slot = rd[:, pj].clamp(min=0)  # (N, P)
    wanted = same[:, pj, pk] & finite[:, pj] & finite[:, pk] & (per.gather(1, slot) <= 0)
    dom, pair = wanted.nonzero(as_tuple=True)  # the (domain, pair) entries worth a look
    out = torch.full(per.shape, -torch.inf, dtype=torch.float64, device=per.device)
    if dom.numel():
        lo, hi = lower.double()[dom].unsqueeze(1), upper.double()[dom].unsqueeze(1)  # (M,1,n)
        aj, ak = A_x[dom, pj[pair]].double(), A_x[dom, pk[pair]].double()  # (M, n)
        mj, mk = rows[dom, pj[pair]].double(), rows[dom, pk[pair]].double()  # (M,)
        size = torch.maximum(lo.abs(), hi.abs()).squeeze(1)
        # each row's constant: its minimum less its linear part's minimum over the box
        lin_j = torch.minimum(aj * lo[:, 0], aj * hi[:, 0]).sum(dim=1)
        lin_k = torch.minimum(ak * lo[:, 0], ak * hi[:, 0]).sum(dim=1)
        den = ak - aj
        kinks = torch.where(den != 0, ak / den, 0.0).clamp(0, 1)
        ends = torch.tensor([0.0, 1.0], dtype=kinks.dtype, device=kinks.device)
        w1 = torch.cat([ends.expand(kinks.shape[0], 2), kinks], dim=1)  # (M, C)
        w2 = 1 - w1
        b = w1.unsqueeze(2) * aj.unsqueeze(1) + w2.unsqueeze(2) * ak.unsqueeze(1)  # (M,C,n)
        g = w1 * (mj - lin_j).unsqueeze(1) + w2 * (mk - lin_k).unsqueeze(1) + \
            torch.minimum(b * lo, b * hi).sum(dim=2)
        S = w1 * (mj.abs() + 2 * (aj.abs() * size).sum(dim=1)).unsqueeze(1) + \
            w2 * (mk.abs() + 2 * (ak.abs() * size).sum(dim=1)).unsqueeze(1)
        g = g - S * (2 * n + 12) * 2.0 ** -52 - 1e-300
        best = g.nan_to_num(nan=-torch.inf).amax(dim=1)
        D = per.shape[1]  # a disjunct's best pair
        out = out.view(-1).scatter_reduce(0, dom * D + slot[dom, pair], best, reduce="amax",
                                          include_self=True).view(N, D)
    return _cast(out, rows.dtype, -1)
