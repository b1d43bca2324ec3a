"""Forward linear bounds (verifier/bounds/forward.py) against dense sampling.

On random few-input networks (Gemm, Conv, BatchNormalization, Flatten, ``c - x``, Neg;
Relu, Sigmoid, Tanh, LeakyRelu, Gelu, Sin, Cos) over random boxes (wide, narrow, one
degenerate side): every node's affine functions hold at every sampled point (its value
by the float64 forward pass), the intervals ``intermediate.compute`` returns with them contain every
sampled value, and with the backward pass replaced everywhere (budget 0) verdicts agree
with dense gridding: a threshold below the true minimum is never falsified, one above it
never verified.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, load_from_string, numpy_helper

from verifier import Settings, load_model, ort, verify
from verifier.bounds import forward, intermediate
from verifier.property.core import Case, Conjunction, Property

ACTS = ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "Gelu", "Sin", "Cos"]


def _mlp(act: str, seed: int, widths=(3, 16, 16, 2)) -> bytes:
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        W = (rng.standard_normal((b, a)) * 1.3).astype(np.float32)
        c = (rng.standard_normal(b) * 0.4).astype(np.float32)
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(c, f"c{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"c{i}"], [f"h{i}"], transB=1))
        prev = f"h{i}"
        if i == 0:  # c - x and Neg: linear ops whose weights have one (negative) sign
            inits.append(numpy_helper.from_array(np.float32(0.25).reshape(1), "k"))
            nodes += [helper.make_node("Sub", ["k", prev], ["s0"]),
                      helper.make_node("Neg", ["s0"], ["n0"])]
            prev = "n0"
        if i < len(widths) - 2:
            kw = {"alpha": 0.1} if act == "LeakyRelu" else {}
            op = "Gelu" if act == "Gelu" else act
            nodes.append(helper.make_node(op, [prev], [f"a{i}"], **kw))
            prev = f"a{i}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, widths[0]))],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, (1, widths[-1]))], inits)
    opset = 20 if act == "Gelu" else 17
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                             ).SerializeToString()


def _conv(seed: int) -> bytes:
    """1x2x3 input (6 entries): Conv, BatchNormalization, Relu, Flatten, Gemm."""
    rng = np.random.default_rng(seed)
    K = (rng.standard_normal((4, 1, 2, 2)) * 1.2).astype(np.float32)
    inits = [numpy_helper.from_array(K, "K"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "kb"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "g"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "be"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "mu"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "var"),
             numpy_helper.from_array((rng.standard_normal((2, 8)) * 0.8).astype(np.float32),
                                     "W"),
             numpy_helper.from_array(np.zeros(2, np.float32), "c")]
    nodes = [helper.make_node("Conv", ["x", "K", "kb"], ["y"], pads=[0, 0, 0, 0]),
             helper.make_node("BatchNormalization", ["y", "g", "be", "mu", "var"], ["z"]),
             helper.make_node("Relu", ["z"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "c"], ["out"], transB=1)]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 1, 2, 3))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, (1, 2))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def _boxes(rng: np.random.Generator, n: int, B: int = 6) -> tuple[np.ndarray, np.ndarray]:
    centre = rng.uniform(-1, 1, (B, n))
    width = rng.choice([2.0, 0.3, 1e-3], (B, n)) * rng.uniform(0.2, 1, (B, n))
    width[0, 0] = 0.0  # a degenerate side
    return centre - width / 2, centre + width / 2


def _values(graph, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return graph._run(graph.to_input_shape(x), lambda node, xs: node.op.forward(*xs),
                      tuple(n.name for n in graph.nodes))


@pytest.mark.parametrize("build", [*(f"mlp-{a}" for a in ACTS), "conv"])
@pytest.mark.parametrize("seed", [0, 1])
def test_forms_and_intervals_hold_at_sampled_points(build: str, seed: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forward, "BACKWARD_BUDGET", 0)  # forward bounds on these small nets
    data = _conv(seed) if build == "conv" else _mlp(build[4:], seed)
    graph = load_model(data).graph
    n = graph.n_inputs if hasattr(graph, "n_inputs") else int(np.prod(graph.input_shape))
    rng = np.random.default_rng(seed + 100)
    lo_np, hi_np = _boxes(rng, n)
    lo, hi = torch.tensor(lo_np), torch.tensor(hi_np)
    nb = intermediate.compute(graph, lo, hi)
    forms: dict[str, forward.Form | None] = {graph.input_name: forward.start(
        nb, {n.name for n in graph.nodes})}
    for node in graph.nodes:
        forms[node.name] = forward.step(nb, node, forms)
    assert any(f is not None for f in forms.values())
    for b in range(lo.shape[0]):
        u = torch.tensor(rng.uniform(size=(3000, n)))
        X = lo[b] + u * (hi[b] - lo[b])
        X = torch.cat([X, lo[b:b + 1], hi[b:b + 1]])
        vals = _values(graph, X)
        for node in graph.nodes:
            v = vals[node.name].reshape(X.shape[0], -1)
            box_lo, box_hi = (t[b].reshape(-1) for t in nb.box[node.name])
            slack = 1e-9 * (1 + v.abs())
            assert bool((v >= box_lo - slack).all() and (v <= box_hi + slack).all()), node.name
            form = forms[node.name]
            if form is None:
                continue
            Wl, bl = form.Wl[b].reshape(n, -1), form.bl[b].reshape(-1)
            Wu, bu = form.Wu[b].reshape(n, -1), form.bu[b].reshape(-1)
            assert bool((X @ Wl + bl <= v + slack).all()), (node.name, "lower")
            assert bool((X @ Wu + bu >= v - slack).all()), (node.name, "upper")


def _prop(lo, hi, threshold: float) -> Property:
    conj = Conjunction(np.array([[1.0, 0.0]]), np.array([threshold]))
    return Property(3, 2, (Case(np.array(lo), np.array(hi), (conj,)),))


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Gelu"])
def test_verdicts_with_forward_bounds_only_match_dense_gridding(
        act: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forward, "BACKWARD_BUDGET", 0)
    model = load_model(_mlp(act, 5))
    lo, hi = [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, 61)] * 3), -1).reshape(-1, 3)
    with torch.no_grad():
        y = model.graph.forward(torch.tensor(g)).reshape(len(g), -1)[:, 0]
    true_min, spread = float(y.min()), float(y.max() - y.min()) + 1.0
    settings = Settings(timeout=10, methods=("crown",))
    safe = verify(model, _prop(lo, hi, true_min - 0.05 * spread), settings)
    unsafe = verify(model, _prop(lo, hi, true_min + 0.01 * spread), settings)
    assert safe.verdict in ("verified", "timeout", "unknown"), safe.message
    assert unsafe.verdict in ("falsified", "timeout", "unknown"), unsafe.message
    assert safe.verdict == "verified", safe.message  # splitting 3 inputs decides it


def test_overflowing_forms_prove_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights near float32's limit: the forward functions overflow (inf, then inf - inf =
    NaN) and must drop out, never stand as bounds; a threshold above onnxruntime's value at
    the box's centre (a counterexample there) is never verified."""
    monkeypatch.setattr(forward, "BACKWARD_BUDGET", 0)
    data = _mlp("Relu", 3)
    model_proto = load_from_string(data)
    for init in model_proto.graph.initializer:
        if init.name.startswith("W"):
            big = numpy_helper.to_array(init) * np.float32(1e12)
            init.CopyFrom(numpy_helper.from_array(big.astype(np.float32), init.name))
    data = model_proto.SerializeToString()
    model = load_model(data)
    x = np.zeros(3)
    y = float(ort.run(model, x)[0])
    result = verify(model, _prop([-1e-3] * 3, [1e-3] * 3, y + 1e-3 * (abs(y) + 1)),
                    Settings(timeout=5))
    assert result.verdict != "verified", result.message
