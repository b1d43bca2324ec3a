"""Quadratic forms ``ReduceSum(d * (d @ P))`` rewritten as sums of squares
(verifier/importer/quadform.py, SumOfSquares in verifier/ops/composite.py).

- The import: ``d^T P d`` (any P, any opset's ReduceSum, keepdims or not) becomes a
  rotation, squares and a weighted sum; a bilinear ``u^T P w`` keeps its product; the
  forward agrees with onnxruntime (also on random forms in the importer's fuzzing:
  ``FUZZ``, run by test_import_fuzz.py).
- The rewrite's error bound: at random points (well- and ill-conditioned P, indefinite P,
  large values) onnxruntime's output lies inside the engine's enclosure of the point (its
  interval propagation with every rounding bound, the guard's and every proof's).
- Soundness: IBP, CROWN and alpha-CROWN bounds contain onnxruntime's outputs on dense samples
  of random boxes, and a one-point box whose unsafe set starts at onnxruntime's own value
  is falsified, never verified.
- Strength: a positive definite form's CROWN lower bound over a box off its centre is far
  tighter than the product's, and alpha-CROWN's is within 0.1% (of the range) of the
  true minimum.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import verifier.importer.onnx_import as onnx_import
from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.bounds.crown import AlphaSettings
from verifier.bounds.methods import row_lower_bounds
from verifier.ops.bilinear import VarMul
from verifier.ops.composite import SumOfSquares

from .fuzzgraph import G, array, opset, shape_of
from .opcases import assert_bounds_contain, plus_minus_rows

F32 = np.float32
N_IN = 4


def _p(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "psd":
        r = rng.normal(size=(n, n))
        return (r.T @ r / n + 0.1 * np.eye(n)).astype(F32)
    if kind == "indefinite":
        r = rng.normal(size=(n, n))
        return ((r + r.T) / 2).astype(F32)
    if kind == "ill":  # eigenvalues from 1e-6 to 1e3, entries far from exact in float32
        q, _ = np.linalg.qr(rng.normal(size=(n, n)))
        return ((q * np.logspace(-6, 3, n)) @ q.T).astype(F32)
    if kind == "huge":
        return (rng.normal(size=(n, n)) * 1e4).astype(F32) + np.eye(n, dtype=F32)
    return rng.normal(size=(n, n)).astype(F32)  # "asym"


def _form_net(kind: str = "psd", same: bool = True, n: int = 5, keepdims: int = 1,
              seed: int = 0, scale: float = 1.0, opset: int = 17, direct: bool = False) -> bytes:
    """y = [sum(u * (w @ P)), x0]: u = x A + c (``direct``: u = x), w = u (``same``) or
    x B + c'; P by ``kind`` (symmetrised for a bilinear form unless ``kind`` is "asym")."""
    rng = np.random.default_rng(seed)
    n = N_IN if direct else n
    p = _p(kind, n, rng)
    if not same and kind != "asym":
        p = np.triu(p) + np.triu(p, 1).T  # exactly symmetric in float32
    consts = {"A": rng.normal(size=(N_IN, n)) * scale, "B": rng.normal(size=(N_IN, n)) * scale,
              "c": rng.normal(size=(1, n)) * 0.3 * scale,
              "c2": rng.normal(size=(1, n)) * 0.3 * scale, "P": p,
              "axes": np.array([-1], np.int64), "first": np.array([[1.0]] + [[0.0]] * (N_IN - 1))}
    inits = [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(F32), k)
             for k, v in consts.items()]
    axes = {"axes": [-1]} if opset < 13 else {}
    nodes = [helper.make_node("MatMul", ["x", "A"], ["u0"]),
             helper.make_node("Add", ["u0", "c"], ["u"]),
             helper.make_node("MatMul", ["x", "B"], ["w0"]),
             helper.make_node("Add", ["w0", "c2"], ["w"]),
             helper.make_node("MatMul", ["x" if direct else "u" if same else "w", "P"],
                              ["wp"]),
             helper.make_node("Mul", ["wp", "x" if direct else "u"], ["prod"]),
             helper.make_node("ReduceSum", ["prod"] + ([] if opset < 13 else ["axes"]),
                              ["q"], keepdims=keepdims, **axes),
             helper.make_node("MatMul", ["x", "first"], ["x0"])]
    if not keepdims:
        nodes.append(helper.make_node("Unsqueeze", ["q", "axes"], ["q1"]) if opset >= 13 else
                     helper.make_node("Unsqueeze", ["q"], ["q1"], axes=[-1]))
    nodes.append(helper.make_node("Concat", ["q1" if not keepdims else "q", "x0"], ["y"],
                                  axis=-1))
    graph = helper.make_graph(nodes, "form",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N_IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]) \
        .SerializeToString()


