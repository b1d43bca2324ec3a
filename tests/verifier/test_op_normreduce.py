"""ReduceSumSquare, ReduceL1 and ReduceL2 (lowered in verifier/importer/lowering.py to
ReduceSum of x^2 or |x|, and Sqrt for L2; torch's F.normalize exports ReduceL2).

- onnxruntime: each op at opsets 13 (axes an attribute) and 18 (an input), several axes,
  reduce-all, keepdims 0 and 1, noop_with_empty_axes: our forward agrees, and the point
  enclosure (interval propagation with the lowered ops' rounding bounds) holds
  onnxruntime's outputs, over inputs of every scale; random forms in the importer's
  fuzzing (``FUZZ``, run by test_import_fuzz.py).
- The engine's IBP, CROWN and alpha-CROWN bounds of a net normalising its features
  (ReduceL2, Clip, Div) contain onnxruntime's outputs on random boxes.
- Variable axes are refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from verifier import load_model
from verifier.importer import lowering
from verifier.ops.base import OpFormError, Var

from .fuzzgraph import G, reduce_graph
from .opcases import assert_net_bounds_contain, net_model, reduce_form, run_ort

F32 = np.float32
OPS = ["ReduceSumSquare", "ReduceL1", "ReduceL2"]
SHAPE = [2, 3, 4]


def _one(op: str, opset: int, axes: list[int] | None, keepdims: int | None,
         noop: int | None = None) -> bytes:
    attrs, inits = reduce_form(opset, axes, keepdims, noop)
    ins = ["x", "axes"] if inits else ["x"]
    graph = helper.make_graph([helper.make_node(op, ins, ["y"], **attrs)], "r",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8).SerializeToString()


FORMS = [([-1], None), ([0, 2], 0), ([1], 1), (None, None), (None, 0)]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("opset", [13, 18])
def test_agrees_with_onnxruntime_and_the_enclosure_holds_its_outputs(op: str, opset: int):
    rng = np.random.default_rng(opset)
    forms = FORMS + ([([], 1, 1)] if opset >= 18 else [])
    for form in forms:
        data = _one(op, opset, *form)
        model = load_model(data)
        for scale in (1e-20, 1e-3, 1.0, 1e3, 1e15):
            xs = (rng.normal(size=(3, *SHAPE)) * scale).astype(F32)
            y = run_ort(data, xs).astype(np.float64).reshape(3, -1)
            t = torch.tensor(xs.reshape(3, -1), dtype=torch.float64)
            ours = model.graph.forward(t).numpy().reshape(3, -1)
            if scale > 1e-10:  # below, the float32 squares are subnormal: only enclosed
                np.testing.assert_allclose(ours, y, rtol=2e-6, atol=1e-30,
                                           err_msg=str((op, opset, form, scale)))
            for dtype in (torch.float32, torch.float64):
                lo, hi = (b.double().numpy().reshape(3, -1)
                          for b in model.graph.ibp(t.to(dtype), t.to(dtype)))
                assert ((lo <= y) & (y <= hi)).all(), (op, opset, form, scale, dtype)


def test_variable_axes_are_refused_by_name():
    """(A model cannot even form them: a variable cast to integers is refused first.)"""
    with pytest.raises(OpFormError, match="the axes must be constant"):
        lowering.lower_norm_reduce("y", [Var("x", (2, 3)), Var("a", (1,))], {}, "r", "ReduceL2")


def _net(seed: int) -> bytes:
    """X (1, 4) -> Gemm (6) -> Reshape (1, 2, 3) -> y / max(||y||_2, 1e-3) over the last
    axis (F.normalize) -> Flatten -> MatMul (2)."""
    rng = np.random.default_rng(seed)
    inits = {"W1": rng.normal(size=(4, 6)), "b1": rng.normal(size=6) * 0.3,
             "shape": np.array([1, 2, 3], np.int64), "W2": rng.normal(size=(6, 2)),
             "eps": np.array(1e-3), "axes": np.array([-1], np.int64)}
    nodes = [helper.make_node("Gemm", ["X", "W1", "b1"], ["h0"]),
             helper.make_node("Reshape", ["h0", "shape"], ["h"]),
             helper.make_node("ReduceL2", ["h", "axes"], ["n"], keepdims=1),
             helper.make_node("Max", ["n", "eps"], ["c"]),
             helper.make_node("Div", ["h", "c"], ["u"]),
             helper.make_node("Flatten", ["u"], ["f"]),
             helper.make_node("MatMul", ["f", "W2"], ["Y"])]
    return net_model(nodes, inits, 18)


def test_engine_bounds_contain_the_outputs():
    data = _net(seed=1)
    assert_net_bounds_contain(data, seed=2, widths=(1e-4, 0.01, 0.1, 0.5, 2.0))


def gen_norm_reduce(draw) -> tuple[G, str]:
    """ReduceSumSquare / ReduceL1 / ReduceL2 forms for the importer's fuzzing."""
    return reduce_graph(draw, OPS)


FUZZ = {op: gen_norm_reduce for op in OPS}
