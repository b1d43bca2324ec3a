"""Forward linear bounds: every node's value between two affine functions of the input.

For a model with few inputs (input splitting's regime) the backward pass that tightens an
intermediate node costs two rows per entry back through every earlier layer; on a net
3,200 wide that is seconds per domain.  The forward pass carries, for each node, a lower
and an upper affine function of the n input entries,

    Wl x + bl  <=  v(x)  <=  Wu x + bu      for every x in the domain's box,

where v is the node's floating-point value (its rounding noise included): n + 1 columns
per entry, pushed once through each layer.  Its bounds are looser than the backward
pass's (each node's relaxation is applied to both functions at once) and are intersected
with the interval ones; ``intermediate.compute`` uses them in place of the backward pass
where that would be costly.

Rules, by node (each sound for real arithmetic; rounding as below):

* a linear op with one variable input, ``y = L(h) + c``: with centre ``C = (L_h + U_h)/2``
  and radius ``R = (U_h - L_h)/2`` (``R >= 0`` on the box), ``L(h) = L(C) + L(h - C)`` and
  ``|L(h - C)| <= |L|(R)``, so ``y`` lies within ``L(C) + c -+ |L|(R)``, an affine
  function each (``|L|`` is ``abs_linear``; for an op whose weights have one sign s,
  ``|L| = s L``, and the two functions map straight through, swapped when s < 0);
* an elementwise op with lines ``a_l h + b_l <= f(h) <= a_u h + b_u`` on its input's
  interval: ``a_l+ L_h + a_l- U_h + b_l`` below and ``a_u+ U_h + a_u- L_h + b_u`` above;
* anything else (several variable inputs, an op that rounds relatively, lines that are not
  finite) ends the forward pass for that node and every node that reads it.

Rounding follows the backward pass's convention (docs/design-notes.md, "Floating point"):
each node's noise bound, sized with the model's unit roundoff plus twice the computation's,
widens both functions' constants, and the minimum over the box is taken less
``gamma(n+2) u`` of its terms' magnitudes, as ``backward.concretise`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from verifier.bounds.backward import NodeBounds
from verifier.graph import Node
from verifier.ops.base import Interval, Tensor, gamma

#: a node's backward pass is replaced by the forward bounds when it would touch more than
#: this many coefficient entries per domain (its rows times the entries of the nodes it
#: crosses): cheap backward passes (ACAS Xu's 50-wide layers) stay, as they are tighter
BACKWARD_BUDGET = 2_000_000
MAX_INPUTS = 16  # the forward pass runs for domains of at most this many input entries


@dataclass
class Form:
    """Lower and upper affine functions of the input: W (B, n, *shape), b (B, *shape)."""

    Wl: Tensor
    bl: Tensor
    Wu: Tensor
    bu: Tensor


def start(nb: NodeBounds, needed: set[str]) -> Form | None:
    """The input's form (the identity); None when the boxes have too many entries, or when
    no ``needed`` node's backward pass, over all its entries, would pass the budget (the
    forward pass, looser, would replace none: it costs time and buys little)."""
    B = nb.lower.shape[0]
    shape = nb.lower.shape[1:]
    n = math.prod(shape)
    if n > MAX_INPUTS:
        return None
    graph = nb.graph
    if not any(backward_cost(nb, graph.node(name), math.prod(graph.node(name).shape))
               > BACKWARD_BUDGET for name in needed if name != graph.input_name):
        return None
    eye = torch.eye(n, dtype=nb.lower.dtype, device=nb.lower.device)
    W = eye.reshape(1, n, *shape).expand(B, n, *shape)
    zero = torch.zeros_like(nb.lower)
    return Form(W, zero, W, zero)


def step(nb: NodeBounds, node: Node, forms: dict[str, Form | None]) -> Form | None:
    """The node's form from its input's (None where a rule above does not apply)."""
    variables = list(node.inputs)
    if len(variables) != 1 or forms.get(variables[0]) is None:
        return None
    if node.name in nb.relative:
        return None
    src = forms[variables[0]]
    assert src is not None
    op = node.op
    if op.linear:
        form = _linear(node, src)
    else:
        form = _elementwise(nb, node, src)
    if form is None:
        return None
    noise = nb.noise.get(node.name)
    if noise is not None:
        err = noise[0].reshape(form.bl.shape)
        form = Form(form.Wl, form.bl - err, form.Wu, form.bu + err)
    if not all(bool(torch.isfinite(t).all()) for t in (form.Wl, form.bl, form.Wu, form.bu)):
        return None
    return form


def _linear(node: Node, src: Form) -> Form | None:
    op: Any = node.op  # a linear op: forward, abs_linear or weight_sign
    B, n = src.Wl.shape[0], src.Wl.shape[1]
    in_shape = src.bl.shape[1:]
    zero = torch.zeros((1, *in_shape), dtype=src.bl.dtype, device=src.bl.device)
    c = op.forward(zero)  # L(0) + c, (1, *out)

    def lin(W: Tensor) -> Tensor:  # L on each column: (B, n, *in) -> (B, n, *out)
        out = op.forward(W.reshape(B * n, *in_shape)) - c
        return out.reshape(B, n, *out.shape[1:])

    sign = op.weight_sign(0) if not op.has_abs_linear() else None
    if sign is not None:
        lo_W, lo_b, hi_W, hi_b = (src.Wl, src.bl, src.Wu, src.bu) if sign > 0 else \
            (src.Wu, src.bu, src.Wl, src.bl)
        return Form(lin(lo_W), op.forward(lo_b), lin(hi_W), op.forward(hi_b))
    if not op.has_abs_linear():
        return None
    CW, Cb = (src.Wl + src.Wu) / 2, (src.bl + src.bu) / 2
    RW, Rb = (src.Wu - src.Wl) / 2, (src.bu - src.bl) / 2
    mW, mb = lin(CW), op.forward(Cb)
    rW = op.abs_linear(RW.reshape(B * n, *in_shape))
    rW = rW.reshape(B, n, *rW.shape[1:])
    rb = op.abs_linear(Rb)
    return Form(mW - rW, mb - rb, mW + rW, mb + rb)


def _elementwise(nb: NodeBounds, node: Node, src: Form) -> Form | None:
    op = node.op
    if not getattr(op, "elementwise", False):
        return None
    relaxation = op.relax([nb.box[node.inputs[0]]], nb.box[node.name])
    lines = relaxation.lines()
    if lines is None:
        return None
    a_l, b_l, a_u, b_u = (t.squeeze(1) for t in (lines.a_l, lines.b_l, lines.a_u, lines.b_u))
    if not all(bool(torch.isfinite(t).all()) for t in (a_l, b_l, a_u, b_u)):
        return None
    shape = src.bl.shape
    a_l, b_l, a_u, b_u = (t.expand(shape) for t in (a_l, b_l, a_u, b_u))
    lp, ln, up, un = a_l.clamp(min=0), a_l.clamp(max=0), a_u.clamp(min=0), a_u.clamp(max=0)
    Wl = lp.unsqueeze(1) * src.Wl + ln.unsqueeze(1) * src.Wu
    Wu = up.unsqueeze(1) * src.Wu + un.unsqueeze(1) * src.Wl
    return Form(Wl, lp * src.bl + ln * src.bu + b_l, Wu, up * src.bu + un * src.bl + b_u)


def concretise(nb: NodeBounds, form: Form) -> Interval:
    """The form's bounds over the boxes, less the rounding of the sums (as
    ``backward.concretise``)."""
    B, n = form.Wl.shape[0], form.Wl.shape[1]
    shape = form.bl.shape[1:]
    mid = ((nb.lower + nb.upper) / 2).reshape(B, n, *([1] * len(shape)))
    rad = ((nb.upper - nb.lower) / 2).reshape(B, n, *([1] * len(shape)))
    lo = (form.Wl * mid).sum(1) - (form.Wl.abs() * rad).sum(1) + form.bl
    hi = (form.Wu * mid).sum(1) + (form.Wu.abs() * rad).sum(1) + form.bu
    if nb.u:
        g = gamma(n + 2, nb.u_compute)
        lo = lo - g * ((form.Wl.abs() * (mid.abs() + rad)).sum(1) + form.bl.abs())
        hi = hi + g * ((form.Wu.abs() * (mid.abs() + rad)).sum(1) + form.bu.abs())
    return lo, hi


def backward_cost(nb: NodeBounds, node: Node, rows: int) -> int:
    """Coefficient entries a backward pass of ``rows`` rows from the node touches, per
    domain: both signs of each row over every node up to it."""
    graph = nb.graph
    crossed = sum(math.prod(n.shape) for n in graph.nodes[: graph.position(node.name) + 1])
    return 2 * rows * crossed
