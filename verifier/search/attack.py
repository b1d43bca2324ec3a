"""Falsification by projected gradient descent with random restarts (DESIGN.md: Attack).

For a case with disjuncts D_k = {y : C_k y <= d_k}, the violation of x is
``v(x) = min_k max_r (C_k f(x) - d_k)_r``; v(x) <= 0 exactly when x is a counterexample.
PGD minimises v over the box by signed-gradient steps from random starts.  What it finds
is only a candidate: ``confirm`` re-runs the original model in onnxruntime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from verifier import ort
from verifier.graph import Graph
from verifier.importer.onnx_import import Model
from verifier.ops.composite import PairDiff
from verifier.problems import ProblemBatch
from verifier.property.core import Property

Tensor = torch.Tensor


@dataclass(frozen=True)
class AttackSettings:
    restarts: int = 16
    steps: int = 60
    seed: int = 0


@dataclass(frozen=True)
class Counterexample:
    """A confirmed counterexample: flat input, onnxruntime's flat output, where it lies."""

    case: int
    disjunct: int
    x: np.ndarray
    y: np.ndarray
    # coordinates whose interval holds no value of the input type, taken at the nearest one
    snapped: int = 0

    def to_dict(self) -> dict:
        return {"case": self.case, "disjunct": self.disjunct,
                "input": self.x.tolist(), "output": self.y.tolist(), "snapped": self.snapped}


def softmax_logits(graph: Graph) -> str | None:
    """The tensor that the model's output is the softmax of, when the output is one softmax
    over all of its entries (a single distribution); else None."""
    if graph.output_name == graph.input_name:
        return None
    out = graph.node(graph.output_name)
    if out.op_type != "Softmax":
        return None
    group = [n for n in graph.nodes if n.op_type == "Softmax" and n.onnx_name == out.onnx_name]
    diffs = [n for n in group if isinstance(n.op, PairDiff)]
    if len(diffs) != 1 or len(group) != 4:  # PairDiff, Exp, ReduceSum, Reciprocal
        return None
    (diff,) = diffs
    shape = graph.shape(diff.inputs[0])
    if shape[int(diff.op.attrs["axis"])] != math.prod(shape) or \
            math.prod(shape) != math.prod(out.shape):
        return None
    return diff.inputs[0]


def search_rows(batch: ProblemBatch) -> Tensor:
    """(B, R): the rows that a search may evaluate on the softmax's input z instead of its
    output y: ``y_i - y_j <= 0`` (d = 0, one coefficient +1 and one -1), which holds exactly
    when ``z_i - z_j <= 0`` (softmax keeps the order of its entries), without the vanishing
    gradient of a saturated softmax."""
    C = batch.C
    plus, minus = (C == 1).sum(dim=2), (C == -1).sum(dim=2)
    return (batch.d == 0) & (plus == 1) & (minus == 1) & ((C != 0).sum(dim=2) == 2)


