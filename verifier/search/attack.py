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


def violation(graph: Graph, batch: ProblemBatch, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """v(x), the most violated disjunct (both (B, K)) and every disjunct's violation
    (B, K, D), for x of shape (B, K, n_in)."""
    B, K, n = x.shape
    y = graph.forward(x.reshape(B * K, n)).reshape(B, K, -1)
    rows = torch.einsum("brm,bkm->bkr", batch.C, y) - batch.d.unsqueeze(1)  # (B, K, R)
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
    # restarts take turns at the disjuncts (targeted), so each one is pursued on its own
    counts = torch.tensor(batch.n_disjuncts, device=lo.device).view(B, 1)
    target = (torch.arange(K, device=lo.device).view(1, K) % counts).unsqueeze(-1)
    for step in range(settings.steps):
        x = x.detach().requires_grad_(True)
        v, which, per = violation(graph, batch, x)
        better = v.detach() < best_v
        best_v = torch.where(better, v.detach(), best_v)
        best_x = torch.where(better.unsqueeze(-1), x.detach(), best_x)
        best_k = torch.where(better, which, best_k)
        if (best_v < 0).any(dim=1).all() or expired():
            break
        goal = per.gather(2, target).squeeze(-1)
        goal = torch.where(torch.isfinite(goal), goal, v)
        (grad,) = torch.autograd.grad(goal.sum(), x)
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


def falsify(model: Model, prop: Property, batch: ProblemBatch, settings: AttackSettings,
            expired=lambda: False) -> list[Counterexample]:
    """Run PGD on a batch and return the counterexamples onnxruntime confirms (one per
    distinct (case, disjunct), most violating first)."""
    with torch.enable_grad():
        xs, vs, _ = pgd(model.graph, batch, settings, expired)
    found: dict[tuple[int, int], Counterexample] = {}
    order = torch.argsort(vs.reshape(-1))
    K = vs.shape[1]
    near = NEAR_MISSES
    for flat in order.tolist():
        b, k = divmod(flat, K)
        if vs[b, k] > 0:
            # our evaluation rounds differently from onnxruntime's (another tanh kernel,
            # another summation order): a few points that miss by a rounding error or so
            # are put to the judge too
            if near <= 0 or not bool(vs[b, k] <= NEAR_MISS_SLACK * (1 + vs[b, k].abs())):
                break
            near -= 1
        cex = confirm(model, prop, batch.cases[b], xs[b, k].detach().cpu().double().numpy())
        if cex is not None and (cex.case, cex.disjunct) not in found:
            found[(cex.case, cex.disjunct)] = cex
    return list(found.values())
