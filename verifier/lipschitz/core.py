"""Local Lipschitz constants and monotonicity over an input box (DESIGN.md: the engine).

For ``g(x) = C f(x)`` and the l-infinity input norm the local Lipschitz constant over the box
X is ``L = max_{x in X} max_i sum_j |(C J(x))_ij|``: the induced inf->inf norm of the
Jacobian, the l1 norm of each row's gradient (the convention of Shi et al., NeurIPS 2022).
For norm "2" it is ``max_x max_i ||(C J(x))_i||_2``.

``local_lipschitz`` brackets L: ``lower`` is a norm of true gradients at points of X (so
lower <= L), ``upper`` bounds every Jacobian entry over X by bound propagation through the
backward graph (jacobian.py) and optionally refines it by splitting X (so L <= upper), and
``naive`` is the product of the layers' operator norms, valid everywhere.

A caller may pass ``stop`` (checked between CROWN's row chunks, sampling steps and splitting
rounds) and ``progress``.  Once ``stop()`` holds the work ends early with the bracket found so
far, still sound (``details["stopped"]``); before the first upper bound exists it raises
``verifier.bounds.crown.Interrupted``.  Without a stop that fires, the results are the same.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from verifier.bounds.crown import Interrupted
from verifier.graph import Graph
from verifier.lipschitz.jacobian import (
    JacobianGraph,
    Stop,
    bound_jacobian,
    forward_boxes,
    interval_jacobian,
    jacobian_graph,
    joint_l1_upper,
    never,
)
from verifier.lipschitz.naive import naive_bound
from verifier.lipschitz.sampling import full_jacobian, random_points, sampled_lower_bound
from verifier.ops.base import Tensor

NORMS = ("inf", "2")
DTYPE = torch.float64
BAB_BATCH = 4
ROUNDING = 1e-9  # relative and absolute slack for float64 rounding in the upper bound


@dataclass(frozen=True)
class LipschitzSettings:
    norm: str = "inf"  # "inf" (rows' l1 norms, the inf->inf norm) or "2" (rows' l2 norms)
    samples: int = 256  # random points for the lower bound
    attack_steps: int = 50  # gradient-ascent steps on the norm from the best samples
    bab_seconds: float = 0.0  # input splitting to tighten the upper bound (0: none)
    seed: int = 0
    link_derivatives: bool = True  # keep sigma'(z) tied to x in the backward graph

    def validate(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {self.norm!r}")
        if self.samples < 0 or self.attack_steps < 0 or self.bab_seconds < 0:
            raise ValueError("samples, attack_steps and bab_seconds must be non-negative")


@dataclass
class LipschitzResult:
    lower: float
    upper: float
    naive: float
    norm: str
    seconds: float
    argmax_input: list[float]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LipschitzProgress:
    """What ``local_lipschitz`` reports while it works: the stage (``bound``, ``sampling``,
    ``splitting``), the bracket known so far (None before it exists) and the boxes of the
    input splitting (leaves split so far, boxes open)."""

    stage: str
    elapsed: float
    lower: float | None = None
    upper: float | None = None
    leaves: int = 0
    open: int = 0


Report = Callable[[LipschitzProgress], None]


def _silent(progress: LipschitzProgress) -> None:
    pass


def _graph(model: Any) -> Graph:
    return model if isinstance(model, Graph) else model.graph


def _box(graph: Graph, lower: np.ndarray, upper: np.ndarray) -> tuple[Tensor, Tensor]:
    """The box as float64 (1, n) tensors, checked against the model's input size."""
    n = math.prod(graph.input_shape)
    lo = torch.as_tensor(np.asarray(lower, dtype=np.float64).ravel())
    hi = torch.as_tensor(np.asarray(upper, dtype=np.float64).ravel())
    if lo.numel() != n or hi.numel() != n:
        raise ValueError(f"the box has {lo.numel()} / {hi.numel()} entries; the model takes {n}")
    if not bool((lo <= hi).all()) or not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise ValueError("the box needs finite bounds with lower <= upper")
    return lo.unsqueeze(0), hi.unsqueeze(0)


def _spec_matrix(graph: Graph, C: np.ndarray | None) -> Tensor:
    n_out = math.prod(graph.output_shape)
    if C is None:
        return torch.eye(n_out, dtype=DTYPE)
    Ct = torch.as_tensor(np.atleast_2d(np.asarray(C, dtype=np.float64)))
    if Ct.dim() != 2 or Ct.shape[1] != n_out:
        raise ValueError(f"C must be (rows, {n_out}), got {tuple(Ct.shape)}")
    return Ct


