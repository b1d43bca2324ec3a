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
