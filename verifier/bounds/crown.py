"""CROWN and alpha-CROWN bounds of ``C y - d`` (DESIGN.md: Bounds), and the bound of
branch-and-bound's domains with beta-CROWN's split multipliers.

CROWN: intermediate bounds (``intermediate.compute``), then the backward pass from the
output (``backward.bound``).  alpha-CROWN then optimises the relaxation parameters of every
nonlinear op for the final rows and for each intermediate bound by projected gradient
ascent on the final bound (``optimise.ascend``), keeping the best bound seen per row: every
iterate is a sound bound, so the maximum is too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from verifier.bounds import intermediate
from verifier.bounds.backward import (
    Betas,
    NodeBounds,
    Slopes,
    Splits,
    at_minimiser,
    backward,
    bound,
)
from verifier.bounds.intermediate import never
from verifier.bounds.limits import Interrupted
from verifier.bounds.optimise import Ascent, ascend
from verifier.graph import Graph
from verifier.ops.base import Interval, Tensor

__all__ = ["AlphaSettings", "Interrupted", "Warm", "alpha_crown_rows", "crown_rows",
           "optimise_final"]


@dataclass(frozen=True)
class AlphaSettings:
    iterations: int = 20
    lr: float = 0.1
    lr_decay: float = 0.98
    early_stop: bool = True
    # then, with every intermediate bound at the tightest found in any iteration, the final
    # rows' slopes alone are optimised for this many (cheap) iterations
    refine_iterations: int = 20
    # largest alpha tensor (elements) kept for an intermediate bound; larger ones use CROWN's
    memory_budget: int = 4_000_000


def _coefficients(graph: Graph, C: Tensor) -> Tensor:
    """C (B, R, m) as coefficients on the output node, (B, R, *output shape)."""
    return C.reshape(C.shape[0], C.shape[1], *graph.output_shape)


def crown_rows(graph: Graph, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor,
               nb: NodeBounds | None = None, expired: Callable[[], bool] = never) -> Tensor:
    """CROWN lower bounds (B, R) of C y - d over the boxes, over the intermediate bounds
    ``nb`` (computed here when None; raises Interrupted when ``expired`` turns true)."""
    if nb is None:
        nb = intermediate.compute(graph, lower, upper, stop=expired,
                                  reach=intermediate.reached(graph, C))
    A = _coefficients(graph, C)
    met: dict[str, Tensor] = {}
    A_x, bias = backward(nb, graph.output_name, A, record=met)
    return at_minimiser(nb, graph.output_name, A, A_x, bias, met)[2] - d


def alpha_crown_rows(graph: Graph, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor,
                     settings: AlphaSettings = AlphaSettings(),
                     expired: Callable[[], bool] = never,
                     boxes_out: dict[str, Interval] | None = None) -> Tensor:
    """alpha-CROWN: CROWN's bound, then the slopes of every nonlinear op optimised, for the
    final rows and for each intermediate bound, on the final bound; never looser.
    ``boxes_out`` receives the tightest bounds of every node met (for branch-and-bound).

    Two phases: every slope (final rows' and each intermediate bound's) on the final bound,
    recording the tightest bound of every intermediate node met on the way (each is sound,
    so their intersection is); then the final rows' slopes alone over those tightest
    bounds, a pass from the output only, so its iterations are cheap."""
    reach = intermediate.reached(graph, C)
    nb = intermediate.compute(graph, lower, upper, stop=expired, reach=reach)
    tightest: dict[str, Interval] = {}
    _tighten(tightest, nb.box)
    best = crown_rows(graph, lower, upper, C, d, nb).detach()
    if not ((settings.early_stop and bool((best > 0).all())) or settings.iterations == 0):
        best = _optimise(nb, _coefficients(graph, C), d, best, settings, tightest, expired,
                         reach)
    if boxes_out is not None:
        boxes_out.update(tightest)  # CROWN's boxes, tightened by every iteration
    return best


def _optimise(nb: NodeBounds, A: Tensor, d: Tensor, best: Tensor, settings: AlphaSettings,
              tightest: dict[str, Interval], expired: Callable[[], bool],
              reach: dict[str, Tensor]) -> Tensor:
    graph = nb.graph
    slopes = Slopes(settings.memory_budget)
    last = [nb]

    def joint() -> Tensor:
        last[0] = intermediate.compute(graph, nb.lower, nb.upper, slopes=slopes, stop=expired,
                                       reach=reach)
        _tighten(tightest, last[0].box)
        return bound(last[0], graph.output_name, A, slopes) - d

    plan = Ascent(settings.iterations, settings.lr, settings.lr_decay, settings.early_stop,
                  focus=settings.early_stop)
    best = ascend(joint, [slopes], best, plan, expired)
    if settings.refine_iterations <= 0 or expired() or not tightest:
        return best
    fixed = last[0].with_box({name: (lo, torch.maximum(hi, lo))
                              for name, (lo, hi) in tightest.items()})
    final = slopes.starting_at(graph.output_name)
    plan = Ascent(settings.refine_iterations, settings.lr, settings.lr_decay,
                  settings.early_stop, focus=settings.early_stop)
    return ascend(lambda: bound(fixed, graph.output_name, A, final) - d, [final], best, plan,
                  expired)


def _tighten(tightest: dict[str, Interval], box: dict[str, Interval]) -> None:
    """Intersect ``tightest`` with ``box`` node by node (detached; both sound, so is this)."""
    for name, (lo, hi) in box.items():
        lo, hi = lo.detach(), hi.detach()
        old = tightest.get(name)
        tightest[name] = (lo, hi) if old is None else \
            (torch.fmax(lo, old[0]), torch.fmin(hi, old[1]))


@dataclass
class Warm:
    """The optimised parameters of a batch of domains' final bound (slopes of the final
    rows' pass and split multipliers, detached, first dimension: domain), for a later bound
    of the same domains or their subdomains to start from: any values are sound, so a
    child may start from its parent's (a multiplier of a split the parent lacked: 0)."""

    slopes: dict[tuple[str, int, str], tuple[Tensor, Tensor, bool]]  # (lower, upper, free)
    betas: dict[str, tuple[Tensor, Tensor]]

    def take(self, idx: Tensor) -> Warm:
        return Warm({k: (lo[idx], hi[idx], free) for k, (lo, hi, free) in self.slopes.items()},
                    {k: (lo[idx], hi[idx]) for k, (lo, hi) in self.betas.items()})

    def nbytes(self) -> int:
        tensors = [t for lo, hi, _ in self.slopes.values() for t in (lo, hi)]
        tensors += [t for pair in self.betas.values() for t in pair]
        return sum(t.element_size() * t.numel() for t in tensors)

    @staticmethod
    def cat(parts: list[Warm | None], sizes: list[int]) -> Warm | None:
        """The parts stacked (None if a part has none).  A slope a part lacks (its batch had
        nothing to choose at that node: every neuron stable, say, which its subdomains
        stay) or a multiplier it lacks (no split there) is 0 for its domains."""
        if not parts or any(p is None for p in parts):
            return None
        warm = [p for p in parts if p is not None]

        def stacked(pairs: list[tuple[Tensor, Tensor] | None]) -> tuple[Tensor, Tensor]:
            like = next(q[0] for q in pairs if q is not None)
            full = [q or (like.new_zeros((n, *like.shape[1:])),) * 2
                    for q, n in zip(pairs, sizes, strict=True)]
            return torch.cat([q[0] for q in full]), torch.cat([q[1] for q in full])

        slopes = {}
        for key in {k for p in warm for k in p.slopes}:
            have = [p.slopes.get(key) for p in warm]
            free = next(h[2] for h in have if h is not None)
            lo, hi = stacked([None if h is None else (h[0], h[1]) for h in have])
            slopes[key] = (lo, hi, free)
        betas = {name: stacked([p.betas.get(name) for p in warm])
                 for name in {k for p in warm for k in p.betas}}
        return Warm(slopes, betas)


