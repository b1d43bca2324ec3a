"""CumSum (verifier/ops/linear.py): a cumulative sum along a constant axis.

- onnxruntime: opsets 11 and 14, every axis of a rank-3 input (negative too), exclusive
  and reverse in all four combinations, the axis as int32 and int64: our forward agrees,
  and its transpose is exact (``A . forward(x) = backward(A) . x``); random forms in the
  importer's fuzzing (``FUZZ``, run by test_import_fuzz.py).
- The point enclosure (interval propagation with its rounding bound) holds onnxruntime's
  outputs on sums that cancel; the engine's IBP, CROWN and alpha-CROWN bounds of a net
  with a CumSum in the middle contain onnxruntime's outputs on random boxes.
- A variable, non-integer or out-of-range axis is refused by name.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier import load_model
from verifier.errors import UnsupportedOpError
from verifier.ops.base import OpFormError, Var
from verifier.ops.linear import CumSum

from .fuzzgraph import G
from .opcases import assert_net_bounds_contain, net_model, run_ort

F32 = np.float32
SHAPE = [2, 3, 4]


def _one(opset: int, axis: int, dtype=np.int64, **attrs) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("CumSum", ["x", "axis"], ["y"], **attrs)], "c",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(axis, dtype), "axis")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8).SerializeToString()


@pytest.mark.parametrize("opset", [11, 14])
def test_agrees_with_onnxruntime_and_transposes_exactly(opset: int):
    rng = np.random.default_rng(opset)
    for axis, exclusive, reverse in itertools.product((0, 1, 2, -1, -3), (0, 1), (0, 1)):
        dtype = np.int32 if axis % 2 else np.int64
        data = _one(opset, axis, dtype, exclusive=exclusive, reverse=reverse)
        model = load_model(data)
        xs = rng.normal(size=(3, *SHAPE)).astype(F32)
        t = torch.tensor(xs.reshape(3, -1), dtype=torch.float64)
        ours = model.graph.forward(t).numpy().reshape(3, -1)
        np.testing.assert_allclose(ours, run_ort(data, xs).reshape(3, -1), rtol=1e-5,
                                   atol=1e-5, err_msg=str((axis, exclusive, reverse)))
        op = next(n.op for n in model.graph.nodes if isinstance(n.op, CumSum))
        A = torch.tensor(rng.normal(size=(3, 2, *SHAPE)))
        lhs = (A * op.forward(t.reshape(3, *SHAPE)).unsqueeze(1)).flatten(2).sum(-1)
        rhs = (op.backward(A)[0] * t.reshape(3, 1, *SHAPE)).flatten(2).sum(-1)
        assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_point_enclosure_holds_onnxruntimes_outputs_on_cancelling_sums():
    data = _one(14, 2, reverse=1)
    model = load_model(data)
    rng = np.random.default_rng(0)
    for scale in (1.0, 1e4, 1e20):
        xs = (rng.normal(size=(3, *SHAPE)) * scale).astype(F32)
        xs[..., 1] = -xs[..., 0] * (1 + 1e-7)  # partial sums that cancel
        y = run_ort(data, xs).astype(np.float64).reshape(3, -1)
        t = torch.tensor(xs.reshape(3, -1))
        lo, hi = (b.double().numpy().reshape(3, -1) for b in model.graph.ibp(t, t))
        assert ((lo <= y) & (y <= hi)).all(), scale


def test_variable_or_out_of_range_axis_is_refused_by_name():
    with pytest.raises(UnsupportedOpError, match="axis 3 is out of range"):
        load_model(_one(14, 3))
    with pytest.raises(UnsupportedOpError, match="the axis input is float32; an integer"):
        load_model(_one(14, 0, np.float32))
    # (a model cannot form a variable axis: a variable cast to integers is refused first)
    with pytest.raises(OpFormError, match="the axis must be constant"):
        CumSum.check({"_op_type": "CumSum"}, [Var("x", (2, 3)), Var("a", ())])


def _net(seed: int) -> bytes:
    """X (1, 4) -> Gemm (6) -> Tanh -> CumSum (exclusive, reverse) -> Relu -> MatMul (2)."""
    rng = np.random.default_rng(seed)
    inits = {"W1": rng.normal(size=(4, 6)), "b1": rng.normal(size=6) * 0.3,
             "axis": np.array(1, np.int64), "W2": rng.normal(size=(6, 2))}
    nodes = [helper.make_node("Gemm", ["X", "W1", "b1"], ["h"]),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("CumSum", ["t", "axis"], ["c"], exclusive=1, reverse=1),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["Y"])]
    return net_model(nodes, inits, 14)


def test_engine_bounds_contain_the_outputs():
    data = _net(seed=1)
    assert_net_bounds_contain(data, seed=2)


def gen_cumsum(draw) -> tuple[G, str]:
    """CumSum of the input along a random axis, with random exclusive and reverse."""
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    g = G(shape, draw(st.integers(11, 21)))
    axis = g.const(np.array(draw(st.integers(-rank, rank - 1)), np.int64))
    return g, g.node("CumSum", ["X", axis], exclusive=draw(st.integers(0, 1)),
                     reverse=draw(st.integers(0, 1)))[0]


FUZZ = {"CumSum": gen_cumsum}
