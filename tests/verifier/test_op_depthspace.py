"""DepthToSpace and SpaceToDepth (lowered in verifier/importer/lowering.py to Reshape,
Transpose and Reshape: exact moves).

- onnxruntime: both modes of DepthToSpace (DCR, CRD) and SpaceToDepth, blocksizes 1 to 3,
  opsets 11, 13 and 21 (DepthToSpace's mode from 11): our forward is equal, entry for
  entry; random forms in the importer's fuzzing (``FUZZ``, run by test_import_fuzz.py).
- The engine's IBP, CROWN and alpha-CROWN bounds of a conv net with a PixelShuffle
  (DepthToSpace) and a SpaceToDepth contain onnxruntime's outputs on random boxes.
- Refused by name: channels not a multiple of blocksize^2, spatial sizes not a multiple of
  the blocksize, inputs that are not (N, C, H, W).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from onnx import TensorProto, helper

from verifier import load_model
from verifier.errors import UnsupportedOpError

from .fuzzgraph import G
from .opcases import assert_net_bounds_contain, net_model, run_ort

F32 = np.float32


def _one(op: str, shape: list[int], opset: int, **attrs) -> bytes:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "ds",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8).SerializeToString()


FORMS = [("DepthToSpace", [2, 8, 2, 3], {"blocksize": 2}),
         ("DepthToSpace", [1, 8, 3, 2], {"blocksize": 2, "mode": "CRD"}),
         ("DepthToSpace", [1, 18, 2, 2], {"blocksize": 3, "mode": "DCR"}),
         ("DepthToSpace", [1, 3, 2, 2], {"blocksize": 1}),
         ("SpaceToDepth", [2, 3, 4, 6], {"blocksize": 2}),
         ("SpaceToDepth", [1, 2, 6, 3], {"blocksize": 3})]


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_equal_to_onnxruntime(opset: int):
    rng = np.random.default_rng(opset)
    for op, shape, attrs in FORMS:
        data = _one(op, shape, opset, **attrs)
        xs = rng.normal(size=(2, *shape)).astype(F32)
        ours = load_model(data).graph.forward(torch.tensor(xs.reshape(2, -1))).numpy()
        np.testing.assert_array_equal(ours.reshape(2, -1), run_ort(data, xs).reshape(2, -1),
                                      err_msg=str((op, shape, attrs)))


@pytest.mark.parametrize("op,shape,attrs,message", [
    ("DepthToSpace", [1, 6, 2, 2], {"blocksize": 2}, "6 channels are not a multiple"),
    ("SpaceToDepth", [1, 2, 5, 4], {"blocksize": 2}, "5x4 is not a multiple"),
    ("DepthToSpace", [4, 2, 2], {"blocksize": 2}, r"shape \[4, 2, 2\]")])
def test_refusals_name_the_cause(op, shape, attrs, message):
    with pytest.raises(UnsupportedOpError, match=message):
        load_model(_one(op, shape, 13, **attrs))


def _net(seed: int) -> bytes:
    """X (1, 4) -> Gemm (16) -> Reshape (1, 4, 2, 2) -> DepthToSpace (2, CRD) -> Relu ->
    SpaceToDepth (2) -> Tanh -> Flatten -> MatMul (2)."""
    rng = np.random.default_rng(seed)
    inits = {"W1": rng.normal(size=(4, 16)), "b1": rng.normal(size=16) * 0.3,
             "shape": np.array([1, 4, 2, 2], np.int64), "W2": rng.normal(size=(16, 2)) / 2}
    nodes = [helper.make_node("Gemm", ["X", "W1", "b1"], ["h0"]),
             helper.make_node("Reshape", ["h0", "shape"], ["h"]),
             helper.make_node("DepthToSpace", ["h"], ["d"], blocksize=2, mode="CRD"),
             helper.make_node("Relu", ["d"], ["r"]),
             helper.make_node("SpaceToDepth", ["r"], ["s"], blocksize=2),
             helper.make_node("Tanh", ["s"], ["t"]),
             helper.make_node("Flatten", ["t"], ["f"]),
             helper.make_node("MatMul", ["f", "W2"], ["Y"])]
    return net_model(nodes, inits, 13)


def test_engine_bounds_contain_the_outputs():
    data = _net(seed=1)
    assert_net_bounds_contain(data, seed=2)


def gen_depth_space(draw) -> tuple[G, str]:
    """DepthToSpace (either mode) or SpaceToDepth of a fitting input, opsets 11 to 21."""
    op = draw(st.sampled_from(["DepthToSpace", "SpaceToDepth"]))
    b = draw(st.integers(1, 3))
    if op == "DepthToSpace":
        shape = (draw(st.integers(1, 2)), b * b * draw(st.integers(1, 2)),
                 draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        g = G(shape, draw(st.integers(11, 21)))
        return g, g.node(op, ["X"], blocksize=b, mode=draw(st.sampled_from(["DCR", "CRD"])))[0]
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), b * draw(st.integers(1, 2)),
             b * draw(st.integers(1, 2)))
    g = G(shape, draw(st.integers(11, 21)))
    return g, g.node(op, ["X"], blocksize=b)[0]


FUZZ = {"DepthToSpace": gen_depth_space, "SpaceToDepth": gen_depth_space}