def violation(graph: Graph, batch: ProblemBatch, x: Tensor, search: bool = False,
              logits: str | None = None, kept: dict[str, Tensor] | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:
    """v(x), the most violated disjunct (both (B, K)) and every disjunct's violation
    (B, K, D), for x of shape (B, K, n_in).  With ``search``, the values and signs are the
    same but the gradients are a search's: step functions pass the gradient straight
    through, and where the output is a softmax, order comparisons between its entries are
    made on its input (``search_rows``; ``logits``: ``softmax_logits(graph)``).  ``kept``
    (search only): the values of the tensors it names are stored in it, (B * K, ...)."""
    B, K, n = x.shape
    if search:
        names = tuple(kept or ()) + ((logits,) if logits else ())
        out, values = graph.search_values(x.reshape(B * K, n), names)
        z = values[logits] if logits else None
        if kept is not None:
            kept.update({name: values[name] for name in kept})
        y = out.reshape(B, K, -1)
    else:
        y, z = graph.forward(x.reshape(B * K, n)).reshape(B, K, -1), None
    rows = torch.einsum("brm,bkm->bkr", batch.C, y) - batch.d.unsqueeze(1)  # (B, K, R)
    if z is not None:
        on_z = torch.einsum("brm,bkm->bkr", batch.C, z.reshape(B, K, -1))
        use_z = search_rows(batch).unsqueeze(1)
        if use_z.all():  # no gradient through the softmax (a saturated one's is NaN)
            rows = rows.detach()
        rows = torch.where(use_z, on_z, rows)
    D = max(batch.n_disjuncts)
    idx = torch.where(batch.row_disjunct < 0, D, batch.row_disjunct).unsqueeze(1).expand(B, K, -1)
    per = torch.full((B, K, D + 1), -math.inf, dtype=x.dtype, device=x.device)
    per = per.scatter_reduce(2, idx, rows, reduce="amax", include_self=True)[..., :D]
    counts = torch.tensor(batch.n_disjuncts, device=x.device).view(B, 1, 1)
    per = torch.where(torch.arange(D, device=x.device).view(1, 1, D) >= counts, math.inf, per)
    best, which = per.min(dim=2)
    return best, which, per


def pgd(graph: Graph, batch: ProblemBatch, settings: AttackSettings,
        expired=lambda: False) -> tuple[Tensor, Tensor, Tensor]:
    """Minimise the violation; returns the best x (B, K, n), its v (B, K) and disjunct."""
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    lo, hi = batch.lower.unsqueeze(1), batch.upper.unsqueeze(1)
    B, n = batch.lower.shape
    K = settings.restarts
    u = torch.rand(B, K, n, generator=gen, dtype=lo.dtype).to(lo.device)
    x = lo + u * (hi - lo)
    if K:
        x[:, 0] = ((batch.lower + batch.upper) / 2)
    best_x, best_v = x.clone(), torch.full((B, K), math.inf, dtype=lo.dtype, device=lo.device)
    best_k = torch.zeros((B, K), dtype=torch.long, device=lo.device)
    # restarts alternate: the even ones follow v itself (whichever disjunct is nearest, as
    # it changes), the odd ones take turns at the disjuncts (targeted), so that each one is
    # pursued on its own too
    counts = torch.tensor(batch.n_disjuncts, device=lo.device).view(B, 1)
    k = torch.arange(K, device=lo.device).view(1, K)
    target = ((k // 2) % counts).unsqueeze(-1)
    untargeted = (k % 2 == 0).expand(B, K)
    logits = softmax_logits(graph)
    for step in range(settings.steps):
        x = x.detach().requires_grad_(True)
        v, which, per = violation(graph, batch, x, search=True, logits=logits)
        better = v.detach() < best_v
        best_v = torch.where(better, v.detach(), best_v)
        best_x = torch.where(better.unsqueeze(-1), x.detach(), best_x)
        best_k = torch.where(better, which, best_k)
        if (best_v < 0).any(dim=1).all() or expired():
            break
        goal = per.gather(2, target).squeeze(-1)
        goal = torch.where(torch.isfinite(goal) & ~untargeted, goal, v)
        (grad,) = torch.autograd.grad(goal.sum(), x)
        grad = torch.nan_to_num(grad, nan=0.0)  # (0 * inf in a saturated op's gradient)
        size = 0.5 * (1 + math.cos(math.pi * step / settings.steps)) * 0.2 + 0.01
        x = torch.minimum(torch.maximum(x - size * (hi - lo) * grad.sign(), lo), hi)
    return best_x, best_v, best_k


def into_box(x: np.ndarray, lower: np.ndarray, upper: np.ndarray,
             dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``x`` clipped into [lower, upper] and rounded to ``dtype`` (the model's input type)
    without leaving the box: an entry that rounding pushed out steps back by one ulp.  A
    coordinate whose interval holds no value of ``dtype`` at all (a fixed input written as
    a decimal that is no float32, such as -0.41171077) takes the value of ``dtype`` nearest
    to it; the second result marks those coordinates ("snapped")."""
    x = np.clip(np.asarray(x, dtype=np.float64), lower, upper).astype(dtype)
    below, above = x.astype(np.float64) < lower, x.astype(np.float64) > upper
    x = np.where(below, np.nextafter(x, np.asarray(np.inf, dtype=dtype)), x)
    x = np.where(above, np.nextafter(x, np.asarray(-np.inf, dtype=dtype)), x)
    x64 = x.astype(np.float64)
    snapped = (x64 < lower) | (x64 > upper)
    if snapped.any():  # no value of dtype inside: the nearest one (rounding to nearest)
        nearest = np.asarray(lower, dtype=np.float64).astype(dtype).astype(np.float64)
        x64 = np.where(snapped, nearest, x64)
    return x64, snapped


def confirm(model: Model, prop: Property, case: int, x: np.ndarray) -> Counterexample | None:
    """The counterexample if onnxruntime agrees that x violates the property: x is first
    moved into its box and rounded to the model's input type (staying inside), then checked
    exactly: inside the box, strict input bounds respected, and onnxruntime's output
    satisfying some disjunct's rows exactly (strict rows strictly).  Coordinates whose
    interval holds no value of the input type are taken at the nearest one (``snapped``)."""
    c = prop.cases[case]
    boxed, snapped = into_box(x, c.lower, c.upper, model.input_dtype)
    if not prop.admits(case, boxed, ignore=snapped):
        return None
    y = ort.run(model, boxed)
    for k, conj in enumerate(c.disjuncts):
        if conj.holds(y):
            return Counterexample(case, k, boxed, y, int(snapped.sum()))
    return None


NEAR_MISSES = 8  # candidates with a small positive margin confirmed with onnxruntime anyway
NEAR_MISS_SLACK = 1e-5


def candidates(vs: Tensor, each_best: bool = True) -> list[tuple[int, int]]:
    """The (case, restart) points put to onnxruntime: every one that violates by our
    evaluation, most violating first; up to NEAR_MISSES that miss by a rounding error or
    so; and each case's best point whatever its margin (our evaluation rounds differently
    from onnxruntime's: another tanh kernel, another summation order, and a long sum that
    cancels can differ by far more than an ulp; one run of the judge per case is cheap).
    Without ``each_best``, only the violating points and the near misses."""
    picks: list[tuple[int, int]] = []
    near = NEAR_MISSES
    K = vs.shape[1]
    for flat in torch.argsort(vs.reshape(-1)).tolist():
        b, k = divmod(flat, K)
        v = vs[b, k]
        if v > 0:
            if near <= 0 or not bool(v <= NEAR_MISS_SLACK * (1 + v.abs())):
                break
            near -= 1
        picks.append((b, k))
    if not each_best:
        return picks
    best = vs.argmin(dim=1).tolist()
    picks += [(b, k) for b, k in enumerate(best)
              if (b, k) not in picks and bool(torch.isfinite(vs[b, k]))]
    return picks


def falsify(model: Model, prop: Property, batch: ProblemBatch, settings: AttackSettings,
            expired=lambda: False) -> list[Counterexample]:
    """Run PGD on a batch and return the counterexamples onnxruntime confirms (one per
    distinct (case, disjunct), most violating first)."""
    with torch.enable_grad():
        xs, vs, _ = pgd(model.graph, batch, settings, expired)
    found: dict[tuple[int, int], Counterexample] = {}
    for b, k in candidates(vs):
        cex = confirm(model, prop, batch.cases[b], xs[b, k].detach().cpu().double().numpy())
        if cex is not None and (cex.case, cex.disjunct) not in found:
            found[(cex.case, cex.disjunct)] = cex
    return list(found.values())
