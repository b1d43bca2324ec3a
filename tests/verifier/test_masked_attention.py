"""Attention with a -inf mask (causal, as exporters write it: a constant built by
ConstantOfShape, Trilu, Equal and Where, added to the scores before Softmax).

- The mask folds at import (Trilu, like the other constant-only ops) and the model's
  forward equals onnxruntime's, masked probabilities exactly 0 (the softmax lowering's
  differences of two -inf scores are -inf off the diagonal, not NaN).
- Interval bounds of the masked probabilities are [0, 0] up to rounding; the engine's IBP, CROWN
  and alpha-CROWN bounds of the outputs are finite and contain onnxruntime's outputs on
  dense samples of random boxes (a -inf constant meets coefficients of 0 as 0, not NaN).
- ``verify``: a bound above the sampled maximum with a margin is verified; a threshold
  reached near a corner is falsified with a counterexample onnxruntime confirms.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import load_model
from verifier.bounds import intermediate

from .opcases import assert_bounds_contain, random_boxes, verify_both_ways

F32 = np.float32
T, D = 4, 3  # tokens, width


def _net(seed: int) -> bytes:
    """X (1, 4) -> Gemm -> tokens (1, T, D) -> q, k, v -> q k^T / sqrt(D) + causal mask ->
    Softmax -> @ v -> Flatten -> MatMul (2)."""
    rng = np.random.default_rng(seed)
    f = {"W0": rng.normal(size=(4, T * D)), "b0": rng.normal(size=T * D) * 0.3,
         "Wq": rng.normal(size=(D, D)), "Wk": rng.normal(size=(D, D)),
         "Wv": rng.normal(size=(D, D)), "W2": rng.normal(size=(T * D, 2)) / 2,
         "scale": np.array(1 / np.sqrt(D)), "zero": np.array(0.0),
         "minus_inf": np.array(-np.inf)}
    i = {"tokens": np.array([1, T, D]), "square": np.array([T, T])}
    inits = [numpy_helper.from_array(v.astype(F32), k) for k, v in f.items()]
    inits += [numpy_helper.from_array(v.astype(np.int64), k) for k, v in i.items()]
    ones = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [helper.make_node("Gemm", ["X", "W0", "b0"], ["h"]),
             helper.make_node("Reshape", ["h", "tokens"], ["t"]),
             helper.make_node("MatMul", ["t", "Wq"], ["q"]),
             helper.make_node("MatMul", ["t", "Wk"], ["k"]),
             helper.make_node("MatMul", ["t", "Wv"], ["v"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s0"]),
             helper.make_node("Mul", ["s0", "scale"], ["s"]),
             helper.make_node("ConstantOfShape", ["square"], ["full"], value=ones),
             helper.make_node("Trilu", ["full"], ["lower"], upper=0),
             helper.make_node("Equal", ["lower", "zero"], ["future"]),
             helper.make_node("Where", ["future", "minus_inf", "zero"], ["mask"]),
             helper.make_node("Add", ["s", "mask"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["o"]),
             helper.make_node("Flatten", ["o"], ["of"]),
             helper.make_node("MatMul", ["of", "W2"], ["Y"])]
    graph = helper.make_graph(
        nodes, "causal", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]) \
        .SerializeToString()


def _ort(data: bytes, xs: np.ndarray, output: str = "Y") -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.stack([sess.run([output], {"X": x[None]})[0][0] for x in xs])


def test_forward_agrees_and_masked_probabilities_are_zero():
    data = _net(seed=0)
    model = load_model(data)
    xs = np.random.default_rng(1).uniform(-1, 1, (20, 4)).astype(F32)
    ours = model.graph.forward(torch.tensor(xs, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours.reshape(20, -1), _ort(data, xs), rtol=1e-5, atol=1e-5)
    p = model.graph.search_values(torch.tensor(xs, dtype=torch.float64), ("p",))[1]["p"]
    lo, hi = (torch.tensor(v, dtype=torch.float64) for v in (xs[:2] - 0.1, xs[:2] + 0.1))
    box = intermediate.compute(model.graph, lo, hi).box["p"]
    future = np.triu(np.ones((T, T), bool), 1)
    # 0 up to the rounding bound of the lowering's reciprocal (a few ulps of 1)
    assert (box[0][:, 0][:, future].abs() < 1e-6).all()
    assert (box[1][:, 0][:, future].abs() < 1e-6).all()
    assert torch.isfinite(box[0]).all() and torch.isfinite(box[1]).all()
    assert (p[:, 0][:, future] == 0).all() and torch.isfinite(p).all()


def test_engine_bounds_are_finite_and_contain_the_outputs():
    data = _net(seed=2)
    rng = np.random.default_rng(3)
    lo, hi = random_boxes(rng, 4, (1e-4, 0.01, 0.1, 0.3, 1.0))
    assert_bounds_contain(load_model(data).graph, lambda xs: _ort(data, xs), lo, hi, 2, rng,
                          samples=500, corners=16, iterations=5)


def test_true_property_is_verified_and_violated_one_falsified():
    data = _net(seed=5)
    verify_both_ways(data, lambda xs: _ort(data, xs), 4, 2, r=0.3, seed=6, margin=0.1)
