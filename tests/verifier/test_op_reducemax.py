"""ReduceMax and ReduceMin of a variable (ReduceMaxMin in verifier/ops/nonlinear.py).

- onnxruntime: a grid of opsets (11, 13, 18, 20), both ops, axes as attribute (before 18)
  or input (18 on), negative and several axes, reduce-all, keepdims 0 and 1, and
  noop_with_empty_axes with empty axes (the identity); random forms in the importer's
  fuzzing (``FUZZ``, run by test_import_fuzz.py).
- The engine's IBP, CROWN and alpha-CROWN bounds contain onnxruntime's outputs on dense
  samples of random boxes, end to end through a net with the op in its middle.
- A constant ReduceMax folds at import and agrees with onnxruntime; variable axes are
  refused by name.
- ``verify``: a maximum below a threshold with a margin is verified; a maximum that
  reaches the threshold only near one corner of the box is falsified with a counterexample
  onnxruntime confirms, and never verified.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.ops.base import Const, OpFormError, Var
from verifier.ops.nonlinear import ReduceMaxMin

from .fuzzgraph import G, reduce_graph
from .opcases import assert_bounds_contain, reduce_form

F32 = np.float32
SHAPE = (1, 3, 4, 5)


def _model(op: str, opset: int, axes: list[int] | None, keepdims: int | None,
           noop: int | None = None, seed: int = 0) -> bytes:
    """x (1, 8) -> MatMul -> Reshape to SHAPE -> op -> Flatten."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 60)).astype(F32), "W"),
             numpy_helper.from_array(np.array(SHAPE, np.int64), "shape")]
    attrs, extra = reduce_form(opset, axes, keepdims, noop)
    inits += extra
    ins = ["h", "axes"] if extra else ["h"]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h0"]),
             helper.make_node("Reshape", ["h0", "shape"], ["h"]),
             helper.make_node(op, ins, ["r"], **attrs),
             helper.make_node("Flatten", ["r"], ["y"], axis=0)]
    graph = helper.make_graph(nodes, "reduce",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]) \
        .SerializeToString()


def gen_reduce_max_min(draw) -> tuple[G, str]:
    """ReduceMax / ReduceMin forms for the importer's fuzzing (test_import_fuzz.py)."""
    return reduce_graph(draw, ["ReduceMax", "ReduceMin"])


FUZZ = {"ReduceMax": gen_reduce_max_min, "ReduceMin": gen_reduce_max_min}


def _ort(data: bytes, xs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"x": x[None]})[0].ravel() for x in xs])


FORMS = [(axes, keep) for axes in ([-1], [1], [0, 2], [-3, -1], [1, 2, 3], None)
         for keep in (None, 0, 1)]


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("opset", [11, 13, 18, 20])
def test_agrees_with_onnxruntime_on_every_form(op: str, opset: int):
    xs = np.random.default_rng(opset).normal(size=(20, 8)).astype(F32)
    forms = FORMS + ([([], 1, 1), ([], 0, 0), (None, 1, 1)] if opset >= 18 else [])
    for form in forms:
        data = _model(op, opset, *form)
        model = load_model(data)
        assert any(isinstance(n.op, ReduceMaxMin) for n in model.graph.nodes)
        ours = model.graph.forward(torch.from_numpy(xs)).reshape(20, -1).numpy()
        np.testing.assert_array_equal(ours, _ort(data, xs), err_msg=str((op, opset, form)))


