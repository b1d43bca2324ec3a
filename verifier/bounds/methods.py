"""Bound methods behind one interface (DESIGN.md: Bounds).

``row_lower_bounds(graph, batch, method)`` returns, for every row of every problem, a lower
bound of ``C y - d`` over the problem's input box: a (B, R) tensor.  Every method is sound;
they differ in tightness and cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from verifier.bounds.crown import AlphaSettings, alpha_crown_rows, crown_rows
from verifier.graph import Graph
from verifier.problems import ProblemBatch

Tensor = torch.Tensor


def linear_lower(C: Tensor, d: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """min over y in [lo, hi] of C y - d: (B, R, m) x (B, m) -> (B, R)."""
    pos, neg = C.clamp(min=0), C.clamp(max=0)
    return (torch.einsum("brm,bm->br", pos, lo) + torch.einsum("brm,bm->br", neg, hi) - d)


def ibp_rows(graph: Graph, batch: ProblemBatch, **_: object) -> Tensor:
    """Interval bound propagation, then the rows' lower bounds over the output box."""
    lo, hi = graph.ibp(batch.lower, batch.upper)
    B = batch.size
    return linear_lower(batch.C, batch.d, lo.reshape(B, -1), hi.reshape(B, -1))


def crown(graph: Graph, batch: ProblemBatch, **options: object) -> Tensor:
    expired = options.get("expired") or (lambda: False)
    return crown_rows(graph, batch.lower, batch.upper, batch.C, batch.d,
                      expired=expired)  # type: ignore[arg-type]


def alpha_crown(graph: Graph, batch: ProblemBatch, **options: object) -> Tensor:
    settings = options.get("alpha") or AlphaSettings()
    assert isinstance(settings, AlphaSettings)
    expired = options.get("expired") or (lambda: False)
    return alpha_crown_rows(graph, batch.lower, batch.upper, batch.C, batch.d, settings,
                            expired, options.get("boxes_out"))  # type: ignore[arg-type]


METHODS: dict[str, Callable[..., Tensor]] = {
    "ibp": ibp_rows, "crown": crown, "alpha-crown": alpha_crown}


def row_lower_bounds(graph: Graph, batch: ProblemBatch, method: str, **options: object) -> Tensor:
    """Lower bounds (B, R) of every row by the named method."""
    with torch.no_grad():
        return METHODS[method](graph, batch, **options)
