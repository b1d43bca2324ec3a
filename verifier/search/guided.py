"""Counterexample search guided by branch-and-bound's domains (DESIGN.md: Attack).

A domain of activation splitting is a box plus limits on the inputs of some
nonlinearities (``z_j >= l_j`` or ``z_j <= u_j``).  The weakest domains are where the bounds
still see room for a violation, and a counterexample that a plain attack misses (hidden in
a narrow bump, with no gradient outside it) lies in one of them; there the split limits
point at it even where the property's violation ``v`` (attack.py) has no gradient.  A
domain of input splitting has no limits (phi is the violation's term alone): its box,
cut by clipping to where the bounds leave room for a violation, is what narrows the
search.  From
the corner where the domain's linear bound is lowest, the box's centre and random points,
each step drives

    phi(x) = sum_j [max(0, l_j - z_j(x)) + max(0, z_j(x) - u_j)] + max(0, v(x) - t)

towards 0 (t < 0: a small target below the threshold) by a Polyak step,
``x <- clip(x - phi / |grad phi|^2 * grad phi)``.  Where z and v are affine, one step lands
on the nearest point where phi's linearisation is 0, so it hits a thin slab exactly where a
sign-gradient step of a fixed size jumps over it.  What it finds is only a candidate:
``confirm`` (attack.py) judges it with onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from verifier.graph import Graph
from verifier.problems import ProblemBatch
from verifier.search.attack import softmax_logits, violation

Tensor = torch.Tensor


@dataclass(frozen=True)
class GuidedSettings:
    domains: int = 32  # weakest domains searched per call
    starts: int = 4  # points per domain: the bound's corner, the centre, random ones
    steps: int = 24
    share: float = 0.1  # of branch-and-bound's time, at most
    target: float = 1e-3  # t = -target: aim a little past the property's threshold
    seed: int = 0


def limit_violation(kept: dict[str, Tensor], splits: dict[str, tuple[Tensor, Tensor]],
                    zero: Tensor) -> Tensor:
    """(B, K) like ``zero``: by how much each point leaves its domain's split limits, summed
    over the limited entries (0 inside; limits of +-inf never count)."""
    B, K = zero.shape
    total = zero
    for name, (lo, hi) in splits.items():
        z = kept[name].reshape(B, K, -1)
        gap = torch.clamp(lo.reshape(B, 1, -1) - z, min=0) + \
            torch.clamp(z - hi.reshape(B, 1, -1), min=0)
        total = total + torch.where(torch.isfinite(gap), gap, 0.0).sum(dim=2)
    return total


def guided_points(graph: Graph, batch: ProblemBatch, splits: dict[str, tuple[Tensor, Tensor]],
                  starts: Tensor, settings: GuidedSettings,
                  expired: Callable[[], bool] = lambda: False) -> tuple[Tensor, Tensor]:
    """Polyak steps on phi from ``starts`` (B, K, n), one domain per batch row (its box
    ``batch.lower/upper``, its limits ``splits``: name -> (lo, hi), each (B, *shape)).
    Returns the points with the lowest v seen (B, K, n) and their v (B, K)."""
    lo, hi = batch.lower.unsqueeze(1), batch.upper.unsqueeze(1)
    B, K, _ = starts.shape
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    logits = softmax_logits(graph)
    x = starts.clone()
    best_x, best_v = x.clone(), torch.full((B, K), math.inf, dtype=x.dtype, device=x.device)
    for _ in range(settings.steps):
        x = x.detach().requires_grad_(True)
        kept: dict[str, Tensor] = dict.fromkeys(splits)  # type: ignore[assignment]
        v, _, _ = violation(graph, batch, x, search=True, logits=logits, kept=kept)
        better = v.detach() < best_v
        best_v = torch.where(better, v.detach(), best_v)
        best_x = torch.where(better.unsqueeze(-1), x.detach(), best_x)
        if bool((best_v <= 0).any()) or expired():
            break
        outside = limit_violation(kept, splits, torch.zeros_like(v))
        phi = outside + torch.clamp(v + settings.target, min=0)
        phi = torch.where(torch.isfinite(phi), phi, 0.0)
        (grad,) = torch.autograd.grad(phi.sum(), x)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        norm2 = (grad * grad).sum(dim=2, keepdim=True)
        step = torch.where(norm2 > 0, phi.detach().unsqueeze(-1) / norm2.clamp(min=1e-30), 0.0)
        moved = x.detach() - step * grad
        # no gradient to follow (a flat region, or phi already 0 without a violation): a
        # fresh random point of the box
        u = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        stuck = (norm2 == 0) | ~torch.isfinite(moved).all(dim=2, keepdim=True)
        x = torch.where(stuck, lo + u * (hi - lo), moved)
        x = torch.minimum(torch.maximum(x, lo), hi)
    return best_x, best_v


def start_points(batch: ProblemBatch, A_x: Tensor | None, starts: int, seed: int) -> Tensor:
    """(B, K, n): the corner of each box where the rows' summed linear bound is lowest
    (when ``A_x`` (B, R, n) is given), the centre, then uniform random points."""
    lo, hi = batch.lower, batch.upper
    points = []
    if A_x is not None:
        slope = A_x.reshape(lo.shape[0], A_x.shape[1], -1).sum(dim=1)
        points.append(torch.where(slope > 0, lo, hi))
    points.append((lo + hi) / 2)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    while len(points) < starts:
        u = torch.rand(lo.shape, generator=gen, dtype=lo.dtype).to(lo.device)
        points.append(lo + u * (hi - lo))
    return torch.stack(points[:max(starts, 1)], dim=1)
