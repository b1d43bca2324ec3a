"""Proofs a checker can verify (issue 17; the format: docs/proof-format.md).

``prove(model, prop, ...)`` builds, for a property the engine has verified, a proof in the
``nnverify-proof/1`` format that ``checker/`` (which shares no bound code with the engine)
re-checks by evaluation alone: per case a tree of splits whose leaves cover the case's box,
and per leaf the interval of every activation's input, the lines bounding the activation
over it (for the bounds of later activations), and per disjunct the row, lines and split
multipliers of its final bound.

The proof is not a trace of the verification that came first: the checker re-derives every
interval with one set of lines per activation, so intervals must come from such a
derivation (CROWN's), while the engine's alpha-CROWN tightens each interval with slopes of
its own.  So ``prove`` runs a search of its own, a branch-and-bound in which every domain
is bounded the way the checker will check it: CROWN's intermediate bounds within the
domain's split limits (float64), widened a little so that the checker's own derivation
(with its own float model) falls inside them; then the final rows' slopes and the split
multipliers optimised (alpha and beta), their lines read back per row.  A domain whose
every disjunct has a row bound above a margin becomes a leaf; else it is split (the input
dimension or the neuron with the largest estimated gain) until the time or leaf budget is
spent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from verifier.bounds import intermediate
from verifier.bounds.backward import Betas, NodeBounds, Slopes, backward, concretise
from verifier.bounds.optimise import Ascent, ascend
from verifier.graph import Graph, Node
from verifier.importer.onnx_import import Model
from verifier.ops.base import Interval, Tensor
from verifier.problems import ProblemBatch, make_batch
from verifier.property.core import Property

FORMAT = "nnverify-proof/1"
ACTIVATIONS = ("Relu", "Sigmoid", "Tanh")  # what the format (and the checker) covers
# an interval claimed for the checker: the engine's, widened by this much relatively (of
# its magnitude) and absolutely before later bounds use it, never past a split limit (the
# checker meets that exactly); 1e-6 and 1e-7 were too little for the checker's own error
# allowances on acasxu, mnist_fc and eran
WIDEN_REL, WIDEN_ABS = 1e-5, 1e-6
# lines are moved apart by this much (relatively to their size on the interval): a
# tangent line touches the function, which no rigorous check can confirm
LINE_SLACK = 1e-9
# the rounding the proof's bounds allow for, in units of the model's (see _Search)
NOISE_FACTOR = 2.0
# a row refutes its disjunct in the proof only with this margin, which covers the
# widening and the checker's own rounding allowances
MARGIN = 1e-6


@dataclass(frozen=True)
class ProofSettings:
    timeout: float = 120.0
    max_leaves: int = 20_000
    batch: int = 64  # domains bounded together (splitting neurons)
    input_batch: int = 1024  # domains bounded together (splitting inputs)
    # Adam steps on the final rows' slopes and the split multipliers, when splitting
    # neurons (splitting inputs, many CROWN domains beat fewer optimised ones)
    iterations: int = 20
    input_split_max_dims: int = 16  # models with at most this many inputs split inputs


@dataclass
class ProofOutcome:
    ok: bool
    reason: str = ""
    leaves: int = 0
    domains: int = 0
    seconds: float = 0.0
    bytes: int = 0


@dataclass
class _Domain:
    case: int
    lower: Tensor  # (n,) float64
    upper: Tensor
    # neuron constraints on the path, in order: (activation index, flat entry, sign, point)
    path: list[tuple[int, int, int, float]]
    tree: dict[str, Any]  # its node in the case's tree, filled in when decided
    limits: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)


def activation_nodes(graph: Graph) -> list[Node]:
    """The model's activations, in order; ValueError naming any other nonlinear op."""
    acts, other = [], []
    for node in graph.nodes:
        if node.op.linear:
            continue
        kind = node.op.onnx_types[0] if node.op.onnx_types else type(node.op).__name__
        if kind in ACTIVATIONS and node.op.elementwise and node.inputs[0] != graph.input_name:
            acts.append(node)
        else:
            other.append(f"{kind} ({node.name})")
    if other:
        raise ValueError("proofs cover models whose nonlinear ops are "
                         f"{', '.join(ACTIVATIONS)}; this one has {', '.join(other[:5])}")
    return acts


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prove(model: Model, prop: Property, out: str | Path, model_path: str | Path,
          property_path: str | Path, settings: ProofSettings = ProofSettings(),
          device: str = "cpu", cancel: Callable[[], bool] = lambda: False) -> ProofOutcome:
    """Search a proof of ``prop`` on ``model`` and write it to ``out`` (nothing is written
    when none is found within the settings' budgets)."""
    started = time.monotonic()
    try:
        acts = activation_nodes(model.graph)
    except ValueError as exc:
        return ProofOutcome(False, str(exc))
    search = _Search(model, prop, acts, settings, torch.device(device),
                     lambda: cancel() or time.monotonic() - started > settings.timeout)
    outcome = search.run()
    outcome.seconds = time.monotonic() - started
    if not outcome.ok:
        return outcome
    manifest = {
        "format": FORMAT,
        "model_sha256": sha256_file(model_path),
        "property_sha256": sha256_file(property_path),
        "unit_roundoff": model.graph.unit_roundoff,
        "activations": [{"input": n.inputs[0], "output": n.name,
                         "op": n.op.onnx_types[0], "size": math.prod(n.shape)} for n in acts],
        "cases": [{"tree": t} for t in search.trees],
        "leaves": search.leaves,
    }
    sizes = [math.prod(n.shape) for n in acts]
    disjuncts = max((len(c.disjuncts) for c in prop.cases), default=0)
    arrays = _stacked(search.arrays, len(search.leaves), sizes, disjuncts)
    arrays["manifest"] = np.array(json.dumps(manifest))
    with open(out, "wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    outcome.bytes = Path(out).stat().st_size
    outcome.seconds = time.monotonic() - started
    return outcome


class _Search:
    def __init__(self, model: Model, prop: Property, acts: list[Node], settings: ProofSettings,
                 device: torch.device, expired: Callable[[], bool]):
        self.model, self.prop, self.acts, self.settings = model, prop, acts, settings
        # bounds with NOISE_FACTOR times the model's rounding: the checker's allowances are
        # larger than the engine's (dot products gamma(n + 2) against gamma(n), tanh 16 u of
        # 1 + |f| against 16 u |f|), and its derivation must fall inside the claims
        self.graph = dataclasses.replace(
            model.graph, unit_roundoff=NOISE_FACTOR * model.graph.unit_roundoff)
        self.device, self.dtype = device, torch.float64
        self.expired = expired
        self.trees: list[dict[str, Any]] = []
        self.leaves: list[dict[str, Any]] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.domains = 0
        self.input_split = model.n_inputs <= settings.input_split_max_dims
        self.index = {n.inputs[0]: k for k, n in enumerate(acts)}

    def run(self) -> ProofOutcome:
        queue: list[_Domain] = []
        for c, case in enumerate(self.prop.cases):
            root: dict[str, Any] = {}
            self.trees.append(root)
            queue.append(_Domain(c, torch.tensor(case.lower, dtype=self.dtype),
                                 torch.tensor(case.upper, dtype=self.dtype), [], root))
        while queue:
            if self.expired():
                return ProofOutcome(False, f"no proof within the time budget ({len(queue)} "
                                    f"domains open, {len(self.leaves)} leaves proven)",
                                    len(self.leaves), self.domains)
            if len(self.leaves) + len(queue) > self.settings.max_leaves:
                return ProofOutcome(False, f"no proof within {self.settings.max_leaves} "
                                    f"leaves ({len(queue)} domains open)",
                                    len(self.leaves), self.domains)
            size = self.settings.input_batch if self.input_split else self.settings.batch
            batch, queue = queue[:size], queue[size:]
            queue = self._bound(batch) + queue
        return ProofOutcome(True, "", len(self.leaves), self.domains)

    # -- one batch of domains -----------------------------------------------------------
    def _problems(self, batch: list[_Domain]) -> ProblemBatch:
        """The rows of each domain's case, with the domain's box."""
        full = make_batch(self.prop, [d.case for d in batch], self.device, self.dtype)
        lower = torch.stack([d.lower for d in batch]).to(self.device)
        upper = torch.stack([d.upper for d in batch]).to(self.device)
        return ProblemBatch(lower=lower, upper=upper, C=full.C, d=full.d,
                            row_disjunct=full.row_disjunct, cases=full.cases,
                            n_disjuncts=full.n_disjuncts)

    def _splits(self, batch: list[_Domain]) -> dict[str, Interval]:
        splits: dict[str, Interval] = {}
        B = len(batch)
        for k, node in enumerate(self.acts):
            if not any(k in d.limits for d in batch):
                continue
            shape = node.shape
            lo = torch.full((B, *shape), -math.inf, dtype=self.dtype, device=self.device)
            hi = torch.full((B, *shape), math.inf, dtype=self.dtype, device=self.device)
            for b, d in enumerate(batch):
                if k in d.limits:
                    lo[b] = d.limits[k][0].reshape(shape)
                    hi[b] = d.limits[k][1].reshape(shape)
            splits[node.inputs[0]] = (lo, hi)
        return splits

    def _bound(self, batch: list[_Domain]) -> list[_Domain]:
        """Bound the batch; record its proven domains as leaves; return the children of
        the others."""
        graph, B = self.graph, len(batch)
        self.domains += B
        problems = self._problems(batch)
        splits = self._splits(batch)
        # each activation's input widened before later bounds use it, as the checker's
        # derivation (over the widened intervals) compounds
        nb = intermediate.compute(graph, problems.lower, problems.upper, splits=splits,
                                  loosen=_widen)
        empty = nb.infeasible.tolist()
        C = problems.C.reshape(B, problems.C.shape[1], *graph.output_shape)
        record: dict[str, Tensor] = {}
        with torch.no_grad():  # CROWN's lines, no multipliers
            A_x, bias = backward(nb, graph.output_name, C, record=record)
            rows = concretise(nb, A_x, bias) - problems.d
        slopes, betas = Slopes(budget=0), Betas.zeros(splits, C.shape[1])
        optimised = torch.zeros_like(rows, dtype=torch.bool)
        if self.settings.iterations > 0 and not self.input_split:
            def objective() -> Tensor:
                A_x, bias = backward(nb, graph.output_name, C, slopes, betas=betas)
                return concretise(nb, A_x, bias) - problems.d

            ascend(objective, [slopes, betas], rows.clone(),
                   Ascent(self.settings.iterations, 0.1), self.expired)
            with torch.no_grad():  # the last iterate, per row where it beats CROWN's
                last = objective()
            optimised = torch.nan_to_num(last, nan=-math.inf) > rows
            rows = torch.where(optimised, last, rows)
        lines = self._lines(nb, slopes, C.shape[1], optimised)
        children: list[_Domain] = []
        for b, dom in enumerate(batch):
            if empty[b]:
                self._empty_leaf(dom, b, nb, splits)
                continue
            chosen = self._rows(problems, rows, b)
            if chosen is not None:
                self._leaf(dom, b, nb, lines, chosen, betas, optimised)
                continue
            children += self._split(dom, b, nb, rows, problems, A_x, record, lines)
        return children

    def _lines(self, nb: NodeBounds, slopes: Slopes, R: int, optimised: Tensor
               ) -> list[tuple[Tensor, Tensor]]:
        """Per activation: the box lines (B, 4, n) and the final rows' lines (B, R, 4, n):
        the optimised slopes' where ``optimised`` (B, R), else CROWN's."""
        out = []
        for node in self.acts:
            relaxation = nb.relaxation(node)
            base = relaxation.lines()  # type: ignore[attr-defined]
            params = slopes.pairs.get((self.graph.output_name, 0, node.name))
            own = relaxation.lines_for(params) if params is not None else base  # type: ignore[attr-defined]
            box = torch.stack([t.detach().flatten(2)[:, 0] for t in
                               (base.a_l, base.b_l, base.a_u, base.b_u)], 1)
            fin = torch.stack([t.detach().expand(-1, R, *t.shape[2:]).flatten(2) for t in
                               (own.a_l, own.b_l, own.a_u, own.b_u)], 2)
            fin = torch.where(optimised[:, :, None, None], fin, box.unsqueeze(1))
            out.append((box, fin))
        return out

    def _rows(self, problems: ProblemBatch, rows: Tensor, b: int) -> list[int] | None:
        """Per disjunct the row that refutes it with the margin, or None."""
        chosen = []
        for k in range(int(problems.n_disjuncts[b])):
            idx = (problems.row_disjunct[b] == k).nonzero().flatten()
            vals = rows[b, idx]
            best = int(torch.argmax(torch.nan_to_num(vals, nan=-math.inf)))
            value = float(vals[best])
            scale = 1.0 + float(problems.d[b, idx[best]].abs())
            if not (math.isfinite(value) and value > MARGIN * scale):
                return None
            chosen.append(int(idx[best]))
        return chosen

    # -- results --------------------------------------------------------------------------
    def _leaf(self, dom: _Domain, b: int, nb: NodeBounds,
              lines: list[tuple[Tensor, Tensor]], chosen: list[int], betas: Betas,
              optimised: Tensor) -> None:
        k = len(self.leaves)
        dom.tree["leaf"] = k
        case_rows = self._case_rows(dom.case)
        disjuncts = []
        for r in chosen:  # CROWN's lines are the box lines: "own" only for optimised ones
            own = bool(optimised[b, r])
            multipliers = self._betas(dom, b, r, betas) if own else [0.0] * len(dom.path)
            disjuncts.append({"row": case_rows[r][1], "lines": "own" if own else "box",
                              "betas": multipliers})
        for a, node in enumerate(self.acts):
            lo, hi = nb.box[node.inputs[0]]
            lo_a = lo[b].flatten().cpu().numpy().astype(np.float64)
            hi_a = hi[b].flatten().cpu().numpy().astype(np.float64)
            self.arrays[f"L{k}/A{a}/lo"] = lo_a
            self.arrays[f"L{k}/A{a}/hi"] = hi_a
            box, fin = lines[a]
            self.arrays[f"L{k}/A{a}/box"] = _slackened(box[b].cpu().numpy(), lo_a, hi_a)
            for q, r in enumerate(chosen):
                if disjuncts[q]["lines"] == "own":
                    self.arrays[f"L{k}/D{q}/A{a}"] = _slackened(fin[b, r].cpu().numpy(),
                                                                lo_a, hi_a)
        self.leaves.append({"infeasible_at": None, "disjuncts": disjuncts})

    def _empty_leaf(self, dom: _Domain, b: int, nb: NodeBounds,
                    splits: dict[str, Interval]) -> None:
        """A domain whose split limits cross its bounds: a leaf claimed empty at the first
        activation where an entry's bounds were pinned to a limit (lo == hi), with the
        intervals and lines of the activations before it."""
        at = len(self.acts) - 1
        for a, node in enumerate(self.acts):
            name = node.inputs[0]
            if name in splits:
                lo, hi = (t[b].flatten() for t in nb.box[name])
                lim_lo, lim_hi = (t[b].flatten() for t in splits[name])
                pinned = (lo == hi) & ((lo == lim_lo) | (hi == lim_hi))
                if bool(pinned.any()):
                    at = a
                    break
        k = len(self.leaves)
        dom.tree["leaf"] = k
        for a, node in enumerate(self.acts[:at]):
            lo, hi = nb.box[node.inputs[0]]
            lo_a = lo[b].flatten().cpu().numpy().astype(np.float64)
            hi_a = hi[b].flatten().cpu().numpy().astype(np.float64)
            self.arrays[f"L{k}/A{a}/lo"], self.arrays[f"L{k}/A{a}/hi"] = lo_a, hi_a
            box = nb.relaxation(node).lines()  # type: ignore[attr-defined]
            rows = np.stack([t.detach()[b, 0].flatten().cpu().numpy() for t in
                             (box.a_l, box.b_l, box.a_u, box.b_u)])
            self.arrays[f"L{k}/A{a}/box"] = _slackened(rows, lo_a, hi_a)
        self.leaves.append({"infeasible_at": at, "disjuncts": []})

    def _case_rows(self, case: int) -> list[tuple[int, int]]:
        """(disjunct, row within it) of each row of the case, in the batch's order."""
        out = []
        for q, conj in enumerate(self.prop.cases[case].disjuncts):
            out += [(q, r) for r in range(conj.C.shape[0])]
        return out

    def _betas(self, dom: _Domain, b: int, r: int, betas: Betas) -> list[float]:
        """The multiplier of each path constraint: the one of the limit in force (the
        tightest on its side, the last such on the path), 0 for those it replaced."""
        values = [0.0] * len(dom.path)
        last: dict[tuple[int, int, int], int] = {}
        for i, (a, j, s, _) in enumerate(dom.path):
            last[(a, j, s)] = i  # limits only tighten down the path
        for (a, j, s), i in last.items():
            name = self.acts[a].inputs[0]
            if name not in betas.pairs:
                continue
            b_lo, b_hi = betas.pairs[name]
            t = b_lo if s > 0 else b_hi
            values[i] = max(0.0, float(t[b, r].detach().flatten()[j]))
        return values

    # -- branching ------------------------------------------------------------------------
    def _split(self, dom: _Domain, b: int, nb: NodeBounds, rows: Tensor,
               problems: ProblemBatch, A_x: Tensor | None, record: dict[str, Tensor],
               lines: list[tuple[Tensor, Tensor]]) -> list[_Domain]:
        worst = int(torch.argmin(torch.nan_to_num(rows[b], nan=-math.inf)))
        if self.input_split or not self.acts:
            return self._split_input(dom, b, A_x, worst)
        picked = self._pick_neuron(dom, b, nb, record, lines, worst)
        if picked is None:
            return self._split_input(dom, b, A_x, worst)
        a, j, p = picked
        low = _Domain(dom.case, dom.lower, dom.upper, dom.path + [(a, j, -1, p)], {},
                      _limit(dom.limits, a, j, self.acts[a], hi=p))
        high = _Domain(dom.case, dom.lower, dom.upper, dom.path + [(a, j, 1, p)], {},
                       _limit(dom.limits, a, j, self.acts[a], lo=p))
        dom.tree.update({"split": {"activation": a, "index": j, "at": p},
                         "children": [low.tree, high.tree]})
        return [low, high]

    def _split_input(self, dom: _Domain, b: int, A_x: Tensor | None,
                     worst: int) -> list[_Domain]:
        width = (dom.upper - dom.lower).cpu()
        if A_x is not None:
            score = A_x[b, worst].detach().flatten().abs().cpu() * width
        else:
            score = width.clone()
        score = torch.where(width > 0, score + 1e-12 * width, torch.full_like(score, -1.0))
        d = int(torch.argmax(score))
        p = float((dom.lower[d] + dom.upper[d]) / 2)
        lo_up, hi_lo = dom.upper.clone(), dom.lower.clone()
        lo_up[d] = p
        hi_lo[d] = p
        low = _Domain(dom.case, dom.lower, lo_up, list(dom.path), {}, dom.limits)
        high = _Domain(dom.case, hi_lo, dom.upper, list(dom.path), {}, dom.limits)
        dom.tree.update({"split": {"input": d, "at": p}, "children": [low.tree, high.tree]})
        return [low, high]

    def _pick_neuron(self, dom: _Domain, b: int, nb: NodeBounds, record: dict[str, Tensor],
                     lines: list[tuple[Tensor, Tensor]], worst: int
                     ) -> tuple[int, int, float] | None:
        """The neuron whose lines' gap, weighted by the worst row's coefficient on the
        activation's output, is largest (BaBSR's estimate for any activation)."""
        best: tuple[float, int, int, float] | None = None
        for a, node in enumerate(self.acts):
            coeff = record.get(node.name)
            if coeff is None:
                continue
            lo, hi = (t[b].flatten() for t in nb.box[node.inputs[0]])
            point = node.op.split_point(lo, hi).flatten()  # type: ignore[attr-defined]
            inside = (lo < point) & (point < hi) & (hi - lo > 1e-9)
            if not bool(inside.any()):
                continue
            box = lines[a][0][b]
            gap = torch.maximum((box[2] - box[0]) * lo + box[3] - box[1],
                                (box[2] - box[0]) * hi + box[3] - box[1])
            score = coeff[b, worst].flatten().abs() * gap
            score = torch.where(inside, torch.nan_to_num(score, nan=0.0), -1.0)
            j = int(torch.argmax(score))
            value = float(score[j])
            if value >= 0 and (best is None or value > best[0]):
                best = (value, a, j, float(point[j]))
        return None if best is None else best[1:]


def _stacked(per_leaf: dict[str, np.ndarray], leaves: int, sizes: list[int],
             disjuncts: int) -> dict[str, np.ndarray]:
    """The file's arrays: per activation (and disjunct) one array over all leaves, a row per
    leaf, NaN in the rows a leaf does not need, no member that no leaf needs
    (docs/proof-format.md); from the search's arrays per leaf (``L{k}/A{a}/lo`` ...)."""
    out: dict[str, np.ndarray] = {}
    for a, n in enumerate(sizes):
        names = [(f"A{a}/lo", (n,)), (f"A{a}/hi", (n,)), (f"A{a}/box", (4, n))]
        names += [(f"D{q}/A{a}", (4, n)) for q in range(disjuncts)]
        for name, shape in names:
            stack, used = np.full((leaves, *shape), np.nan), False
            for k in range(leaves):
                row = per_leaf.get(f"L{k}/{name}")
                if row is not None:
                    stack[k], used = row, True
            if used:  # a member no leaf needs is left out
                out[name] = stack
    return out


def _widen(_name: str, box: Interval) -> Interval:
    lo, hi = box
    w = WIDEN_REL * torch.maximum(lo.abs(), hi.abs()) + WIDEN_ABS
    return lo - w, hi + w


def _limit(limits: dict[int, tuple[Tensor, Tensor]], a: int, j: int, node: Node,
           lo: float | None = None, hi: float | None = None) -> dict[int, tuple[Tensor, Tensor]]:
    """``limits`` with entry j of activation a's input limited to >= lo or <= hi."""
    out = dict(limits)
    n = math.prod(node.shape)
    cur_lo, cur_hi = out.get(a, (torch.full((n,), -math.inf, dtype=torch.float64),
                                 torch.full((n,), math.inf, dtype=torch.float64)))
    cur_lo, cur_hi = cur_lo.clone(), cur_hi.clone()
    if lo is not None:
        cur_lo[j] = max(float(cur_lo[j]), lo)
    if hi is not None:
        cur_hi[j] = min(float(cur_hi[j]), hi)
    out[a] = (cur_lo, cur_hi)
    return out


def _slackened(lines: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Lines (4, n) with the lower one moved down and the upper one up by LINE_SLACK of
    their size on [lo, hi] (a tangent touches its function; the checker cannot confirm
    a touch)."""
    out = np.array(lines, dtype=np.float64)
    mag = np.maximum(np.abs(lo), np.abs(hi))
    for a_row, b_row, sign in ((0, 1, -1.0), (2, 3, 1.0)):
        size = 1.0 + np.abs(out[b_row]) + np.abs(out[a_row]) * mag
        out[b_row] = out[b_row] + sign * LINE_SLACK * size
    return out
