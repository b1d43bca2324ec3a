"""Linear bound propagation: CROWN and alpha-CROWN (DESIGN.md: Bounds).

Backward pass: a lower bound of ``A . v_s`` for a node s is obtained by walking the graph
from s towards the input, replacing each node by linear bounds in terms of its inputs:
linear ops exactly (their transpose), nonlinear elementwise ops by relaxation lines
``a_l x + b_l <= f(x) <= a_u x + b_u`` (positive coefficients take the lower line, negative
ones the upper), products of two variables by McCormick planes, and any other op by its
interval (concretised where it stands).  At the input box [l, u] the linear function
``A_x . x + c`` is minimised in closed form: ``A_x . mid - |A_x| . rad + c``.

Intermediate bounds (the inputs of every nonlinear op) are computed first, in topological
order, by the same backward pass started at that node with rows +I and -I, and intersected
with interval bounds.  alpha-CROWN then optimises the relaxation slopes of every nonlinear
op for the final rows by projected gradient ascent on the bound (Adam), keeping the best
bound seen per row: every iterate is a sound bound, so the maximum is too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from verifier.graph import Graph, Node, round_box
from verifier.ops.base import Tensor, gamma, nan_to
from verifier.ops.bilinear import VarMatMul, VarMul
from verifier.ops.nonlinear import LeakyRelu, Relu, ScalarOp
from verifier.ops.relax import Lines, chord_slope, convexity_on, default_slopes, relax, slope_range
from verifier.ops.shape import (
    Concat,
    Expand,
    Gather,
    Identity,
    Pad,
    Reshape,
    Slice,
    SplitPart,
    Transpose,
)

EXACT_MOVES = (Identity, Reshape, Transpose, Concat, Slice, SplitPart, Gather, Pad, Expand)
ROW_CHUNK = 1024


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


def _safe_mul(a: Tensor, b: Tensor) -> Tensor:
    """a * b with 0 * inf = 0 (a coefficient of zero ignores an infinite intercept)."""
    return torch.where(a == 0, torch.zeros_like(a), a * b)


def _sum_to(x: Tensor, shape: torch.Size) -> Tensor:
    """Sum broadcast dims of x (B, R, *s') down to (B, R, *shape[2:])."""
    extra = x.dim() - len(shape)
    if extra > 0:
        x = x.sum(dim=tuple(range(2, 2 + extra)))
    dims = tuple(i for i in range(2, x.dim()) if shape[i] == 1 and x.shape[i] != 1)
    return x.sum(dim=dims, keepdim=True) if dims else x


class Interrupted(Exception):
    """The deadline passed or the run was cancelled in the middle of a bound computation."""


class Bounder:
    """Bounds of one batch of input boxes; holds the intermediate bounds it computes."""

    def __init__(self, graph: Graph, lower: Tensor, upper: Tensor):
        self.graph = graph
        self.B = lower.shape[0]
        self.lower = graph.to_input_shape(lower)
        self.upper = graph.to_input_shape(upper)
        self.box: dict[str, tuple[Tensor, Tensor]] = {graph.input_name: (self.lower, self.upper)}
        self.lines: dict[str, Lines] = {}  # CROWN's lines per nonlinear node (cache)
        self.unstable: dict[str, Tensor] = {}  # ReLU entries with l < 0 < u, beside lines
        self.index = {n.name: i for i, n in enumerate(graph.nodes)}
        # alpha-CROWN: slopes per (start node, chunk, nonlinear node), created on first use
        self.alphas: dict[tuple[str, int, str], tuple[Tensor, Tensor]] | None = None
        self.alpha_budget = 0
        self.final_rows = 0
        self.chunk = 0
        self.rows_of_node: dict[str, Tensor] = {}
        # branch-and-bound: per-domain limits of split inputs, and the domains made empty
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self.infeasible = torch.zeros(self.B, dtype=torch.bool, device=lower.device)
        # coefficients recorded by the last backward pass from the output (for branching)
        self.record = False
        self.recorded: dict[str, Tensor] = {}
        self.last_A_x: Tensor | None = None
        self.expired: Callable[[], bool] = lambda: False
        # beta-CROWN multipliers of the split constraints, per split node: (b_lo, b_hi)
        self.betas: dict[str, tuple[Tensor, Tensor]] | None = None
        # floating point: the unit roundoff rounding noise is sized with (0: none), and
        # per node the bound on its noise (B, *shape)
        self.u = graph.rounding(lower.dtype)
        self.u_compute = torch.finfo(lower.dtype).eps / 2
        self.noise: dict[str, tuple[Tensor, bool]] = {}
        self.irregular: set[str] = set()  # ReLU nodes with non-finite input bounds
        self.relative: dict[str, float] = {}  # nodes that round relatively: k u

    # -- intermediate bounds ---------------------------------------------------------
    def needed(self) -> set[str]:
        """Nodes whose bounds a relaxation needs: inputs of nonlinear ops."""
        out = set()
        for node in self.graph.nodes:
            if not node.op.linear:
                out.update(node.inputs)
        return out

    def compute_intermediate(self, use_crown: bool = True,
                             reuse: dict[str, tuple[Tensor, Tensor]] | None = None,
                             before: int = 0) -> None:
        """Bounds of every node: IBP, tightened by CROWN for the inputs of nonlinear ops.
        ``reuse`` gives bounds valid over these boxes (branch-and-bound: the root's, valid
        on every subdomain): every node's bounds are intersected with them, and the nodes at
        index < ``before`` (before every split) take them as they are."""
        needed = self.needed()
        crowned = {self.graph.input_name}
        self.box = {self.graph.input_name: (self.lower, self.upper)}
        for i, node in enumerate(self.graph.nodes):
            known = reuse.get(node.name) if reuse is not None else None
            ins = [self.box[i] for i in node.inputs]
            if known is not None and i < before:
                self._note_rounding(node, ins, known)
                self.box[node.name] = self._apply_splits(node.name, *known)
                crowned.add(node.name)
                continue
            lo, hi = self._note_rounding(node, ins, node.op.ibp(*ins))
            if known is not None:
                lo, hi = torch.fmax(lo, known[0]), torch.fmin(hi, known[1])  # NaN: the other
            self.box[node.name] = self._apply_splits(node.name, lo, hi)
            if not use_crown or node.name not in needed or node.name == self.graph.output_name:
                continue
            if isinstance(node.op, EXACT_MOVES) and all(i in crowned for i in node.inputs):
                crowned.add(node.name)
                continue
            if self._all_relu_stable(node):
                continue
            if self.expired():
                raise Interrupted
            tight = self.node_bounds(node.name, lo, hi)
            self.box[node.name] = self._apply_splits(node.name, *tight)
            crowned.add(node.name)

    def _note_rounding(self, node: Node, ins: list[tuple[Tensor, Tensor]],
                       out: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Record the bound on node's rounding noise (its floating-point evaluation lies
        within it of the exact op on the floating-point inputs) and return ``out`` widened
        by it; the backward pass charges ``|A| . noise`` at every node it crosses."""
        if not self.u:
            return out
        with torch.no_grad():
            detached = [(lo.detach(), hi.detach()) for lo, hi in ins]
            err = node.op.rounding_error(detached, (out[0].detach(), out[1].detach()), self.u)
        ku = node.op.relative_rounding(detached, self.u)
        if ku:
            self.relative[node.name] = ku
        else:
            self.relative.pop(node.name, None)
        widened = round_box(out, err, ku, self.graph.largest_finite)
        if err is None:
            self.noise.pop(node.name, None)
            return widened
        err = err.expand_as(out[0])
        # a coefficient-preserving op (x + c) whose input is used by it alone: the input's
        # noise meets the same |A| here, so it is charged here, in one term instead of two
        source = node.inputs[0] if node.op.passes_coefficients() else None
        if source in self.noise and self.graph.users[source] == [node.name]:
            err = err + self.noise.pop(source)[0].reshape(err.shape)
        self.noise[node.name] = (err.reshape(err.shape[0], -1, 1).to(out[0].dtype),
                                 bool(torch.isfinite(err).all()))
        return widened

    def _apply_splits(self, name: str, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """Branch-and-bound splits of a nonlinearity's input: per-domain limits (lo', hi')
        intersected with the bounds.  A domain whose limits cross its bounds is empty
        (recorded in ``infeasible``)."""
        split = self.splits.get(name)
        if split is None:
            return lo, hi
        lo, hi = torch.maximum(lo, split[0]), torch.minimum(hi, split[1])
        empty = (lo > hi).flatten(1).any(dim=1)
        self.infeasible = self.infeasible | empty
        return lo, torch.maximum(hi, lo)

    def _all_relu_stable(self, node: Node) -> bool:
        """Every user is a ReLU and no entry crosses 0: CROWN bounds would change nothing."""
        if not self._relu_users(node.name):
            return False
        lo, hi = self.box[node.name]
        return bool(((lo >= 0) | (hi <= 0)).all())

    def node_bounds(self, name: str, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """CROWN bounds of node ``name`` intersected with (lo, hi).  When every user is a
        ReLU only unstable entries (lo < 0 < hi somewhere in the batch) get rows: a stable
        ReLU's relaxation is exact whatever the bounds."""
        shape = self.graph.node(name).shape
        n = math.prod(shape)
        lo_f, hi_f = lo.reshape(self.B, n), hi.reshape(self.B, n)
        rows_idx = self.rows_of_node.get(name)
        if rows_idx is None:  # fixed on first use, so alpha shapes stay put
            if self._relu_users(name):
                rows_idx = ((lo_f < 0) & (hi_f > 0)).any(dim=0).nonzero().flatten()
            else:
                rows_idx = torch.arange(n, device=lo.device)
            self.rows_of_node[name] = rows_idx
        new_lo, new_hi = lo_f.clone(), hi_f.clone()
        half = ROW_CHUNK // 2
        for chunk, start in enumerate(range(0, len(rows_idx), half)):
            if self.expired():
                raise Interrupted
            self.chunk = chunk
            idx = rows_idx[start:start + half]
            k = len(idx)
            eye = torch.zeros(k, n, dtype=lo.dtype, device=lo.device)
            eye[torch.arange(k), idx] = 1
            A = torch.cat([eye, -eye]).reshape(1, 2 * k, *shape).expand(self.B, -1, *shape)
            lb = self.bound(name, A)
            new_lo[:, idx] = torch.fmax(lo_f[:, idx], lb[:, :k])  # a NaN side is ignored
            new_hi[:, idx] = torch.fmin(hi_f[:, idx], -lb[:, k:])
        self.chunk = 0
        return new_lo.reshape(lo.shape), new_hi.reshape(hi.shape)

    def _relu_users(self, name: str) -> bool:
        from verifier.ops.nonlinear import Relu

        users = [self.graph.node(u) for u in self.graph.users[name]]
        return bool(users) and all(isinstance(u.op, Relu) for u in users)

    # -- the backward pass -----------------------------------------------------------
    def bound(self, start: str, A: Tensor) -> Tensor:
        """Lower bound (B, R) of A . v_start over the input box, A: (B, R, *shape)."""
        A_x, bias = self.backward(start, A)
        if start == self.graph.output_name:
            self.last_A_x = A_x
        if A_x is None:
            return bias
        mid = ((self.lower + self.upper) / 2).unsqueeze(1)
        rad = ((self.upper - self.lower) / 2).unsqueeze(1)
        low = (A_x * mid).flatten(2).sum(-1) - (A_x.abs() * rad).flatten(2).sum(-1) + bias
        if self.u:  # the rounding of mid, rad and of this sum of n products
            n = math.prod(self.lower.shape[1:])
            low = low - gamma(n + 2, self.u_compute) * (
                A_x.abs() * (mid.abs() + rad)).flatten(2).sum(-1)
        return low

    def backward(self, start: str, A: Tensor) -> tuple[Tensor | None, Tensor]:
        pending: dict[str, Tensor] = {start: A}
        bias = A.new_zeros(A.shape[:2])
        if start == self.graph.input_name:
            return A, bias
        for node in reversed(self.graph.nodes[: self.index[start] + 1]):
            coeff = pending.pop(node.name, None)
            if coeff is None:
                continue
            if self.record and start == self.graph.output_name:
                self.recorded[node.name] = coeff.detach()
            if self.betas is not None and start == self.graph.output_name and \
                    node.name in self.betas:
                coeff, extra = self._beta_terms(node.name, coeff)
                bias = bias + extra
            ku = self.relative.get(node.name)
            if ku is not None:  # v = f (1 + delta), f >= 0, |delta| <= ku: A v >= A' f
                coeff = coeff.clamp(min=0) * (1 - ku) + coeff.clamp(max=0) * (1 + ku)
            noise = self.noise.get(node.name)
            if noise is not None:  # v = op(inputs) + eta with |eta| <= noise
                bias = bias - self._noise_term(coeff, noise)
            ins, b = self._rule(node, coeff, start)
            bias = bias + b
            for name, Ai in zip(node.inputs if ins else [], ins, strict=True):
                pending[name] = pending[name] + Ai if name in pending else Ai
        return pending.get(self.graph.input_name), bias

    @staticmethod
    def _noise_term(A: Tensor, noise: tuple[Tensor, bool]) -> Tensor:
        """(B, R): |A| . noise, one batched matrix product (0 where A is 0, even against
        an infinite noise bound).  ``noise``: the bound as (B, n, 1) and whether finite."""
        flat = A.abs().flatten(2)
        column, finite = noise
        if finite:
            return torch.bmm(flat, column).squeeze(-1)
        return _safe_mul(flat, column.transpose(1, 2)).sum(-1)

    def _beta_terms(self, name: str, A: Tensor) -> tuple[Tensor, Tensor]:
        """beta-CROWN: on a domain where z >= c_lo and z <= c_hi hold (branch-and-bound
        splits), f >= f - b_lo (z - c_lo) - b_hi (c_hi - z) for any b_lo, b_hi >= 0, so the
        bound may add these terms; their multipliers are optimised like the slopes."""
        b_lo, b_hi = (t.clamp(min=0) for t in self.betas[name])  # type: ignore[index]
        c_lo, c_hi = (t.unsqueeze(1) for t in self.splits[name])
        has_lo, has_hi = torch.isfinite(c_lo), torch.isfinite(c_hi)
        b_lo = torch.where(has_lo, b_lo, 0.0)
        b_hi = torch.where(has_hi, b_hi, 0.0)
        A = A - b_lo + b_hi
        extra = b_lo * torch.where(has_lo, c_lo, 0.0) - b_hi * torch.where(has_hi, c_hi, 0.0)
        return A, extra.flatten(2).sum(-1)

    def _rule(self, node: Node, A: Tensor, start: str) -> tuple[list[Tensor], Tensor]:
        op = node.op
        if op.linear:
            return op.backward(A), op.bias_term(A)  # type: ignore[attr-defined]
        if isinstance(op, Relu) or (isinstance(op, LeakyRelu) and 0 <= op.slope <= 1):
            return self._relu_rule(node, A, start)
        if isinstance(op, ScalarOp):
            return self._scalar_rule(node, A, start)
        if isinstance(op, VarMul):
            return self._mul_rule(node, A)
        if isinstance(op, VarMatMul):
            return self._matmul_rule(node, A)
        lo, hi = self.box[node.name]  # no linear rule: bound the node by its interval
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        term = _safe_mul(pos, lo.unsqueeze(1)) + _safe_mul(neg, hi.unsqueeze(1))
        return [], term.flatten(2).sum(-1)

    def _scalar_lines(self, node: Node, start: str) -> Lines:
        op = node.op
        assert isinstance(op, ScalarOp)
        lo, hi = op.domain(*self.box[node.inputs[0]])
        alpha = self._alpha(node, start, lo, hi)
        if alpha is not None:
            t_l, t_u = alpha
            smin, smax = slope_range(op.scalar_shape(), lo, hi)
            smin, smax = smin.unsqueeze(1), smax.unsqueeze(1)
            a_l = smin + t_l.clamp(0, 1) * (smax - smin)
            a_u = smin + t_u.clamp(0, 1) * (smax - smin)
            # the chord is the best line on the side where f curves away from it
            chord = chord_slope(op.scalar_shape(), lo, hi).unsqueeze(1)
            convex, concave = convexity_on(op.scalar_shape(), lo.detach(), hi.detach())
            a_l = torch.where(concave.unsqueeze(1), chord, a_l)
            a_u = torch.where(convex.unsqueeze(1), chord, a_u)
            return relax(op.scalar_shape(), lo.unsqueeze(1), hi.unsqueeze(1), a_l, a_u)
        lines = self.lines.get(node.name)
        if lines is None:
            with torch.no_grad():
                raw = relax(op.scalar_shape(), lo, hi)
            lines = Lines(*(t.unsqueeze(1) for t in (raw.a_l, raw.b_l, raw.a_u, raw.b_u)))
            self.lines[node.name] = lines
        return lines

    def _alpha(self, node: Node, start: str, lo: Tensor, hi: Tensor
               ) -> tuple[Tensor, Tensor] | None:
        """This (start, chunk, node)'s slope parameters in [0, 1], made on first use from
        CROWN's default slopes, or None when alphas are off or would take too much memory."""
        if self.alphas is None:
            return None
        key = (start, self.chunk, node.name)
        found = self.alphas.get(key)
        if found is not None or key[0] == "":
            return found
        rows = self._rows_of(start)
        if rows * math.prod(node.shape) * self.B > self.alpha_budget and \
                start != self.graph.output_name:
            return None
        shape = node.op.scalar_shape()  # type: ignore[attr-defined]
        with torch.no_grad():
            a_l, a_u = default_slopes(shape, lo, hi)
            smin, smax = slope_range(shape, lo, hi)
            if not bool((smax - smin > 1e-9).any()):
                return None
            span = (smax - smin).clamp(min=1e-12)
            t = [((a - smin) / span).clamp(0, 1).unsqueeze(1).expand(self.B, rows, *node.shape)
                 for a in (a_l, a_u)]
        # a ReLU's upper line is the chord whatever the slope: only its lower slope is free
        pair = (t[0].clone().requires_grad_(True),
                t[1].clone().requires_grad_(not isinstance(node.op, (Relu, LeakyRelu))))
        self.alphas[key] = pair
        return pair

    def _rows_of(self, start: str) -> int:
        if start == self.graph.output_name:
            return self.final_rows
        n = len(self.rows_of_node[start])
        return 2 * min(ROW_CHUNK // 2, n - self.chunk * (ROW_CHUNK // 2))

    def _relu_rule(self, node: Node, A: Tensor, start: str) -> tuple[list[Tensor], Tensor]:
        """ReLU and LeakyRelu by their closed-form lines (b_l is zero where the input's
        bounds are finite)."""
        ln = self.relu_lines(node, start)
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        if node.name in self.irregular:  # constant lines, possibly infinite intercepts
            bias = _safe_mul(pos, ln.b_l) + _safe_mul(neg, ln.b_u)
            return [pos * ln.a_l + neg * ln.a_u], bias.flatten(2).sum(-1)
        return [pos * ln.a_l + neg * ln.a_u], (neg * ln.b_u).flatten(2).sum(-1)

    def relu_lines(self, node: Node, start: str) -> Lines:
        """ReLU and LeakyRelu (slope s in [0, 1] below 0): the general rule's lines in closed
        form, with fewer ops and an exact gradient (the general rule's intercept, a minimum
        over candidate points, ties at the slopes' ends and averages one-sided derivatives
        there).  Unstable (l < 0 < u): upper chord, lower a x with a in [s, 1] (CROWN: 1 when
        u > -l, else s; alpha-CROWN: this (start, chunk, node)'s slopes); stable: the line of
        the active piece.  Shapes (B, 1 or rows, *shape)."""
        s = float(getattr(node.op, "slope", 0.0))
        lines = self.lines.get(node.name)
        if lines is None:
            lo, hi = self.box[node.inputs[0]]
            unstable = (lo < 0) & (hi > 0)
            stable = torch.where(lo >= 0, 1.0, s).to(lo.dtype)
            width = torch.where(unstable, hi - lo, torch.ones_like(hi))
            a_u = torch.where(unstable, (hi - s * lo) / width, stable)
            b_u = torch.where(unstable, lo * (s - a_u), torch.zeros_like(lo))
            a_l = torch.where(unstable, torch.where(hi > -lo, 1.0, s).to(lo.dtype), stable)
            b_l = torch.zeros_like(lo)
            bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
            if bool(bad.any()):  # infinite or NaN bounds: the constant lines f(lo), f(hi)
                self.irregular.add(node.name)
                unstable = unstable & ~bad
                f_lo, f_hi = (nan_to(torch.where(t >= 0, t, s * t if s else 0.0 * t), fill)
                              for t, fill in ((lo, -math.inf), (hi, math.inf)))
                f_lo = torch.where(lo == -math.inf, -math.inf if s else 0.0, f_lo)
                a_l, a_u = (torch.where(bad, 0.0, a) for a in (a_l, a_u))
                b_l = torch.where(bad, f_lo, b_l)
                b_u = torch.where(bad, f_hi, b_u)
            lines = Lines(*(t.unsqueeze(1) for t in (a_l, b_l, a_u, b_u)))
            self.lines[node.name] = lines
            self.unstable[node.name] = unstable.unsqueeze(1)
        alpha = self._alpha(node, start, *self.box[node.inputs[0]])
        if alpha is None:
            return lines
        a_l = torch.where(self.unstable[node.name], s + (1 - s) * alpha[0].clamp(0, 1),
                          lines.a_l)
        return Lines(a_l, lines.b_l, lines.a_u, lines.b_u)

    def _scalar_rule(self, node: Node, A: Tensor, start: str) -> tuple[list[Tensor], Tensor]:
        ln = self._scalar_lines(node, start)
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        A_in = pos * ln.a_l + neg * ln.a_u
        bias = _safe_mul(pos, ln.b_l) + _safe_mul(neg, ln.b_u)
        return [A_in], bias.flatten(2).sum(-1)

    def _aligned_box(self, name: str, rank: int) -> tuple[Tensor, Tensor]:
        from verifier.ops.base import align

        lo, hi = self.box[name]
        return align(lo, rank).unsqueeze(1), align(hi, rank).unsqueeze(1)

    def _mul_rule(self, node: Node, A: Tensor) -> tuple[list[Tensor], Tensor]:
        """x*y >= yc x + xc y - xc yc - rx ry  and  <= yc x + xc y - xc yc + rx ry."""
        rank = len(node.shape)
        lx, ux = self._aligned_box(node.inputs[0], rank)
        ly, uy = self._aligned_box(node.inputs[1], rank)
        xc, rx, yc, ry = (lx + ux) / 2, (ux - lx) / 2, (ly + uy) / 2, (uy - ly) / 2
        A_x = _sum_to(A * yc, torch.Size((0, 0, *self._shape(node.inputs[0]))))
        A_y = _sum_to(A * xc, torch.Size((0, 0, *self._shape(node.inputs[1]))))
        bias = -(A * (xc * yc)) - A.abs() * (rx * ry)
        return [A_x, A_y], bias.flatten(2).sum(-1)

    def _matmul_rule(self, node: Node, A: Tensor) -> tuple[list[Tensor], Tensor]:
        """Z = X Y, every product x y bounded by the McCormick planes through x's lower end:
        x y >= ly x + lx y - lx ly  and  x y <= uy x + lx y - lx uy.  Both planes give y the
        slope lx, so y's coefficient does not depend on the sign of A.  On the shared vit
        model these planes gave tighter CROWN bounds on every row than the centre plane
        (their average with the other pair) and than the other pairs (bench/bounds.py)."""
        lx, ux = (t.unsqueeze(1) for t in self.box[node.inputs[0]])
        ly, uy = (t.unsqueeze(1) for t in self.box[node.inputs[1]])
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        A_x = pos @ ly.transpose(-1, -2) + neg @ uy.transpose(-1, -2)
        A_y = lx.transpose(-1, -2) @ A
        bias = -(pos * (lx @ ly)) - (neg * (lx @ uy))
        return [A_x, A_y], bias.flatten(2).sum(-1)

    def _shape(self, name: str) -> tuple[int, ...]:
        if name == self.graph.input_name:
            return self.graph.input_shape
        return self.graph.node(name).shape


def crown_rows(graph: Graph, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor,
               bounder: Bounder | None = None,
               expired: Callable[[], bool] = lambda: False) -> Tensor:
    """CROWN lower bounds (B, R) of C y - d over the boxes (raises Interrupted when
    ``expired`` turns true in the middle)."""
    b = bounder or Bounder(graph, lower, upper)
    if bounder is None:
        b.expired = expired
        b.compute_intermediate()
    A = C.reshape(C.shape[0], C.shape[1], *graph.output_shape)
    return b.bound(graph.output_name, A) - d


def alpha_crown_rows(graph: Graph, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor,
                     settings: AlphaSettings = AlphaSettings(),
                     expired: Callable[[], bool] = lambda: False,
                     boxes_out: dict[str, tuple[Tensor, Tensor]] | None = None) -> Tensor:
    """alpha-CROWN: CROWN's bound, then the slopes of every nonlinear op optimised, for the
    final rows and for each intermediate bound, on the final bound; never looser.
    ``boxes_out`` receives the tightest bounds of every node met (for branch-and-bound)."""
    b = Bounder(graph, lower, upper)
    b.expired = expired
    b.compute_intermediate()
    tightest: dict[str, tuple[Tensor, Tensor]] = {}
    _tighten(tightest, b.box)
    if boxes_out is not None:
        boxes_out.update(tightest)
    best = crown_rows(graph, lower, upper, C, d, b).detach()
    if (settings.early_stop and (best > 0).all()) or settings.iterations == 0:
        return best
    R = C.shape[1]
    A = C.reshape(C.shape[0], R, *graph.output_shape)
    b.alphas, b.final_rows, b.alpha_budget = {}, R, settings.memory_budget
    b.expired = expired
    holder = [best]
    try:
        _optimise(b, A, d, holder, settings, tightest)
    except Interrupted:
        pass
    if boxes_out is not None:
        boxes_out.update(tightest)  # CROWN's boxes, tightened by every iteration
    b.alphas = None
    return holder[0]


def _tighten(tightest: dict[str, tuple[Tensor, Tensor]],
             box: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Intersect ``tightest`` with ``box`` node by node (detached; both sound, so is this)."""
    for name, (lo, hi) in box.items():
        lo, hi = lo.detach(), hi.detach()
        old = tightest.get(name)
        tightest[name] = (lo, hi) if old is None else \
            (torch.fmax(lo, old[0]), torch.fmin(hi, old[1]))


class Adam:
    """Adam (Kingma and Ba, 2015) on a growing set of tensors, updated in place with foreach
    ops.  Not torch.optim.Adam: its first use imports torch's compiler stack (1-2 s, more
    under load, and not interruptible), which a deadline or a quick first bound cannot
    afford.  Tensors added later start their own step count, as in torch's Adam."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.groups: list[dict[str, Any]] = []
        self._known: set[int] = set()

    def add(self, params: list[Tensor]) -> None:
        new = [p for p in params if p.requires_grad and id(p) not in self._known]
        if new:
            self._known.update(id(p) for p in new)
            self.groups.append({"params": new, "m": [torch.zeros_like(p) for p in new],
                                "v": [torch.zeros_like(p) for p in new], "t": 0})

    def zero_grad(self) -> None:
        for group in self.groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group in self.groups:
            live = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            if not live:
                continue
            params = [group["params"][i] for i in live]
            grads = [p.grad for p in params]
            m = [group["m"][i] for i in live]
            v = [group["v"][i] for i in live]
            group["t"] += 1
            t = group["t"]
            torch._foreach_mul_(m, self.b1)
            torch._foreach_add_(m, grads, alpha=1 - self.b1)
            torch._foreach_mul_(v, self.b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - self.b2)
            denom = torch._foreach_div(v, 1 - self.b2 ** t)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(params, m, denom, value=-self.lr / (1 - self.b1 ** t))


def _optimise(b: Bounder, A: Tensor, d: Tensor, holder: list[Tensor],
              settings: AlphaSettings, tightest: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Adam on the slope parameters; ``holder[0]`` keeps the best bound per row so far.

    Two phases: every slope (final rows' and each intermediate bound's) on the final bound,
    recording the tightest bound of every intermediate node met on the way (each is sound, so
    their intersection is); then the final rows' slopes alone over those tightest bounds, a
    pass from the output only, so its iterations are cheap."""
    graph = b.graph

    def joint() -> Tensor:
        b.lines = {}
        b.compute_intermediate()
        _tighten(tightest, b.box)
        return b.bound(graph.output_name, A) - d

    _adam(b, joint, holder, settings, settings.iterations + 1)
    if settings.refine_iterations <= 0 or b.expired() or not tightest or b.alphas is None:
        return
    b.box = {name: (lo, torch.maximum(hi, lo)) for name, (lo, hi) in tightest.items()}
    b.lines = {}
    b.alphas = {k: v for k, v in b.alphas.items() if k[0] == graph.output_name}
    _adam(b, lambda: b.bound(graph.output_name, A) - d, holder, settings,
          settings.refine_iterations + 1)


def _adam(b: Bounder, bound: Callable[[], Tensor], holder: list[Tensor],
          settings: AlphaSettings, iterations: int) -> None:
    """``iterations`` evaluations of ``bound()``, each followed by an Adam step on the slopes
    (clamped to [0, 1]) unless it was the last; ``holder[0]`` keeps the best bound per row."""
    opt = Adam(settings.lr)
    with torch.enable_grad():
        for step in range(iterations):
            if b.expired():
                break
            lb = bound()
            best = torch.fmax(holder[0], lb.detach())
            holder[0] = best
            if (settings.early_stop and (best > 0).all()) or step == iterations - 1:
                break
            assert b.alphas is not None
            params = [t for pair in b.alphas.values() for t in pair if t.requires_grad]
            if not params:
                break
            opt.add(params)
            rows = (best <= 0) if settings.early_stop else torch.ones_like(best, dtype=torch.bool)
            opt.zero_grad()
            (-(lb * rows).sum()).backward()
            opt.step()
            opt.lr *= settings.lr_decay  # decay the step size, as in alpha-CROWN
            with torch.no_grad():
                for t in params:
                    t.clamp_(0, 1)


def optimise_final(b: Bounder, C: Tensor, d: Tensor, iterations: int, lr: float = 0.1,
                   expired: Callable[[], bool] = lambda: False) -> Tensor:
    """Bound of C y - d with the intermediate bounds held fixed, tightened by optimising the
    final rows' slopes (alpha) and the split constraints' multipliers (beta) by Adam.
    Every iterate is sound; the best per row is returned."""
    graph = b.graph
    R = C.shape[1]
    A = C.reshape(C.shape[0], R, *graph.output_shape)
    with torch.no_grad():
        best = b.bound(graph.output_name, A) - d
    if iterations <= 0:
        return best
    b.betas = {name: tuple(torch.zeros(b.B, R, *lim[0].shape[1:], dtype=A.dtype,  # type: ignore
                                       device=A.device, requires_grad=True) for _ in range(2))
               for name, lim in b.splits.items()}
    b.alphas, b.final_rows, b.alpha_budget = {}, R, 0
    opt = Adam(lr)
    with torch.enable_grad():
        for _ in range(iterations):
            if expired():
                break
            lb = b.bound(graph.output_name, A) - d
            best = torch.fmax(best, lb.detach())
            params = [t for pair in b.alphas.values() for t in pair]
            params += [t for pair in b.betas.values() for t in pair]
            if not params:
                break
            opt.add(params)
            opt.zero_grad()
            (-lb[best <= 0].sum()).backward()
            opt.step()
            with torch.no_grad():
                for t in b.alphas.values():
                    t[0].clamp_(0, 1)
                    t[1].clamp_(0, 1)
                for pair in b.betas.values():
                    for beta in pair:
                        beta.clamp_(min=0)
        with torch.no_grad():
            best = torch.fmax(best, b.bound(graph.output_name, A) - d)
    b.alphas, b.betas = None, None
    return best