def optimise_final(nb: NodeBounds, C: Tensor, d: Tensor, splits: Splits, iterations: int,
                   lr: float = 0.1, expired: Callable[[], bool] = never,
                   start: Warm | None = None) -> tuple[Tensor, Warm | None]:
    """Bound of C y - d with the intermediate bounds ``nb`` held fixed, tightened by
    optimising the final rows' slopes (alpha) and the split constraints' multipliers
    (beta) by gradient ascent from ``start`` (else CROWN's slopes and zeros).  Every
    iterate is sound; the best per row is returned, with the last parameters."""
    graph = nb.graph
    A = _coefficients(graph, C)
    slopes, betas = Slopes(budget=0), Betas.zeros(splits, C.shape[1])
    if start is not None:
        slopes.pairs = {k: (lo.clone().requires_grad_(True), hi.clone().requires_grad_(free))
                        for k, (lo, hi, free) in start.slopes.items()}
        for name, (lo, hi) in start.betas.items():
            if name in betas.pairs:
                betas.pairs[name] = (lo.clone().requires_grad_(True),
                                     hi.clone().requires_grad_(True))
    with torch.no_grad():
        best = bound(nb, graph.output_name, A, slopes, betas=betas) - d
    if iterations <= 0:
        return best, start
    best = ascend(lambda: bound(nb, graph.output_name, A, slopes, betas=betas) - d,
                  [slopes, betas], best, Ascent(iterations, lr), expired)
    warm = Warm({k: (lo.detach(), hi.detach(), hi.requires_grad)
                 for k, (lo, hi) in slopes.pairs.items()},
                {k: (lo.detach(), hi.detach()) for k, (lo, hi) in betas.pairs.items()})
    return best, warm
