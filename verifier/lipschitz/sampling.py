"""Lower bounds on the local Lipschitz constant: the norm of true gradients at points of the
box (random samples, the box's centre and points found by gradient ascent on the norm).

Every value returned is ``||C_i J(x)||`` at an actual point x of the box, so the maximum is a
lower bound of the constant (the maximum over x of the largest row norm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from verifier.graph import Graph
from verifier.ops.base import Tensor

Stop = Callable[[], bool]


def _never() -> bool:
    return False


def row_norms(G: Tensor, norm: str) -> Tensor:
    """Per-row norm of gradient rows (..., n): l1 for the inf-norm, l2 for the 2-norm."""
    return G.abs().sum(-1) if norm == "inf" else G.norm(dim=-1)


def jacobian_rows(graph: Graph, C: Tensor, x: Tensor, rows: Tensor,
                  create_graph: bool = False) -> Tensor:
    """Gradient of (C f(x_p))[rows[p]] at each point x_p: (P, n).  ``x`` may require grad."""
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        y = graph.forward(x).reshape(x.shape[0], -1)
        g = (y * C[rows]).sum()
        (G,) = torch.autograd.grad(g, x, create_graph=create_graph)
    return G


def full_jacobian(graph: Graph, C: Tensor, x: Tensor) -> Tensor:
    """C J(x) at each point: (P, R, n)."""
    P, R = x.shape[0], C.shape[0]
    xs = x.repeat_interleave(R, 0)
    rows = torch.arange(R).repeat(P)
    return jacobian_rows(graph, C, xs, rows).reshape(P, R, -1)


@dataclass
class Witness:
    value: float
    x: Tensor
    row: int


def best_of(graph: Graph, C: Tensor, x: Tensor, norm: str, stop: Stop = _never) -> Witness:
    """The point and row of the largest gradient norm among the points x (P, n); once
    ``stop()`` holds, among the chunks of points done so far (at least the first)."""
    best = Witness(-1.0, x[0], 0)
    for chunk in torch.split(x, max(1, 4096 // C.shape[0])):
        norms = row_norms(full_jacobian(graph, C, chunk), norm)  # (P, R)
        value, flat = norms.flatten().max(0)
        if float(value) > best.value:
            p, r = divmod(int(flat), C.shape[0])
            best = Witness(float(value), chunk[p].clone(), r)
        if stop():
            break
    return best


def random_points(lower: Tensor, upper: Tensor, count: int, gen: torch.Generator) -> Tensor:
    """The centre, then uniform samples, half of them on the box's vertices."""
    n = lower.numel()
    u = torch.rand(count, n, generator=gen, dtype=lower.dtype)
    u[: count // 2] = u[: count // 2].round()
    pts = lower + u * (upper - lower)
    return torch.cat([((lower + upper) / 2).unsqueeze(0), pts])


def ascend(graph: Graph, C: Tensor, lower: Tensor, upper: Tensor, starts: Tensor,
           rows: Tensor, steps: int, norm: str, stop: Stop = _never) -> Tensor:
    """Projected signed-gradient ascent of ||C_row J(x)|| from each start (P, n); the best
    points so far once ``stop()`` holds.

    The norm's gradient needs second derivatives; where they vanish (ReLU nets are piecewise
    linear) a small random jump keeps the search moving."""
    x, best_x = starts.clone(), starts.clone()
    best_val = torch.full((len(x),), -1.0, dtype=x.dtype)
    width = upper - lower
    gen = torch.Generator().manual_seed(len(x) + steps)
    for t in range(steps + 1):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            G = jacobian_rows(graph, C, xg, rows, create_graph=True)
            vals = row_norms(G, norm)
            grad = None
            if vals.requires_grad:  # piecewise-linear nets may have no second derivative
                (grad,) = torch.autograd.grad(vals.sum(), xg, allow_unused=True)
        better = vals.detach() > best_val
        best_val = torch.where(better, vals.detach(), best_val)
        best_x[better] = x[better]
        if t == steps or stop():
            break
        if grad is None or not bool(grad.any()):
            grad = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        step = width * (0.25 * (1 - t / max(steps, 1)) + 0.01)
        x = torch.minimum(torch.maximum(x + step * grad.sign(), lower), upper).detach()
    return best_x


def node_values(graph: Graph, x: Tensor) -> dict[str, Tensor]:
    """Every node's value for a batch of flat inputs x (P, n)."""
    values = {graph.input_name: graph.to_input_shape(x)}
    for node in graph.nodes:
        values[node.name] = node.op.forward(*[values[i] for i in node.inputs])
    return values


def switching_targets(graph: Graph, box: dict[str, tuple[Tensor, Tensor]], limit: int,
                      gen: torch.Generator) -> list[tuple[str, int]]:
    """Pre-activations (node, flat index) whose activation's slope is not fixed over the
    box (an unstable ReLU, a sigmoid off its flat tails), at most ``limit`` at random."""
    from verifier.lipschitz.jacobian import elementwise

    found: list[tuple[str, int]] = []
    for node in graph.nodes:
        if elementwise(node.op):
            z = node.inputs[0]
            lo, hi = (t[0].flatten() for t in box[z])
            d_lo, d_hi = node.op.derivative_range(lo, hi)
            found += [(z, int(j)) for j in torch.nonzero(d_hi > d_lo).flatten()]
    if len(found) <= limit:
        return found
    pick = torch.randperm(len(found), generator=gen)[:limit]
    return [found[int(i)] for i in pick]


def push_activations(graph: Graph, lower: Tensor, upper: Tensor,
                     targets: list[tuple[str, int]], steps: int, stop: Stop = _never) -> Tensor:
    """Points that drive each target pre-activation to its largest and to its smallest value
    in the box (signed-gradient ascent from the centre): one point per (target, sign).
    Where a ReLU net's gradient norm jumps on a small region where some neuron switches on,
    uniform samples rarely land and these points do."""
    P = 2 * len(targets)
    signs = torch.tensor([1.0, -1.0], dtype=lower.dtype).repeat(len(targets))
    x = ((lower + upper) / 2).expand(P, -1).clone()
    width = upper - lower
    where: dict[str, tuple[list[int], list[int]]] = {}  # node -> (points, entries)
    for k, (name, j) in enumerate(targets):
        rows, cols = where.setdefault(name, ([], []))
        rows += [2 * k, 2 * k + 1]
        cols += [j, j]
    for t in range(steps):
        if stop():
            break
        with torch.enable_grad():
            xg = x.requires_grad_(True)
            values = node_values(graph, xg)
            total = torch.stack([(values[name].reshape(P, -1)[rows, cols] * signs[rows]).sum()
                                 for name, (rows, cols) in where.items()]).sum()
            (grad,) = torch.autograd.grad(total, xg)
        step = width * (0.5 * (1 - t / steps) + 0.02)
        x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), lower), upper)
    return x.detach()


