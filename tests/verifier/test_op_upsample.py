"""Upsample (opsets 7 to 9; verifier/ops/resize.py, ``UpsampleForm``): opset 10's Resize.

- onnxruntime: nearest and linear, the scales as attribute (7, 8) or input (9), integer
  and fractional scales on any axes (linear in the layouts onnxruntime runs): our forward
  agrees, and onnxruntime's Upsample equals its opset 10 Resize with the same scales, whose
  map ours is (same taps and weights); random forms in the importer's fuzzing (``FUZZ``,
  run by test_import_fuzz.py).
- Refused by name: scales below 1 (onnxruntime rejects them), Upsample from opset 10
  (deprecated; onnxruntime rejects the model), scales that depend on the input.
- The engine's IBP, CROWN and alpha-CROWN bounds of a conv net with an Upsample in the
  middle contain onnxruntime's outputs on dense samples of random boxes.
- ``verify``: a bound above the sampled maximum with a margin is verified; a threshold
  reached only near a corner is falsified with a counterexample onnxruntime confirms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier import load_model
from verifier.errors import UnsupportedOpError
from verifier.ops.resize import Resize, Upsample, UpsampleLinear

from .fuzzgraph import G
from .opcases import assert_net_bounds_contain, net_model, run_ort, verify_both_ways

F32 = np.float32
# (shape, scales): linear only where onnxruntime's kernel runs it (2-d, 3-d, NCHW, NHWC,
# NCDHW); nearest on any axes
FORMS = {
    "nearest": [((1, 2, 3, 4), [1, 1, 2, 2]), ((1, 2, 3, 4), [1, 2, 1.5, 3]),
                ((2, 5), [3, 1.25]), ((1, 3, 2), [1, 1, 2.5]), ((1, 1, 2, 2, 3), [1, 2, 1, 3, 1])],
    "linear": [((1, 2, 3, 4), [1, 1, 2, 2]), ((1, 2, 3, 4), [1, 1, 1.5, 3]),
               ((1, 3, 4, 2), [1, 2.5, 1.5, 1]), ((3, 4), [2, 1.5]), ((2, 3, 4), [1, 2, 3]),
               ((1, 1, 2, 3, 2), [1, 1, 2, 1.5, 3])],
}


def _graph(opset: int, mode: str, shape: tuple[int, ...], scales: list[float],
           op: str = "Upsample") -> bytes:
    """One Upsample (or opset 10 Resize, ``op``) of X."""
    inits = []
    if op == "Upsample" and opset < 9:
        node = helper.make_node(op, ["X"], ["Y"], mode=mode, scales=[float(s) for s in scales])
    else:
        node = helper.make_node(op, ["X", "s"], ["Y"], mode=mode)
        inits = [numpy_helper.from_array(np.asarray(scales, F32), "s")]
    graph = helper.make_graph([node], "up", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, list(shape))], [helper.make_tensor_value_info(
            "Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8).SerializeToString()


@pytest.mark.parametrize("opset", [7, 8, 9])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_agrees_with_onnxruntime_and_is_its_opset10_resize(opset: int, mode: str):
    rng = np.random.default_rng(opset)
    for shape, scales in FORMS[mode]:
        data = _graph(opset, mode, shape, scales)
        xs = rng.normal(size=(3, *shape)).astype(F32)
        y = run_ort(data, xs)
        np.testing.assert_array_equal(y, run_ort(_graph(10, mode, shape, scales, "Resize"), xs))
        model = load_model(data)
        op = model.graph.nodes[0].op
        assert type(op) is (UpsampleLinear if mode == "linear" else Upsample)
        resize = load_model(_graph(10, mode, shape, scales, "Resize")).graph.nodes[0].op
        assert isinstance(resize, Resize) and op.plan.out_shape == resize.plan.out_shape
        for a, amap in resize.plan.axes.items():
            mine = op.plan.axes[a]
            for field in ("i0", "i1", "w0", "w1"):
                np.testing.assert_array_equal(getattr(mine, field), getattr(amap, field))
        ours = model.graph.forward(torch.tensor(xs, dtype=torch.float64)).numpy()
        if mode == "nearest":  # an exact move
            np.testing.assert_array_equal(ours, y, err_msg=str((shape, scales)))
        else:  # float32 weights and sums against our float64
            np.testing.assert_allclose(ours, y, rtol=1e-6, atol=1e-6, err_msg=str((shape, scales)))


def test_refusals_name_the_cause():
    with pytest.raises(UnsupportedOpError, match=r"scales \[1.0, 1.0, 0.5, 2.0\] below 1"):
        load_model(_graph(9, "nearest", (1, 1, 4, 4), [1, 1, 0.5, 2]))
    with pytest.raises(UnsupportedOpError, match=r"below 1"):
        load_model(_graph(7, "linear", (1, 1, 4, 4), [1, 1, 2, 0.75]))
    for opset in (10, 13):
        with pytest.raises(UnsupportedOpError, match=f"Upsample is deprecated at ONNX opset "
                                                     f"{opset}"):
            load_model(_graph(opset, "nearest", (1, 1, 2, 2), [1, 1, 2, 2]))
    g = G((1, 1, 2, 2), 9)  # the scales are the input's own four values
    (s,) = g.node("Reshape", ["X", g.const(np.array([4], np.int64))])
    (z,) = g.node("Upsample", ["X", s])
    with pytest.raises(UnsupportedOpError, match="the 'scales' input depends on the input"):
        load_model(g.model(z))


def _net(mode: str, seed: int) -> bytes:
    """X (1, 4) -> Gemm (8) -> Relu -> Reshape (1, 2, 2, 2) -> Upsample (2, 1.5) -> Conv
    (1 channel, 2x2) -> Tanh -> Flatten -> Gemm (2)."""
    rng = np.random.default_rng(seed)
    inits = {"W1": rng.normal(size=(4, 8)), "b1": rng.normal(size=8) * 0.3,
             "shape": np.array([1, 2, 2, 2], np.int64), "s": np.array([1, 1, 2, 1.5]),
             "K": rng.normal(size=(1, 2, 2, 2)) / 2, "W2": rng.normal(size=(6, 2)) / 2}
    nodes = [helper.make_node("Gemm", ["X", "W1", "b1"], ["h0"]),
             helper.make_node("Relu", ["h0"], ["h1"]),
             helper.make_node("Reshape", ["h1", "shape"], ["h"]),
             helper.make_node("Upsample", ["h", "s"], ["u"], mode=mode),
             helper.make_node("Conv", ["u", "K"], ["c"]),
             helper.make_node("Tanh", ["c"], ["t"]),
             helper.make_node("Flatten", ["t"], ["f"]),
             helper.make_node("MatMul", ["f", "W2"], ["Y"])]
    return net_model(nodes, inits, 9, ir_version=8)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_engine_bounds_contain_the_outputs(mode: str):
    data = _net(mode, seed=1)
    assert_net_bounds_contain(data, seed=2, samples=500, tag=mode)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_true_property_is_verified_and_violated_one_falsified(mode: str):
    data = _net(mode, seed=5)
    verify_both_ways(data, lambda xs: run_ort(data, xs[:, None])[:, 0], 4, 2, seed=6,
                     tag=mode)


def gen_upsample(draw) -> tuple[G, str]:
    """Upsample of the input at opsets 7 to 9, for the importer's fuzzing
    (test_import_fuzz.py): nearest on any axes, linear on the last two of a 4-d input."""
    mode = draw(st.sampled_from(["nearest", "linear"]))
    opset = draw(st.integers(7, 9))
    rank = 4 if mode == "linear" else draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    pick = st.sampled_from([1.0, 1.5, 2.0, 2.5, 3.0])
    scales = [1.0] * (rank - 2) + [draw(pick), draw(pick)] if mode == "linear" else \
        [draw(pick) for _ in range(rank)]
    g = G(shape, opset)
    if opset < 9:
        return g, g.node("Upsample", ["X"], mode=mode, scales=scales)[0]
    return g, g.node("Upsample", ["X", g.const(np.asarray(scales, F32))], mode=mode)[0]


FUZZ = {"Upsample": gen_upsample}
