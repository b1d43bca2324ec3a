"""Backward passes over windows: the bounds of a convolutional node's entries from
coefficients that live on the spatial window each node's part of the pass can reach.

A row of an intermediate bound (+e_i or -e_i at one entry of an (N, C, H, W) node) has
coefficients that are zero outside its receptive field at every node below; on a wide
feature map a dense pass spends nearly all its work on those zeros.  The rows of a tile of
positions (every channel) are bounded together here with coefficients held only on the
window of each node that the tile reaches (``Op.window_of_input``, unioned over a node's
users), and the result is the same lower bound as the dense pass's (same relaxations, same
rounding charges, the input box cut to its window).  Below an op without a window rule,
or a node that is not (N, C, H, W), the pass goes on over whole tensors (a generator's
first layers, a Gemm and a Reshape, are small anyway); a start node that is not (N, C, H,
W) or has no rule is not planned at all.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from verifier.bounds.backward import NodeBounds, concretise, rounding
from verifier.bounds.limits import check_memory
from verifier.graph import Graph
from verifier.ops.base import Interval, Tensor, Window
from verifier.ops.linear import bias_term

Plan = dict[str, Window | None]  # per node the pass reaches: its coefficients' window
#                                   (None: the whole tensor)

#: tiles per side of a node's map (fewer, larger tiles: fewer passes, wider windows)
TILES_PER_SIDE = 13


def plan(graph: Graph, start: str, tile: Window) -> Plan | None:
    """The window of every node the pass from ``tile`` of node ``start`` reaches, None for
    the nodes it crosses on whole tensors: those below an op without a window rule, or not
    (N, C, H, W), and all they reach.  None when the start node itself cannot be windowed
    (or a window would be empty: outputs only padding reaches)."""
    windows: dict[str, Window | None] = {start: tile}
    for node in reversed(graph.nodes[: graph.position(start) + 1]):
        if node.name not in windows:
            continue
        out = windows[node.name]
        inners = [node.op.window_of_input(k, out) if out is not None and
                  len(graph.shape(name)) == 4 else None
                  for k, name in enumerate(node.inputs)]
        if any(inner is not None and any(a >= b for a, b in inner) for inner in inners):
            return None
        if out is not None and None in inners:  # this op runs on whole tensors
            if node.name == start:
                return None
            windows[node.name] = out = None
            inners = [None] * len(inners)
        for name, inner in zip(node.inputs, inners, strict=True):
            if name not in windows:
                windows[name] = inner
            else:
                old = windows[name]
                windows[name] = None if old is None or inner is None else (
                    (min(old[0][0], inner[0][0]), max(old[0][1], inner[0][1])),
                    (min(old[1][0], inner[1][0]), max(old[1][1], inner[1][1])))
    return windows if graph.input_name in windows else None


def tiles(graph: Graph, start: str, rows: Tensor) -> list[tuple[Plan, Tensor]] | None:
    """The flat ``rows`` of node ``start`` grouped by tile of positions, each with its
    plan; None when the node's passes cannot run on windows."""
    shape = graph.node(start).shape
    if len(shape) != 4 or shape[0] != 1:  # (rows index one image's entries)
        return None
    _, C, H, W = shape
    th, tw = math.ceil(H / TILES_PER_SIDE), math.ceil(W / TILES_PER_SIDE)
    y, x = (rows % (H * W)) // W, rows % W
    key = (y // th) * math.ceil(W / tw) + x // tw
    groups = []
    for k in torch.unique(key).tolist():
        ty, tx = divmod(int(k), math.ceil(W / tw))
        tile = ((ty * th, min(H, ty * th + th)), (tx * tw, min(W, tx * tw + tw)))
        found = plan(graph, start, tile)
        if found is None:
            return None
        groups.append((found, rows[key == k]))
    return groups


def cost(graph: Graph, groups: list[tuple[Plan, Tensor]]) -> int:
    """Coefficient entries the passes of ``groups`` touch per domain, both signs of each
    row over each node's window (``forward.backward_cost``'s measure)."""
    total = 0
    for windows, rows in groups:
        entries = 0
        for name, within in windows.items():
            shape = graph.shape(name)
            entries += math.prod(shape) if within is None else math.prod(shape[:-2]) * (
                (within[0][1] - within[0][0]) * (within[1][1] - within[1][0]))
        total += 2 * len(rows) * entries
    return total


def unit_rows(shape: tuple[int, ...], idx: Tensor, window: Window, batch: int,
              dtype: torch.dtype) -> Tensor:
    """Rows +e_i then -e_i for the flat entries ``idx`` of a node of ``shape``, as
    coefficients over ``window``: (batch, 2k, N, C, h, w)."""
    _, C, H, W = shape
    (y0, y1), (x0, x1) = window
    k = len(idx)
    eye = torch.zeros(k, C, y1 - y0, x1 - x0, dtype=dtype, device=idx.device)
    eye[torch.arange(k), idx // (H * W), (idx % (H * W)) // W - y0, idx % W - x0] = 1
    A = torch.cat([eye, -eye]).unsqueeze(1)
    return A.unsqueeze(0).expand(batch, *A.shape)


def bound(nb: NodeBounds, start: str, A: Tensor, windows: Plan) -> Tensor:
    """Lower bound (B, R) of A . v_start over the input boxes, A (B, R, N, C, h, w) over
    ``windows[start]``: ``backward.bound``'s, from coefficients held on windows (on whole
    tensors where the plan says None)."""
    graph = nb.graph
    bias = A.new_zeros(A.shape[:2])
    pending = {start: A}
    for node in reversed(graph.nodes[: graph.position(start) + 1]):
        coeff = pending.pop(node.name, None)
        if coeff is None:
            continue
        check_memory()
        out = windows[node.name]
        coeff, charge = rounding(nb, node.name, coeff, out)
        bias = bias - charge
        if out is None:
            ins, b = nb.relaxation(node).backward(coeff)
        elif node.op.linear:
            ins, b = node.op.window_transpose(coeff, out), bias_term(node.op, coeff, out)
        else:  # elementwise: its relaxation over the window's bounds
            ins, b = node.op.relax([_cut(nb.box[i], out) for i in node.inputs],
                                   _cut(nb.box[node.name], out)).backward(coeff)
        bias = bias + b
        # no inputs: an op without a linear rule, met as its interval (the pass ends there)
        for k, (name, Ai) in enumerate(zip(node.inputs if ins else [], ins, strict=True)):
            if out is not None:
                inner = node.op.window_of_input(k, out)
                assert inner is not None
                Ai = _embed(Ai, inner, windows[name] or _whole(graph.shape(name)))
            pending[name] = pending[name] + Ai if name in pending else Ai
    A_x = pending.get(graph.input_name)
    if A_x is None:
        return bias
    within = windows[graph.input_name]
    if within is None:
        return concretise(nb, A_x, bias)
    box = _cut((nb.lower, nb.upper), within)
    return concretise(replace(nb, lower=box[0], upper=box[1]), A_x, bias)


def _whole(shape: tuple[int, ...]) -> Window:
    return (0, shape[-2]), (0, shape[-1])


def _cut(box: Interval, window: Window) -> Interval:
    (y0, y1), (x0, x1) = window
    return box[0][..., y0:y1, x0:x1], box[1][..., y0:y1, x0:x1]


def _embed(A: Tensor, inner: Window, outer: Window) -> Tensor:
    """Coefficients over ``inner`` placed in ``outer`` (which contains it), zeros around."""
    if inner == outer:
        return A
    (y0, y1), (x0, x1) = outer
    out = A.new_zeros(*A.shape[:-2], y1 - y0, x1 - x0)
    (a0, a1), (b0, b1) = inner
    out[..., a0 - y0:a1 - y0, b0 - x0:b1 - x0] = A
    return out
