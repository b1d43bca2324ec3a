"""LogSoftmax, lowered to ``x - lse(x)`` (verifier/importer/lowering.py).

- onnxruntime: every opset from 7 to 21, every axis of a rank-3 input (negative ones too;
  below opset 13 the input is flattened to 2-d at the axis), on ordinary, large and
  spread-out logits: the forward agrees and the point enclosure holds onnxruntime's value;
  random forms in the importer's fuzzing (``FUZZ``).
- The engine's IBP, CROWN and alpha-CROWN bounds contain onnxruntime's outputs on dense
  samples of random boxes.
- A difference of two outputs is bounded exactly as the difference of the logits: its
  CROWN bound equals the bound of the same row on a model without LogSoftmax.
- ``verify``: a robustness property true on the logits is verified through LogSoftmax, and
  one violated is falsified with a counterexample onnxruntime confirms.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.bounds.methods import row_lower_bounds
from verifier.problems import ProblemBatch

from .fuzzgraph import G, maybe, opset, put, shape_of
from .opcases import assert_bounds_contain

F32 = np.float32


def _one_node(opset_: int, axis: int | None, shape=(2, 3, 4)) -> bytes:
    attrs = {} if axis is None else {"axis": axis}
    graph = helper.make_graph([helper.make_node("LogSoftmax", ["x"], ["y"], **attrs)], "ls",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset_)]) \
        .SerializeToString()


def _ort(data: bytes, xs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"x": x})[0] for x in xs])


@pytest.mark.parametrize("opset_", [7, 11, 12, 13, 18, 21])
def test_agrees_with_onnxruntime_at_every_axis(opset_: int):
    rng = np.random.default_rng(opset_)
    xs = np.concatenate([rng.normal(size=(6, 2, 3, 4)), rng.normal(size=(3, 2, 3, 4)) * 30,
                         rng.normal(size=(2, 2, 3, 4)) + 500]).astype(F32)
    for axis in (None, 0, 1, 2, -1, -2, -3):
        data = _one_node(opset_, axis)
        y = _ort(data, xs).astype(np.float64)
        model = load_model(data)
        ours = model.graph.forward(torch.from_numpy(xs).double()).numpy()
        np.testing.assert_allclose(ours, y, rtol=1e-5, atol=1e-4, err_msg=str((opset_, axis)))
        t = torch.from_numpy(xs)
        lo, hi = (b.double().numpy() for b in model.graph.ibp(t, t))
        assert ((lo <= y) & (y <= hi)).all(), (opset_, axis)


def _net(seed: int = 0, log_softmax: bool = True) -> bytes:
    """x (1, 4) -> Gemm (8) -> Relu -> Gemm (5) [-> LogSoftmax]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.normal(size=s) * k).astype(F32), name)
             for name, s, k in (("W1", (4, 8), 1.0), ("b1", (8,), 0.3), ("W2", (8, 5), 1.0),
                                ("b2", (5,), 0.3))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["z" if log_softmax else "y"])]
    if log_softmax:
        nodes.append(helper.make_node("LogSoftmax", ["z"], ["y"], axis=1))
    graph = helper.make_graph(nodes, "net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]) \
        .SerializeToString()


def test_engine_bounds_contain_the_outputs():
    data = _net(seed=1)
    model = load_model(data)
    rng = np.random.default_rng(2)
    widths = np.array([1e-4, 0.05, 0.5, 2.0])[:, None]
    centre = rng.uniform(-1, 1, (4, 4))
    lo, hi = centre - widths * rng.uniform(0.2, 1, (4, 4)), centre + widths
    assert_bounds_contain(model.graph, lambda xs: _ort(data, xs[:, None]), lo, hi, 5, rng)


def test_a_difference_of_outputs_is_bounded_as_the_logits_difference():
    lo, hi = np.full((1, 4), -0.5), np.full((1, 4), 0.7)
    C = torch.zeros(1, 4, 5, dtype=torch.float64)
    for r, k in enumerate((1, 2, 3, 4)):
        C[0, r, 0], C[0, r, k] = 1.0, -1.0
    batch = ProblemBatch(torch.tensor(lo), torch.tensor(hi), C, torch.zeros(1, 4),
                         torch.arange(4)[None], [0], [4])
    through = row_lower_bounds(load_model(_net(3)).graph, batch, "crown")
    logits = row_lower_bounds(load_model(_net(3, log_softmax=False)).graph, batch, "crown")
    # equal up to the rounding bounds of the lowered nodes (a few ulps of the outputs)
    assert torch.allclose(through, logits, rtol=0, atol=1e-4), (through, logits)


def _spec(threshold: float) -> str:
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(4))
    text += "".join(f"(declare-const Y_{i} Real)\n" for i in range(5))
    text += "".join(f"(assert (>= X_{i} -0.3))\n(assert (<= X_{i} 0.3))\n" for i in range(4))
    return text + f"(assert (>= (- Y_1 Y_0) {threshold!r}))\n"


def test_verify_through_logsoftmax_both_ways():
    data = _net(seed=4)
    model = load_model(data)
    rng = np.random.default_rng(5)
    corners = np.array(np.meshgrid(*[[-0.3, 0.3]] * 4)).reshape(4, -1).T
    xs = np.concatenate([corners, rng.uniform(-0.3, 0.3, (20000, 4))]).astype(F32)
    ys = _ort(data, xs[:, None]).reshape(len(xs), -1)
    gap = ys[:, 1] - ys[:, 0]
    top, spread = float(gap.max()), float(gap.max() - gap.min())
    proved = verify(model, parse_vnnlib(_spec(top + 0.05 * spread + 1e-3), 4, 5),
                    Settings(timeout=30))
    assert proved.verdict == "verified", proved.message
    unsafe = verify(model, parse_vnnlib(_spec(top - 0.02 * spread), 4, 5), Settings(timeout=30))
    assert unsafe.verdict == "falsified", unsafe.message
    for cex in unsafe.counterexamples:
        y = _ort(data, np.asarray(cex.x, F32)[None, None]).ravel()
        assert y[1] - y[0] >= top - 0.02 * spread


def gen_logsoftmax(draw) -> tuple[G, str]:
    """LogSoftmax with a random axis at a random opset, for the importer's fuzzing."""
    g = G(shape_of(draw), opset(draw))
    r = len(g.shape)
    attrs: dict = {}
    put(attrs, "axis", maybe(draw, st.integers(-r, r - 1)))
    return g, g.node("LogSoftmax", ["X"], **attrs)[0]


FUZZ = {"LogSoftmax": gen_logsoftmax}
