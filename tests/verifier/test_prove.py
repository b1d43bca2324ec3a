"""Proof search (verifier/prove.py), checked against onnxruntime by sampling: every leaf's
claimed intervals hold the activations' inputs that onnxruntime computes at points of the
leaf's region, every line bounds its function over its interval, the trees cover each
case (every leaf once), and what cannot be proven writes nothing.  The independent
checker's verdict on these proofs is tested in test_proof_check.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier import load_model
from verifier.property.core import Case, Conjunction, Property
from verifier.prove import FORMAT, ProofSettings, prove

from .test_lipschitz import mlp

FUNCTIONS = {"Relu": lambda z: np.maximum(z, 0), "Sigmoid": lambda z: 1 / (1 + np.exp(-z)),
             "Tanh": np.tanh}


def load_proof(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(str(arrays.pop("manifest"))), arrays


def _net(tmp_path: Path, act: str, sizes: list[int], seed: int, name: str = "net.onnx"
         ) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    W = [rng.standard_normal((o, i)) for i, o in zip(sizes, sizes[1:], strict=False)]
    b = [rng.standard_normal(o) * 0.5 for o in sizes[1:]]
    path = tmp_path / name
    path.write_bytes(mlp(W, b, act))
    return path, W, b


def _ort_all(path: Path, names: list[str], x: np.ndarray) -> list[np.ndarray]:
    """onnxruntime's values of the tensors ``names`` then the output, at inputs x (N, n)."""
    model = onnx.load(path)
    for n in names:
        model.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {"X": xi.reshape(1, -1).astype(np.float32)}) for xi in x]
    k = len(model.graph.output) - len(names)
    return [np.stack([o[k + i].ravel() for o in outs]) for i in range(len(names))] + \
           [np.stack([o[0].ravel() for o in outs])]


def _regions(tree: dict[str, Any], lo: np.ndarray, hi: np.ndarray, path: list) -> list:
    """(leaf, input box, neuron constraints) of every leaf under ``tree``."""
    if "leaf" in tree:
        return [(tree["leaf"], lo, hi, path)]
    split, (low, high) = tree["split"], tree["children"]
    p = split["at"]
    if "input" in split:
        d = split["input"]
        lo_hi, hi_lo = hi.copy(), lo.copy()
        lo_hi[d], hi_lo[d] = min(hi[d], p), max(lo[d], p)
        return _regions(low, lo, lo_hi, path) + _regions(high, hi_lo, hi, path)
    c = (split["activation"], split["index"], p)
    return _regions(low, lo, hi, path + [(*c, -1)]) + _regions(high, lo, hi, path + [(*c, 1)])


def check_by_sampling(path: Path, proof: Path, prop: Property, n: int = 400,
                      seed: int = 0) -> int:
    """Assert the proof's intervals and lines against onnxruntime at random points of each
    leaf's region and on a grid of each interval; the number of leaves."""
    manifest, arrays = load_proof(proof)
    assert manifest["format"] == FORMAT
    acts = manifest["activations"]
    names = [a["input"] for a in acts]
    rng = np.random.default_rng(seed)
    seen: list[int] = []
    for c, case in enumerate(prop.cases):
        for k, lo, hi, constraints in _regions(manifest["cases"][c]["tree"], case.lower.copy(),
                                               case.upper.copy(), []):
            seen.append(k)
            leaf = manifest["leaves"][k]
            x = lo + rng.uniform(size=(n, len(lo))) * (hi - lo)
            *zs, _ = _ort_all(path, names, x)
            keep = np.ones(n, dtype=bool)
            for a, j, p, s in constraints:
                keep &= s * (zs[a][:, j] - p) >= 0
            upto = leaf["infeasible_at"] if leaf["infeasible_at"] is not None else len(acts)
            if leaf["infeasible_at"] is not None:
                assert not keep.any(), f"leaf {k} claimed empty but has points"
            for a in range(upto):
                z = zs[a][keep]
                l_, h_ = arrays[f"A{a}/lo"][k], arrays[f"A{a}/hi"][k]
                assert (l_ <= h_).all() and np.isfinite(l_).all() and np.isfinite(h_).all()
                assert (z >= l_).all() and (z <= h_).all(), f"leaf {k} activation {a}"
                f = FUNCTIONS[acts[a]["op"]]
                grid = l_ + np.linspace(0, 1, 257)[:, None] * (h_ - l_)
                sets = [arrays[f"A{a}/box"][k]] + [arrays[f"D{q}/A{a}"][k]
                                                     for q, d in enumerate(leaf["disjuncts"])
                                                     if d["lines"] == "own"]
                for lines in sets:
                    a_l, b_l, a_u, b_u = lines
                    fz = f(grid)
                    assert (a_l * grid + b_l <= fz + 1e-12).all(), f"leaf {k}: lower line"
                    assert (a_u * grid + b_u >= fz - 1e-12).all(), f"leaf {k}: upper line"
            for d in leaf["disjuncts"]:
                assert all(beta >= 0 for beta in d["betas"])
                assert len(d["betas"]) == len(constraints)
    assert sorted(seen) == list(range(len(manifest["leaves"]))), "every leaf exactly once"
    return len(seen)


