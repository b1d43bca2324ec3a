"""Falsification by probing the sides of nonlinearities that no sample reached (DESIGN.md:
Attack).

A counterexample hidden in a tiny region with no gradient outside it (a planted bump
``K relu(r - |x - p|_1)``) is out of reach of PGD: the violation ``v`` (attack.py) is flat
wherever the bump's ReLU is off.  Its pre-activation ``z`` is not flat: ``r - |x - p|_1``
has a gradient everywhere, pointing at p.  The bounds say which sides of which
nonlinearities can be reached (``l < s < u`` around the op's split point s); random samples
say which sides are seen.  For an entry whose bounds allow a side that no sample reached,
the first-order estimate of v once it gets there is

    v(x) + dv/da (f(bound) - a(x))        (a = f(z): the op's output at x)

and the entries where that estimate is lowest are probed: from the sample where it is
lowest, resilient sign steps (Rprop: per coordinate, a step grows by 1.2 while the
gradient's sign holds and halves when it flips, so it homes in on a kink like |x_i - p_i|
at a geometric rate where fixed steps oscillate) drive z across s; then one row per target
minimises v and another drives z on towards its bound (an L-infinity ball's
``r - max_i |x_i - p_i|`` moves one coordinate at a time, and v's steps, which move them
all, leave it; docs/design-notes.md, "The probe").  What it finds is only a candidate:
``confirm`` (attack.py) judges it with onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from verifier.bounds import intermediate
from verifier.bounds.limits import Interrupted
from verifier.importer.onnx_import import Model
from verifier.problems import ProblemBatch
from verifier.property.core import Property
from verifier.search.attack import Counterexample, candidates, confirm, softmax_logits, violation

Tensor = torch.Tensor
Boxes = dict[str, tuple[Tensor, Tensor]]
AIM_PAST_V = 1e-3  # once across, steps aim at v = -1e-3


@dataclass(frozen=True)
class ProbeSettings:
    samples: int = 64  # random points per case that tell which sides are seen
    targets: int = 16  # entries probed per case (each from two rows: see probe)
    steps: int = 1000  # Rprop steps, at most (an L-inf ball of 50 inputs takes ~500)
    share: float = 0.05  # of the time left, at most (but at least min_seconds)
    min_seconds: float = 2.0  # where the time left allows 4x as much
    patience: int = 100  # steps without progress before the search ends
    first_step: float = 0.05  # Rprop's first step, a fraction of the box's width
    budget: int = 20_000_000  # values kept per evaluation (samples x cases x entries)
    seed: int = 0


@dataclass
class _Target:
    name: str  # the nonlinearity's input
    entry: Tensor  # (B, T) flat index into the input's entries
    above: Tensor  # (B, T) bool: drive z above the split point (else below)
    point: Tensor  # (B, T) the split point
    past: Tensor  # (B, T) how far past the point the steps aim: 1% of the side's width
    bound: Tensor  # (B, T) the side's far end (the bound), where the estimate was taken


def _nodes(model: Model, boxes: Boxes) -> list[tuple[str, str, object]]:
    """(input, output, op) of every elementwise nonlinearity whose input has bounds."""
    graph = model.graph
    return [(n.inputs[0], n.name, n.op) for n in graph.nodes
            if n.op.elementwise and n.inputs[0] != graph.input_name and n.inputs[0] in boxes]


def _choose(model: Model, batch: ProblemBatch, boxes: Boxes, settings: ProbeSettings,
            gen: torch.Generator) -> tuple[list[_Target], Tensor, Tensor] | None:
    """The targets (up to ``settings.targets`` per case, over all nodes), each one's start
    point (B, T, n) and estimate (B, T), lowest first; None when no entry qualifies."""
    graph = model.graph
    nodes = _nodes(model, boxes)
    if not nodes:
        return None
    B, n = batch.lower.shape
    entries = sum(boxes[z][0][0].numel() for z, _, _ in nodes)
    S = min(settings.samples, settings.budget // max(1, B * 2 * entries))
    if S < 4:
        return None
    lo, hi = batch.lower.unsqueeze(1), batch.upper.unsqueeze(1)
    u = torch.rand(B, S, n, generator=gen, dtype=lo.dtype).to(lo.device)
    x = (lo + u * (hi - lo))
    x[:, 0] = (batch.lower + batch.upper) / 2
    kept: dict[str, Tensor] = dict.fromkeys(  # type: ignore[assignment]
        [z for z, _, _ in nodes] + [a for _, a, _ in nodes])
    with torch.enable_grad():
        x.requires_grad_(True)
        v, _, _ = violation(graph, batch, x, search=True, logits=softmax_logits(graph),
                            kept=kept)
        outs = [kept[a] for _, a, _ in nodes]
        grads = torch.autograd.grad(torch.where(torch.isfinite(v), v, 0.0).sum(), outs,
                                    allow_unused=True)
    v = v.detach()
    scores, whole = [], []  # per node: (B, 2 m) estimates, and what they stand for
    for (zname, aname, op), g in zip(nodes, grads, strict=True):
        zl, zu = (t.reshape(B, -1) for t in boxes[zname])
        m = zl.shape[1]
        z = kept[zname].detach().reshape(B, S, m)
        a = kept[aname].detach().reshape(B, S, m)
        g = torch.zeros_like(a) if g is None else g.detach().reshape(B, S, m)
        s = op.split_point(zl, zu).reshape(B, m)  # type: ignore[attr-defined]
        with torch.no_grad():
            fu = op.search_forward(zu.reshape(B, *boxes[zname][0].shape[1:]))  # type: ignore
            fl = op.search_forward(zl.reshape(B, *boxes[zname][0].shape[1:]))  # type: ignore
        fu, fl = fu.reshape(B, 1, m), fl.reshape(B, 1, m)
        up = (z.amax(dim=1) < s) & (zu > s)  # (B, m): above s is allowed, never seen
        down = (z.amin(dim=1) > s) & (zl < s)
        est_up = v.unsqueeze(-1) + g * (fu - a)  # (B, S, m)
        est_down = v.unsqueeze(-1) + g * (fl - a)
        big = torch.finfo(v.dtype).max  # an unbounded side's -inf estimate stays a target
        best_up, at_up = torch.nan_to_num(est_up, nan=math.inf, neginf=-big).min(dim=1)
        best_down, at_down = torch.nan_to_num(est_down, nan=math.inf, neginf=-big).min(dim=1)
        best_up = torch.where(up, best_up, math.inf)
        best_down = torch.where(down, best_down, math.inf)
        scores.append(torch.cat([best_up, best_down], dim=1))
        whole.append((zname, m, torch.cat([at_up, at_down], dim=1), s, zl, zu))
    allsc = torch.cat(scores, dim=1)  # (B, sum 2 m)
    T = min(settings.targets, allsc.shape[1])
    est, flat = torch.topk(allsc, T, dim=1, largest=False)
    if not bool(torch.isfinite(est).any()):
        return None
    # rows without a target (fewer qualify than T) start at the centre and minimise v
    targets, starts = [], x.detach()[:, :1].expand(B, T, n).clone()
    offset = 0
    for zname, m, at, s, zl, zu in whole:
        mine = (flat >= offset) & (flat < offset + 2 * m) & torch.isfinite(est)
        local = (flat - offset).clamp(0, 2 * m - 1)
        entry = local % m
        sample = at.gather(1, local)
        starts = torch.where(mine.unsqueeze(-1),
                             x.detach().gather(1, sample.unsqueeze(-1).expand(B, T, n)), starts)
        point, above = s.gather(1, entry), local < m
        bound = torch.where(above, zu.gather(1, entry), zl.gather(1, entry))
        # an unbounded side: a point max(1, |s|) beyond s stands for its end
        reach = point.abs().clamp(min=1.0)
        bound = torch.where(torch.isfinite(bound), bound,
                            torch.where(above, point + reach, point - reach))
        past = torch.nan_to_num(0.01 * (bound - point).abs(), nan=0.0).clamp(min=0)
        targets.append(_Target(zname, torch.where(mine, entry, -1), above, point, past, bound))
        offset += 2 * m
    return targets, starts, est


def probe(model: Model, prop: Property, batch: ProblemBatch, boxes: Boxes | None,
          settings: ProbeSettings = ProbeSettings(),
          expired: Callable[[], bool] = lambda: False) -> list[Counterexample]:
    """Drive the most promising unseen sides of the nonlinearities (see the module's
    docstring) and return the counterexamples onnxruntime confirms.  ``boxes``: bounds of
    the nonlinearities' inputs (name -> (lo, hi), each (B, *shape)), computed here by CROWN
    where not given."""
    graph = model.graph
    if boxes is None:  # (alpha-CROWN kept none: skipped, or stopped by its deadline)
        try:
            with torch.no_grad():
                boxes = dict(intermediate.compute(graph, batch.lower, batch.upper,
                                                  stop=expired).box)
        except Interrupted:  # the probe's time ran out (or memory): nothing to probe
            return []
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    chosen = _choose(model, batch, boxes, settings, gen)
    if chosen is None or expired():
        return []
    targets, starts, _ = chosen
    # each target twice: once across, one copy minimises v, the other drives the entry on
    # towards its bound, where the estimate was taken (an L-infinity ball's pre-activation
    # r - max_i |x_i - p_i| moves one coordinate at a time, while v's steps move them all)
    targets = [_Target(t.name, *(torch.cat([f, f], dim=1)
                                 for f in (t.entry, t.above, t.point, t.past, t.bound)))
               for t in targets]
    starts = torch.cat([starts, starts], dim=1)
    B, T, n = starts.shape
    push = (torch.arange(T, device=starts.device) >= T // 2).expand(B, T)
    lo, hi = batch.lower.unsqueeze(1), batch.upper.unsqueeze(1)
    width = torch.where(hi > lo, hi - lo, 1.0)
    u = ((starts - lo) / width).clamp(0, 1).detach().requires_grad_(True)  # x = lo + u w
    size = torch.full_like(u, settings.first_step)  # Rprop's steps, per coordinate
    last = torch.zeros_like(u)  # the gradient's sign at the last step
    # the last point where the target was across (rows that got there), to fall back to
    inside, was_in = u.detach().clone(), torch.zeros(B, T, dtype=torch.bool, device=u.device)
    names = tuple(t.name for t in targets)
    logits = softmax_logits(graph)
    best_x, best_v = starts.clone(), torch.full((B, T), math.inf, dtype=lo.dtype,
                                                 device=lo.device)
    # the search ends once no row's loss has fallen by 0.1% for ``patience`` steps (the
    # loss is measured afresh when a row gets across)
    best_loss, was_across, quiet = torch.full_like(best_v, math.inf), was_in.clone(), 0
    for _ in range(settings.steps):
        with torch.enable_grad():
            x = lo + u * width
            kept: dict[str, Tensor] = dict.fromkeys(names)  # type: ignore[assignment]
            v, _, _ = violation(graph, batch, x, search=True, logits=logits, kept=kept)
            reached = torch.ones_like(v, dtype=torch.bool)
            loss, aim = v, torch.full_like(v, AIM_PAST_V)
            for t in targets:
                z = kept[t.name].reshape(B, T, -1)
                zt = z.gather(2, t.entry.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                g = torch.where(t.above, t.point - zt, zt - t.point)  # > 0: not there yet
                on = torch.where(t.above, t.bound - zt, zt - t.bound)  # to the bound
                mine = t.entry >= 0
                on_to = mine & push
                loss = torch.where(on_to, on, loss)
                aim = torch.where(on_to, 0.0, aim)
                loss = torch.where(mine & (g >= 0), g, loss)
                aim = torch.where(mine & (g >= 0), t.past, aim)
                reached = torch.where(mine, g < 0, reached)
            better = v.detach() < best_v
            best_v = torch.where(better, v.detach(), best_v)
            best_x = torch.where(better.unsqueeze(-1), x.detach(), best_x)
            if bool((best_v <= 0).any()) or expired():
                break
            loss = torch.where(torch.isfinite(loss), loss, 0.0)
            fresh = reached != was_across
            was_across = reached
            best_loss = torch.where(fresh, math.inf, best_loss)
            gained = loss.detach() < best_loss - 1e-3 * best_loss.abs()
            best_loss = torch.minimum(best_loss, loss.detach())
            quiet = 0 if bool(gained.any()) else quiet + 1
            if quiet > settings.patience:
                break
            (grad,) = torch.autograd.grad(loss.sum(), u)
        with torch.no_grad():
            grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            sign = grad.sign()
            turn = sign * last
            size = torch.where(turn > 0, size * 1.2, torch.where(turn < 0, size * 0.5, size))
            # no coordinate steps more than twice what would, alone and to first order,
            # take the loss a little past 0 (a step grown far from the target, on a
            # coordinate whose turn comes back only now, would jump far past it; exactly
            # to 0, the steps would only approach the target from outside)
            cap = 2 * (loss.detach().clamp(min=0) + aim).unsqueeze(-1) / grad.abs()
            size = torch.minimum(size, torch.where(grad != 0, cap, size)).clamp(1e-9, 0.5)
            move = torch.where(turn < 0, 0.0, sign)  # after a flip, wait one step
            # a coordinate without gradient this step (not the argmax of a max, say)
            # keeps its last sign, so an overshoot is seen on its next turn
            last = torch.where(sign == 0, last, move)
            # a row that had got across and left again (v's steps took it out: they move
            # every coordinate, at sizes grown while reaching) goes back, with halved steps
            fell = (was_in & ~reached).unsqueeze(-1)
            inside = torch.where(reached.unsqueeze(-1), u.detach(), inside)
            was_in = was_in | reached
            stepped = (u.detach() - size * move).clamp(0, 1)
            u = torch.where(fell, inside, stepped).requires_grad_(True)
            size = torch.where(fell, size * 0.5, size)
            last = torch.where(fell, 0.0, last)
    found: dict[tuple[int, int], Counterexample] = {}
    for b, k in candidates(best_v, each_best=False):
        cex = confirm(model, prop, batch.cases[b], best_x[b, k].detach().cpu().double().numpy())
        if cex is not None and (cex.case, cex.disjunct) not in found:
            found[(cex.case, cex.disjunct)] = cex
    return list(found.values())
