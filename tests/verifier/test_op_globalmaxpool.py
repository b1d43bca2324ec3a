"""GlobalMaxPool (lowered in verifier/importer/lowering.py to ReduceMax over the spatial
axes, kept as size 1).

- onnxruntime: ranks 3, 4 and 5, opsets 7, 13 and 22, values with ties and infinities: our
  forward is equal; random forms in the importer's fuzzing (``FUZZ``).
- The engine's IBP, CROWN and alpha-CROWN bounds of a net with a GlobalMaxPool contain
  onnxruntime's outputs on random boxes.
- An input without spatial axes is refused by name.
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


def _one(shape: list[int], opset: int) -> bytes:
    graph = helper.make_graph([helper.make_node("GlobalMaxPool", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8).SerializeToString()


@pytest.mark.parametrize("opset", [7, 13, 22])
@pytest.mark.parametrize("shape", [[2, 3, 5], [1, 2, 3, 4], [1, 2, 2, 3, 2]])
def test_equal_to_onnxruntime(opset: int, shape: list[int]):
    data = _one(shape, opset)
    rng = np.random.default_rng(opset)
    xs = rng.integers(-3, 3, size=(4, *shape)).astype(np.float32)
    xs[0].flat[0] = np.inf
    xs[1].flat[-1] = -np.inf
    ours = load_model(data).graph.forward(torch.tensor(xs.reshape(4, -1))).numpy()
    np.testing.assert_array_equal(ours.reshape(4, -1), run_ort(data, xs).reshape(4, -1))


def test_input_without_spatial_axes_is_refused_by_name():
    with pytest.raises(UnsupportedOpError, match=r"shape \[2, 3\]"):
        load_model(_one([2, 3], 13))


def test_engine_bounds_contain_the_outputs():
    rng = np.random.default_rng(1)
    inits = {"W1": rng.normal(size=(4, 12)), "shape": np.array([1, 2, 6], np.int64),
             "W2": rng.normal(size=(2, 2))}
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["h0"]),
             helper.make_node("Tanh", ["h0"], ["h1"]),
             helper.make_node("Reshape", ["h1", "shape"], ["h"]),
             helper.make_node("GlobalMaxPool", ["h"], ["m"]),
             helper.make_node("Flatten", ["m"], ["f"]),
             helper.make_node("MatMul", ["f", "W2"], ["Y"])]
    assert_net_bounds_contain(net_model(nodes, inits, 13), seed=2)


def gen_global_max_pool(draw) -> tuple[G, str]:
    rank = draw(st.integers(3, 5))
    g = G(tuple(draw(st.integers(1, 3)) for _ in range(rank)), draw(st.integers(7, 21)))
    return g, g.node("GlobalMaxPool", ["X"])[0]


FUZZ = {"GlobalMaxPool": gen_global_max_pool}
