"""A test-only proof generator for tiny fully-connected networks (independent of the engine).

It builds small float32 ONNX networks with ``onnx.helper`` (Gemm and MatMul+Add layers,
Relu / Sigmoid / Tanh, optionally a Sub/Div input normalisation and a Flatten of an image
input), writes VNN-LIB properties, and emits "nnverify-proof/1" files: CROWN bounds in
float64 (not rigorous: every claimed interval is padded, every line is built over the padded
interval, and leaves are accepted only with a margin), splitting the widest input
dimension where the root does not prove.  The checker must accept what this writes for true
properties; the tests then tamper with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from verifier.property.core import Case, Property
from verifier.property.vnnlib.api import parse_vnnlib_file

PAD = 1e-4  # claimed intervals: the computed ones widened by PAD (1 + |bound|)
MARGIN = 1e-3  # a leaf is accepted when its bound exceeds d by this much
SECOND_DERIVATIVE = {"Sigmoid": 0.1, "Tanh": 0.8, "Relu": 0.0}


@dataclass
class Net:
    """``h_0 = normalise(flatten(x))``, ``z_i = W_i h_{i-1} + b_i``, ``h_i = act(z_i)``; the
    last layer is linear."""

    weights: list[np.ndarray]  # (out, in) float32
    biases: list[np.ndarray]
    act: str
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    image: tuple[int, ...] | None = None  # input shape without the batch (then Flatten)

    @property
    def n_inputs(self) -> int:
        return self.weights[0].shape[1]


def random_net(seed: int, sizes: list[int], act: str, scale: float = 1.0, **kw: Any) -> Net:
    rng = np.random.default_rng(seed)
    Ws = [(rng.normal(size=(o, i)) * scale / np.sqrt(i)).astype(np.float32)
          for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [(rng.normal(size=o) * 0.3).astype(np.float32) for o in sizes[1:]]
    return Net(Ws, bs, act, **kw)


def f(op: str, x: np.ndarray) -> np.ndarray:
    if op == "Relu":
        return np.maximum(x, 0.0)
    return 1.0 / (1.0 + np.exp(-x)) if op == "Sigmoid" else np.tanh(x)


def df(op: str, x: np.ndarray) -> np.ndarray:
    if op == "Relu":
        return (x > 0).astype(np.float64)
    s = f(op, x)
    return s * (1 - s) if op == "Sigmoid" else 1 - s * s


# -- files ------------------------------------------------------------------------------------

def save_onnx(net: Net, path: Path, extra_node: str | None = None) -> Path:
    """The network as ONNX (batch dimension symbolic); ``extra_node`` appends an op (for
    the unsupported-op test)."""
    init, nodes = [], []
    shape = ["N", *(net.image or (net.n_inputs,))]
    cur = "x"
    if net.image:
        nodes.append(helper.make_node("Flatten", [cur], ["flat"], name="flatten"))
        cur = "flat"
    if net.mean is not None and net.std is not None:
        init += [numpy_helper.from_array(net.mean.astype(np.float32), "mean"),
                 numpy_helper.from_array(net.std.astype(np.float32), "std")]
        nodes += [helper.make_node("Sub", [cur, "mean"], ["centred"], name="sub"),
                  helper.make_node("Div", ["centred", "std"], ["normal"], name="div")]
        cur = "normal"
    last = len(net.weights) - 1
    for i, (W, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        z = f"z{i}" if i < last else ("y" if extra_node is None else "y0")
        init += [numpy_helper.from_array(b, f"b{i}")]
        if i % 2 == 0:
            init.append(numpy_helper.from_array(W, f"W{i}"))
            nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [z], name=f"gemm{i}",
                                          transB=1))
        else:
            init.append(numpy_helper.from_array(np.ascontiguousarray(W.T), f"W{i}"))
            nodes += [helper.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"], name=f"matmul{i}"),
                      helper.make_node("Add", [f"m{i}", f"b{i}"], [z], name=f"add{i}")]
        if i < last:
            nodes.append(helper.make_node(net.act, [z], [f"h{i}"], name=f"act{i}"))
            cur = f"h{i}"
    if extra_node is not None:
        nodes.append(helper.make_node(extra_node, ["y0"], ["y"], name="extra", axis=1))
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", net.weights[-1].shape[0]])],
        init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def run_onnx(path: Path, X: np.ndarray) -> np.ndarray:
    """onnxruntime's float32 outputs for a batch of flat inputs."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else len(X) for d in sess.get_inputs()[0].shape]
    shape[0] = len(X)
    return sess.run(None, {"x": X.astype(np.float32).reshape(shape)})[0].reshape(len(X), -1)