def _threshold_property(path: Path, W: list[np.ndarray], b: list[np.ndarray], act: str,
                        n_in: int, margin: float) -> Property:
    """y_0 > max over a dense grid + margin is the unsafe set: true when the margin is over
    the grid's spacing times the net's slope (else no proof is found, never a wrong one)."""
    axis = np.linspace(-1, 1, 301)  # a grid of [-1, 1]^2, spacing 0.0067
    x = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    assert n_in == 2
    y = x @ W[0].T + b[0]
    for Wk, bk in zip(W[1:], b[1:], strict=True):
        y = FUNCTIONS[act](y) @ Wk.T + bk
    top = float(y[:, 0].max()) + margin
    C = np.zeros((1, W[-1].shape[0]))
    C[0, 0] = -1.0
    return Property(n_in, W[-1].shape[0], (Case(np.full(n_in, -1.0), np.full(n_in, 1.0),
                                                (Conjunction(C, np.array([-top])),)),))


def _write_spec(tmp_path: Path, prop: Property) -> Path:
    spec = tmp_path / "prop.vnnlib"
    lines = [f"(declare-const X_{i} Real)" for i in range(prop.n_inputs)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(prop.n_outputs)]
    case = prop.cases[0]
    for i in range(prop.n_inputs):
        lines += [f"(assert (>= X_{i} {case.lower[i]!r}))",
                  f"(assert (<= X_{i} {case.upper[i]!r}))"]
    conj = case.disjuncts[0]
    lines.append(f"(assert (>= Y_0 {-conj.d[0]!r}))")
    spec.write_text("\n".join(lines) + "\n")
    return spec


@pytest.mark.parametrize("act,mode", [("Relu", "input"), ("Sigmoid", "input"),
                                      ("Tanh", "input"), ("Relu", "neuron"),
                                      ("Sigmoid", "neuron")])  # Tanh by neurons: too slow
def test_proofs_hold_by_sampling(tmp_path: Path, act: str, mode: str) -> None:
    # splitting neurons of a net of 2 inputs takes many more leaves (the engine's own
    # branch-and-bound needs about 10,000 domains on 2-12-12-1): a smaller net for it
    sizes = [2, 12, 12, 1] if mode == "input" else [2, 6, 6, 1]
    path, W, b = _net(tmp_path, act, sizes, seed={"Relu": 3, "Sigmoid": 4, "Tanh": 5}[act])
    prop = _threshold_property(path, W, b, act, 2, margin=0.1)
    spec = _write_spec(tmp_path, prop)
    model = load_model(path)
    settings = ProofSettings(timeout=60, input_split_max_dims=16 if mode == "input" else 0)
    out = tmp_path / "p.nnvproof"
    outcome = prove(model, prop, out, path, spec, settings)
    assert outcome.ok, outcome.reason
    leaves = check_by_sampling(path, out, prop)
    assert leaves == outcome.leaves
    manifest, _ = load_proof(out)
    assert [a["op"] for a in manifest["activations"]] == [act, act]
    assert manifest["unit_roundoff"] == 2.0 ** -24


def test_a_false_property_gets_no_proof(tmp_path: Path) -> None:
    path, W, b = _net(tmp_path, "Relu", [2, 12, 12, 1], seed=3)
    prop = _threshold_property(path, W, b, "Relu", 2, margin=-0.05)  # reached inside
    spec = _write_spec(tmp_path, prop)
    out = tmp_path / "p.nnvproof"
    outcome = prove(load_model(path), prop, out, path, spec, ProofSettings(timeout=3))
    assert not outcome.ok and outcome.reason.startswith("no proof")
    assert not out.exists()


def test_other_nonlinear_ops_are_named(tmp_path: Path) -> None:
    X = helper.make_tensor_value_info("X", TensorProto.FLOAT, (1, 2))
    Y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    W = numpy_helper.from_array(np.eye(2, dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["z"]),
                               helper.make_node("Exp", ["z"], ["Y"])], "g", [X], [Y], [W])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "exp.onnx"
    path.write_bytes(model.SerializeToString())
    prop = Property(2, 2, (Case(np.zeros(2), np.ones(2),
                                (Conjunction(np.array([[1.0, 0.0]]), np.array([-1.0])),)),))
    outcome = prove(load_model(path), prop, tmp_path / "p", path, path)
    assert not outcome.ok and "Exp" in outcome.reason


def test_shared_test_family_proofs_hold(bench: Path, tmp_path: Path) -> None:
    from verifier import parse_vnnlib_file

    folder = bench / "test"
    for onnx_name, spec_name in [("test_nano.onnx", "test_nano.vnnlib"),
                                 ("test_tiny.onnx", "test_tiny.vnnlib"),
                                 ("test_small.onnx", "test_small.vnnlib"),
                                 ("test_unsat.onnx", "test_prop.vnnlib")]:
        model = load_model(folder / onnx_name)
        prop = parse_vnnlib_file(folder / spec_name, model.n_inputs, model.n_outputs)
        out = tmp_path / f"{onnx_name}.nnvproof"
        outcome = prove(model, prop, out, folder / onnx_name, folder / spec_name)
        assert outcome.ok, (onnx_name, outcome.reason)
        manifest, arrays = load_proof(out)
        assert manifest["model_sha256"] and manifest["property_sha256"]
        # one row per leaf, finite where a leaf needs it (here every interval and box line)
        assert all(len(a) == len(manifest["leaves"]) for a in arrays.values())
        assert all(np.isfinite(a).all() for name, a in arrays.items()
                   if not name.startswith("D"))
