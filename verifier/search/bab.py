"""Branch-and-bound (DESIGN.md: BaB).

Open domains live in batched tensors: an input box per domain, the case it belongs to, and
(for activation splitting) per-ReLU split masks.  Each round takes the weakest domains,
splits each in two, bounds all children in one batched CROWN call, drops the children whose
every disjunct is refuted and tries the inputs the bounds point at as counterexamples.  It
stops on proof, confirmed counterexample, deadline or cancellation.

* Input splitting (few input dimensions): the dimension with the largest score is
  bisected: ``|A_x| * width`` (how much of the bound's looseness that dimension carries
  through the rows' coefficients, each row weighted by how near it is to refuting a
  disjunct still open) plus its share of the looseness of the unstable neurons'
  relaxations (``_relaxation_share``); with ``input_candidates`` > 1 the best scored
  dimensions are each bisected and bounded, and the pair that gains most is kept.  Each box is
  cut to where its linear bounds leave room for a violation, and a disjunct's rows are
  also bounded two at a time (verifier/search/clip.py).  A box too narrow to split again
  is set aside open: the run goes on for counterexamples and can no longer prove.
* ReLU splitting: of the neurons whose relaxation costs the bound most (the gap between
  its lines at the interval's middle times ``|A|``, a BaBSR-like score), the one whose
  weaker child bounds best in a cheap look-ahead (filtered smart branching: the children's
  intermediate bounds the parent's, one backward pass with the parent's parameters;
  ``choose_neurons``); the children clamp the
  neuron's pre-activation bounds to z >= 0 and z <= 0, and a domain whose clamped bounds
  cross is empty, hence verified.  A child keeps its parent's bounds up to its split node
  (they were computed under the same splits) and cuts its later ones by them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from verifier.bounds import forward, intermediate
from verifier.bounds.backward import (
    Betas,
    NodeBounds,
    Slopes,
    at_minimiser,
    backward,
    bound,
)
from verifier.bounds.crown import Warm, optimise_final
from verifier.bounds.limits import Interrupted, MemoryExceeded
from verifier.graph import Graph, Node
from verifier.importer.onnx_import import Model
from verifier.problems import ProblemBatch
from verifier.property.core import Property
from verifier.search.attack import Counterexample, candidates, confirm
from verifier.search.clip import clip_boxes, pair_bounds
from verifier.search.guided import GuidedSettings, guided_points, start_points

Tensor = torch.Tensor


#: coefficient entries a backward pass may cost at the root (all its cases together)
#: before forward bounds stand in for it (each later domain: ``forward.BACKWARD_BUDGET``);
#: the root's bounds hold on every domain, which intersects its own with them
ROOT_BACKWARD_BUDGET = 1_000_000_000
#: split-node entries the look-ahead's children may hold in all (``choose_neurons``): on
#: big models fewer candidates are looked at
LOOKAHEAD_ENTRIES = 50_000_000
#: input splitting: a domain's bounds of the nonlinear ops' inputs, kept for its children
#: (they hold on their sub-boxes), where they take at most this many bytes a domain
INHERITED_BYTES = 64 << 10
#: input splitting's branching score: neuron values (entries) evaluated at once when
#: sharing out the relaxations' looseness among the inputs (``_relaxation_share``)
SHARE_ENTRIES = 1 << 24

@dataclass(frozen=True)
class BabSettings:
    batch: int = 512  # domains split per round (children: twice as many)
    #: input splitting's rounds may grow to this many domains (each round's fixed cost,
    #: walking the graph node by node, is spread over more of its small domains)
    input_batch: int = 16384
    max_domains: int = 50_000  # open domains kept before giving up (memory cap)
    #: input splitting's domains are a box and a few bounds (about a hundred bytes, where an
    #: activation-split domain keeps bounds of whole layers): they may take this much
    #: memory in all before the count above stops them
    input_domain_bytes: int = 1 << 30
    #: activation-split domains (bounds of every split node's input, split limits, the
    #: optimised parameters of their bound) may take this much memory in all, if that is
    #: fewer than ``max_domains``
    activation_domain_bytes: int = 4 << 30
    input_split_max_dims: int = 16  # models with at most this many inputs split inputs
    beta_iterations: int = 10  # Adam steps on alpha and beta per activation-split round
    #: activation splitting bounds the children of this many of the best scored neurons
    #: cheaply per domain and splits the one whose weaker child is best (``choose_neurons``)
    activation_candidates: int = 16
    clip_inputs: bool = True  # input splitting cuts boxes by their linear bounds (clip.py)
    #: input splitting bounds the children of this many candidate dimensions per domain
    #: (the best scored ones) and keeps the pair that lacks least (``branch_inputs``);
    #: models with fewer than 3 inputs split by the score alone.  1: the score alone (with
    #: the relaxations' share in it, the look-ahead's 3x cost a round no longer paid)
    input_candidates: int = 1
    #: the counterexample search in the weakest activation-split domains (guided.py);
    #: None: none
    guided: GuidedSettings | None = field(default_factory=GuidedSettings)


@dataclass
class BabState:
    """Open domains, as batched tensors (first dimension: domain)."""

    lower: Tensor
    upper: Tensor
    case: Tensor  # (N,) long: row of the root batch each domain belongs to
    # input of a split nonlinearity -> per-domain limits (lo, hi), each (N, *shape)
    splits: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    # (N, D) per-disjunct lower bounds (> 0 refutes); a child inherits its parent's
    per: Tensor | None = None
    score: Tensor | None = None  # (N, K) branching scores (input dims or neurons)
    boxes: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)  # split nodes' bounds
    #: (N,) activation splitting's children: the graph positions below which ``boxes`` (the
    #: parent's) are the domain's own (every split on those nodes is its parent's too)
    keep: Tensor | None = None
    #: activation splitting: the optimised parameters of the domain's bound (its children
    #: start theirs from them)
    warm: Warm | None = None

    @property
    def size(self) -> int:
        return self.lower.shape[0]

    def bytes_per_domain(self) -> int:
        """Memory one domain takes in this state's tensors (at least one byte)."""
        tensors = [self.lower, self.upper, self.case, self.per, self.score, self.keep]
        tensors += [t for pair in (*self.splits.values(), *self.boxes.values()) for t in pair]
        total = sum(t.element_size() * t.numel() for t in tensors if t is not None)
        total += self.warm.nbytes() if self.warm is not None else 0
        return max(1, total // max(1, self.size))

    def take(self, idx: Tensor) -> BabState:
        return BabState(self.lower[idx], self.upper[idx], self.case[idx],
                        {k: (v[0][idx], v[1][idx]) for k, v in self.splits.items()},
                        None if self.per is None else self.per[idx],
                        None if self.score is None else self.score[idx],
                        {k: (v[0][idx], v[1][idx]) for k, v in self.boxes.items()},
                        None if self.keep is None else self.keep[idx],
                        None if self.warm is None else self.warm.take(idx))

    @staticmethod
    def cat(parts: list[BabState]) -> BabState:
        parts = [p for p in parts if p.size]
        if not parts:
            raise ValueError("no domains")
        margins = [p.per for p in parts]
        scores = [p.score for p in parts]
        keeps = [p.keep for p in parts]
        return BabState(
            torch.cat([p.lower for p in parts]), torch.cat([p.upper for p in parts]),
            torch.cat([p.case for p in parts]),
            _cat_splits(parts),
            None if any(m is None for m in margins) else torch.cat(margins),  # type: ignore
            None if any(s is None for s in scores) else torch.cat(scores),  # type: ignore
            {k: (torch.cat([p.boxes[k][0] for p in parts]),
                 torch.cat([p.boxes[k][1] for p in parts])) for k in parts[0].boxes},
            None if any(k is None for k in keeps) else torch.cat(keeps),  # type: ignore
            Warm.cat([p.warm for p in parts], [p.size for p in parts]))


def _cat_splits(parts: list[BabState]) -> dict[str, tuple[Tensor, Tensor]]:
    """Concatenate split limits; a part without limits on a node gets (-inf, inf)."""
    out = {}
    for name in {k for p in parts for k in p.splits}:
        like = next(p.splits[name][0] for p in parts if name in p.splits)
        lows, highs = [], []
        for p in parts:
            if name in p.splits:
                lows.append(p.splits[name][0])
                highs.append(p.splits[name][1])
            else:
                free = torch.full((p.size, *like.shape[1:]), math.inf, dtype=like.dtype,
                                  device=like.device)
                lows.append(-free)
                highs.append(free)
        out[name] = (torch.cat(lows), torch.cat(highs))
    return out


@dataclass
class BabOutcome:
    verdict: str  # verified | falsified | unknown | timeout
    domains: int
    counterexamples: list[Counterexample]
    open_cases: set[int]
    lower_bound: float


def proof_capable(rows: Tensor) -> Tensor:
    """Row lower bounds with every non-finite one (NaN, +-inf) made -inf: only a finite
    bound > 0 may refute a row (a NaN, or an infinity from arithmetic on infinite bounds,
    proves nothing).  An empty domain is marked +inf separately, after this."""
    return torch.where(torch.isfinite(rows), rows, -torch.inf)


def still_open(margin: Tensor) -> Tensor:
    """Domains not yet proven: all but those whose margin is > 0 (NaN stays open)."""
    return ~(margin > 0)


def split_nodes(graph: Graph) -> list[tuple[str, Node]]:
    """(input name, nonlinear node) for every splittable elementwise nonlinearity (split at
    ``op.split_point``)."""
    return [(n.inputs[0], n) for n in graph.nodes
            if n.op.elementwise and n.inputs[0] != graph.input_name]


@dataclass
class DomainBounds:
    """What bounding a batch of domains leaves for branching and falsification: the
    intermediate bounds, the final rows' coefficients on the input (CROWN's slopes), and
    (activation splitting) the coefficients the backward pass met at each node."""

    nodes: NodeBounds
    A_x: Tensor | None
    recorded: dict[str, Tensor]
    rows: Tensor | None = None  # (N, R) the rows' lower bounds, consistent with A_x


def _choose_mode(graph: Graph, n_inputs: int, settings: BabSettings) -> str:
    if n_inputs <= settings.input_split_max_dims or not split_nodes(graph):
        return "input"
    return "activation"


class BranchAndBound:
    def __init__(self, model: Model, prop: Property, root: ProblemBatch, settings: BabSettings,
                 expired: Callable[[], bool], progress: Callable[[int, int, float], None],
                 root_boxes: dict[str, tuple[Tensor, Tensor]] | None = None):
        self.model, self.prop, self.root, self.settings = model, prop, root, settings
        self.graph = model.graph
        self.expired, self.progress = expired, progress
        self.mode = _choose_mode(self.graph, root.lower.shape[1], settings)
        self.nodes = split_nodes(self.graph)
        self.done = 0
        self.found: list[Counterexample] = []
        self.batch = settings.batch if self.mode == "input" else 16
        # lowered each time a round meets the memory budget
        self.batch_cap = settings.input_batch if self.mode == "input" else settings.batch
        self.global_lb = -math.inf
        self.started = time.monotonic()
        self.search_seconds = 0.0  # spent in the guided search
        self.searches = 0
        self.points: list[BabState] = []  # input splitting's point boxes, set aside open
        self.points_lb = math.inf  # their weakest bound
        # the root's intermediate bounds, one row per case (every later domain's are
        # intersected with them); given ones (alpha-CROWN's) meet the root's own
        self.root_boxes = root_boxes
        self.reach = intermediate.reached(self.graph, root.C)  # entries the rows can see

    # -- bounding ------------------------------------------------------------------------
    def _problems(self, state: BabState) -> ProblemBatch:
        """The root's rows for each domain's case, as a batch over the domains."""
        case = state.case
        return ProblemBatch(state.lower, state.upper, self.root.C[case], self.root.d[case],
                            self.root.row_disjunct[case], [],
                            [self.root.n_disjuncts[i] for i in case.tolist()])

    def bound(self, state: BabState) -> tuple[Tensor, Tensor, DomainBounds]:
        """Per-domain disjunct bounds (N, D) and the weakest one (N,)."""
        root = self.root_boxes is None or self.mode == "activation" and not state.splits
        with torch.no_grad():
            nb = intermediate.compute(
                self.graph, state.lower, state.upper, splits=state.splits,
                known=self._reusable(state), stop=self.expired, reach=self.reach,
                backward_budget=ROOT_BACKWARD_BUDGET / state.size if root
                else forward.BACKWARD_BUDGET)
        if root:  # keep the root's bounds: every domain's are intersected with them
            self.root_boxes = {name: (lo.detach(), hi.detach()) for name, (lo, hi) in
                               nb.box.items()}
        C, d, A = self._final_rows(state)
        iterations = self.settings.beta_iterations if self.mode == "activation" else 0
        recorded: dict[str, Tensor] = {}
        if iterations:  # alpha and beta optimised, then CROWN's coefficients for branching
            rows, state.warm = optimise_final(nb, C, d, state.splits, iterations,
                                              expired=self.expired, start=state.warm)
            with torch.no_grad():
                A_x, _ = backward(nb, self.graph.output_name, A, record=recorded)
        else:
            with torch.no_grad():
                A_x, bias = backward(nb, self.graph.output_name, A, record=recorded)
                A_x, _, low = at_minimiser(nb, self.graph.output_name, A, A_x, bias, recorded)
                rows = low - d
        per = self._disjunct_bounds(state, nb, rows)
        consistent = None if iterations else rows.detach()  # alpha's rows: other slopes
        return per, per.min(dim=1).values, DomainBounds(nb, A_x, recorded, consistent)

    def _final_rows(self, state: BabState) -> tuple[Tensor, Tensor, Tensor]:
        """The root's rows for each domain's case: C (N, R, m), d (N, R) and C as
        coefficients on the output node."""
        C, d = self.root.C[state.case], self.root.d[state.case]
        return C, d, C.reshape(C.shape[0], C.shape[1], *self.graph.output_shape)

    def _disjunct_bounds(self, state: BabState, nb: NodeBounds, rows: Tensor) -> Tensor:
        """(N, D) per-disjunct bounds from the rows' lower bounds: only finite ones count,
        an empty domain is refuted, and the width is the root's (a batch of cases with
        fewer disjuncts than another's: padding, +inf)."""
        per = self._problems(state).disjunct_bounds(proof_capable(rows))
        per = torch.nn.functional.pad(per, (0, max(self.root.n_disjuncts) - per.shape[1]),
                                      value=math.inf)
        return torch.where(nb.infeasible.unsqueeze(1), torch.inf, per)

    # -- branching -----------------------------------------------------------------------
    def _root_known(self, state: BabState) -> dict[str, tuple[Tensor, Tensor]]:
        """The root's intermediate bounds for each domain's case (none before the root's
        own bound)."""
        if self.root_boxes is None:
            return {}
        return {name: (lo[state.case], hi[state.case])
                for name, (lo, hi) in self.root_boxes.items()}

    def _reusable(self, state: BabState) -> intermediate.Known:
        """The root's intermediate bounds (valid on every subdomain of the root box, so
        every domain's are intersected with them) and the node index before which they are
        taken as they are: a split only changes the bounds of its node and those after it,
        so nodes before the earliest split node keep the root's bounds (when the domains'
        input boxes are their case's root box)."""
        if self.root_boxes is None:
            return intermediate.Known()
        case = state.case
        known = self._root_known(state)
        if self.mode == "input":  # sub-boxes of the root's, and of the parent's
            known.update(state.boxes)  # the parent's are within the root's
            return intermediate.Known(known)
        if state.keep is not None and state.boxes:  # the parent's: within the root's
            known.update(state.boxes)
            return intermediate.Known(known, int(state.keep.min()))
        same = bool((state.lower == self.root.lower[case]).all()) and \
            bool((state.upper == self.root.upper[case]).all())
        if not state.splits or not same:
            return intermediate.Known(known)
        return intermediate.Known(known, min(self.graph.position(name) for name in state.splits))

    def clip(self, state: BabState, b: DomainBounds) -> None:
        """Cut each domain's box to where its linear bounds leave room for a violation
        (verifier/search/clip.py); a domain with no such room is refuted."""
        if not self.settings.clip_inputs or b.A_x is None or b.rows is None:
            return
        assert state.per is not None
        sub = self._problems(state)
        A_x = b.A_x.reshape(state.size, b.A_x.shape[1], -1)
        counts = torch.tensor(sub.n_disjuncts, device=state.lower.device)
        pairs = pair_bounds(state.lower, state.upper, A_x, b.rows, sub.row_disjunct, state.per)
        if pairs is not None:  # two rows of a disjunct together
            state.per = torch.maximum(state.per, pairs)
        lower, upper, empty = clip_boxes(state.lower, state.upper, A_x, b.rows,
                                         sub.row_disjunct, counts)
        state.lower, state.upper = lower, upper
        state.per = torch.where(empty.unsqueeze(1), torch.inf, state.per)

    def input_scores(self, state: BabState, b: DomainBounds) -> Tensor:
        """|A_x| * width per input dimension (how much of the linear bound's slack the
        dimension carries) plus a share of the relative width, so a dimension on which the
        bound's looseness comes from relaxations rather than the linear term still splits."""
        width = state.upper - state.lower
        rel = width / width.max(dim=1, keepdim=True).values.clamp(min=1e-30)
        if b.A_x is None:
            smear = torch.zeros_like(width)
        else:
            weight = self._row_weights(state, b).unsqueeze(2)
            smear = (b.A_x.abs().reshape(state.size, b.A_x.shape[1], -1) * weight).sum(dim=1)
            smear = smear * width + self._relaxation_share(state, b, weight)
            # no information from non-finite coefficients: the relative width decides there
            smear = torch.where(torch.isfinite(smear), smear, 0.0)
        score = smear + (0.05 * smear.sum(dim=1, keepdim=True) + 1e-9) * rel
        root_width = (self.root.upper - self.root.lower)[state.case]
        return torch.where(width > 1e-6 * root_width, score, -1.0)

    def _relaxation_share(self, state: BabState, b: DomainBounds, weight: Tensor) -> Tensor:
        """(N, n) what each input dimension carries of the looseness of the relaxations of
        the nonlinear ops (``activation_scores``, rows weighted by ``weight`` (N, R, 1)):
        each neuron's share goes to the inputs in proportion to how far moving that input
        alone across the box moves the neuron's input (the graph evaluated at the box's
        centre moved half a width each way along each dimension).  ``|A_x| * width`` alone
        misses a dimension that loosens the bound only through the neurons it makes
        unstable: on ACAS Xu 3_3 prop_2 the weakest boxes stayed at -0.0071 split after
        split along the four best scored dimensions, and one bisection of the fifth
        refuted them."""
        if not self.nodes:  # a linear model: no relaxation
            return torch.zeros_like(state.lower)
        cost = self.activation_scores(state, b, weight).clamp(min=0)
        n_domains, n = state.lower.shape
        if not bool((cost > 0).any()):
            return torch.zeros_like(state.lower)
        names = tuple(name for name, _ in self.nodes)
        per_domain = 2 * n * cost.shape[1]  # entries of the neurons' values a domain takes
        chunk = max(1, SHARE_ENTRIES // per_domain)
        return torch.cat([self._share(state.lower[i:i + chunk], state.upper[i:i + chunk],
                                      cost[i:i + chunk], names)
                          for i in range(0, n_domains, chunk)])

    def _share(self, lower: Tensor, upper: Tensor, cost: Tensor, names: tuple[str, ...]
               ) -> Tensor:
        """``_relaxation_share`` of a chunk of domains."""
        n_domains, n = lower.shape
        centre, half = (lower + upper) / 2, (upper - lower) / 2
        step = torch.diag_embed(half)  # (N, n, n)
        points = torch.stack([centre[:, None] - step, centre[:, None] + step], dim=1)
        with torch.no_grad():
            values = self.graph.values(points.reshape(-1, n), names)
        pairs = [values[name].reshape(n_domains, 2, n, -1) for name in names]
        moved = torch.cat([(v[:, 1] - v[:, 0]).abs() for v in pairs], dim=2)  # (N, n, K)
        share = moved / moved.sum(dim=1, keepdim=True).clamp(min=1e-30)
        share = torch.where(torch.isfinite(share), share, 0.0)
        return (share * cost[:, None, :]).sum(dim=2)

    def _row_weights(self, state: BabState, b: DomainBounds) -> Tensor:
        """(N, R) how much branching should care about each row's coefficients.  One row
        above 0 refutes its disjunct, so within a disjunct still open the rows nearest to
        refuting it count most: exp(-(best - row) / |best|), 1 for the disjunct's best row;
        0 for padding and for the rows of refuted disjuncts; 1 everywhere where the rows'
        bounds are not at hand.  (Summing every row let lsnc's 26 rows, most of them in
        disjuncts already refuted, drown the one that mattered: its bound after 20 s went
        from -0.11 to -0.018.  Only the best row, acasxu prop_3 took twice the domains.)"""
        if b.rows is None or state.per is None:
            return torch.ones(b.A_x.shape[:2], dtype=state.lower.dtype,  # type: ignore
                              device=state.lower.device)
        sub = self._problems(state)
        rows = proof_capable(b.rows)
        slot = sub.row_disjunct.clamp(min=0)
        best = sub.disjunct_bounds(rows).gather(1, slot)
        gap = (best - rows) / (best.abs() + 1e-9)
        w = torch.where(torch.isfinite(gap), torch.exp(-gap), (rows >= best).to(rows.dtype))
        still = (state.per.gather(1, slot) <= 0) & (sub.row_disjunct >= 0)
        return torch.where(still, w, 0.0)

    def split_inputs(self, state: BabState, dim: Tensor | None = None) -> BabState:
        """Both halves of each domain's box along ``dim`` (N,) (default: the best scored
        dimension): the left halves, then the right ones."""
        if dim is None:
            assert state.score is not None
            dim = state.score.argmax(dim=1)
        mid = (state.lower.gather(1, dim[:, None]) + state.upper.gather(1, dim[:, None])) / 2
        left_up = state.upper.clone()
        left_up.scatter_(1, dim[:, None], mid)
        right_lo = state.lower.clone()
        right_lo.scatter_(1, dim[:, None], mid)
        left = BabState(state.lower, left_up, state.case, state.splits, state.per,
                        boxes=state.boxes)
        right = BabState(right_lo, state.upper, state.case, state.splits, state.per,
                         boxes=state.boxes)
        return BabState.cat([left, right])

    def branch_inputs(self, state: BabState) -> tuple[BabState, Tensor | None]:
        """Split each domain along the candidate dimension (of the ``input_candidates`` best
        scored) whose children lack least in all (a child's lack: how far its bound is
        below 0; ties: the larger bound), bounding every candidate's children in one
        batch; the chosen children, bounded and scored, and their coefficients on the
        input.  The score alone misjudges dimensions whose width loosens the intermediate
        bounds but barely shows in the final coefficients: on ACAS Xu 1_4 prop_1 a box whose
        bound stayed at -14.8 split after split along the four best scored dimensions was
        proved (3.9, 4.0) along the fifth."""
        assert state.score is not None and state.per is not None
        n = state.size
        dims = state.score.shape[1]
        # two inputs: the score's choice (tllverifybench N=40: 36 s -> 53 s with both)
        k = max(1, min(self.settings.input_candidates, dims)) if dims >= 3 else 1
        cand_score, cand = state.score.topk(k, dim=1)
        every = BabState.cat([self.split_inputs(state, cand[:, j]) for j in range(k)])
        b = self.bound_and_score(every)  # own bounds: the parent's would hide the choice
        assert every.per is not None
        parent = state.per.min(dim=1).values.clamp(max=0).nan_to_num(nan=-math.inf)  # (n,)
        # a child's bound is at least its parent's (it holds on the child's box too)
        weakest = torch.maximum(every.per.min(dim=1).values.reshape(k, 2, n), parent)
        # what the two children still lack (a bound above 0 lacks nothing), less the
        # parent's lack twice: what the split gains
        gain = weakest.clamp(max=0).sum(dim=1) - 2 * parent  # (k, n), >= 0
        better = weakest.max(dim=1).values
        usable = (cand_score >= 0).T  # too narrow to split: never chosen
        gain = torch.where(usable, gain, -math.inf)
        best = gain.max(dim=0, keepdim=True).values
        tied = usable & (gain == best)
        choice = torch.where(tied, better, -math.inf).argmax(dim=0)  # (n,)
        # where no candidate gains 1% of what the parent lacks, the score's choice (a split
        # that gains next to nothing now may be the one that pays after more splits: on
        # ACAS Xu 1_3 prop_3, picking by gain alone halved one input 25 times running)
        choice = torch.where(best[0] > -0.02 * parent, choice, 0)
        first = choice * 2 * n + torch.arange(n, device=choice.device)
        kept = torch.cat([first, first + n])
        children = every.take(kept)
        assert children.per is not None
        children.per = torch.maximum(children.per, torch.cat([state.per, state.per]))
        return children, None if b.A_x is None else b.A_x[kept]

    def activation_scores(self, state: BabState, b: DomainBounds,
                          weight: Tensor | None = None) -> Tensor:
        """Per neuron: the gap between its relaxation lines at the middle of its interval,
        weighted by how much the bound depends on it (sum over rows of |A|, each row
        weighted by ``weight`` (N, R, 1) where given); -1 where the neuron is stable
        (linear on its interval) or its interval is tiny."""
        scores = []
        for name, node in self.nodes:
            lo, hi = b.nodes.box[name]
            A = b.recorded.get(node.name)
            lines = None if A is None else b.nodes.relaxation(node).lines()
            if A is None or lines is None:
                s = torch.zeros_like(lo)
            else:
                mid = ((lo + hi) / 2).unsqueeze(1)
                gap = (lines.a_u - lines.a_l) * mid + (lines.b_u - lines.b_l)
                magnitude = A.abs() if weight is None else \
                    A.abs() * weight.reshape(*weight.shape, *[1] * (A.dim() - 3))
                s = (magnitude * gap).sum(dim=1)
            splittable = ((hi - lo) > 1e-6) & torch.isfinite(s)  # an infinite gap stays
            # infinite in a child (an end at a pole or at infinity): bisect inputs instead
            fixed = node.op.insensitive(0, [(lo, hi)])  # splitting there changes nothing
            if fixed is not None:
                splittable &= ~fixed
            scores.append(torch.where(splittable & (s > 0), s, -1.0).reshape(state.size, -1))
        return torch.cat(scores, dim=1)

    def choose_neurons(self, state: BabState) -> Tensor | None:
        """(N,) the neuron (flat index over the split nodes) each domain splits: of the
        ``activation_candidates`` best scored, the one whose weaker child has the better
        bound when both are bounded cheaply (their intermediate bounds the parent's, the
        split neuron's clamped; one backward pass with the parent's slopes and
        multipliers).  None: the best scored (one candidate, or a domain with none)."""
        assert state.score is not None
        k = min(self.settings.activation_candidates,
                LOOKAHEAD_ENTRIES // (2 * state.size * state.score.shape[1]))
        if k <= 1 or bool((state.score.max(dim=1).values < 0).any()):
            return None
        cand_score, cand = state.score.topk(min(k, state.score.shape[1]), dim=1)
        k = cand.shape[1]
        # the children without the parent's parameters, which are indexed once for all
        lean = dataclasses.replace(state, warm=None, per=None, score=None, keep=None)
        every = BabState.cat([self._split_at(lean, cand[:, j]) for j in range(k)])
        if state.warm is not None:
            every.warm = state.warm.take(
                torch.arange(state.size, device=state.lower.device).repeat(2 * k))
        weakest = self._quick_bound(every).reshape(k, 2, state.size).min(dim=1).values
        weakest = torch.where((cand_score >= 0).T, weakest, -math.inf)  # (k, N)
        # ties (every candidate's children unrefuted and equally weak): the best scored
        choice = weakest.argmax(dim=0)
        return cand.gather(1, choice.unsqueeze(1)).squeeze(1)

    def _quick_bound(self, state: BabState) -> Tensor:
        """(N,) a cheap bound of each domain's weakest disjunct: every split node's bounds
        taken from ``boxes`` (within the domain's limits), one backward pass."""
        known = {**self._root_known(state), **state.boxes}
        with torch.no_grad():
            nb = intermediate.compute(self.graph, state.lower, state.upper,
                                      splits=state.splits, stop=self.expired,
                                      known=intermediate.Known(known, len(self.graph.nodes)))
            slopes, betas = Slopes(budget=0), None
            if state.warm is not None:
                slopes.pairs = {k: (lo, hi) for k, (lo, hi, _) in state.warm.slopes.items()}
                betas = Betas(state.splits, {k: v for k, v in state.warm.betas.items()
                                             if k in state.splits})
            _, d, A = self._final_rows(state)
            rows = bound(nb, self.graph.output_name, A, slopes, betas=betas) - d
        return self._disjunct_bounds(state, nb, rows).min(dim=1).values

    def split_activations(self, state: BabState, pos: Tensor | None = None
                          ) -> BabState | None:
        """Two children per domain, split at the chosen neuron's branching point (``pos``,
        default: the best scored)."""
        assert state.score is not None
        if pos is not None:
            return self._split_at(state, pos)
        best, pos = state.score.max(dim=1)
        if bool((best < 0).any()):
            # nothing left to split in these domains (every neuron fixed or stable, yet the
            # split constraints are not enforced on the input box): bisect their inputs
            stuck = (best < 0).nonzero().flatten()
            free = (best >= 0).nonzero().flatten()
            boxed = state.take(stuck)
            width = boxed.upper - boxed.lower
            boxed.score = torch.where(width > 0, width, -1.0)
            parts = [self.split_inputs(boxed)]
            if len(free):
                sub = state.take(free)
                parts.append(self.split_activations(sub))  # type: ignore[arg-type]
            return BabState.cat(parts)
        return self._split_at(state, pos)

    def _split_at(self, state: BabState, pos: Tensor) -> BabState:
        """Both children of each domain split at neuron ``pos`` (N,): the left ones (at or
        below the branching point), then the right ones."""
        b_box = state.boxes
        sizes = [math.prod(node.shape) for _, node in self.nodes]
        offsets = np.cumsum([0] + sizes)
        keep = torch.zeros(state.size, dtype=torch.long, device=state.lower.device)
        left = {k: (v[0].clone(), v[1].clone()) for k, v in state.splits.items()}
        right = {k: (v[0].clone(), v[1].clone()) for k, v in state.splits.items()}
        for i, (name, node) in enumerate(self.nodes):
            sel = ((pos >= int(offsets[i])) & (pos < int(offsets[i + 1]))).nonzero().flatten()
            if not len(sel):
                continue
            for side in (left, right):
                if name not in side:
                    full = torch.full((state.size, *node.shape), math.inf,
                                      dtype=state.lower.dtype, device=state.lower.device)
                    side[name] = (-full, full.clone())
            j = pos[sel] - int(offsets[i])
            lo, hi = (t.reshape(state.size, -1)[sel, j] for t in b_box[name])
            point = node.op.split_point(lo, hi)  # type: ignore[attr-defined]
            keep[sel] = self.graph.position(name) + 1
            left[name][1].reshape(state.size, -1)[sel, j] = point
            right[name][0].reshape(state.size, -1)[sel, j] = point
        return BabState.cat([BabState(state.lower, state.upper, state.case, left, state.per,
                                      boxes=b_box, keep=keep, warm=state.warm),
                             BabState(state.lower, state.upper, state.case, right, state.per,
                                      boxes=b_box, keep=keep, warm=state.warm)])

    # -- falsification -------------------------------------------------------------------
    def try_points(self, state: BabState, A_x: Tensor | None) -> None:
        """Evaluate the box corners the CROWN bound is minimised at (and the centres)."""
        if A_x is None:
            return
        # crude: the corner of all rows' coefficients together
        for pts in start_points(self._problems(state), A_x, 2, 0).unbind(dim=1):
            with torch.no_grad():
                y = self.graph.forward(pts).reshape(state.size, -1)
            sub = self._problems(state)
            rows = torch.einsum("brm,bm->br", sub.C, y) - sub.d
            per = sub.disjunct_bounds(rows)  # rows' max per disjunct: <= 0 means violated
            hit = (per <= 0).any(dim=1).nonzero().flatten()
            for i in hit[:8].tolist():
                case = self.root.cases[int(state.case[i])]
                cex = confirm(self.model, self.prop, case, pts[i].double().cpu().numpy())
                if cex is not None:
                    self.found.append(cex)
                    return

    def guided_search(self, state: BabState, A_x: Tensor | None) -> None:
        """Search the weakest of the domains just bounded for a counterexample, with their
        split limits as guides (guided.py; input splitting's boxes have none: the violation
        alone leads, from boxes clipping has cut), while that search has had less than its
        share of the time."""
        g = self.settings.guided
        now = time.monotonic()
        if g is None or self.mode == "activation" and not state.splits or state.per is None or \
                self.search_seconds > g.share * (now - self.started):
            return
        order = torch.argsort(state.per.min(dim=1).values)[:g.domains]
        picked = state.take(order)
        sub = self._problems(picked)
        splits = {k: (lo[order], hi[order]) for k, (lo, hi) in state.splits.items()}
        A_x = None if A_x is None else A_x[order]
        settings = dataclasses.replace(g, seed=g.seed + self.searches)
        starts = start_points(sub, A_x, g.starts, settings.seed)
        self.searches += 1
        with torch.enable_grad():
            xs, vs = guided_points(self.graph, sub, splits, starts, settings, self.expired)
        for d, k in candidates(vs, each_best=False):
            case = self.root.cases[int(picked.case[d])]
            cex = confirm(self.model, self.prop, case, xs[d, k].double().cpu().numpy())
            if cex is not None:
                self.found.append(cex)
                break
        self.search_seconds += time.monotonic() - now

    # -- the loop ------------------------------------------------------------------------
    def bound_and_score(self, state: BabState, inherited: Tensor | None = None
                        ) -> DomainBounds:
        """Bound the domains (a bound is never worse than the parent's, which holds on the
        child's smaller domain too) and compute branching scores."""
        per, _, b = self.bound(state)
        state.per = per if inherited is None else torch.maximum(per, inherited)
        if self.mode == "input":
            self.clip(state, b)
            state.score = self.input_scores(state, b)
            state.boxes = self._inherited(b.nodes)
        else:
            state.score = self.activation_scores(state, b)
            state.boxes = {name: b.nodes.box[name] for name, _ in self.nodes}
        return b

    def _inherited(self, nb: NodeBounds) -> dict[str, tuple[Tensor, Tensor]]:
        """Input splitting: what a domain passes on to its children (valid on their
        sub-boxes): its bounds of the nonlinear ops' inputs where they make every user's
        relaxation exact (a stable ReLU), so the children's entries are stable too and get
        no backward pass; infinite elsewhere, where a child's own bounds are taken alone
        (intersected with the parent's there, tllverifybench N=40 took 912-976 domains
        instead of 746, as CROWN's slope choice moved; stable only: 622).  None where they
        would take more than ``INHERITED_BYTES`` a domain."""
        graph = self.graph
        names = list(dict.fromkeys(i for n in graph.nodes if not n.op.linear for i in n.inputs
                                   if i != graph.input_name))
        per_domain = sum(nb.box[name][0][0].numel() for name in names) * 2 * \
            nb.lower.element_size()
        if per_domain > INHERITED_BYTES:
            return {}
        out = {}
        for name in names:
            lo, hi = nb.box[name][0].detach(), nb.box[name][1].detach()
            loose = intermediate.sensitive(nb, name, lo, hi).reshape(lo.shape)
            out[name] = (torch.where(loose, -math.inf, lo), torch.where(loose, math.inf, hi))
        return out

    def bound_children(self, children: BabState) -> tuple[BabState, Tensor | None]:
        """Bound and score activation-split children, those that keep their parent's bounds
        below the same node together (each group's intermediate bounds start at its split
        node); the children, regrouped, and their coefficients on the input."""
        keep = children.keep
        values = [None] if keep is None else keep.unique().tolist()
        parts, coefficients = [], []
        for value in values:
            part = children if value is None else \
                children.take((keep == value).nonzero().flatten())  # type: ignore[union-attr]
            coefficients.append(self.bound_and_score(part, part.per).A_x)
            part.keep = None  # its boxes are its own now
            parts.append(part)
        A_x = None if any(a is None for a in coefficients) else \
            torch.cat(coefficients)  # type: ignore[arg-type]
        return BabState.cat(parts), A_x

    def run(self, state: BabState) -> BabOutcome:
        try:
            return self._loop(state)
        except MemoryExceeded:  # even the root's bound, or one domain, is over the budget
            return BabOutcome("unknown", self.done, self.found, set(self.root.cases),
                              self.global_lb)
        except Interrupted:
            return BabOutcome("timeout", self.done, self.found, set(self.root.cases),
                              self.global_lb)

    def _loop(self, state: BabState) -> BabOutcome:
        self.try_points(state, self.bound_and_score(state).A_x)
        if self.found:
            return self._outcome("falsified", state, -math.inf)
        assert state.per is not None
        margin = state.per.min(dim=1).values
        state = state.take(still_open(margin).nonzero().flatten())
        global_lb = float(margin.min()) if margin.numel() else math.inf
        self.global_lb = global_lb
        while state.size:
            if self.expired():
                return self._outcome("timeout", state, global_lb)
            if state.size > self.domain_cap(state):
                return self._outcome("unknown", state, global_lb)
            order = torch.argsort(state.per.min(dim=1).values)  # type: ignore[union-attr]
            k = min(self.batch, state.size)
            started = time.monotonic()
            pick, rest = state.take(order[:k]), state.take(order[k:])
            try:
                if self.mode == "input":
                    assert pick.score is not None
                    point = pick.score.max(dim=1).values < 0
                    if bool(point.any()):
                        # domains narrower than 1e-6 of their case in every input (point
                        # boxes): splitting them again would not change their bounds, so
                        # the run can end `unknown` at best, but the others may still hold
                        # a counterexample (one hidden in a tiny ball: the point boxes at
                        # its rim, where the bound meets 0, came first)
                        self._set_aside(pick.take(point.nonzero().flatten()))
                        pick = pick.take((~point).nonzero().flatten())
                        k = pick.size  # the round's size, for _adapt
                        if not k:
                            state = rest
                            continue
                    children, A_x = self.branch_inputs(pick)
                else:
                    maybe = self.split_activations(pick, self.choose_neurons(pick))
                    if maybe is None:
                        return self._outcome("unknown", BabState.cat([pick, rest]), global_lb)
                    children, A_x = self.bound_children(maybe)
            except MemoryExceeded:
                if self.batch == 1:
                    raise
                # the same domains again, half as many per round from now on
                self.batch = self.batch_cap = max(1, self.batch // 2)
                state = BabState.cat([pick, rest]) if rest.size else pick
                continue
            assert children.per is not None
            margin = children.per.min(dim=1).values
            self.done += children.size
            self._adapt(time.monotonic() - started, k)
            self.try_points(children, A_x)
            if not self.found:
                self.guided_search(children, A_x)
            if self.found:
                return self._outcome("falsified", children, global_lb)
            keep = children.take(still_open(margin).nonzero().flatten())
            state = BabState.cat([keep, rest]) if keep.size + rest.size else keep
            global_lb = float(state.per.min()) if state.size else math.inf  # type: ignore
            global_lb = min(global_lb, self.points_lb)
            self.global_lb = global_lb
            self.progress(state.size, self.done, global_lb)
        return self._outcome("unknown" if self.points else "verified", state, global_lb)

    def _set_aside(self, points: BabState) -> None:
        """Keep input splitting's point boxes that their own bound does not refute.  Their
        bounds so far are those of the boxes clipping cut them from (clip.py cuts after
        bounding), which may be far looser: on lsnc quadrotor2d_state_6 the one point box
        left at 83 s held -4e-9 from its parent box, where interval bounds on its own box
        refute it (the model's margin there is 0.014), and the run ended `unknown`."""
        assert points.per is not None
        with torch.no_grad():
            self.bound_and_score(points, points.per)
        assert points.per is not None
        points = points.take(still_open(points.per.min(dim=1).values).nonzero().flatten())
        if points.size:
            self.points.append(points)
            self.points_lb = min(self.points_lb, float(points.per.min()))  # type: ignore

    def domain_cap(self, state: BabState) -> int:
        """Open domains kept before giving up: ``max_domains``, or for input splitting as
        many as ``input_domain_bytes`` holds, if that is more; for activation splitting
        as many as ``activation_domain_bytes`` holds, if that is fewer."""
        cap = self.settings.max_domains
        if self.mode == "input":
            return max(cap, self.settings.input_domain_bytes // state.bytes_per_domain())
        return min(cap, self.settings.activation_domain_bytes // state.bytes_per_domain())

    def _adapt(self, seconds: float, picked: int) -> None:
        """Keep a round between about half a second and two: twice the domains after a round
        under half a second; after one over two seconds, as many as a second allows at its
        time per domain.  (A round's fixed cost is large where each bounding call walks
        many nodes or relaxes smooth functions: eran's sigmoid 6x200 took 0.6 s a round
        for 4 domains as for 16, so rounds held under a second ran 4 domains each, 11 a
        second.  Deadlines do not need short rounds: bounding stops at every node and
        every ascent step once the deadline passes.  Halving once per slow round let
        cgan's 32x32 model, 0.3 s a domain, go from 4 domains a round to 64: sizing a slow
        round by its time per domain does not.)"""
        if seconds < 0.5:
            self.batch = min(self.batch_cap, self.batch * 2)
        elif seconds > 2.0:
            self.batch = max(1, min(self.batch, int(picked * 1.0 / seconds)))

    def _outcome(self, verdict: str, state: BabState, lb: float) -> BabOutcome:
        if self.points and verdict != "falsified":  # the point boxes set aside stay open
            state = BabState.cat([state, *self.points])
            lb = min(lb, float(state.per.min()))  # type: ignore[union-attr]
        self.global_lb = lb
        cases = {self.root.cases[int(i)] for i in state.case.unique().tolist()} if state.size \
            else set()
        return BabOutcome(verdict, self.done, self.found, cases, lb)


def run_bab(model: Model, prop: Property, root: ProblemBatch, settings: BabSettings,
            expired: Callable[[], bool],
            progress: Callable[[int, int, float], None] = lambda *a: None,
            root_boxes: dict[str, tuple[Tensor, Tensor]] | None = None) -> BabOutcome:
    """Branch and bound over every case of ``root`` (one batch row per case).
    ``root_boxes``: bounds of graph nodes valid over each case's box, one row per case
    (e.g. alpha-CROWN's intermediate bounds), which every domain's bounds are cut by."""
    bab = BranchAndBound(model, prop, root, settings, expired, progress, root_boxes)
    state = BabState(root.lower, root.upper, torch.arange(root.size, device=root.lower.device))
    return bab.run(state)


__all__ = ["BabSettings", "BabOutcome", "run_bab", "time"]