def write_vnnlib(path: Path, lower: np.ndarray, upper: np.ndarray, n_out: int,
                 disjuncts: list[list[str]]) -> Path:
    """One case: the box and the disjunction of conjunctions of atoms like ``(<= Y_0 0.5)``."""
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lower))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    ors = " ".join(f"(and {' '.join(atoms)})" for atoms in disjuncts)
    lines.append(f"(assert (or {ors}))")
    path.write_text("\n".join(lines) + "\n")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stacked(manifest: dict[str, Any], per_leaf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The file's members (docs/proof-format.md) from arrays per leaf ``L{k}/A{a}/lo``, ...:
    ``A{a}/lo`` is (leaves, n) with leaf k's array in row k, NaN where it has none."""
    leaves, acts = len(manifest["leaves"]), manifest["activations"]
    disjuncts = max((len(leaf["disjuncts"]) for leaf in manifest["leaves"]), default=0)
    out = {}
    for a, act in enumerate(acts):
        n = act["size"]
        names = [(f"A{a}/lo", (n,)), (f"A{a}/hi", (n,)), (f"A{a}/box", (4, n))]
        for name, shape in names + [(f"D{q}/A{a}", (4, n)) for q in range(disjuncts)]:
            out[name] = np.full((leaves, *shape), np.nan)
            for k in range(leaves):
                if f"L{k}/{name}" in per_leaf:
                    out[name][k] = per_leaf[f"L{k}/{name}"]
    return out


def per_leaf(members: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of ``stacked``: leaf k's rows that are not all NaN, as ``L{k}/...``."""
    return {f"L{k}/{name}": row for name, rows in members.items()
            for k, row in enumerate(rows) if not np.all(np.isnan(row))}


def save_members(path: Path, manifest: dict[str, Any], members: dict[str, np.ndarray]) -> Path:
    """A proof file with exactly these members besides the manifest."""
    np.savez_compressed(path, manifest=np.array(json.dumps(manifest)), **members)
    return path


def load_members(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files if k != "manifest"}
        return json.loads(str(z["manifest"][()])), members


def save_proof(path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """A proof file from arrays per leaf (``L{k}/A{a}/lo``, ...), stacked."""
    return save_members(path, manifest, stacked(manifest, arrays))


def load_proof(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest and the arrays per leaf (``L{k}/A{a}/lo``, ...)."""
    manifest, members = load_members(path)
    return manifest, per_leaf(members)


# -- bounds -----------------------------------------------------------------------------------

@dataclass
class LeafBounds:
    """Per hidden layer: claimed (lo, hi) and box lines (4, n); or empty at a layer."""

    intervals: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    lines: list[np.ndarray] = field(default_factory=list)
    infeasible_at: int | None = None


def lines_for(op: str, lo: np.ndarray, hi: np.ndarray, tangent: bool = False) -> np.ndarray:
    """Sound lines (4, n) on [lo, hi]: ReLU's triangle; for sigmoid/tanh the chord shifted
    by the extreme deviations found on a grid plus the grid's error ``K h^2 / 8``; with
    ``tangent``, sigmoid's tangent at the midpoint where it is convex/concave on [lo, hi]."""
    out = np.zeros((4, len(lo)))
    for j, (l, h) in enumerate(zip(lo, hi, strict=True)):
        if op == "Relu":
            if h <= 0:
                continue
            if l >= 0:
                out[:, j] = [1, 0, 1, 0]
                continue
            a = h / (h - l)
            out[:, j] = [1.0 if h > -l else 0.0, 0.0, a, -a * l]
            continue
        grid = np.linspace(l, h, 2001)
        a = (f(op, h) - f(op, l)) / (h - l) if h - l > 1e-9 else float(df(op, (l + h) / 2))
        dev = f(op, grid) - a * grid
        err = SECOND_DERIVATIVE[op] * ((h - l) / 2000) ** 2 / 8 + 1e-12
        out[:, j] = [a, dev.min() - err, a, dev.max() + err]
        m = (l + h) / 2
        if tangent and op == "Sigmoid" and h <= 0:  # convex: the tangent is below
            out[:2, j] = [df(op, m), f(op, m) - df(op, m) * m]
        if tangent and op == "Sigmoid" and l >= 0:  # concave: the tangent is above
            out[2:, j] = [df(op, m), f(op, m) - df(op, m) * m]
    return out


def affine_input(net: Net) -> tuple[np.ndarray, np.ndarray]:
    """The first layer on the raw input: ``z_0 = W' x + b'`` (normalisation folded in)."""
    W, b = net.weights[0].astype(np.float64), net.biases[0].astype(np.float64)
    if net.mean is None or net.std is None:
        return W, b
    std, mean = net.std.astype(np.float64).ravel(), net.mean.astype(np.float64).ravel()
    std, mean = np.broadcast_to(std, (net.n_inputs,)), np.broadcast_to(mean, (net.n_inputs,))
    return W / std, b - W @ (mean / std)


Split = tuple[int, int, float, float]  # (layer, j, s, p)


def crown(net: Net, i: int, Lam: np.ndarray, lines: list[np.ndarray], lo: np.ndarray,
          hi: np.ndarray, betas: dict[int, list[tuple[int, float, float, float]]]
          ) -> np.ndarray:
    """Lower bound of ``Lam @ z_i`` over the box [lo, hi] (i = len(hidden) for the output),
    through the given lines, with beta terms ``-beta s (z_j - p)`` on split neurons."""
    A, c = Lam.copy(), np.zeros(len(Lam))
    for layer in range(i, -1, -1):
        if layer == 0:
            W, b = affine_input(net)
        else:
            W, b = net.weights[layer].astype(np.float64), net.biases[layer].astype(np.float64)
        c, A = c + A @ b, A @ W
        if layer > 0:
            al, bl, au, bu = lines[layer - 1]
            Ap, An = np.maximum(A, 0), np.minimum(A, 0)
            c, A = c + Ap @ bl + An @ bu, Ap * al + An * au
            for j, s, p, beta in betas.get(layer - 1, []):
                A[:, j] -= beta * s
                c += beta * s * p
    return c + np.where(A >= 0, A * lo, A * hi).sum(axis=1)


def leaf_bounds(net: Net, lo: np.ndarray, hi: np.ndarray, splits: list[Split],
                tangent: bool = False) -> LeafBounds:
    """Claimed intervals and box lines of every hidden layer over one leaf."""
    out = LeafBounds()
    for i in range(len(net.weights) - 1):
        n = net.weights[i].shape[0]
        lb = crown(net, i, np.vstack([np.eye(n), -np.eye(n)]), out.lines, lo, hi, {})
        L, U = lb[:n], -lb[n:]
        for layer, j, s, p in splits:
            if layer == i:
                L[j], U[j] = (max(L[j], p), U[j]) if s > 0 else (L[j], min(U[j], p))
        if np.any(L > U):
            out.infeasible_at = i
            return out
        pad = PAD * (1 + np.maximum(abs(L), abs(U)))
        cl, ch = L - pad, U + pad
        for layer, j, s, p in splits:
            if layer == i:
                cl[j], ch[j] = (max(cl[j], p), ch[j]) if s > 0 else (cl[j], min(ch[j], p))
        out.intervals.append((cl, ch))
        out.lines.append(lines_for(net.act, cl, ch, tangent))
    return out


# -- proofs -----------------------------------------------------------------------------------

@dataclass
class Proof:
    """A proof being built: trees per case, leaves, arrays."""

    leaves: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _leaf(net: Net, proof: Proof, case: Case, lo: np.ndarray, hi: np.ndarray,
          splits: list[Split], beta: float, tangent: bool) -> dict[str, Any] | None:
    """A leaf over the region, or None when its bounds do not prove every disjunct."""
    b = leaf_bounds(net, lo, hi, splits, tangent)
    by_layer: dict[int, list[tuple[int, float, float, float]]] = {}
    for layer, j, s, p in splits:
        by_layer.setdefault(layer, []).append((j, s, p, beta))
    disjuncts = []
    if b.infeasible_at is None:
        for conj in case.disjuncts:
            margins = crown(net, len(net.weights) - 1, conj.C, b.lines, lo, hi, by_layer) - conj.d
            r = int(np.argmax(margins))
            if margins[r] <= MARGIN:
                return None
            disjuncts.append({"row": r, "lines": "box", "betas": [beta] * len(splits)})
    k = len(proof.leaves)
    proof.leaves.append({"infeasible_at": b.infeasible_at, "disjuncts": disjuncts})
    for a, ((cl, ch), lines) in enumerate(zip(b.intervals, b.lines, strict=True)):
        proof.arrays |= {f"L{k}/A{a}/lo": cl, f"L{k}/A{a}/hi": ch, f"L{k}/A{a}/box": lines}
    return {"leaf": k}


def _tree(net: Net, proof: Proof, case: Case, lo: np.ndarray, hi: np.ndarray,
          splits: list[Split], depth: int, beta: float, tangent: bool,
          min_depth: int = 0) -> dict[str, Any]:
    """A tree proving ``case`` on [lo, hi], bisecting the widest input where needed (and
    ``min_depth`` times at least)."""
    n_before = (len(proof.leaves), dict(proof.arrays))
    leaf = _leaf(net, proof, case, lo, hi, splits, beta, tangent) if min_depth <= 0 else None
    if leaf is not None:
        return leaf
    proof.leaves, proof.arrays = proof.leaves[:n_before[0]], n_before[1]
    if depth == 0:
        raise RuntimeError("could not prove the property within the split budget")
    d = int(np.argmax(hi - lo))
    p = float((lo[d] + hi[d]) / 2)
    lo_up, hi_lo = hi.copy(), lo.copy()
    lo_up[d], hi_lo[d] = p, p
    return {"split": {"input": d, "at": p}, "children": [
        _tree(net, proof, case, lo, lo_up, splits, depth - 1, beta, tangent, min_depth - 1),
        _tree(net, proof, case, hi_lo, hi, splits, depth - 1, beta, tangent, min_depth - 1)]}


def prove(net: Net, model: Path, spec: Path, out: Path, depth: int = 8,
          neuron_split: tuple[int, int] | None = None, beta: float = 0.0,
          tangent: bool = False, min_depth: int = 0) -> Path:
    """Write a proof of the property at ``spec`` for ``net`` (saved at ``model``) to ``out``;
    ``neuron_split`` (layer, j) splits that ReLU neuron at 0 at the root of every case;
    ``min_depth`` input splits on every path at least (a proof of 2**min_depth leaves)."""
    prop: Property = parse_vnnlib_file(spec)
    proof, cases = Proof(), []
    for case in prop.cases:
        lo, hi = case.lower.astype(np.float64), case.upper.astype(np.float64)
        if neuron_split is None:
            cases.append({"tree": _tree(net, proof, case, lo, hi, [], max(depth, min_depth),
                                        beta, tangent, min_depth)})
            continue
        a, j = neuron_split
        kids = [_tree(net, proof, case, lo, hi, [(a, j, s, 0.0)], depth, beta, tangent)
                for s in (-1.0, 1.0)]
        cases.append({"tree": {"split": {"activation": a, "index": j, "at": 0.0},
                               "children": kids}})
    manifest = {
        "format": "nnverify-proof/1", "model_sha256": sha256(model),
        "property_sha256": sha256(spec), "unit_roundoff": 2.0**-24,
        "activations": [{"input": f"z{i}", "output": f"h{i}", "op": net.act,
                         "size": int(W.shape[0])} for i, W in enumerate(net.weights[:-1])],
        "cases": cases, "leaves": proof.leaves}
    return save_proof(out, manifest, proof.arrays)
