"""Intermediate bounds: every node's bounds over a batch of input boxes, as a value.

In topological order, each node gets its interval bounds (IBP from its inputs' bounds,
widened by its rounding noise); the inputs of nonlinear ops are then tightened by the
backward pass started at that node with rows +I and -I, intersected with the interval
bounds (both sound, so their meet is).  The backward pass is skipped where it cannot help:
a node that only moves entries of nodes whose bounds are already linear ones, an op whose
interval bounds are exact (``Op.ibp_exact``), and entries to which no user's relaxation is
sensitive (``Op.insensitive``: a stable ReLU's lines are exact whatever its bounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from verifier.bounds import forward, window
from verifier.bounds.backward import NodeBounds, Slopes, Splits, bound
from verifier.bounds.limits import Interrupted, check_memory, row_chunk
from verifier.graph import Graph, Node, round_box
from verifier.ops.base import Interval, Tensor

ROW_CHUNK = 1024
#: CROWN bounds a node's entries domain by domain (``_pair_bounds``) where the (domain,
#: entry) pairs some user is sensitive to are at most this share of the batch's rows times
#: its domains (the rows of any domain, in every domain): input splitting's domains
#: differ in which neurons are unstable
RAGGED_SHARE = 0.5
#: node entries a batch of (domain, entry) pairs may hold in its domains' bounds at once
PAIR_ENTRIES = 1 << 24
#: pairs per pass below which (big models: every pair copies its domain's bounds) the
#: whole batch's passes, which share them, run instead
MIN_PAIR_CHUNK = 256


def never() -> bool:
    return False


@dataclass(frozen=True)
class Known:
    """Bounds known beforehand, by node.  ``reuse``: valid over these boxes (branch-and-
    bound: the root's, valid on every subdomain), intersected with each node's, and taken as
    they are by the nodes at index < ``before`` (before every split).  ``fixed``: bounds
    that stand in for the backward pass where it would run (intersected with the interval
    ones)."""

    reuse: dict[str, Interval] | None = None
    before: int = 0
    fixed: dict[str, Interval] | None = None


def compute(graph: Graph, lower: Tensor, upper: Tensor, *, use_crown: bool = True,
            splits: Splits | None = None, known: Known = Known(),
            slopes: Slopes | None = None, stop: Callable[[], bool] = never,
            loosen: Callable[[str, Interval], Interval] | None = None,
            reach: dict[str, Tensor] | None = None,
            backward_budget: float = forward.BACKWARD_BUDGET) -> NodeBounds:
    """Bounds of every node over the boxes ``lower``/``upper`` (B, n): IBP, tightened by the
    backward pass for the inputs of nonlinear ops (``slopes``: alpha-CROWN's parameters for
    those passes), within branch-and-bound's split limits.  ``loosen`` widens the bounds
    of each input of a nonlinear op before later nodes use them (proofs: see prove.py).
    ``reach`` (see ``reached``): only the entries it holds get backward passes, the rest
    keep their interval bounds.  Where forward bounds are at hand, a backward pass costing
    more than ``backward_budget`` coefficient entries per domain is left to them.  Raises
    Interrupted once ``stop()`` holds."""
    nb = _empty(graph, graph.to_input_shape(lower), graph.to_input_shape(upper))
    needed = {name for node in graph.nodes if not node.op.linear for name in node.inputs}
    crowned = {graph.input_name}
    limits = splits or {}
    # forward bounds for few inputs (not for proofs: the checker re-derives backward ones)
    first = forward.start(nb, needed) if use_crown and loosen is None else None
    forms: dict[str, forward.Form | None] = {graph.input_name: first}
    for i, node in enumerate(graph.nodes):
        if loosen is not None and i > 0:
            _loosen(nb, graph.nodes[i - 1].name, needed, limits, loosen)
        check_memory()
        if stop():  # every node: forward forms of a big node can take seconds too
            raise Interrupted
        ins = [nb.box[name] for name in node.inputs]
        prior = known.reuse.get(node.name) if known.reuse is not None else None
        if prior is not None and i < known.before:
            _note_rounding(nb, node, ins, prior)
            nb.box[node.name] = _within(nb, limits.get(node.name), *prior)
            crowned.add(node.name)
            continue
        lo, hi = _note_rounding(nb, node, ins, node.op.ibp(*ins))
        if prior is not None:
            lo, hi = torch.fmax(lo, prior[0]), torch.fmin(hi, prior[1])  # NaN: the other
        nb.box[node.name] = _within(nb, limits.get(node.name), lo, hi)
        form = forms[node.name] = forward.step(nb, node, forms) if first is not None else None
        if form is not None:
            f_lo, f_hi = forward.concretise(nb, form)
            lo, hi = torch.fmax(lo, f_lo), torch.fmin(hi, f_hi)
            nb.box[node.name] = _within(nb, limits.get(node.name), lo, hi)
        if not use_crown or node.name not in needed or node.name == graph.output_name:
            continue
        if node.op.exact_move and all(name in crowned for name in node.inputs) or \
                node.op.linear and node.inputs == [graph.input_name]:
            crowned.add(node.name)  # an affine map of the box: its interval bounds are exact
            continue
        rows, each = _rows(nb, node.name, *nb.box[node.name], reach)
        if rows.numel() == 0:
            continue
        # rows by tile of positions (None: passes on whole tensors); alpha-CROWN's
        # passes keep their first rows, so theirs are planned in _node_bounds
        groups = window.tiles(graph, node.name, rows) if slopes is None else None
        if form is not None and slopes is None and \
                _pass_cost(nb, node, rows, groups) > backward_budget:
            continue  # the forward bounds stand in for a costly backward pass
        if stop():
            raise Interrupted
        tight = _tightened(nb, node, lo, hi, known.fixed, slopes, stop, rows, groups, each)
        nb.box[node.name] = _within(nb, limits.get(node.name), *tight)
        crowned.add(node.name)
    if loosen is not None and graph.nodes:
        _loosen(nb, graph.nodes[-1].name, needed, limits, loosen)
    return nb


def _loosen(nb: NodeBounds, name: str, needed: set[str], limits: Splits,
            loosen: Callable[[str, Interval], Interval]) -> None:
    if name in needed:
        nb.box[name] = _within(nb, limits.get(name), *loosen(name, nb.box[name]))


def _empty(graph: Graph, lower: Tensor, upper: Tensor) -> NodeBounds:
    return NodeBounds(graph, lower, upper, {graph.input_name: (lower, upper)}, {}, {},
                      torch.zeros(lower.shape[0], dtype=torch.bool, device=lower.device),
                      graph.rounding(lower.dtype), torch.finfo(lower.dtype).eps / 2)


def _pass_cost(nb: NodeBounds, node: Node, rows: Tensor,
               groups: list[tuple[window.Plan, Tensor]] | None) -> int:
    """Coefficient entries the passes bounding ``rows`` of the node touch per domain (on
    the windows of ``groups`` where they run on windows)."""
    if groups is None:
        return forward.backward_cost(nb, node, rows.numel())
    return window.cost(nb.graph, groups)


def _tightened(nb: NodeBounds, node: Node, lo: Tensor, hi: Tensor,
               fixed: dict[str, Interval] | None, slopes: Slopes | None,
               stop: Callable[[], bool], rows: Tensor,
               groups: list[tuple[window.Plan, Tensor]] | None, each: Tensor) -> Interval:
    given = fixed.get(node.name) if fixed is not None else None
    if given is not None:
        return torch.maximum(lo, given[0]), torch.minimum(hi, given[1])
    if node.op.ibp_exact:
        return lo, hi
    if slopes is None and groups is None and _pair_chunk(nb, node) >= MIN_PAIR_CHUNK and \
            int(each.sum()) <= RAGGED_SHARE * nb.size * len(rows):
        return _pair_bounds(nb, node, lo, hi, each, stop)
    return _node_bounds(nb, node, lo, hi, slopes, stop, rows, groups)


def _note_rounding(nb: NodeBounds, node: Node, ins: list[Interval], out: Interval
                   ) -> Interval:
    """Record the bound on node's rounding noise (its floating-point evaluation lies within
    it of the exact op on the floating-point inputs) and return ``out`` widened by it; the
    backward pass charges ``|A| . noise`` at every node it crosses."""
    if not nb.u:
        return out
    with torch.no_grad():
        detached = [(lo.detach(), hi.detach()) for lo, hi in ins]
        err = node.op.rounding_error(detached, (out[0].detach(), out[1].detach()), nb.u)
    ku = node.op.relative_rounding(detached, nb.u)
    if ku:
        nb.relative[node.name] = ku
    else:
        nb.relative.pop(node.name, None)
    widened = round_box(out, err, ku, nb.graph.largest_finite)
    if err is None:
        nb.noise.pop(node.name, None)
        return widened
    err = err.expand_as(out[0])
    # a coefficient-preserving op (x + c) whose input is used by it alone: the input's
    # noise meets the same |A| here, so it is charged here, in one term instead of two
    source = node.inputs[0] if node.op.passes_coefficients() else None
    if source in nb.noise and nb.graph.users[source] == [node.name]:
        err = err + nb.noise.pop(source)[0].reshape(err.shape)
    nb.noise[node.name] = (err.reshape(err.shape[0], -1, 1).to(out[0].dtype),
                           bool(torch.isfinite(err).all()))
    return widened


def _within(nb: NodeBounds, limit: Interval | None, lo: Tensor, hi: Tensor) -> Interval:
    """Bounds intersected with a split node's per-domain limits; a domain whose limits
    cross its bounds is empty (recorded in ``infeasible``)."""
    if limit is None:
        return lo, hi
    lo, hi = torch.maximum(lo, limit[0]), torch.minimum(hi, limit[1])
    nb.infeasible = nb.infeasible | (lo > hi).flatten(1).any(dim=1)
    return lo, torch.maximum(hi, lo)


def reached(graph: Graph, C: Tensor) -> dict[str, Tensor]:
    """Per node, the entries (flat, bool) to which the backward pass of the final rows
    ``C`` (B, R, m) on the output can give a coefficient, i.e. whose bounds can matter to
    them (a detector's few outputs see a small part of each feature map).  Linear ops carry
    a random positive probe through their transpose (an exact zero by cancellation costs an
    entry its backward bounds, never soundness); elementwise ops pass the entries through;
    other nonlinear ops reach every entry of their inputs."""
    generator = torch.Generator().manual_seed(0)
    found = {graph.output_name: (C != 0).flatten(0, 1).any(dim=0).reshape(graph.output_shape)}
    for node in reversed(graph.nodes):
        mask = found.get(node.name)
        if mask is None:
            continue
        if node.op.linear:
            probe = torch.rand(mask.shape, generator=generator, dtype=torch.float64) + 0.5
            probe = (probe.to(C.device, C.dtype) * mask).reshape(1, 1, *mask.shape)
            op: Any = node.op
            ins = [a.reshape(a.shape[2:]) != 0 for a in op.backward(probe)]
        elif node.op.elementwise:
            ins = [mask]
        else:
            ins = [torch.ones(graph.shape(i), dtype=torch.bool, device=C.device)
                   for i in node.inputs]
        for name, m in zip(node.inputs, ins, strict=True):
            found[name] = found[name] | m if name in found else m
    return {name: m.flatten() for name, m in found.items()}


def _rows(nb: NodeBounds, name: str, lo: Tensor, hi: Tensor,
          reach: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """The node's entries some user's relaxation is sensitive to (given the node's bounds
    lo, hi) and, with ``reach``, that it holds: per domain (B, n) bool, and the flat indices
    of those of any domain, the rows its backward pass bounds."""
    each = sensitive(nb, name, lo, hi)
    if reach is not None and name in reach:
        each = each & reach[name]
    return each.any(dim=0).nonzero().flatten(), each


def sensitive(nb: NodeBounds, name: str, lo: Tensor, hi: Tensor) -> Tensor:
    """(B, n) bool: the node's entries some user's relaxation depends on, given the node's
    bounds (lo, hi) and the other inputs' in ``nb`` (``Op.insensitive``)."""
    graph = nb.graph
    B, n = lo.shape[0], lo[0].numel()
    found = None
    for user in graph.users[name]:
        node = graph.node(user)
        ins = _UserInputs(nb, node, name, (lo, hi))
        for k, i in enumerate(node.inputs):
            if i != name:
                continue
            flat = node.op.insensitive(k, ins)  # type: ignore[arg-type]
            if flat is None:
                return torch.ones(B, n, dtype=torch.bool, device=lo.device)
            mask = (~flat).reshape(flat.shape[0], -1).expand(B, n)
            found = mask if found is None else found | mask
    if found is None:
        return torch.ones(B, n, dtype=torch.bool, device=lo.device)
    return found


class _UserInputs(Sequence[Interval]):
    """A user's input bounds, made when the op asks: the node being bounded has (lo, hi);
    another input its interval from its own inputs' bounds (it may not be computed yet)."""

    def __init__(self, nb: NodeBounds, user: Node, name: str, own: Interval):
        self.nb, self.user, self.name, self.own = nb, user, name, own

    def __len__(self) -> int:
        return len(self.user.inputs)

    def __getitem__(self, k: int) -> Interval:  # type: ignore[override]
        i = self.user.inputs[k]
        return self.own if i == self.name else _interval(self.nb, i)


def _interval(nb: NodeBounds, name: str) -> Interval:
    """IBP of a node from its inputs' bounds (computed ones where there are)."""
    if name == nb.graph.input_name:
        return nb.box[name]
    node = nb.graph.node(name)
    return node.op.ibp(*[nb.box[i] if i in nb.box else _interval(nb, i) for i in node.inputs])


def _bytes_per_row(nb: NodeBounds, node: Node, kept: bool) -> int:
    """Memory one row of a backward pass from ``node`` takes, roughly: its coefficients on
    the widest node it crosses, a few times over (pending sums and the relaxation's
    temporaries); when the pass is ``kept`` for a gradient, on every node it crosses."""
    graph = nb.graph
    sizes = [math.prod(n.shape) for n in graph.nodes[: graph.position(node.name) + 1]]
    sizes.append(math.prod(nb.lower.shape[1:]))
    per_entry = nb.lower.element_size() * nb.size
    return per_entry * (3 * sum(sizes) if kept else 6 * max(sizes))


def _node_bounds(nb: NodeBounds, node: Node, lo: Tensor, hi: Tensor,
                 slopes: Slopes | None, stop: Callable[[], bool], rows: Tensor,
                 groups: list[tuple[window.Plan, Tensor]] | None) -> Interval:
    """Backward-pass bounds of the node intersected with (lo, hi), for ``rows`` (in chunks
    of ROW_CHUNK rows: +e_i and -e_i; alpha-CROWN keeps those of its first pass), on the
    windows of ``groups`` (CROWN's; alpha-CROWN's are planned here)."""
    name, shape, B = node.name, node.shape, nb.size
    n = math.prod(shape)
    lo_f, hi_f = lo.reshape(B, n), hi.reshape(B, n)
    if slopes is not None:  # fixed on first use, so the slopes' shapes stay put
        rows = slopes.rows_of_node.setdefault(name, rows)
    new_lo, new_hi = lo_f.clone(), hi_f.clone()
    half = slopes.chunk_of_node.get(name) if slopes is not None else None
    if half is None:
        half = max(1, row_chunk(lambda: _bytes_per_row(nb, node, slopes is not None),
                                ROW_CHUNK) // 2)
        if slopes is not None:
            slopes.chunk_of_node[name] = half
    if slopes is not None and len(rows):
        groups = window.tiles(nb.graph, name, rows)
        if groups is not None and \
                not _slopeless(nb, groups, 2 * min(half, len(rows)), slopes.budget):
            groups = None  # alpha-CROWN's parameters apply: passes on whole tensors
    for idx, lb in _passes(nb, node, rows, half, slopes, groups):
        if stop():
            raise Interrupted
        k = len(idx)
        new_lo[:, idx] = torch.fmax(lo_f[:, idx], lb[:, :k])  # a NaN side is ignored
        new_hi[:, idx] = torch.fmin(hi_f[:, idx], -lb[:, k:])
    return new_lo.reshape(lo.shape), new_hi.reshape(hi.shape)


def _pair_bounds(nb: NodeBounds, node: Node, lo: Tensor, hi: Tensor, each: Tensor,
                 stop: Callable[[], bool]) -> Interval:
    """CROWN's bounds of the entries ``each`` (B, n) marks in their own domains only: a
    backward pass per (domain, entry) pair, +e_i and -e_i on that domain's bounds (the
    same bounds the passes of ``_node_bounds`` give those entries), intersected with
    (lo, hi); the other entries keep (lo, hi)."""
    B = nb.size
    lo_f, hi_f = lo.reshape(B, -1), hi.reshape(B, -1)
    new_lo, new_hi = lo_f.clone(), hi_f.clone()
    domain, entry = each.nonzero(as_tuple=True)
    chunk = row_chunk(lambda: _pair_entries(nb, node) * nb.lower.element_size(),
                      _pair_chunk(nb, node))
    n = lo_f.shape[1]
    for start in range(0, len(domain), chunk):
        if stop():
            raise Interrupted
        check_memory()
        d, i = domain[start:start + chunk], entry[start:start + chunk]
        k = len(d)
        sub = nb.take(d, node.name)
        A = torch.zeros(k, 2, n, dtype=nb.lower.dtype, device=nb.lower.device)
        A[torch.arange(k), 0, i] = 1
        A[torch.arange(k), 1, i] = -1
        lb = bound(sub, node.name, A.reshape(k, 2, *node.shape))
        new_lo[d, i] = torch.fmax(lo_f[d, i], lb[:, 0])  # a NaN side is ignored
        new_hi[d, i] = torch.fmin(hi_f[d, i], -lb[:, 1])
    return new_lo.reshape(lo.shape), new_hi.reshape(hi.shape)


def _pair_entries(nb: NodeBounds, node: Node) -> int:
    """Entries one (domain, entry) pair of ``_pair_bounds`` holds: its domain's bounds on
    every node up to ``node`` (copied per pair), their relaxations' lines, and the pass's
    two rows a few times over on the widest node."""
    graph = nb.graph
    sizes = [math.prod(n.shape) for n in graph.nodes[: graph.position(node.name) + 1]]
    return 4 * sum(sizes) + 12 * max(sizes) + 2 * math.prod(nb.lower.shape[1:])


def _pair_chunk(nb: NodeBounds, node: Node) -> int:
    """Pairs per pass of ``_pair_bounds`` (``PAIR_ENTRIES`` entries)."""
    return PAIR_ENTRIES // _pair_entries(nb, node)


def _slopeless(nb: NodeBounds, groups: list[tuple[window.Plan, Tensor]], rows: int,
               budget: int) -> bool:
    """Whether no nonlinear node the passes cross would get alpha-CROWN's parameters
    (``Slopes.get``: over ``budget`` elements for a pass of ``rows`` rows), so that the
    passes may run on windows, where there are none."""
    graph = nb.graph
    names = {name for plan, _ in groups for name in plan if name != graph.input_name}
    return all(rows * math.prod(graph.node(name).shape) * nb.size > budget
               for name in names if not graph.node(name).op.linear)


def _passes(nb: NodeBounds, node: Node, rows: Tensor, half: int, slopes: Slopes | None,
            groups: list[tuple[window.Plan, Tensor]] | None
            ) -> Iterator[tuple[Tensor, Tensor]]:
    """Per chunk of at most ``half`` rows: the rows and the lower bounds (B, 2k) of +e_i
    then -e_i, by passes on windows (``groups``: rows by tile, with their plans) or on
    the whole tensors (chunk c of ``slopes``' parameters; none on windows)."""
    shape, B, n = node.shape, nb.size, math.prod(node.shape)
    if groups is not None:
        for plan, tile_rows in groups:
            for start in range(0, len(tile_rows), half):
                idx = tile_rows[start:start + half]
                tile = plan[node.name]
                assert tile is not None
                A = window.unit_rows(shape, idx, tile, B, nb.lower.dtype)
                yield idx, window.bound(nb, node.name, A, plan)
        return
    for chunk, start in enumerate(range(0, len(rows), half)):
        idx = rows[start:start + half]
        k = len(idx)
        eye = torch.zeros(k, n, dtype=nb.lower.dtype, device=nb.lower.device)
        eye[torch.arange(k), idx] = 1
        A = torch.cat([eye, -eye]).reshape(1, 2 * k, *shape).expand(B, -1, *shape)
        yield idx, bound(nb, node.name, A, slopes, chunk)