# -- the upper bound ---------------------------------------------------------------------
@dataclass
class BoxBound:
    """Upper bounds of the norm over K boxes, and a splitting score per input (K, n)."""

    upper: Tensor  # (K,)
    interval: Tensor  # (K,) the interval-product bound, for comparison
    score: Tensor  # (K, n)


def entrywise_norm(lo: Tensor, hi: Tensor, norm: str) -> Tensor:
    """max over J in [lo, hi] of the row norm, bounded entrywise: (..., n) -> (...)."""
    m = torch.maximum(lo.abs(), hi.abs())
    return m.sum(-1) if norm == "inf" else m.norm(dim=-1)


def bound_boxes(jg: JacobianGraph, C: Tensor, lower: Tensor, upper: Tensor, norm: str,
                stop: Stop = never) -> BoxBound:
    """Upper bounds of max_i ||(C J(x))_i|| over each box (K, n); raises Interrupted once
    ``stop()`` holds."""
    K, R = lower.shape[0], C.shape[0]
    jb = bound_jacobian(jg, C, lower, upper, stop=stop)
    rows = entrywise_norm(jb.lower, jb.upper, norm)  # (K, R)
    if norm == "inf":
        joint = joint_l1_upper(jb, jg)
        if joint is not None:
            rows = torch.minimum(rows, joint.reshape(K, R))
    ib = interval_jacobian(jb, jg)
    interval = rows if ib is None else entrywise_norm(*ib, norm).reshape(K, R)
    score = (jb.upper - jb.lower).amax(1) * (upper - lower)
    return BoxBound(rows.amax(1) * (1 + ROUNDING) + ROUNDING, interval.amax(1), score)


