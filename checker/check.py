"""Checking a proof ("nnverify-proof/1"): coverage, intervals, lines, final bounds.

The proof is a ZIP of arrays (``numpy.savez_compressed``) with a JSON ``manifest``.  Each
case of the property has a tree of splits whose leaves each claim, over their region,

* for every activation a, an interval ``[lo, hi]`` of its input z and lines bounding f there;
* for every disjunct of the case, a row r of ``C y <= d`` with ``min (C[r] y - d[r]) > 0``
  (or that the region is empty).

What is checked, per leaf, in float64 with a bound on every rounding (``checker.arith``):

1. the region: the case box cut by the input splits of its path, and the neuron constraints
   ``s (z_j - p) >= 0`` (both children of every split exist, so the leaves cover the case);
2. for each activation in turn, a lower and an upper bound of every entry of z: interval
   arithmetic and the path's constraints, tightened by back-substitution (CROWN) over the
   earlier activations' verified lines on each side that interval arithmetic does not
   already show inside the claim (the lower side of a ReLU entry claimed ``<= 0`` is not
   needed: its lines are 0 there): empty means the leaf holds vacuously; otherwise the
   claimed interval must contain it on the sides checked, and the lines must bound f on it;
3. for each disjunct, the same back-substitution from ``C[r]`` with the disjunct's lines and
   the beta multipliers of the path's constraints, minimised over the box, exceeds ``d[r]``.

Float evaluation model (what makes the proof hold for onnxruntime's float evaluation and not
only for real arithmetic): each tensor's value is the exact op of its inputs' values plus
``eta``, ``|eta| <= e``, with u the model's unit roundoff: dot products of n terms
``e = gamma(n+2) (|W| max|x| + |b|)``; Add, Sub, Mul, Div ``e = u max|y|``; Sigmoid, Tanh
``e = 16 u (1 + max|y|)`` (onnxruntime's kernels measured under 2.4 ulps); the rest exact.
Interval arithmetic widens each box by e; back-substitution charges ``|Lambda| e`` at each
tensor, exactly as a bias taken at its worst.

Leaves are checked in batches (``Batch``): every array gains a leading leaf axis, each step
runs over the batch's leaves at once with each leaf's own charges, and a failing leaf ends
the checks of the leaves after it, so that the failure reported is the lowest failing
leaf's first, as when each leaf is checked alone.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from checker.arith import SAFETY, U64, down, gamma, interval_affine, magnitude, times_mag, widen
from checker.lines import BadLine, check_lines, evaluate, slack
from checker.model import Activation, Affine, Graph, Node, Unusable, read_model
from verifier.property.core import Property
from verifier.property.vnnlib.api import parse_vnnlib_file
from verifier.property.vnnlib.errors import SpecError

FORMAT = "nnverify-proof/1"
ACTIVATION_ULPS = 16.0  # noise of the model's sigmoid and tanh, in ulps of 1 + |f|
FUNCTION_ULPS = 8.0  # error of numpy's float64 exp/tanh-based evaluation, in ulps
BATCH_LEAVES = 256  # leaves checked together
BATCH_ENTRIES = 2**18  # the largest coefficient array of a batch (2 MiB: about a core's L2 cache)
Box = tuple[np.ndarray, np.ndarray]
Lines = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # a_l, b_l, a_u, b_u


class Rejected(Exception):
    """The proof does not hold; ``leaf`` is the failing leaf's index, when there is one."""

    def __init__(self, reason: str, leaf: int | None = None) -> None:
        super().__init__(reason)
        self.leaf = leaf


@dataclass
class Report:
    """The verdict: ``ok`` when the proof holds, else the ``reason`` (and failing leaf)."""

    ok: bool
    reason: str | None
    leaves: int
    cases: int
    seconds: float
    failing_leaf: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Region:
    """A leaf's region: ``case``'s box cut to [lower, upper], and neuron constraints
    ``s (z_j - p) >= 0`` as (activation, j, s, p) in path order."""

    case: int
    lower: np.ndarray
    upper: np.ndarray
    constraints: tuple[tuple[int, int, float, float], ...]


@dataclass
class Context:
    """Everything a check reads: the model, the property, the proof's arrays (each member
    read once, into ``members``), and the order in which nodes are visited (activations in
    the manifest's order).  ``notes`` are (leaf, text)."""

    graph: Graph
    prop: Property
    acts: list[Activation]
    order: list[Node]
    arrays: Any  # numpy's NpzFile
    n_leaves: int
    notes: list[tuple[int, str]]
    members: dict[str, np.ndarray | str] = field(default_factory=dict)

    def member(self, name: str, shape: tuple[int, ...]) -> np.ndarray | str:
        """The proof's array ``name`` of shape ``(n_leaves, *shape)`` in float64, or why it
        cannot be used."""
        if name not in self.members:
            want = (self.n_leaves, *shape)
            if name not in self.arrays:
                self.members[name] = "is missing"
            elif (a := self.arrays[name]).shape != want or a.dtype.kind != "f":
                self.members[name] = (f"has shape {a.shape} and type {a.dtype}, not {want} "
                                      f"float64")
            else:
                self.members[name] = a.astype(np.float64)
        return self.members[name]

    def rows(self, bt: Batch, name: str, shape: tuple[int, ...], need: np.ndarray
             ) -> np.ndarray:
        """The batch's rows of array ``name``; the first leaf that ``need``s its row and finds
        none (a missing or malformed member, a row of NaN) is rejected."""
        member = self.member(name, shape)
        if isinstance(member, str):
            if (i := bt.first(need)) is not None:
                bt.fail(i, f"leaf {bt.ks[i]}: array {name} {member}")
            return np.full((bt.size, *shape), np.nan)
        rows = member[bt.ks]
        blank = np.isnan(rows).reshape(bt.size, -1).all(axis=1)
        if (i := bt.first(need & blank)) is not None:
            bt.fail(i, f"leaf {bt.ks[i]}: array {name} has no value for it")
        return rows