def gen_quadratic_form(draw) -> tuple[G, str]:
    """``ReduceSum(d * (d @ P))`` (d = X or a Tanh of it, P random, either factor order,
    keepdims either way, axes as attribute or input; sometimes d @ P also used outside),
    for the importer's fuzzing (test_import_fuzz.py)."""
    g = G(shape_of(draw, 1, 3, 1, 5), opset(draw, 11))
    n = g.shape[-1]
    d = "X" if draw(st.booleans()) else g.node("Tanh", ["X"])[0]
    (dp,) = g.node("MatMul", [d, g.const(array(draw, (n, n)))])
    (prod,) = g.node("Mul", [d, dp] if draw(st.booleans()) else [dp, d])
    keep = draw(st.integers(0, 1))
    if g.opset >= 13:
        (out,) = g.node("ReduceSum", [prod, g.const(np.array([-1], np.int64))], keepdims=keep)
    else:
        (out,) = g.node("ReduceSum", [prod], axes=[-1], keepdims=keep)
    if draw(st.booleans()):
        (out,) = g.node("Add", [out, g.node("ReduceMean", [dp], axes=[-1],
                                            keepdims=keep)[0] if g.opset < 18 else
                                g.node("ReduceMean", [dp, g.const(np.array([-1], np.int64))],
                                       keepdims=keep)[0]])
    return g, out


FUZZ = {"QuadraticForm": gen_quadratic_form}


def _ort(data: bytes, xs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": x[None]})[0] for x in xs])


def _fused(model) -> bool:
    return any(isinstance(n.op, SumOfSquares) for n in model.graph.nodes)


@pytest.mark.parametrize("kind,same,keepdims,opset,direct", [
    ("psd", True, 1, 17, False), ("indefinite", True, 0, 17, False),
    ("asym", True, 1, 11, False), ("psd", True, 0, 11, True), ("psd", False, 1, 17, False),
    ("indefinite", False, 0, 11, False), ("asym", False, 1, 17, False)])
def test_import_rewrites_forms_and_agrees_with_onnxruntime(kind, same, keepdims, opset, direct):
    data = _form_net(kind, same, keepdims=keepdims, opset=opset, direct=direct)
    model = load_model(data)
    assert _fused(model) is same
    assert any(isinstance(n.op, VarMul) for n in model.graph.nodes) is (not _fused(model))
    xs = np.random.default_rng(1).uniform(-2, 2, (50, N_IN)).astype(F32)
    ours = model.graph.forward(torch.from_numpy(xs).double()).reshape(50, -1).numpy()
    ref = _ort(data, xs)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("kind,scale", [
    ("psd", 1.0), ("ill", 1.0), ("indefinite", 1.0), ("huge", 1e3), ("huge", 1e-3),
    ("asym", 1.0), ("asym", 300.0)])
def test_onnxruntime_lies_in_the_enclosure_of_every_point(kind, scale):
    """The rewrite's decomposition error and onnxruntime's rounding of the form it replaces
    are inside the SumOfSquares' rounding bound: point enclosures (float32 and float64
    propagation) hold onnxruntime's value at 400 random points."""
    data = _form_net(kind, True, scale=scale, seed=3)
    model = load_model(data)
    assert _fused(model)
    xs = np.random.default_rng(4).uniform(-3, 3, (400, N_IN)).astype(F32)
    ref = _ort(data, xs)
    for dtype in (torch.float32, torch.float64):
        t = torch.from_numpy(xs).to(dtype)
        lo, hi = model.graph.ibp(t, t)
        lo, hi = lo.reshape(400, -1).double().numpy(), hi.reshape(400, -1).double().numpy()
        assert (lo <= ref).all() and (ref <= hi).all(), (kind, dtype)


@pytest.mark.parametrize("kind", ["psd", "indefinite", "ill", "asym"])
def test_engine_bounds_contain_the_outputs(kind):
    """IBP, CROWN and alpha-CROWN on 6 boxes at once (narrow to wide): their bounds contain
    onnxruntime's outputs on dense samples, corners included."""
    data = _form_net(kind, True, seed=5)
    model = load_model(data)
    rng = np.random.default_rng(6)
    widths = np.array([1e-4, 0.01, 0.2, 0.7, 1.5, 4.0])[:, None]
    centre = rng.uniform(-1, 1, (6, N_IN))
    lo, hi = centre - widths * rng.uniform(0.2, 1, (6, N_IN)), centre + widths
    assert_bounds_contain(model.graph, lambda xs: _ort(data, xs), lo, hi, 2, rng,
                          corners=16, iterations=10, tag=kind)


def _box_minimum(model, lo: np.ndarray, hi: np.ndarray) -> float:
    """The minimum of the model's first output over the box, by projected gradient descent
    in float64 (the form is convex: its one minimum)."""
    x = torch.tensor((lo + hi) / 2, dtype=torch.float64, requires_grad=True)
    low, high = torch.tensor(lo), torch.tensor(hi)
    opt = torch.optim.Adam([x], lr=0.01)
    for _ in range(2000):
        y = model.graph.forward(x.reshape(1, 1, N_IN)).reshape(-1)[0]
        opt.zero_grad()
        y.backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.max(torch.min(x, high), low))
    return float(y.detach())


