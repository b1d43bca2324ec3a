"""Hardmax (verifier/ops/step.py): one-hot of the first maximum along an axis.

- onnxruntime: opsets 7, 11 (the input flattened to 2-d at ``axis``), 13 and 18 (one
  axis), every axis of a rank-3 input, the default, on integer-valued inputs full of ties
  and on infinite values: our forward is equal; random forms in the importer's fuzzing
  (``FUZZ``, run by test_import_fuzz.py).
- Its interval is exact: over boxes with integer ends (ties on their faces), every entry's
  bounds hold the output at every point of an integer grid of the box, and an entry whose
  bounds are [0, 1] takes both values on that grid.  A NaN in a group gives [0, 1].
- The engine's IBP, CROWN and alpha-CROWN bounds contain onnxruntime's outputs on dense
  samples of random boxes, end to end through a net with Hardmax in its middle.
- ``verify``: a class that never wins on the box is proved never to; one that wins only in
  a corner of 0.02% of the box (with a gradient of 0 everywhere) is falsified with a
  counterexample onnxruntime confirms; a tie at one corner, which the first index wins,
  is never proved away.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.ops.step import Hardmax

from .fuzzgraph import G, shape_of
from .opcases import assert_bounds_contain

F32 = np.float32
SHAPE = [2, 3, 4]


def _one_node(opset: int, axis: int | None, shape=SHAPE) -> bytes:
    attrs = {} if axis is None else {"axis": axis}
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], **attrs)], "hardmax",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8).SerializeToString()


def _run(data: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("opset", [7, 11, 13, 18])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1, -2, -3])
def test_agrees_with_onnxruntime(opset: int, axis: int | None):
    data = _one_node(opset, axis)
    model = load_model(data)
    rng = np.random.default_rng(opset * 10 + (axis or 7))
    for k in range(40):
        x = rng.integers(-2, 3, size=SHAPE).astype(F32)  # many ties
        if k % 4 == 1:
            x = rng.normal(size=SHAPE).astype(F32)
        if k % 4 == 2:
            x[rng.uniform(size=SHAPE) < 0.3] = rng.choice([np.inf, -np.inf])
        ours = model.graph.forward(torch.from_numpy(x)[None])[0].numpy()
        np.testing.assert_array_equal(ours, _run(data, x), err_msg=str((opset, axis, x)))


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 0), (13, 1), (13, -1), (18, 0)])
def test_interval_is_exact_over_integer_boxes(opset: int, axis: int):
    shape = [2, 3]
    model = load_model(_one_node(opset, axis, shape))
    op = next(n.op for n in model.graph.nodes if isinstance(n.op, Hardmax))
    rng = np.random.default_rng(opset + axis)
    for _ in range(60):
        a, b = rng.integers(-2, 3, size=(2, *shape)).astype(np.float64)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        if rng.uniform() < 0.2:
            lo = np.where(rng.uniform(size=shape) < 0.3, -np.inf, lo)
            hi = np.where(rng.uniform(size=shape) < 0.3, np.inf, hi)
        out_lo, out_hi = (t[0].numpy() for t in op.ibp((torch.tensor(lo[None]),
                                                         torch.tensor(hi[None]))))
        # the integer grid of the box (infinite ends stand in as themselves: reachable
        # values in the limit, and exactly the inputs onnxruntime compares)
        axes = [sorted({lo[i], hi[i], *range(int(max(lo[i], -3)), int(min(hi[i], 3)) + 1)})
                for i in np.ndindex(*shape)]
        seen = np.zeros((2, *shape), bool)  # seen[v, i]: entry i took the value v
        for point in itertools.product(*axes):
            x = np.array(point, dtype=np.float64).reshape(shape)
            y = op.forward(torch.tensor(x[None]))[0].numpy()
            assert ((out_lo <= y) & (y <= out_hi)).all(), (lo, hi, x, y, out_lo, out_hi)
            seen[0] |= y == 0
            seen[1] |= y == 1
        np.testing.assert_array_equal(out_lo == 0, seen[0], err_msg=str((lo, hi)))
        np.testing.assert_array_equal(out_hi == 1, seen[1], err_msg=str((lo, hi)))
    nan = torch.tensor([[[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]]])
    out_lo, out_hi = op.ibp((nan, nan))
    # the group holding the NaN at [0, 1]: its row, its column, or all (opset 11, axis 0)
    group = (0, 0) if axis in (1, -1) else (0, slice(None), 1) if opset >= 13 else (0,)
    assert (out_lo[group] == 0).all() and (out_hi[group] == 1).all()


def _net(seed: int) -> bytes:
    """x (1, 3) -> Gemm (2, 4) -> Hardmax over the 4 -> Flatten -> MatMul (2)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(3, 8)).astype(F32), "W1"),
             numpy_helper.from_array((rng.normal(size=8) * 0.3).astype(F32), "b1"),
             numpy_helper.from_array(np.array([1, 2, 4], np.int64), "shape"),
             numpy_helper.from_array(rng.normal(size=(8, 2)).astype(F32), "W2")]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h0"]),
             helper.make_node("Reshape", ["h0", "shape"], ["h"]),
             helper.make_node("Hardmax", ["h"], ["s"], axis=-1),
             helper.make_node("Flatten", ["s"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]) \
        .SerializeToString()