# -- files and manifest ---------------------------------------------------------------------

def _sha256(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as exc:
        raise Unusable(f"cannot read {path}: {exc.strerror or exc}") from None


def _open_proof(path: str) -> tuple[dict[str, Any], Any]:
    """The manifest and arrays of the proof at ``path`` (Unusable if it is no proof)."""
    try:
        arrays = np.load(path, allow_pickle=False)
        manifest = json.loads(str(arrays["manifest"][()]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, AttributeError) as exc:
        raise Unusable(f"{path} is not a proof file ({FORMAT}): {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise Unusable(f"{path} is not a proof file: its format is not {FORMAT!r}")
    return manifest, arrays


def _require(ok: bool, reason: str, leaf: int | None = None) -> None:
    if not ok:
        raise Rejected(reason, leaf)


def _is_int(v: Any, below: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < below


def _match_activations(graph: Graph, listed: Any) -> list[Activation]:
    """The model's activations in the manifest's order; the list must name each exactly once
    (input, output, op, size) and be a topological order (checked by ``_schedule``)."""
    by_output = {a.h_name: a for a in graph.activations}
    _require(isinstance(listed, list) and len(listed) == len(by_output),
             f"the manifest lists {len(listed) if isinstance(listed, list) else 'no'} "
             f"activations, the model has {len(by_output)}")
    out = []
    for i, entry in enumerate(listed):
        act = by_output.pop(str(entry.get("output")), None) if isinstance(entry, dict) else None
        _require(act is not None and entry.get("input") == act.z_name
                 and entry.get("op") == act.op and entry.get("size") == graph.sizes[act.input],
                 f"manifest activation {i} ({entry}) is not an activation node of the model")
        assert act is not None
        out.append(act)
    return out


def _schedule(graph: Graph, acts: list[Activation]) -> list[Node]:
    """A topological order of the nodes visiting the activations in the manifest's order."""
    done, order, pending, nxt = {0}, [], list(graph.nodes), 0
    pick: Node | None
    while pending:
        ready = [n for n in pending
                 if all(t in done for t in (n.inputs if isinstance(n, Affine) else (n.input,)))]
        pick = next((n for n in ready if isinstance(n, Affine)), None)
        if pick is None:
            _require(nxt < len(acts) and acts[nxt] in ready,
                     "the manifest's activations are not in a topological order of the model")
            pick, nxt = acts[nxt], nxt + 1
        assert pick is not None
        order.append(pick)
        pending.remove(pick)
        done.add(pick.output)
    return order


# -- the trees -------------------------------------------------------------------------------

def _regions(ctx: Context, cases: Any, n_leaves: int) -> dict[int, Region]:
    """Each leaf's region, from the case trees; every leaf index used exactly once."""
    _require(isinstance(cases, list) and len(cases) == len(ctx.prop.cases),
             f"the proof has {len(cases) if isinstance(cases, list) else 'no'} case trees, "
             f"the property {len(ctx.prop.cases)} cases")
    regions: dict[int, Region] = {}
    for i, (entry, case) in enumerate(zip(cases, ctx.prop.cases, strict=True)):
        tree = entry.get("tree") if isinstance(entry, dict) else None
        root = Region(i, case.lower.astype(np.float64), case.upper.astype(np.float64), ())
        stack: list[tuple[Any, Region]] = [(tree, root)]
        while stack:
            node, region = stack.pop()
            _require(isinstance(node, dict), f"case {i}: a tree node is not an object")
            if "leaf" in node:
                k = node["leaf"]
                _require(_is_int(k, n_leaves), f"case {i}: leaf index {k!r} is out of range")
                _require(k not in regions, f"leaf {k} is used more than once", k)
                regions[k] = region
                continue
            low, high = _split(ctx, i, node, region)
            stack += [(node["children"][1], high), (node["children"][0], low)]
    missing = sorted(set(range(n_leaves)) - set(regions))
    _require(not missing, f"leaves {missing[:5]} are in no tree")
    return regions


def _split(ctx: Context, case: int, node: dict[str, Any], r: Region) -> tuple[Region, Region]:
    """The regions of a split node's two children: LOW (``<= p``) and HIGH (``>= p``)."""
    split: Any = node.get("split")
    children: Any = node.get("children")
    _require(isinstance(split, dict) and isinstance(children, list) and len(children) == 2,
             f"case {case}: a split node needs 'split' and two 'children'")
    p = split.get("at")
    _require(isinstance(p, int | float) and not isinstance(p, bool) and np.isfinite(p),
             f"case {case}: split point {p!r} is not a finite number")
    p = float(p)
    if "input" in split:
        d = split["input"]
        _require(_is_int(d, ctx.prop.n_inputs), f"case {case}: input split index {d!r}")
        lo_up, hi_lo = r.upper.copy(), r.lower.copy()
        lo_up[d], hi_lo[d] = min(lo_up[d], p), max(hi_lo[d], p)
        return (Region(case, r.lower, lo_up, r.constraints),
                Region(case, hi_lo, r.upper, r.constraints))
    a, j = split.get("activation"), split.get("index")
    _require(_is_int(a, len(ctx.acts)) and _is_int(j, ctx.graph.sizes[ctx.acts[a].input]),
             f"case {case}: neuron split ({a!r}, {j!r}) names no neuron")
    return (Region(case, r.lower, r.upper, r.constraints + ((a, j, -1.0, p),)),
            Region(case, r.lower, r.upper, r.constraints + ((a, j, 1.0, p),)))


# -- a batch of leaves -------------------------------------------------------------------------

@dataclass(frozen=True)
class LeafClaim:
    """Leaf k's region and claim: empty at activation ``infeasible_at``, or, per disjunct of
    its case, (row r of ``C``, lines ``"box"`` or ``"own"``, one beta per neuron split)."""

    k: int
    region: Region
    infeasible_at: int | None
    disjuncts: list[tuple[int, str, list[float]]]


@dataclass
class Batch:
    """Leaves checked together: row i of every array is leaf ``leaves[i]`` (arrays are
    (B, n): leaves x entries).  Checks run on the rows below ``limit``; ``failure`` is the
    first failure of the leaf at ``limit``, the lowest failing leaf found so far (each leaf
    is checked step by step in the order of a check of that leaf alone, so a failure found
    in a row below ``limit`` is that leaf's first)."""

    leaves: list[LeafClaim]
    failure: Rejected | None
    boxes: dict[int, Box] = field(default_factory=dict)
    noise: dict[int, np.ndarray] = field(default_factory=dict)
    lines: dict[tuple[str, int], tuple[Lines, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ks, self.limit = np.array([leaf.k for leaf in self.leaves]), len(self.leaves)
        lower = np.array([leaf.region.lower for leaf in self.leaves])
        self.boxes[0] = (lower, np.array([leaf.region.upper for leaf in self.leaves]))
        self.noise[0] = np.zeros_like(lower)

    @property
    def size(self) -> int:
        return len(self.leaves)

    def fail(self, i: int, reason: str) -> None:
        """Row i (below ``limit``) fails: the rows from it on need no further checks."""
        self.limit, self.failure = i, Rejected(reason, int(self.ks[i]))

    def first(self, bad: np.ndarray) -> int | None:
        """The first row below ``limit`` where ``bad`` holds."""
        hits = np.flatnonzero(bad[:self.limit])
        return int(hits[0]) if len(hits) else None

    def keep(self, rows: np.ndarray) -> None:
        """Keep only the ``rows`` (a mask) below ``limit``: the rest hold or have failed."""
        idx = np.flatnonzero(rows[:self.limit])
        self.leaves, self.ks, self.limit = [self.leaves[i] for i in idx], self.ks[idx], len(idx)
        self.boxes = {t: (lo[idx], hi[idx]) for t, (lo, hi) in self.boxes.items()}
        self.noise = {t: e[idx] for t, e in self.noise.items()}
        self.lines = {key: (tuple(x[idx] for x in ln), tol[idx])  # type: ignore[misc]
                      for key, (ln, tol) in self.lines.items()}


def _leaf_claim(ctx: Context, k: int, region: Region, claim: Any) -> LeafClaim | None:
    """Leaf k's claim, validated; None when its input box is empty (it holds vacuously)."""
    _require(isinstance(claim, dict), f"leaf {k} is not an object", k)
    at = claim.get("infeasible_at")
    _require(at is None or _is_int(at, len(ctx.acts)), f"leaf {k}: infeasible_at {at!r}", k)
    _require(bool(np.all(np.isfinite(region.lower)) and np.all(np.isfinite(region.upper))),
             f"leaf {k}: the input box is not bounded", k)
    if np.any(region.lower > region.upper):
        ctx.notes.append((k, f"leaf {k} is empty: its input box is empty"))
        return None
    return LeafClaim(k, region, at, _disjunct_claims(ctx, k, region, claim) if at is None else [])


def _disjunct_claims(ctx: Context, k: int, region: Region, claim: dict[str, Any]
                     ) -> list[tuple[int, str, list[float]]]:
    """The leaf's (row, lines, betas) per disjunct of its case, validated."""
    case = ctx.prop.cases[region.case]
    claims: Any = claim.get("disjuncts")
    _require(isinstance(claims, list) and len(claims) == len(case.disjuncts),
             f"leaf {k}: needs one entry per disjunct of case {region.case} "
             f"({len(case.disjuncts)})", k)
    out = []
    for q, (dj, conj) in enumerate(zip(claims, case.disjuncts, strict=True)):
        ok = isinstance(dj, dict) and _is_int(dj.get("row"), len(conj.d)) \
            and dj.get("lines") in ("box", "own") and isinstance(dj.get("betas"), list)
        _require(ok, f"leaf {k}, disjunct {q}: needs a row of C, lines 'box' or 'own' and "
                 f"betas", k)
        betas = dj["betas"]
        _require(len(betas) == len(region.constraints), f"leaf {k}, disjunct {q}: "
                 f"{len(betas)} betas for {len(region.constraints)} neuron splits", k)
        good = all(isinstance(b, int | float) and not isinstance(b, bool) and b >= 0
                   and np.isfinite(b) for b in betas)
        _require(good, f"leaf {k}, disjunct {q}: betas must be finite and >= 0: {betas}", k)
        out.append((dj["row"], dj["lines"], [float(b) for b in betas]))
    return out


def _batch_size(graph: Graph) -> int:
    """Leaves per batch: at most BATCH_LEAVES, and coefficient arrays (2 n x m per leaf for
    an activation of n entries and a tensor of m) of at most BATCH_ENTRIES entries."""
    widest = max((graph.sizes[a.input] for a in graph.activations), default=1)
    return max(1, min(BATCH_LEAVES, BATCH_ENTRIES // (2 * widest * max(graph.sizes))))


# -- interval arithmetic ---------------------------------------------------------------------

def _ibp_affine(node: Affine, boxes: dict[int, Box], u: float) -> tuple[Box, np.ndarray]:
    """The box of an affine node's float value, and its noise e (module doc)."""
    lower, upper, err, wx, _ = interval_affine(node.mats, [boxes[t] for t in node.inputs],
                                               node.bias)
    if node.dot:
        e = gamma(node.terms + 2, u) * (wx + np.abs(node.bias))
    else:
        e = u * magnitude(lower - err, upper + err) + node.repr_err * wx
    return widen(lower, upper, err + e), e


def _ibp_activation(op: str, lo: np.ndarray, hi: np.ndarray, u: float
                    ) -> tuple[Box, np.ndarray]:
    """The box of ``f(z)`` (f increasing) over the float z in [lo, hi], and its noise."""
    (flo, _), (fhi, _) = evaluate(op, lo), evaluate(op, hi)
    if op == "Relu":
        return (flo, fhi), np.zeros_like(lo)
    e = ACTIVATION_ULPS * u * (1.0 + magnitude(flo, fhi))
    eval_err = FUNCTION_ULPS * U64 * (1.0 + magnitude(flo, fhi))
    return widen(flo, fhi, e + eval_err), e


# -- back-substitution -----------------------------------------------------------------------
# Coefficients are (R, n) while they are the same for every leaf of the batch (rows R of a
# start matrix, n entries of a tensor), (B, R, n) once they differ (after an activation's
# lines, or from per-leaf rows of C); constants and charges are (B, R).

def _matmul(A: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``A @ W`` for A (..., m) and W (m, n), as one matrix product."""
    return (A.reshape(-1, A.shape[-1]) @ W).reshape(*A.shape[:-1], W.shape[1])


@dataclass
class Backsub:
    """A lower bound of ``Lambda @ v`` being built: coefficients on the tensors not yet
    substituted, a constant, and ``slack``, the sum of every charge (noise, rounding)."""

    coeffs: dict[int, np.ndarray]
    const: np.ndarray
    slack: np.ndarray

    def add_const(self, t: np.ndarray, err: np.ndarray | float) -> None:
        self.const = self.const + t
        self.slack = self.slack + err + U64 * np.abs(self.const)

    def add_coeff(self, tid: int, A: np.ndarray, charge: np.ndarray | float,
                  mag: np.ndarray) -> None:
        """Add ``A`` to tensor ``tid``'s coefficients; ``charge`` is ``err @ max|v_tid|`` for
        the bound ``err`` on A's own rounding; the addition's rounding is charged too."""
        if tid in self.coeffs:
            A = self.coeffs[tid] + A
            charge = charge + U64 * times_mag(A, mag)
        self.coeffs[tid] = A
        self.slack = self.slack + charge


#: beta terms of one activation, one split per leaf: rows, neurons j, s * beta, p * beta
BetaRound = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _through_affine(bs: Backsub, node: Affine, A: np.ndarray, boxes: dict[int, Box],
                    noise: np.ndarray) -> None:
    """``A y = sum_i (A W_i) x_i + A b`` for y's float value, which is the exact affine map
    plus a noise of at most ``noise`` per entry.  Every charge is ``|A|`` times a vector,
    summed first and charged in one product: the noise; ``A b``'s rounding,
    ``gamma(n+2) |A| |b|``; each ``A W_i``'s rounding times max|x_i|, ``gamma(m+2) |A| |W_i|
    max|x_i|`` for a dense W_i of m columns (``|A| (|W_i| max|x_i|)``, the same product
    summed in another order), ``U64 |A| |W_i| max|x_i|`` for a diagonal one (none for 1)."""
    charges = noise
    if node.bias.any():
        bs.add_const(A @ node.bias, 0.0)
        charges = charges + gamma(len(node.bias) + 2, U64) * np.abs(node.bias)
    terms = []
    for tid, W in zip(node.inputs, node.mats, strict=True):
        mag = magnitude(*boxes[tid])
        if W.ndim == 2:
            terms.append((tid, _matmul(A, W), mag))
            charges = charges + gamma(W.shape[0] + 2, U64) * times_mag(W, mag)
        elif np.all(W == 1.0):
            terms.append((tid, A, mag))
        else:
            terms.append((tid, A * W, mag))
            with np.errstate(invalid="ignore"):  # 0 * inf: an unused unbounded entry
                charges = charges + U64 * np.where(W == 0, 0.0, np.abs(W) * mag)
    if np.any(charges):
        bs.slack = bs.slack + times_mag(A, charges)
    for tid, AW, mag in terms:
        bs.add_coeff(tid, AW, 0.0, mag)


def _through_activation(bs: Backsub, z: int, A: np.ndarray, lines: Lines, tol: np.ndarray,
                        rounds: list[BetaRound], mag: np.ndarray) -> None:
    """``A h >= A+ (a_l z + b_l) + A- (a_u z + b_u) - |A| tol``, then the beta terms
    ``- beta s (z_j - p)`` (each <= 0 on the region), one split per leaf and round."""
    al, bl, au, bu = lines
    Ap, An = np.maximum(A, 0.0), np.minimum(A, 0.0)
    Az = Ap * al[:, None, :] + An * au[:, None, :]  # one rounded product per entry
    finite = bool(np.isfinite(mag).all())
    # |Az| mag = A+ (|a_l| mag) - A- (|a_u| mag) (one of A+, A- is 0 in each entry)
    extra = [np.abs(al) * mag, np.abs(au) * mag] if finite else [np.zeros_like(al)] * 2
    up = np.matmul(Ap, np.stack([bl, np.abs(bl), tol, extra[0]], axis=-1))
    dn = np.matmul(An, np.stack([bu, np.abs(bu), tol, extra[1]], axis=-1))
    bound_err = gamma(bl.shape[-1] + 2, U64) * (up[..., 1] - dn[..., 1])
    bs.add_const(up[..., 0] + dn[..., 0], bound_err + up[..., 2] - dn[..., 2])
    charge = (U64 * (1.0 + SAFETY) * (up[..., 3] - dn[..., 3]) if finite
              else U64 * times_mag(Az, mag))
    for rows, j, sb, pb in rounds:  # Az[rows, :, j] is (splits, R)
        Az[rows, :, j] = Az[rows, :, j] - sb[:, None]  # beta * s is exact (s = +-1)
        charge[rows] += U64 * times_mag(Az[rows, :, j][..., None], mag[rows, j][:, None])
        bs.const[rows] += (sb * pb)[:, None]  # beta s p, one rounding: U64 |beta p|
        bs.slack[rows] += U64 * np.abs(pb)[:, None] + U64 * np.abs(bs.const[rows])
    bs.add_coeff(z, Az, charge, mag)


def _lower_bound(ctx: Context, bt: Batch, start: int, A: np.ndarray,
                 lines: Callable[[int], tuple[Lines, np.ndarray]],
                 betas: dict[int, list[BetaRound]]) -> np.ndarray:
    """A rigorous lower bound, over each leaf's region, of each row of ``A @ v_start``
    (A (R, n) or (B, R, n); the result (B, R))."""
    B, R = bt.size, A.shape[-2]
    bs = Backsub({start: A}, np.zeros((B, R)), np.zeros((B, R)))
    index = {act.output: a for a, act in enumerate(ctx.acts)}
    for node in reversed(ctx.order):
        a = index.get(node.output)
        if node.output not in bs.coeffs and (a is None or not betas.get(a)):
            continue
        Ay = bs.coeffs.pop(node.output, None)
        if Ay is None:  # a beta term on an activation the coefficients skip
            Ay = np.zeros((B, R, ctx.graph.sizes[node.output]))
        if isinstance(node, Affine):
            _through_affine(bs, node, Ay, bt.boxes, bt.noise[node.output])
        else:
            if bt.noise[node.output].any():  # a sigmoid's or tanh's (a ReLU's is exact)
                bs.slack = bs.slack + times_mag(Ay, bt.noise[node.output])
            assert a is not None
            act_lines, tol = lines(a)
            _through_activation(bs, node.input, Ay, act_lines, tol, betas.get(a, []),
                                magnitude(*bt.boxes[node.input]))
    lo, hi = (x[:, None, :] for x in bt.boxes[0])
    Ax = bs.coeffs.pop(0, np.zeros((B, R, lo.shape[-1])))
    T = np.where(Ax >= 0, Ax * lo, Ax * hi)  # each entry's minimum over the box
    v = T.sum(axis=-1)
    total = (bs.slack + gamma(T.shape[-1] + 1, U64) * np.abs(T).sum(axis=-1)
             + 2 * U64 * (np.abs(bs.const) + np.abs(v))) * (1.0 + SAFETY)
    return down(bs.const + v - total)


# -- the checks, a batch at a time -----------------------------------------------------------

def _input_interval(ctx: Context, bt: Batch, a: int, lo: np.ndarray, hi: np.ndarray,
                    full: np.ndarray) -> Box:
    """Bounds of activation a's input z over each leaf: interval arithmetic and the path's
    constraints on z, tightened by CROWN over the verified earlier lines on the sides that
    interval arithmetic does not already show within the claim [lo, hi] (both sides of
    every entry for the leaves marked ``full``, and where a claim is NaN)."""
    z, n = ctx.acts[a].input, ctx.graph.sizes[ctx.acts[a].input]
    L, U = (x.copy() for x in bt.boxes[z])
    for i, leaf in enumerate(bt.leaves):
        for b, j, s, p in leaf.region.constraints:
            if b == a and s > 0:
                L[i, j] = max(L[i, j], p)
            elif b == a:
                U[i, j] = min(U[i, j], p)
    unknown = np.isnan(lo) | np.isnan(hi) | full[:, None]
    need = np.concatenate([~(L >= lo), ~(U <= hi)], axis=1)
    lower, upper = _sides(ctx.acts[a].op, lo, hi)
    need &= np.concatenate([lower, upper], axis=1)
    need |= np.concatenate([unknown, unknown], axis=1)
    R = int(need.sum(axis=1).max(initial=0))
    if R:  # one start row per needed side (a leaf's rows first, zero rows after them)
        li, col = np.nonzero(need)
        row = (np.cumsum(need, axis=1) - 1)[li, col]
        A = np.zeros((bt.size, R, n))
        A[li, row, col % n] = np.where(col < n, 1.0, -1.0)
        lb = _lower_bound(ctx, bt, z, A, lambda b: bt.lines[("box", b)], {})[li, row]
        low = col < n
        L[li[low], col[low]] = np.maximum(L[li[low], col[low]], lb[low])
        U[li[~low], col[~low] - n] = np.minimum(U[li[~low], col[~low] - n], -lb[~low])
    return L, U


def _sides(op: str, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which sides of each claimed interval are checked: both, except for a ReLU entry
    claimed at most 0, whose lines (0 on that side) need only its upper bound (its lower one
    enters nothing but float64 rounding charges, from interval arithmetic's box)."""
    return (~(hi <= 0) if op == "Relu" else np.ones(lo.shape, bool)), np.ones(lo.shape, bool)


def _first_bad_line(op: str, sl: np.ndarray, ic: np.ndarray, L: np.ndarray, U: np.ndarray,
                    lower: bool) -> tuple[int, BadLine] | None:
    """The first row (leaf) i whose lines (sl, ic) (B, n) do not bound f on [L, U], with the
    failing entry check_lines finds for that leaf alone."""
    found, count = None, len(sl)
    while count:  # check_lines reports a failing entry, not always the lowest leaf's
        bad = check_lines(op, sl[:count].ravel(), ic[:count].ravel(), L[:count].ravel(),
                          U[:count].ravel(), lower)
        if bad is not None and bad.exhausted and count > 1:  # the piece budget is per leaf
            for i in range(count):
                one = _first_bad_line(op, sl[i:i + 1], ic[i:i + 1], L[i:i + 1], U[i:i + 1],
                                      lower)
                if one is not None:
                    return i, one[1]
            return found
        if bad is None:
            return found
        i, j = divmod(bad.index, sl.shape[1])
        found, count = (i, BadLine(j, bad.x, bad.why, bad.exhausted)), i
    return found


def _verify_lines(ctx: Context, bt: Batch, a: int, name: str, rows: np.ndarray, L: np.ndarray,
                  U: np.ndarray, need: np.ndarray) -> tuple[Lines, np.ndarray]:
    """Lines ``rows`` (B, 4, n) (array ``name``) of activation a bound f on [L, U] for the
    leaves that ``need`` them; the lines and their tolerance."""
    act, live = ctx.acts[a], np.flatnonzero(need[:bt.limit])
    al, bl, au, bu = (rows[:, r] for r in range(4))
    for lower, (sl, ic) in ((True, (al, bl)), (False, (au, bu))):
        found = _first_bad_line(act.op, sl[live], ic[live], L[live], U[live], lower)
        if found is None:
            continue
        i, bad = int(live[found[0]]), found[1]
        j = bad.index
        bt.fail(i, f"leaf {bt.ks[i]}, activation {a} ({act.z_name}), entry {j}: "
                f"{'lower' if lower else 'upper'} line {sl[i, j]:.9g} x + {ic[i, j]:.9g} "
                f"({name}) {bad.why} near x = {bad.x:.9g} (z in [{L[i, j]:.9g}, "
                f"{U[i, j]:.9g}])")
        live = live[live < i]
    tol = np.maximum(slack(al, bl, L, U), slack(au, bu, L, U))
    return (al, bl, au, bu), tol


def _all_lines_hold(op: str, bt: Batch, sets: list[tuple[str, str, np.ndarray, np.ndarray]],
                    L: np.ndarray, U: np.ndarray) -> bool:
    """Whether every set of lines bounds f on [L, U] for the leaves that need it, checked
    in one call per side (a failure is then located by ``_verify_lines``)."""
    for lower, (sl, ic) in ((True, (0, 1)), (False, (2, 3))):
        picks = [np.flatnonzero(need[:bt.limit]) for _, _, _, need in sets]
        a_ = np.concatenate([rows[live, sl].ravel() for (_, _, rows, _), live in
                             zip(sets, picks, strict=True)])
        b_ = np.concatenate([rows[live, ic].ravel() for (_, _, rows, _), live in
                             zip(sets, picks, strict=True)])
        lo = np.concatenate([L[live].ravel() for live in picks])
        hi = np.concatenate([U[live].ravel() for live in picks])
        if len(a_) and check_lines(op, a_, b_, lo, hi, lower) is not None:
            return False
    return True


def _activation_step(ctx: Context, bt: Batch, a: int) -> None:
    """Verify activation a's claimed intervals and lines; drop the leaves found empty."""
    act, u = ctx.acts[a], ctx.graph.unit_roundoff
    n, none = ctx.graph.sizes[act.input], np.zeros(bt.size, bool)
    lo, hi = ctx.rows(bt, f"A{a}/lo", (n,), none), ctx.rows(bt, f"A{a}/hi", (n,), none)
    claimed = np.array([leaf.infeasible_at == a for leaf in bt.leaves], bool)
    L, U = _input_interval(ctx, bt, a, lo, hi, claimed)
    empty = np.any(L > U, axis=1)
    for e in np.flatnonzero(empty[:bt.limit]):
        j = int(np.flatnonzero(L[e] > U[e])[0])
        ctx.notes.append((int(bt.ks[e]), f"leaf {bt.ks[e]} is empty: activation {a}, entry {j} "
                          f"has no value ([{L[e, j]:.9g}, {U[e, j]:.9g}])"))
    live = ~empty
    if (i := bt.first(live & claimed)) is not None:
        bt.fail(i, f"leaf {bt.ks[i]} claims to be empty at activation {a}, but every entry of "
                f"{act.z_name} has values")
    lo, hi = ctx.rows(bt, f"A{a}/lo", (n,), live), ctx.rows(bt, f"A{a}/hi", (n,), live)
    lower, upper = _sides(act.op, lo, hi)
    out = (lower & ~(lo <= L)) | (upper & ~(hi >= U))
    if (i := bt.first(live & out.any(axis=1))) is not None:
        j = int(np.flatnonzero(out[i])[0])
        bt.fail(i, f"leaf {bt.ks[i]}, activation {a} ({act.z_name}), entry {j}: claimed "
                f"interval [{lo[i, j]:.9g}, {hi[i, j]:.9g}] does not contain the computed "
                f"[{L[i, j]:.9g}, {U[i, j]:.9g}]")
    box = ctx.rows(bt, f"A{a}/box", (4, n), live)
    sets = [("box", f"A{a}/box", box, live)]
    for q in range(max(len(leaf.disjuncts) for leaf in bt.leaves)):
        own = live & np.array([q < len(leaf.disjuncts) and leaf.disjuncts[q][1] == "own"
                               for leaf in bt.leaves], bool)
        if own.any():  # the disjunct's lines: its own where a leaf has them, else the box's
            rows = np.where(own[:, None, None], ctx.rows(bt, f"D{q}/A{a}", (4, n), own), box)
            sets.append((f"D{q}", f"D{q}/A{a}", rows, own))
    if _all_lines_hold(act.op, bt, sets, L, U):  # one check of every set: the usual case
        for key, _, rows, _ in sets:
            al, bl, au, bu = (rows[:, r] for r in range(4))
            tol = np.maximum(slack(al, bl, L, U), slack(au, bu, L, U))
            bt.lines[(key, a)] = ((al, bl, au, bu), tol)
    else:  # set by set, to report the lowest failing leaf's first failure
        for key, name, rows, need in sets:
            bt.lines[(key, a)] = _verify_lines(ctx, bt, a, name, rows, L, U, need)
    bt.boxes[act.input] = (L, U)
    bt.boxes[act.output], bt.noise[act.output] = _ibp_activation(act.op, L, U, u)
    bt.keep(live)


def _beta_rounds(bt: Batch, q: int) -> dict[int, list[BetaRound]]:
    """Disjunct q's beta terms by activation, in rounds of one split per leaf (the t-th
    split of each leaf's path in round t, so that each leaf's are taken in path order)."""
    found: dict[tuple[int, int], list[tuple[int, int, float, float]]] = {}
    for i, leaf in enumerate(bt.leaves):
        if q < len(leaf.disjuncts):
            for t, ((a, j, s, p), beta) in enumerate(zip(leaf.region.constraints,
                                                         leaf.disjuncts[q][2], strict=True)):
                found.setdefault((a, t), []).append((i, j, beta * s, beta * p))
    rounds: dict[int, list[BetaRound]] = {}
    for (a, _), splits in sorted(found.items()):
        rows, js, sb, pb = (np.array(x) for x in zip(*splits, strict=True))
        rounds.setdefault(a, []).append((rows, js, sb, pb))
    return rounds


def _final_bounds(ctx: Context, bt: Batch) -> None:
    """Each leaf refutes each disjunct q of its case: ``min C[r] y > d[r]``."""
    for q in range(max((len(leaf.disjuncts) for leaf in bt.leaves), default=0)):
        has = np.array([q < len(leaf.disjuncts) for leaf in bt.leaves], dtype=bool)
        C, d = np.zeros((bt.size, 1, ctx.graph.sizes[ctx.graph.output])), np.zeros(bt.size)
        for h in np.flatnonzero(has):  # C and d of each leaf's row (zero where it has none)
            leaf = bt.leaves[h]
            conj, r = ctx.prop.cases[leaf.region.case].disjuncts[q], leaf.disjuncts[q][0]
            C[h, 0], d[h] = conj.C[r], conj.d[r]
        lines = {a: bt.lines.get((f"D{q}", a), bt.lines[("box", a)])
                 for a in range(len(ctx.acts))}
        lb = _lower_bound(ctx, bt, ctx.graph.output, C, lines.__getitem__,
                          _beta_rounds(bt, q))[:, 0]
        if (i := bt.first(has & ~(lb > d))) is not None:
            r = bt.leaves[i].disjuncts[q][0]
            bt.fail(i, f"leaf {bt.ks[i]}, disjunct {q}, row {r}: bound {lb[i] - d[i]:.6g} <= 0 "
                    f"(lower bound {lb[i]:.9g} of C[{r}] y, d[{r}] = {d[i]:.9g})")


def _check_batch(ctx: Context, ks: range, regions: dict[int, Region], leaves: list[Any]
                 ) -> None:
    """Check the leaves ``ks`` together (Rejected at the lowest failing one)."""
    claims, failure = [], None
    for k in ks:
        try:
            claim = _leaf_claim(ctx, k, regions[k], leaves[k])
        except Rejected as exc:
            failure = exc
            break
        claims += [claim] if claim is not None else []
    if claims:
        bt = Batch(claims, failure)
        _check_leaves(ctx, bt)
        failure = bt.failure
    if failure is not None:
        raise failure


def _check_leaves(ctx: Context, bt: Batch) -> None:
    """Every check of the batch's leaves, in each leaf's order (failures in ``bt``)."""
    index = {act.output: a for a, act in enumerate(ctx.acts)}
    for node in ctx.order:
        if not bt.size:
            return
        if isinstance(node, Affine):
            u = ctx.graph.unit_roundoff
            bt.boxes[node.output], bt.noise[node.output] = _ibp_affine(node, bt.boxes, u)
        else:
            _activation_step(ctx, bt, index[node.output])
    at = [leaf.infeasible_at for leaf in bt.leaves]
    if (i := bt.first(np.array([a is not None for a in at]))) is not None:
        bt.fail(i, f"leaf {bt.ks[i]} claims to be empty at activation {at[i]}, but is not")
    _final_bounds(ctx, bt)


# -- the whole proof -------------------------------------------------------------------------

def _read_property(path: str, graph: Graph) -> Property:
    """The property, whose sizes must be the model's."""
    try:
        prop = parse_vnnlib_file(path)
    except SpecError as exc:
        raise Unusable(f"cannot read the property {path}: {exc}") from None
    n_in, n_out = graph.sizes[0], graph.sizes[graph.output]
    if (prop.n_inputs, prop.n_outputs) != (n_in, n_out):
        raise Unusable(f"the property has {prop.n_inputs} inputs and {prop.n_outputs} "
                       f"outputs, the model {n_in} and {n_out}")
    return prop


def _check_hashes(manifest: dict[str, Any], model_path: str, property_path: str) -> None:
    """The proof is for these files."""
    _require(manifest.get("model_sha256") == _sha256(model_path),
             f"the proof is for another model: sha256 of {model_path} is not the manifest's")
    _require(manifest.get("property_sha256") == _sha256(property_path),
             f"the proof is for another property: sha256 of {property_path} is not the "
             f"manifest's")


def _check_proof(manifest: dict[str, Any], arrays: Any, model_path: str, property_path: str,
                 notes: list[tuple[int, str]]) -> None:
    """Every check, in order (Rejected at the first failure)."""
    _check_hashes(manifest, model_path, property_path)
    graph = read_model(model_path)
    prop = _read_property(property_path, graph)
    uro = manifest.get("unit_roundoff")
    _require(isinstance(uro, int | float) and uro >= graph.unit_roundoff,
             f"the manifest's unit roundoff {uro!r} is smaller than the model's "
             f"{graph.unit_roundoff!r}: the proof ignores part of the float evaluation's noise")
    leaves = manifest.get("leaves")
    _require(isinstance(leaves, list), "the manifest has no list of leaves")
    assert isinstance(leaves, list)
    acts = _match_activations(graph, manifest.get("activations"))
    ctx = Context(graph, prop, acts, _schedule(graph, acts), arrays, len(leaves), notes)
    regions = _regions(ctx, manifest.get("cases"), len(leaves))
    size = _batch_size(graph)
    for first in range(0, len(leaves), size):
        _check_batch(ctx, range(first, min(first + size, len(leaves))), regions, leaves)


def check(proof_path: str, model_path: str, property_path: str) -> Report:
    """Check the proof at ``proof_path`` for the model and property files.

    Returns the Report (``ok`` False with the reason and failing leaf when the proof does not
    hold); raises ``Unusable`` when a file cannot be used (unreadable, not a proof, a model
    outside the trusted ops, a property of other sizes)."""
    start = time.perf_counter()
    manifest, arrays = _open_proof(proof_path)
    notes: list[tuple[int, str]] = []
    leaves, cases = manifest.get("leaves"), manifest.get("cases")
    counts = (len(leaves) if isinstance(leaves, list) else 0,
              len(cases) if isinstance(cases, list) else 0)
    try:
        _check_proof(manifest, arrays, model_path, property_path, notes)
    except Rejected as exc:
        return Report(False, str(exc), *counts, time.perf_counter() - start, exc.leaf,
                      _notes(notes, exc.leaf))
    finally:
        arrays.close()
    return Report(True, None, *counts, time.perf_counter() - start, None, _notes(notes, None))


def _notes(notes: list[tuple[int, str]], failing: int | None) -> list[str]:
    """The notes in leaf order, of the leaves before the failing one (those checked when a
    leaf at a time)."""
    return [text for k, text in sorted(notes, key=lambda n: n[0])
            if failing is None or k < failing]
