"""The counterexample search's gradients (verifier/search/attack.py): step functions pass the
gradient straight through, order comparisons between a softmax output's entries are made
on its input, and a saturated softmax's NaN gradient does not stop the search.

The planted model: 12 inputs in [0, 1], ``h = Sign(x - 0.5)``, logits ``z = s (0, sum h -
11.5)`` and ``y = Softmax(z)``; the property says ``y_1 >= y_0`` is unreachable, which is
false exactly on the orthant ``x > 0.5`` (2^-12 of the box).  Sign's true gradient is 0, so
a search that follows it moves nowhere and must land in the orthant at random (16 restarts:
under 0.4%); the straight-through gradient points every coordinate into it at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, parse_vnnlib_file, verify
from verifier.ops.step import Ceil, Floor, Round, Sign, StepOp
from verifier.problems import make_batch
from verifier.search.attack import AttackSettings, pgd, search_rows, softmax_logits

N = 12
SHARED = Path(__file__).resolve().parents[3] / "shared" / "benchmarks"


def _planted(scale: float, softmax: bool = True) -> bytes:
    W = np.zeros((N, 2), np.float32)
    W[:, 1] = scale
    b = np.array([0.0, -11.5 * scale], np.float32)
    inits = [numpy_helper.from_array(np.float32(0.5).reshape(1), "half"),
             numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Sub", ["X", "half"], ["c"]),
             helper.make_node("Sign", ["c"], ["h"]),
             helper.make_node("MatMul", ["h", "W"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logits"])]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["Y"], axis=-1))
        out = "Y"
    graph = helper.make_graph(nodes, "planted", [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, N])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString()


PROPERTY = "\n".join([f"(declare-const X_{i} Real)" for i in range(N)]
                     + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
                     + [f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))" for i in range(N)]
                     + ["(assert (>= Y_1 Y_0))"])


@pytest.mark.parametrize("scale", [1.0, 1000.0])  # 1000: a saturated softmax
@pytest.mark.parametrize("softmax", [True, False])
def test_planted_orthant_is_found_through_sign(scale: float, softmax: bool) -> None:
    data = _planted(scale, softmax)
    model = load_model(data)
    prop = parse_vnnlib(PROPERTY, model.n_inputs, model.n_outputs)
    result = verify(model, prop, Settings(timeout=20, bab=False))
    assert result.verdict == "falsified", result.message
    x = np.asarray(result.counterexamples[0].x, np.float32).reshape(1, N)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"X": x})[0][0]
    assert np.all(x > 0.5) and y[1] >= y[0]


def test_without_the_straight_through_gradient_the_search_stays_put(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with Sign's true (zero) gradient the same search finds nothing."""
    monkeypatch.setattr(StepOp, "search_forward", lambda self, x: self.forward(x))
    model = load_model(_planted(1.0))
    prop = parse_vnnlib(PROPERTY, model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    with torch.enable_grad():
        _, v, _ = pgd(model.graph, batch, AttackSettings())
    assert bool((v > 0).all())


@pytest.mark.parametrize("op", [Sign, Floor, Ceil, Round])
def test_search_forward_has_the_values_and_the_identity_gradient(op: type[StepOp]) -> None:
    x = (torch.linspace(-3, 3, 61, dtype=torch.float64) + 0.01).requires_grad_(True)
    inst = op({"_op_type": op.__name__}, [], (61,))
    y = inst.search_forward(x)
    assert torch.equal(y.detach(), inst.forward(x.detach()))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, torch.ones_like(x))


def test_softmax_logits_and_search_rows() -> None:
    model = load_model(_planted(1.0))
    assert softmax_logits(model.graph) == "logits"
    assert softmax_logits(load_model(_planted(1.0, softmax=False)).graph) is None
    prop = parse_vnnlib(PROPERTY.replace("(assert (>= Y_1 Y_0))",
                                         "(assert (or (and (>= Y_1 Y_0)) (and (>= Y_1 0.5))))"),
                        model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    # the comparison of two entries is a search row; a threshold on one entry is not
    assert sorted(search_rows(batch)[0].tolist()) == [False, True]


@pytest.mark.skipif(not (SHARED / "traffic_signs_recognition_2023").is_dir(),
                    reason="needs ../shared/benchmarks")
def test_binarised_traffic_sign_nets_are_falsified() -> None:
    """The published answer of all three shared instances is sat (binarised convolutional
    nets: Sign, Softmax); each counterexample is confirmed by onnxruntime inside verify."""
    folder = SHARED / "traffic_signs_recognition_2023"
    for line in (folder / "instances.csv").read_text().split():
        onnx_rel, spec_rel, _ = line.split(",")
        model = load_model(folder / onnx_rel)
        prop = parse_vnnlib_file(folder / spec_rel, model.n_inputs, model.n_outputs)
        result = verify(model, prop, Settings(timeout=30))
        assert result.verdict == "falsified", (onnx_rel, result.message)