def _net(op: str, seed: int) -> bytes:
    """x (1, 4) -> Gemm -> Tanh -> Reshape (1, 3, 4) -> op over the last axis -> Gemm (2)."""
    rng = np.random.default_rng(seed)
    inits = {"W1": rng.normal(size=(4, 12)), "b1": rng.normal(size=12) * 0.3,
             "W2": rng.normal(size=(3, 2)), "shape": np.array([1, 3, 4], np.int64),
             "axes": np.array([-1], np.int64)}
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h0"]),
             helper.make_node("Tanh", ["h0"], ["h1"]),
             helper.make_node("Reshape", ["h1", "shape"], ["h"]),
             helper.make_node(op, ["h", "axes"], ["r"], keepdims=0),
             helper.make_node("MatMul", ["r", "W2"], ["y"])]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(F32), k)
         for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]) \
        .SerializeToString()


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_engine_bounds_contain_the_outputs(op: str):
    data = _net(op, seed=1)
    model = load_model(data)
    rng = np.random.default_rng(2)
    widths = np.array([1e-4, 0.01, 0.3, 1.0, 3.0])[:, None]
    centre = rng.uniform(-1, 1, (5, 4))
    lo, hi = centre - widths * rng.uniform(0.2, 1, (5, 4)), centre + widths
    assert_bounds_contain(model.graph, lambda xs: _ort(data, xs), lo, hi, 2, rng,
                          samples=500, corners=16, iterations=5, tag=op)


def test_a_constant_reduction_folds_and_variable_axes_are_refused():
    inits = [numpy_helper.from_array(np.array([[3.0, -1.0], [0.5, 7.0]], F32), "C")]
    nodes = [helper.make_node("ReduceMax", ["C"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Add", ["x", "m"], ["y"])]
    graph = helper.make_graph(nodes, "fold",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              inits)
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]) \
        .SerializeToString()
    model = load_model(data)
    assert not any(isinstance(n.op, ReduceMaxMin) for n in model.graph.nodes)
    x = np.array([1.0, 2.0], F32)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(model.graph.forward(torch.from_numpy(x)[None]).numpy()[0],
                                  sess.run(None, {"x": x})[0])
    with pytest.raises(OpFormError, match="axes must be constant"):
        ReduceMaxMin.check({"_op_type": "ReduceMax"}, [Var("h", (2, 3)), Var("a", (1,))])
    ReduceMaxMin.check({"_op_type": "ReduceMax"}, [Var("h", (2, 3)), Const(np.array([1]))])


def _spec(threshold: float) -> str:
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(4))
    text += "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    text += "".join(f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n" for i in range(4))
    return text + f"(assert (>= Y_0 {threshold!r}))\n"


W_PIECES = np.array([[1.0, -0.5, 0.25, 0.0], [-0.3, 0.2, 0.1, 0.4], [0.0, 0.0, -1.0, 0.5]],
                    F32)
B_PIECES = np.array([0.1, 0.9, -0.2], F32)


def _corner_net() -> bytes:
    """y0 = max_j (w_j . x + b_j) over 3 affine pieces, y1 = min_j: the largest value of y0
    on [-1, 1]^4 is at one corner only (sum of |w_j| + b_j for the best j)."""
    W, b = W_PIECES, B_PIECES
    inits = [numpy_helper.from_array(W.T.copy(), "W"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h0"]),
             helper.make_node("Add", ["h0", "b"], ["h"]),
             helper.make_node("ReduceMax", ["h", "axes"], ["mx"]),
             helper.make_node("ReduceMin", ["h", "axes"], ["mn"]),
             helper.make_node("Concat", ["mx", "mn"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "corner",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]) \
        .SerializeToString()


def test_verify_proves_a_bounded_maximum_and_finds_the_corner_that_breaks_it():
    data = _corner_net()
    model = load_model(data)
    best = float((np.abs(W_PIECES).sum(1) + B_PIECES).max())  # 1.9, piece 1 at (-1, 1, 1, 1)
    proved = verify(model, parse_vnnlib(_spec(best + 0.01), 4, 2), Settings(timeout=20))
    assert proved.verdict == "verified", proved.message
    unsafe = verify(model, parse_vnnlib(_spec(best - 0.01), 4, 2), Settings(timeout=20))
    assert unsafe.verdict == "falsified", unsafe.message
    for cex in unsafe.counterexamples:
        x = np.asarray(cex.x, F32)
        assert np.all(np.abs(x) <= 1) and _ort(data, x[None])[0, 0] >= best - 0.01