def sampled_lower_bound(graph: Graph, C: Tensor, lower: Tensor, upper: Tensor, norm: str,
                        samples: int, steps: int, seed: int,
                        box: dict[str, tuple[Tensor, Tensor]] | None = None,
                        stop: Stop = _never) -> Witness:
    """The largest gradient row norm found at random points, at points that switch
    activations on and off (when ``box`` gives the nodes' bounds), then by ascent of the
    norm from the best of them.  Once ``stop()`` holds, the best found so far (the box's
    centre is always tried)."""
    gen = torch.Generator().manual_seed(seed)
    pts = random_points(lower, upper, samples, gen)
    if box is not None and steps > 0:
        targets = switching_targets(graph, box, max(samples, 1), gen)
        if targets:
            pts = torch.cat([pts, push_activations(graph, lower, upper, targets, steps,
                                                   stop)])
    best = best_of(graph, C, pts, norm, stop)
    if steps <= 0 or stop():
        return best
    R = C.shape[0]
    norms = torch.cat([row_norms(full_jacobian(graph, C, chunk), norm)
                       for chunk in torch.split(pts, max(1, 4096 // R))])  # (P, R)
    top = norms.max(0).values.argsort(descending=True)[: min(R, 8)]
    starts, rows = [], []
    for r in top.tolist():
        order = norms[:, r].argsort(descending=True)[:4]
        starts.append(pts[order])
        rows += [r] * len(order)
    x = ascend(graph, C, lower, upper, torch.cat(starts), torch.tensor(rows), steps, norm,
               stop)
    found = best_of(graph, C, x, norm)
    return found if found.value > best.value else best
