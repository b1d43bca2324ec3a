"""``Mul(x, x)`` lowered to Square (verifier/ops/nonlinear.py, importer/lowering.py).

A product of one variable with itself, bounded as a product of two variables, lets the
factors vary apart: over x in [-1, 1] it gave x * x a lower bound of -1.  As Square it is
Pow(x, 2) (convex, >= 0) with the rounding of the one product onnxruntime computes.

- The import: ``Mul(x, x)`` becomes Square, ``Mul(x, y)`` stays a product; onnxruntime
  agrees with our forward on samples.
- The rounding bound: onnxruntime's float32 x * x lies within ``(1 +- 2u) x^2`` of the exact
  product (float64) on random and extreme values (subnormal squares too, within tiny).
- The engine's IBP, CROWN and alpha-CROWN bounds contain onnxruntime's outputs on dense
  samples of random boxes (narrow, wide, around 0, one-sided), and IBP's lower bound over a
  box around 0 is 0 up to the rounding of what follows, not negative.
- ``verify``: a sum of squares >= 0 is proved without branching (it needed 258 domains as a
  product), and a violated threshold is falsified with a counterexample onnxruntime confirms.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.ops.bilinear import VarMul
from verifier.ops.nonlinear import Square

from .opcases import assert_bounds_contain

F32 = np.float32


def _net(n: int = 4, same: bool = True, seed: int = 0) -> bytes:
    """y = W2 ((W1 x + c) * (W1 x + c)) (or times W1' x + c when not ``same``): 3 outputs."""
    rng = np.random.default_rng(seed)
    W1 = rng.normal(size=(n, 5)).astype(F32)
    W1b = rng.normal(size=(n, 5)).astype(F32)
    c = rng.normal(size=(1, 5)).astype(F32) * 0.3
    W2 = rng.normal(size=(5, 3)).astype(F32)
    inits = [numpy_helper.from_array(v, k) for k, v in
             {"W1": W1, "W1b": W1b, "c": c, "W2": W2}.items()]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]),
             helper.make_node("Add", ["h0", "c"], ["h"]),
             helper.make_node("MatMul", ["x", "W1b"], ["g0"]),
             helper.make_node("Add", ["g0", "c"], ["g"]),
             helper.make_node("Mul", ["h", "h" if same else "g"], ["s"]),
             helper.make_node("MatMul", ["s", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "square",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]) \
        .SerializeToString()


def _ort(data: bytes, xs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": x[None]})[0] for x in xs])


@pytest.mark.parametrize("same", [True, False])
def test_import_squares_only_one_variable_times_itself(same: bool):
    data = _net(same=same)
    model = load_model(data)
    ops = {n.name: type(n.op) for n in model.graph.nodes}
    assert ops["s"] is (Square if same else VarMul)
    xs = np.random.default_rng(1).uniform(-2, 2, (50, 4)).astype(F32)
    ours = model.graph.forward(torch.from_numpy(xs)).reshape(50, -1).numpy()
    np.testing.assert_allclose(ours, _ort(data, xs), rtol=1e-5, atol=1e-5)


def test_onnxruntime_rounds_the_square_within_its_bound():
    """fl(x x) within (1 +- 2u) x^2 + tiny: random, huge, tiny and subnormal squares."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=2000), rng.uniform(-1, 1, 2000) * 1e18,
                        rng.uniform(-1, 1, 2000) * 1e-19, [0.0, -0.0, 1e-23, 3.4e18]])
    x = x.astype(F32)
    graph = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"])], "sq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(data.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0].astype(np.float64)
    exact = x.astype(np.float64) ** 2
    u = np.finfo(F32).eps / 2
    op = Square({"_op_type": "Mul"}, [], (len(x),))
    k = op.relative_rounding([], u)
    assert k is not None
    floor = float(op.rounding_error([], (torch.zeros(1), torch.zeros(1)), u)[0])
    finite = np.isfinite(y)
    assert (np.abs(y - exact)[finite] <= (k * exact + floor)[finite]).all()


def test_engine_bounds_contain_the_outputs():
    """IBP, CROWN and alpha-CROWN on 6 boxes at once (narrow to wide, some around where a
    square is 0): their bounds contain onnxruntime's outputs on dense samples."""
    data = _net()
    model = load_model(data)
    rng = np.random.default_rng(3)
    widths = np.array([1e-3, 0.05, 0.3, 1.0, 2.0, 4.0])[:, None]
    centre = rng.uniform(-1, 1, (6, 4))
    lo, hi = centre - widths * rng.uniform(0.2, 1, (6, 4)), centre + widths
    assert_bounds_contain(model.graph, lambda xs: _ort(data, xs), lo, hi, 3, rng,
                          corners=16, iterations=5)


def _sum_of_squares(n: int) -> bytes:
    c = numpy_helper.from_array(np.linspace(-0.5, 0.5, n).astype(F32)[None], "c")
    ones = numpy_helper.from_array(np.ones((n, 1), F32), "ones")
    nodes = [helper.make_node("Sub", ["x", "c"], ["d"]),
             helper.make_node("Mul", ["d", "d"], ["s"]),
             helper.make_node("MatMul", ["s", "ones"], ["y"])]
    graph = helper.make_graph(nodes, "ss",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
                              [c, ones])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]) \
        .SerializeToString()


