"""The structural guard: a graph whose evaluation leaves the enclosure of onnxruntime's
outputs on the property's boxes is refused before any proof, naming the node."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib_file, verify
from verifier.importer.guard import check_against_onnxruntime, guard_points
from verifier.ops.nonlinear import Tanh
from verifier.property.core import Case, Conjunction, Property

from .conftest import bench_instances, load_bench_model


def _tanh_net() -> bytes:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="dense"),
             helper.make_node("Tanh", ["h"], ["t"], name="squash"),
             helper.make_node("MatMul", ["t", "V"], ["y"], name="head")]
    inits = [numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((8, 2)).astype(np.float32), "V")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 3])],
                              [helper.make_tensor_value_info("y", 1, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def _box_prop(n_in: int, n_out: int) -> Property:
    conj = Conjunction(np.eye(n_out)[:1], np.array([-100.0]))
    return Property(n_in, n_out, (Case(np.full(n_in, -1.0), np.full(n_in, 1.0), (conj,)),))


def test_faithful_import_passes():
    model = load_model(_tanh_net())
    assert check_against_onnxruntime(model, _box_prop(3, 2), torch.float32,
                                     torch.device("cpu")) > 3


def test_wrong_semantics_refused_with_node(monkeypatch):
    """An op that is 1e-4 off (as a mis-fused pattern would be) is caught and named."""
    model = load_model(_tanh_net())
    monkeypatch.setattr(Tanh, "f", lambda self, x: torch.tanh(x) * (1 + 1e-4))
    result = verify(model, _box_prop(3, 2), Settings(timeout=5))
    assert result.verdict == "error"
    assert "disagrees with onnxruntime" in result.message
    assert "'squash'" in result.message and "Tanh" in result.message


def test_points_are_inside_the_box_in_the_input_type():
    model = load_model(_tanh_net())
    lo, hi = np.array([0.1, 0.2, -0.25]), np.array([0.1000001, 0.3, -0.25])
    prop = Property(3, 2, (Case(lo, hi, (Conjunction(np.eye(2)[:1], np.zeros(1)),)),))
    pts = guard_points(model, prop)
    assert len(pts) and np.all(pts >= lo) and np.all(pts <= hi)
    assert np.all(pts.astype(np.float32).astype(np.float64) == pts)


def test_box_without_float32_is_compared_at_the_nearest_float32():
    """[0.3, 0.3] holds no float32: the points take the nearest one, 0.30000001192."""
    model = load_model(_tanh_net())
    prop = Property(3, 2, (Case(np.full(3, 0.3), np.full(3, 0.3),
                                (Conjunction(np.eye(2)[:1], np.zeros(1)),)),))
    pts = guard_points(model, prop)
    assert len(pts) and np.all(pts == float(np.float32(0.3)))


INSTANCES = list({m: (m, s) for m, s in bench_instances()}.values())


@pytest.mark.parametrize("model_path,spec_path", INSTANCES,
                         ids=[f"{m.parent.parent.name}-{m.stem}" for m, _ in INSTANCES])
def test_guard_accepts_shared_models(model_path, spec_path, bench):
    """Every shared model the importer takes agrees with onnxruntime within its rounding
    bounds on its own property's boxes (in float32 and in float64 arithmetic)."""
    model = load_bench_model(model_path)
    prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
    for dtype in (torch.float32, torch.float64):
        check_against_onnxruntime(model, prop, dtype, torch.device("cpu"), max_points=4)
