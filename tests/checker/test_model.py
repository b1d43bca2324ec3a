"""The checker's own ONNX reader evaluates the model as onnxruntime does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from checker.model import Activation, Graph, read_model
from tests.checker import proofgen as pg


def _evaluate(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The read graph's exact function (float64) at the flat input x."""
    values = {0: x}
    for node in graph.nodes:
        if isinstance(node, Activation):
            values[node.output] = pg.f(node.op, values[node.input])
            continue
        y = node.bias.copy()
        for tid, W in zip(node.inputs, node.mats, strict=True):
            y = y + (W * values[tid] if W.ndim == 1 else W @ values[tid])
        values[node.output] = y
    return values[graph.output]


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Tanh"])
def test_read_graph_matches_onnxruntime(tmp_path: Path, act: str) -> None:
    net = pg.random_net(5, [4, 7, 5, 3], act, image=(1, 2, 2),
                        mean=np.array([0.1, -0.2, 0.3, 0.0]), std=np.array([0.5, 2.0, 1.5, 3.0]))
    model = pg.save_onnx(net, tmp_path / "m.onnx")
    graph = read_model(str(model))
    assert graph.sizes[0] == 4 and graph.sizes[graph.output] == 3
    assert graph.unit_roundoff == 2.0**-24
    assert [a.z_name for a in graph.activations] == ["z0", "z1"]
    X = np.random.default_rng(0).uniform(-1, 1, size=(50, 4))
    expected = pg.run_onnx(model, X)
    got = np.array([_evaluate(graph, x) for x in X])
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-5)


def _tiny(tmp_path: Path, weight: float = 1.0, **gemm_attrs: object) -> Path:
    """x (1, 2) -> Gemm(W, b, transB=1, attrs) -> Relu: one weight set to ``weight``."""
    from onnx import TensorProto, helper, numpy_helper

    W = np.array([[weight, 0.5], [0.25, -1.0]], dtype=np.float32)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.zeros(2, np.float32),
                                                                      "b")]
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["z"], transB=1, **gemm_attrs),
             helper.make_node("Relu", ["z"], ["y"])]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 2))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 2))],
                              inits)
    path = tmp_path / "tiny.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


@pytest.mark.parametrize("weight", [np.nan, np.inf, -np.inf])
def test_a_non_finite_constant_is_refused(tmp_path: Path, weight: float) -> None:
    """NaN or an infinity in a weight could turn 'no bound' into 'any bound': refused."""
    from checker.model import Unusable

    assert read_model(str(_tiny(tmp_path))).nodes  # the same model, finite, is read
    with pytest.raises(Unusable, match="NaN or an infinity"):
        read_model(str(_tiny(tmp_path, weight)))


def test_an_unknown_attribute_is_refused_by_name(tmp_path: Path) -> None:
    """An attribute the checker does not read is refused, never silently ignored."""
    from checker.model import Unusable

    with pytest.raises(Unusable, match="'shadow'"):
        read_model(str(_tiny(tmp_path, shadow=3)))