def _spec(n: int, relation: str, threshold: float) -> str:
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n)) + \
        "(declare-const Y_0 Real)\n"
    text += "".join(f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n" for i in range(n))
    return text + f"(assert ({relation} Y_0 {threshold!r}))\n"


def test_ibp_of_a_square_around_zero_is_not_negative():
    model = load_model(_sum_of_squares(3))
    lo, hi = model.graph.ibp(-torch.ones(1, 3), torch.ones(1, 3))
    assert -1e-5 < float(lo.min()) <= 0  # the sum's rounding only (a product gave -2.0)
    assert float(hi.max()) >= 1.5 ** 2 + 1 + 1.5 ** 2  # c = (-0.5, 0, 0.5): the true maximum


def test_verify_proves_squares_nonnegative_and_falsifies_a_threshold():
    data = _sum_of_squares(3)
    model = load_model(data)
    proved = verify(model, parse_vnnlib(_spec(3, "<=", -1e-3), 3, 1), Settings(timeout=20))
    assert proved.verdict == "verified", proved.message
    assert proved.domains == 0  # no branching: the bound at the root is enough
    unsafe = verify(model, parse_vnnlib(_spec(3, ">=", 4.0), 3, 1), Settings(timeout=20))
    assert unsafe.verdict == "falsified", unsafe.message
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for cex in unsafe.counterexamples:
        x = np.asarray(cex.x, dtype=F32)
        assert np.all(np.abs(x) <= 1)
        assert sess.run(None, {"x": x[None]})[0][0, 0] >= 4.0


@pytest.mark.parametrize("x0", [0.1, 1.0 + 2 ** -23, 3.0000002, 1e-20, 1.5e19, -7.25e-3])
def test_a_threshold_at_onnxruntimes_own_square_is_never_proved(x0: float):
    """The box is the one float32 point x0 and the unsafe set y >= onnxruntime's x0 * x0
    (a product that rounds, overflows to nothing, or underflows): the point itself is a
    counterexample, so `verified` would be a false proof; it must be falsified."""
    graph = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"])], "sq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]) \
        .SerializeToString()
    x = F32(x0)
    y = float(_ort(data, np.array([[x]], F32))[0, 0])
    spec = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n" \
        f"(assert (>= X_0 {float(x)!r}))\n(assert (<= X_0 {float(x)!r}))\n" \
        f"(assert (>= Y_0 {y!r}))\n"
    model = load_model(data)
    result = verify(model, parse_vnnlib(spec, 1, 1), Settings(timeout=10))
    assert result.verdict == "falsified", (x0, y, result.message)
