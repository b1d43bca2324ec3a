"""Checking a proof ("nnverify-proof/1"): coverage, intervals, lines, final bounds.

The proof is a ZIP of arrays (``numpy.savez_compressed``) with a JSON ``manifest``.  Each
case of the property has a tree of splits whose leaves each claim, over their region,

* for every activation a, an interval ``[lo, hi]`` of its input z and lines bounding f there;
* for every disjunct of the case, a row r of ``C y <= d`` with ``min (C[r] y - d[r]) > 0``
  (or that the region is empty).

What is checked, per leaf, in float64 with a bound on every rounding (``checker.arith``):

1. the region: the case box cut by the input splits of its path, and the neuron constraints
   ``s (z_j - p) >= 0`` (both children of every split exist, so the leaves cover the case);
2. for each activation in turn, a lower and an upper bound of every entry of z by
   back-substitution (CROWN) over the earlier activations' verified lines, intersected with
   interval arithmetic and the path's constraints: empty means the leaf holds vacuously;
   otherwise the claimed interval must contain it, and the lines must bound f on it;
3. for each disjunct, the same back-substitution from ``C[r]`` with the disjunct's lines and
   the beta multipliers of the path's constraints, minimised over the box, exceeds ``d[r]``.

Float evaluation model (what makes the proof hold for onnxruntime's float evaluation and not
only for real arithmetic): each tensor's value is the exact op of its inputs' values plus
``eta``, ``|eta| <= e``, with u the model's unit roundoff: dot products of n terms
``e = gamma(n+2) (|W| max|x| + |b|)``; Add, Sub, Mul, Div ``e = u max|y|``; Sigmoid, Tanh
``e = 16 u (1 + max|y|)`` (onnxruntime's kernels measured under 2.4 ulps); the rest exact.
Interval arithmetic widens each box by e; back-substitution charges ``|Lambda| e`` at each
tensor, exactly as a bias taken at its worst.
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
from checker.lines import check_lines, evaluate, slack
from checker.model import Activation, Affine, Graph, Node, Unusable, read_model
from verifier.property.core import Property
from verifier.property.vnnlib.api import parse_vnnlib_file
from verifier.property.vnnlib.errors import SpecError

FORMAT = "nnverify-proof/1"
ACTIVATION_ULPS = 16.0  # noise of the model's sigmoid and tanh, in ulps of 1 + |f|
FUNCTION_ULPS = 8.0  # error of numpy's float64 exp/tanh-based evaluation, in ulps
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
    """Everything a leaf check reads: the model, the property, the proof's arrays, and the
    order in which nodes are visited (activations in the manifest's order)."""

    graph: Graph
    prop: Property
    acts: list[Activation]
    order: list[Node]
    arrays: Any  # numpy's NpzFile
    notes: list[str]

    def array(self, name: str, shape: tuple[int, ...], leaf: int) -> np.ndarray:
        """The proof's float array ``name``, which must have ``shape``."""
        if name not in self.arrays:
            raise Rejected(f"leaf {leaf}: array {name} is missing", leaf)
        a = self.arrays[name]
        if a.shape != shape or a.dtype.kind != "f":
            raise Rejected(f"leaf {leaf}: array {name} has shape {a.shape} and type "
                           f"{a.dtype}, not {shape} float64", leaf)
        return a.astype(np.float64)


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

@dataclass
class Backsub:
    """A lower bound of ``Lambda @ v`` being built: coefficients on the tensors not yet
    substituted, a constant, and ``slack``, the sum of every charge (noise, rounding)."""

    coeffs: dict[int, np.ndarray]
    const: np.ndarray
    slack: np.ndarray

    def add_const(self, t: np.ndarray, err: np.ndarray) -> None:
        self.const = self.const + t
        self.slack = self.slack + err + U64 * np.abs(self.const)

    def add_coeff(self, tid: int, A: np.ndarray, err: np.ndarray, mag: np.ndarray) -> None:
        """Add ``A`` (whose entries err by at most ``err``) to tensor ``tid``'s coefficients,
        charging ``err @ max|v_tid|`` (and the addition's own rounding)."""
        if tid in self.coeffs:
            A = self.coeffs[tid] + A
            err = err + U64 * np.abs(A)
        self.coeffs[tid] = A
        self.slack = self.slack + times_mag(err, mag)


def _through_affine(bs: Backsub, node: Affine, A: np.ndarray, boxes: dict[int, Box]) -> None:
    """``A y = sum_i (A W_i) x_i + A b``."""
    bs.add_const(A @ node.bias, gamma(len(node.bias) + 2, U64) * (np.abs(A) @ np.abs(node.bias)))
    for tid, W in zip(node.inputs, node.mats, strict=True):
        AW = A * W if W.ndim == 1 else A @ W
        err = U64 * np.abs(AW) if W.ndim == 1 else gamma(W.shape[0] + 2, U64) * (
            np.abs(A) @ np.abs(W))
        bs.add_coeff(tid, AW, err, magnitude(*boxes[tid]))


def _through_activation(bs: Backsub, z: int, A: np.ndarray, lines: Lines, tol: np.ndarray,
                        betas: list[tuple[int, float, float, float]], mag: np.ndarray) -> None:
    """``A h >= A+ (a_l z + b_l) + A- (a_u z + b_u) - |A| tol``, then the beta terms
    ``- beta s (z_j - p)`` (each <= 0 on the region)."""
    al, bl, au, bu = lines
    Ap, An = np.maximum(A, 0.0), np.minimum(A, 0.0)
    Az = Ap * al + An * au  # one rounded product per entry
    err = U64 * np.abs(Az)
    bound_err = gamma(len(bl) + 2, U64) * (Ap @ np.abs(bl) - An @ np.abs(bu))
    bs.add_const(Ap @ bl + An @ bu, bound_err + np.abs(A) @ tol)
    for j, s, p, beta in betas:
        Az[:, j] = Az[:, j] - beta * s  # beta * s is exact (s = +-1)
        err[:, j] += U64 * np.abs(Az[:, j])
        bs.add_const(np.full(len(Az), beta * s * p), np.full(len(Az), U64 * abs(beta * p)))
    bs.add_coeff(z, Az, err, mag)


def _lower_bound(ctx: Context, start: int, A: np.ndarray, boxes: dict[int, Box],
                 noise: dict[int, np.ndarray], lines: Callable[[int], tuple[Lines, np.ndarray]],
                 box: Box, betas: dict[int, list[tuple[int, float, float, float]]]
                 ) -> np.ndarray:
    """A rigorous lower bound, over the leaf's region, of each row of ``A @ v_start``."""
    bs = Backsub({start: A}, np.zeros(len(A)), np.zeros(len(A)))
    index = {act.output: a for a, act in enumerate(ctx.acts)}
    for node in reversed(ctx.order):
        a = index.get(node.output)
        if node.output not in bs.coeffs and (a is None or not betas.get(a)):
            continue
        Ay = bs.coeffs.pop(node.output, np.zeros((len(A), ctx.graph.sizes[node.output])))
        bs.slack = bs.slack + times_mag(Ay, noise[node.output])
        if isinstance(node, Affine):
            _through_affine(bs, node, Ay, boxes)
        else:
            assert a is not None
            act_lines, tol = lines(a)
            _through_activation(bs, node.input, Ay, act_lines, tol, betas.get(a, []),
                                magnitude(*boxes[node.input]))
    Ax = bs.coeffs.pop(0, np.zeros((len(A), ctx.graph.sizes[0])))
    T = np.where(Ax >= 0, Ax * box[0], Ax * box[1])  # each entry's minimum over the box
    v = T.sum(axis=1)
    total = (bs.slack + gamma(T.shape[1] + 1, U64) * np.abs(T).sum(axis=1)
             + 2 * U64 * (np.abs(bs.const) + np.abs(v))) * (1.0 + SAFETY)
    return down(bs.const + v - total)


# -- one leaf --------------------------------------------------------------------------------

@dataclass
class Leaf:
    """One leaf being checked: its region and what has been verified so far."""

    k: int
    region: Region
    claim: dict[str, Any]
    boxes: dict[int, Box] = field(default_factory=dict)
    noise: dict[int, np.ndarray] = field(default_factory=dict)
    lines: dict[tuple[str, int], tuple[Lines, np.ndarray]] = field(default_factory=dict)


def _disjunct_claims(ctx: Context, leaf: Leaf) -> list[tuple[int, str, list[float]]]:
    """The leaf's (row, lines, betas) per disjunct of its case, validated."""
    case, k = ctx.prop.cases[leaf.region.case], leaf.k
    claims: Any = leaf.claim.get("disjuncts")
    _require(isinstance(claims, list) and len(claims) == len(case.disjuncts),
             f"leaf {k}: needs one entry per disjunct of case {leaf.region.case} "
             f"({len(case.disjuncts)})", k)
    out = []
    for q, (dj, conj) in enumerate(zip(claims, case.disjuncts, strict=True)):
        ok = isinstance(dj, dict) and _is_int(dj.get("row"), len(conj.d)) \
            and dj.get("lines") in ("box", "own") and isinstance(dj.get("betas"), list)
        _require(ok, f"leaf {k}, disjunct {q}: needs a row of C, lines 'box' or 'own' and "
                 f"betas", k)
        betas = dj["betas"]
        _require(len(betas) == len(leaf.region.constraints), f"leaf {k}, disjunct {q}: "
                 f"{len(betas)} betas for {len(leaf.region.constraints)} neuron splits", k)
        good = all(isinstance(b, int | float) and not isinstance(b, bool) and b >= 0
                   and np.isfinite(b) for b in betas)
        _require(good, f"leaf {k}, disjunct {q}: betas must be finite and >= 0: {betas}", k)
        out.append((dj["row"], dj["lines"], [float(b) for b in betas]))
    return out


def _input_interval(ctx: Context, leaf: Leaf, a: int) -> Box:
    """Bounds of activation a's input z over the leaf: CROWN over the verified earlier
    lines, intersected with interval arithmetic and the path's constraints on z."""
    z, n = ctx.acts[a].input, ctx.graph.sizes[ctx.acts[a].input]
    box = (leaf.region.lower, leaf.region.upper)
    eye = np.eye(n)
    lb = _lower_bound(ctx, z, np.vstack([eye, -eye]), leaf.boxes, leaf.noise,
                      lambda b: leaf.lines[("box", b)], box, {})
    L, U = np.maximum(lb[:n], leaf.boxes[z][0]), np.minimum(-lb[n:], leaf.boxes[z][1])
    for b, j, s, p in leaf.region.constraints:
        if b == a and s > 0:
            L[j] = max(L[j], p)
        elif b == a:
            U[j] = min(U[j], p)
    return L, U


def _verify_lines(ctx: Context, leaf: Leaf, a: int, key: str, name: str, L: np.ndarray,
                  U: np.ndarray) -> None:
    """Lines (array ``name``) of activation a bound f on [L, U]; remember them under key."""
    act, k = ctx.acts[a], leaf.k
    al, bl, au, bu = ctx.array(name, (4, len(L)), k)
    for lower, (sl, ic) in ((True, (al, bl)), (False, (au, bu))):
        bad = check_lines(act.op, sl, ic, L, U, lower)
        if bad is not None:
            j = bad.index
            raise Rejected(f"leaf {k}, activation {a} ({act.z_name}), entry {j}: "
                           f"{'lower' if lower else 'upper'} line {sl[j]:.9g} x + {ic[j]:.9g} "
                           f"({name}) {bad.why} near x = {bad.x:.9g} (z in [{L[j]:.9g}, "
                           f"{U[j]:.9g}])", k)
    tol = np.maximum(slack(al, bl, L, U), slack(au, bu, L, U))
    leaf.lines[(key, a)] = ((al, bl, au, bu), tol)


def _activation_step(ctx: Context, leaf: Leaf, a: int, claims: list[Any]) -> bool:
    """Verify activation a's claimed interval and lines; False when the leaf is empty."""
    act, k, u = ctx.acts[a], leaf.k, ctx.graph.unit_roundoff
    L, U = _input_interval(ctx, leaf, a)
    if np.any(L > U):
        j = int(np.flatnonzero(L > U)[0])
        ctx.notes.append(f"leaf {k} is empty: activation {a}, entry {j} has no value "
                         f"([{L[j]:.9g}, {U[j]:.9g}])")
        return False
    _require(leaf.claim.get("infeasible_at") != a, f"leaf {k} claims to be empty at "
             f"activation {a}, but every entry of {act.z_name} has values", k)
    n = len(L)
    lo = ctx.array(f"L{k}/A{a}/lo", (n,), k)
    hi = ctx.array(f"L{k}/A{a}/hi", (n,), k)
    ok = (lo <= L) & (hi >= U)
    if not ok.all():
        j = int(np.flatnonzero(~ok)[0])
        raise Rejected(f"leaf {k}, activation {a} ({act.z_name}), entry {j}: claimed "
                       f"interval [{lo[j]:.9g}, {hi[j]:.9g}] does not contain the computed "
                       f"[{L[j]:.9g}, {U[j]:.9g}]", k)
    _verify_lines(ctx, leaf, a, "box", f"L{k}/A{a}/box", L, U)
    for q, (_, kind, _) in enumerate(claims):
        if kind == "own":
            _verify_lines(ctx, leaf, a, f"D{q}", f"L{k}/D{q}/A{a}", L, U)
    leaf.boxes[act.input] = (L, U)
    leaf.boxes[act.output], leaf.noise[act.output] = _ibp_activation(act.op, L, U, u)
    return True


def _check_leaf(ctx: Context, k: int, region: Region, claim: Any) -> None:
    """Check leaf k over its region (Rejected when it fails)."""
    _require(isinstance(claim, dict), f"leaf {k} is not an object", k)
    at = claim.get("infeasible_at")
    _require(at is None or _is_int(at, len(ctx.acts)), f"leaf {k}: infeasible_at {at!r}", k)
    _require(bool(np.all(np.isfinite(region.lower)) and np.all(np.isfinite(region.upper))),
             f"leaf {k}: the input box is not bounded", k)
    if np.any(region.lower > region.upper):
        ctx.notes.append(f"leaf {k} is empty: its input box is empty")
        return
    leaf = Leaf(k, region, claim)
    claims = _disjunct_claims(ctx, leaf) if at is None else []
    leaf.boxes[0], leaf.noise[0] = (region.lower, region.upper), np.zeros(len(region.lower))
    index = {act.output: a for a, act in enumerate(ctx.acts)}
    for node in ctx.order:
        if isinstance(node, Affine):
            u = ctx.graph.unit_roundoff
            leaf.boxes[node.output], leaf.noise[node.output] = _ibp_affine(node, leaf.boxes, u)
        elif not _activation_step(ctx, leaf, index[node.output], claims):
            return
    _require(at is None, f"leaf {k} claims to be empty at activation {at}, but is not", k)
    for q, (r, kind, betas) in enumerate(claims):
        _final_bound(ctx, leaf, q, r, kind, betas)


def _final_bound(ctx: Context, leaf: Leaf, q: int, r: int, kind: str,
                 betas: list[float]) -> None:
    """Disjunct q is refuted on the leaf: ``min C[r] y > d[r]``."""
    conj = ctx.prop.cases[leaf.region.case].disjuncts[q]
    by_act: dict[int, list[tuple[int, float, float, float]]] = {}
    for (a, j, s, p), beta in zip(leaf.region.constraints, betas, strict=True):
        by_act.setdefault(a, []).append((j, s, p, beta))
    key = "box" if kind == "box" else f"D{q}"
    C = np.asarray(conj.C[r], dtype=np.float64)[None, :]
    lb = _lower_bound(ctx, ctx.graph.output, C, leaf.boxes, leaf.noise,
                      lambda a: leaf.lines[(key, a)], (leaf.region.lower, leaf.region.upper),
                      by_act)[0]
    d = float(conj.d[r])
    _require(bool(lb > d), f"leaf {leaf.k}, disjunct {q}, row {r}: bound {lb - d:.6g} <= 0 "
             f"(lower bound {lb:.9g} of C[{r}] y, d[{r}] = {d:.9g})", leaf.k)


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
                 notes: list[str]) -> None:
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
    ctx = Context(graph, prop, acts, _schedule(graph, acts), arrays, notes)
    regions = _regions(ctx, manifest.get("cases"), len(leaves))
    for k, claim in enumerate(leaves):
        _check_leaf(ctx, k, regions[k], claim)


def check(proof_path: str, model_path: str, property_path: str) -> Report:
    """Check the proof at ``proof_path`` for the model and property files.

    Returns the Report (``ok`` False with the reason and failing leaf when the proof does not
    hold); raises ``Unusable`` when a file cannot be used (unreadable, not a proof, a model
    outside the trusted ops, a property of other sizes)."""
    start = time.perf_counter()
    manifest, arrays = _open_proof(proof_path)
    notes: list[str] = []
    leaves, cases = manifest.get("leaves"), manifest.get("cases")
    counts = (len(leaves) if isinstance(leaves, list) else 0,
              len(cases) if isinstance(cases, list) else 0)
    try:
        _check_proof(manifest, arrays, model_path, property_path, notes)
    except Rejected as exc:
        return Report(False, str(exc), *counts, time.perf_counter() - start, exc.leaf, notes)
    finally:
        arrays.close()
    return Report(True, None, *counts, time.perf_counter() - start, None, notes)