def test_engine_bounds_contain_the_outputs():
    data = _net(seed=3)
    model = load_model(data)
    rng = np.random.default_rng(4)
    widths = np.array([1e-4, 0.05, 0.3, 1.0, 3.0])[:, None]
    centre = rng.uniform(-1, 1, (5, 3))
    lo, hi = centre - widths * rng.uniform(0.2, 1, (5, 3)), centre + widths
    assert_bounds_contain(model.graph, lambda xs: np.stack([_run(data, x[None])[0] for x in xs]),
                          lo, hi, 2, rng, samples=500, corners=16, iterations=5)


def _corner_net(threshold: float, winner_first: bool) -> bytes:
    """x in [-1, 1]^2 -> h = (x0 + x1 - threshold, 0) (order per ``winner_first``) ->
    Hardmax -> its one-hot: class "sum" wins where x0 + x1 > threshold (or = with the
    sum first)."""
    w = np.array([[1.0, 0.0], [1.0, 0.0]], F32)
    b = np.array([-threshold, 0.0], F32)
    if not winner_first:
        w, b = w[:, ::-1].copy(), b[::-1].copy()
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"]),
             helper.make_node("Hardmax", ["h"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "corner",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]) \
        .SerializeToString()


def _wins(y: int) -> str:
    """The box [-1, 1]^2 and 'class y is selected' (its one-hot entry >= 0.5)."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(2))
    text += "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    text += "".join(f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n" for i in range(2))
    return text + f"(assert (>= Y_{y} 0.5))\n"


@pytest.mark.parametrize("winner_first", [True, False])
def test_never_winning_class_is_verified_and_a_hidden_corner_is_found(winner_first: bool):
    y = 0 if winner_first else 1
    safe = load_model(_corner_net(2.01, winner_first))
    result = verify(safe, parse_vnnlib(_wins(y), 2, 2), Settings(timeout=20))
    assert result.verdict == "verified", result.message
    data = _corner_net(1.96, winner_first)
    unsafe = verify(load_model(data), parse_vnnlib(_wins(y), 2, 2), Settings(timeout=20))
    assert unsafe.verdict == "falsified", unsafe.message
    for cex in unsafe.counterexamples:
        x = np.asarray(cex.x, F32).reshape(1, 2)
        assert np.all(np.abs(x) <= 1) and _run(data, x)[0, y] == 1


def test_a_tie_the_first_index_wins_is_never_proved_away():
    """At x = (1, 1) the sum is exactly 0, tied with the constant 0; the first index wins,
    so with the sum first 'the sum never wins' is false there."""
    data = _corner_net(2.0, winner_first=True)
    assert _run(data, np.ones((1, 2), F32))[0, 0] == 1
    result = verify(load_model(data), parse_vnnlib(_wins(0), 2, 2), Settings(timeout=10))
    assert result.verdict != "verified", result.message
    if result.verdict == "falsified":
        for cex in result.counterexamples:
            assert _run(data, np.asarray(cex.x, F32).reshape(1, 2))[0, 0] == 1


def gen_hardmax(draw) -> tuple[G, str]:
    """Hardmax at any opset and axis, for the importer's fuzzing (test_import_fuzz.py)."""
    shape = shape_of(draw)
    g = G(shape, draw(st.integers(7, 21)))
    attrs = {} if draw(st.booleans()) else {"axis": draw(st.integers(-len(shape),
                                                                      len(shape) - 1))}
    return g, g.node("Hardmax", ["X"], **attrs)[0]


FUZZ = {"Hardmax": gen_hardmax}