def split_widest(lower: Tensor, upper: Tensor, score: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Halve each box (K, n) along its highest-scoring input (width times the spread of the
    Jacobian bounds in that column; the widest input on ties): two children per box."""
    width = upper - lower
    dim = (score + 1e-12 * width).argmax(1)
    mid = (lower + upper).gather(1, dim[:, None]) / 2
    left_hi, right_lo = upper.clone(), lower.clone()
    left_hi.scatter_(1, dim[:, None], mid)
    right_lo.scatter_(1, dim[:, None], mid)
    return lower, left_hi, right_lo, upper


def refine_by_splitting(jg: JacobianGraph, C: Tensor, lower: Tensor, upper: Tensor,
                        root: BoxBound, settings: LipschitzSettings, floor: float,
                        stop: Stop = never, report: Report = _silent) -> tuple[float, int]:
    """Branch and bound on the input box until the deadline (or ``stop()``): the upper
    bound is the largest over the leaves, each leaf's bound at most its parent's (so never
    above the root's).  Stops early once the bound meets ``floor`` (a known lower bound).
    A round cut short by ``stop`` leaves the heap as it was, so the bound stays sound.
    ``report`` hears the bracket after each round (elapsed from the start of splitting)."""
    start = time.monotonic()
    deadline = start + settings.bab_seconds
    heap = [(-float(root.upper[0]), 0, lower[0], upper[0], root.score[0])]
    count, leaves = 1, 1
    while time.monotonic() < deadline and -heap[0][0] > floor * (1 + 1e-9) and not stop():
        picked = [heapq.heappop(heap) for _ in range(min(BAB_BATCH, len(heap)))]
        lo = torch.stack([p[2] for p in picked])
        hi = torch.stack([p[3] for p in picked])
        l1, h1, l2, h2 = split_widest(lo, hi, torch.stack([p[4] for p in picked]))
        kids_lo, kids_hi = torch.cat([l1, l2]), torch.cat([h1, h2])
        try:
            got = bound_boxes(jg, C, kids_lo, kids_hi, settings.norm, stop)
        except Interrupted:
            for p in picked:
                heapq.heappush(heap, p)
            break
        parents = torch.tensor([-p[0] for p in picked], dtype=DTYPE).repeat(2)
        bounds = torch.minimum(got.upper, parents)
        for k in range(len(kids_lo)):
            heapq.heappush(heap, (-float(bounds[k]), count, kids_lo[k], kids_hi[k],
                                  got.score[k]))
            count += 1
        leaves += len(picked)
        report(LipschitzProgress("splitting", time.monotonic() - start, floor, -heap[0][0],
                                 leaves, len(heap)))
    return -heap[0][0], leaves


# -- the API -----------------------------------------------------------------------------
def local_lipschitz(model: Any, lower: np.ndarray, upper: np.ndarray,
                    C: np.ndarray | None = None,
                    settings: LipschitzSettings = LipschitzSettings(),
                    stop: Stop | None = None, progress: Report | None = None
                    ) -> LipschitzResult:
    """Bracket the local Lipschitz constant of C f over the box [lower, upper].

    ``stop`` and ``progress`` as in the module docstring: Interrupted is raised only when
    ``stop()`` holds before the first upper bound is known."""
    settings.validate()
    start = time.monotonic()
    stop_fn = stop or never
    report = progress or _silent

    def tell(stage: str, low: float | None, up: float | None) -> None:
        report(LipschitzProgress(stage, time.monotonic() - start, low, up))

    graph = _graph(model)
    lo, hi = _box(graph, lower, upper)
    Cm = _spec_matrix(graph, C)
    jg = jacobian_graph(graph, settings.link_derivatives)
    tell("bound", None, None)
    root = bound_boxes(jg, Cm, lo, hi, settings.norm, stop_fn)
    t_bound = time.monotonic() - start
    box = forward_boxes(graph, lo, hi)
    naive = naive_bound(graph, Cm, box, settings.norm)
    tell("sampling", None, min(float(root.upper[0]), naive))
    witness = sampled_lower_bound(graph, Cm, lo[0], hi[0], settings.norm, settings.samples,
                                  settings.attack_steps, settings.seed, box, stop_fn)
    upper_bp = float(root.upper[0])
    leaves = 1
    if settings.bab_seconds > 0 and not stop_fn():
        tell("splitting", witness.value, min(upper_bp, naive))
        upper_bp, leaves = refine_by_splitting(
            jg, Cm, lo, hi, root, settings, witness.value, stop_fn,
            lambda p: report(replace(p, elapsed=time.monotonic() - start)))
    upper_val = min(upper_bp, naive)
    details = {
        "unsplit_upper": float(root.upper[0]), "interval_upper": float(root.interval[0]),
        "bab_leaves": leaves, "argmax_row": witness.row, "rows": int(Cm.shape[0]),
        "bound_seconds": t_bound, "settings": asdict(settings),
    }
    if stop_fn():
        details["stopped"] = True
    return LipschitzResult(
        lower=witness.value, upper=upper_val, naive=naive, norm=settings.norm,
        seconds=time.monotonic() - start, argmax_input=witness.x.tolist(), details=details)


def monotonicity(model: Any, lower: np.ndarray, upper: np.ndarray, output: int,
                 input_index: int, samples: int = 256, seed: int = 0,
                 stop: Stop | None = None) -> dict[str, Any]:
    """Bounds of the partial derivative d y_output / d x_input over the box.  ``proved``
    when its lower bound is >= 0 (y_output is non-decreasing in x_input over the box);
    ``witness`` is a sampled point with a negative partial, if one was found.  Raises
    Interrupted once ``stop()`` holds."""
    graph = _graph(model)
    lo, hi = _box(graph, lower, upper)
    n_out, n_in = math.prod(graph.output_shape), lo.shape[1]
    if not (0 <= output < n_out and 0 <= input_index < n_in):
        raise ValueError(f"output must be in [0, {n_out}) and input_index in [0, {n_in})")
    C = torch.zeros(1, n_out, dtype=DTYPE)
    C[0, output] = 1
    jb = bound_jacobian(jacobian_graph(graph), C, lo, hi, columns=[input_index],
                        stop=stop or never)
    pts = random_points(lo[0], hi[0], samples, torch.Generator().manual_seed(seed))
    partials = full_jacobian(graph, C, pts)[:, 0, input_index]
    k = int(partials.argmin())
    min_partial = float(jb.lower.flatten()[0])
    return {
        "proved": min_partial >= 0, "min_partial": min_partial,
        "max_partial": float(jb.upper.flatten()[0]), "sampled_min": float(partials[k]),
        "witness": pts[k].tolist() if float(partials[k]) < 0 else None,
        "output": output, "input_index": input_index,
    }