def test_a_positive_definite_form_is_bounded_tightly(monkeypatch):
    """Over a box off the form's minimum, alpha-CROWN's lower bound of d^T P d is within
    0.1% (of the range) of the true minimum; CROWN's is far above the product's, which
    alpha-CROWN does not improve."""
    data = _form_net("psd", True, seed=7)
    rng = np.random.default_rng(8)
    lo = np.array([[0.6, -0.3, 0.2, -0.1]])
    hi = lo + 0.4
    xs = (lo + rng.uniform(size=(20000, N_IN)) * (hi - lo)).astype(F32)
    q = _ort(data, xs)[:, 0]
    batch = plus_minus_rows(lo, hi, 2)
    model = load_model(data)
    lowest = _box_minimum(model, lo, hi)
    crown = float(row_lower_bounds(model.graph, batch, "crown")[0, 0])
    alpha = float(row_lower_bounds(model.graph, batch, "alpha-crown",
                                   alpha=AlphaSettings(iterations=60, early_stop=False))[0, 0])
    monkeypatch.setattr(onnx_import, "fuse_quadratic_forms", lambda nodes, *_: nodes)
    product = load_model(data)
    assert not _fused(product)
    crown_product = float(row_lower_bounds(product.graph, batch, "crown")[0, 0])
    spread = float(q.max() - q.min())
    assert alpha <= lowest <= q.min() and crown <= alpha
    assert lowest - alpha < 1e-3 * spread, (alpha, lowest, spread)
    assert lowest - crown < 0.5 * (lowest - crown_product), (crown, crown_product, lowest)


@pytest.mark.parametrize("kind,seed", [("psd", 0), ("ill", 1), ("indefinite", 2),
                                       ("huge", 3), ("asym", 4)])
def test_a_threshold_at_onnxruntimes_own_value_is_never_proved(kind, seed):
    """The box is one float32 point and the unsafe set starts exactly at onnxruntime's value
    of the form there, from above and from below: the point is a counterexample, so
    `verified` would be a false proof."""
    data = _form_net(kind, True, seed=seed)
    model = load_model(data)
    x = np.random.default_rng(seed).uniform(-1, 1, N_IN).astype(F32)
    y = float(_ort(data, x[None])[0, 0])
    box = "".join(f"(declare-const X_{i} Real)\n" for i in range(N_IN))
    box += "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    box += "".join(f"(assert (>= X_{i} {float(v)!r}))\n(assert (<= X_{i} {float(v)!r}))\n"
                   for i, v in enumerate(x))
    for relation in (">=", "<="):
        spec = parse_vnnlib(box + f"(assert ({relation} Y_0 {y!r}))\n", N_IN, 2)
        result = verify(model, spec, Settings(timeout=10))
        assert result.verdict == "falsified", (kind, relation, result.message)


def _ellipse_spec(rho: float, edge: float) -> str:
    """x in [-2, 2]^4 with q(x) <= rho and x0 >= edge (Y_1 is x0)."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(N_IN))
    text += "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    text += "".join(f"(assert (>= X_{i} -2.0))\n(assert (<= X_{i} 2.0))\n" for i in range(N_IN))
    return text + f"(assert (<= Y_0 {rho!r}))\n(assert (>= Y_1 {edge!r}))\n"


def test_a_sublevel_set_inside_a_halfspace_is_proved_and_one_across_it_falsified():
    """The Lyapunov-style question: no x with q(x) <= rho reaches x0 >= edge.  The largest
    x0 on the sublevel set is found by sampling its boundary; an edge 5% beyond it is
    proved, one 5% inside it falsified (onnxruntime confirms the counterexample)."""
    data = _form_net("psd", True, seed=9)
    model = load_model(data)
    rng = np.random.default_rng(10)
    xs = rng.uniform(-2, 2, (200000, N_IN)).astype(F32)
    ys = _ort(data, xs)
    rho = float(np.quantile(ys[:, 0], 0.05))
    reach = float(ys[ys[:, 0] <= rho, 1].max())
    top = 2.0 if reach > 1.9 else reach
    proved = verify(model, parse_vnnlib(_ellipse_spec(rho, top + 0.05 * (2 + top) + 1e-3),
                                        N_IN, 2), Settings(timeout=30))
    assert proved.verdict == "verified", proved.message
    unsafe = verify(model, parse_vnnlib(_ellipse_spec(rho, reach - 0.05 * (2 + reach)),
                                        N_IN, 2), Settings(timeout=30))
    assert unsafe.verdict == "falsified", unsafe.message
    for cex in unsafe.counterexamples:
        y = _ort(data, np.asarray(cex.x, F32)[None])[0]
        assert y[0] <= rho and y[1] >= reach - 0.05 * (2 + reach)
