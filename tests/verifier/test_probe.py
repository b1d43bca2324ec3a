"""Probing the sides of nonlinearities that no sample reached (verifier/search/probe.py).

The planted models y = base(x) + K relu(r - |x - p|_1) of test_guided_search.py have no
gradient outside a tiny L1 ball, so PGD cannot see it; with 20 inputs or more branch-and-
bound splits activations, whose domains never shrink the box, and timed out.  The bump's
pre-activation r - |x - p|_1 has a gradient everywhere, and the bounds say it can be
positive while no sample has seen it positive: that is what the probe follows.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.bounds import intermediate
from verifier.problems import make_batch
from verifier.search.probe import ProbeSettings, _choose, probe

from .test_guided_search import _l1_ball, planted_ball


def _setup(n: int, seed: int):
    data, spec, p, T = _l1_ball(n, seed)
    model = load_model(data)
    prop = parse_vnnlib(spec, model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    return data, model, prop, batch, p, T


@pytest.mark.parametrize("n", [20, 48, 200])
def test_probe_finds_the_counterexample_in_the_ball(n: int):
    data, model, prop, batch, p, T = _setup(n, seed=n)
    found = probe(model, prop, batch, None)
    assert found
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for cex in found:
        x = np.asarray(cex.x, dtype=np.float32)
        assert np.all((-1 <= x) & (x <= 1))
        assert sess.run(None, {"x": x.reshape(1, -1)})[0][0, 0] >= T
        assert np.abs(x - p).sum() <= 0.005 * n ** 0.5  # inside the ball


def _linf_ball(n: int, seed: int, square: bool) -> tuple[bytes, str, np.ndarray, float]:
    """``planted_ball`` with an L-infinity ball, radius 0.003: dist = max_i |x_i - p_i|
    (``square``: sqrt(max_i (x_i - p_i)^2), whose bounds are unbounded here: the square of an
    interval around 0 has a negative lower bound, and sqrt of it none).  The
    pre-activation's gradient reaches one coordinate at a time (the argmax)."""
    parts = [f"s{k}" for k in range(n)]
    distance = [("Mul", ["d", "d"], "ad") if square else ("Abs", ["d"], "ad"),
                ("Split", ["ad"], "s"), ("Max", parts, "m"),
                ("Sqrt" if square else "Identity", ["m"], "dist")]
    return planted_ball(n, seed, 0.003, distance, opset=13)


@pytest.mark.parametrize("square", [False, True])
def test_probe_finds_an_l_infinity_ball(square: bool):
    """Only the argmax coordinate has a gradient: v's steps, which move every coordinate,
    leave the ball once across (the row that drives the entry on to its bound stays), and
    steps grown far away would jump past it (the cap).  With the square, the bump's
    pre-activation has no finite bound (the target's end is a stand-in point)."""
    n = 20
    data, spec, p, T = _linf_ball(n, seed=0, square=square)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": p[None]})[0][0, 0] >= T  # the planted point is real
    model = load_model(data)
    prop = parse_vnnlib(spec, model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    found = probe(model, prop, batch, None)
    assert found
    for cex in found:
        x = np.asarray(cex.x, dtype=np.float32)
        assert sess.run(None, {"x": x.reshape(1, -1)})[0][0, 0] >= T
        assert np.abs(x - p).max() <= 0.003


def test_the_target_is_the_bumps_pre_activation():
    """Of every entry whose bounds allow a side no sample reached, the bump's (its
    pre-activation above 0) has the lowest first-order estimate of v."""
    _, model, _, batch, _, _ = _setup(20, seed=20)
    boxes = dict(intermediate.compute(model.graph, batch.lower, batch.upper).box)
    chosen = _choose(model, batch, boxes, ProbeSettings(), torch.Generator().manual_seed(0))
    assert chosen is not None
    targets, starts, est = chosen
    first = [t for t in targets if int(t.entry[0, 0]) >= 0]
    assert [t.name for t in first] == ["rl"] and bool(first[0].above[0, 0])
    assert float(est[0, 0]) < 0  # the estimate says it would violate
    assert bool((starts >= batch.lower.unsqueeze(1)).all()
                and (starts <= batch.upper.unsqueeze(1)).all())


def test_verify_finds_the_20_input_ball_and_not_without_the_probe():
    data, model, prop, _, _, T = _setup(20, seed=21)
    result = verify(model, prop, Settings(timeout=20))
    assert result.verdict == "falsified", result.message
    assert "probing" in result.message
    # without the probe, activation splitting and its guided search run out of time
    off = verify(model, prop, Settings(timeout=4, probe=None))
    assert off.verdict in ("timeout", "unknown")


def test_the_control_gives_no_counterexample_and_stays_provable():
    """Threshold above the bump's peak: the probe drives the bump on, finds no violation
    (and confirms none), and the property is proved."""
    data, model, prop, batch, p, T = _setup(3, seed=3)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    peak = float(sess.run(None, {"x": p[None]})[0][0, 0])
    _, spec, _, _ = _l1_ball(3, seed=3)
    spec = spec.replace(f"(>= Y_0 {T!r})", f"(>= Y_0 {peak + 0.5!r})")
    prop = parse_vnnlib(spec, model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    assert probe(model, prop, batch, None) == []
    assert verify(model, prop, Settings(timeout=30)).verdict == "verified"


def test_nothing_to_probe_when_every_side_is_seen():
    """A model whose nonlinearity's both sides are seen by samples gives no target."""
    from onnx import TensorProto, helper, numpy_helper
    W = numpy_helper.from_array(np.eye(2, dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [W])
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                       .SerializeToString())
    spec = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n" \
        "(declare-const Y_1 Real)\n(assert (<= X_0 1.0))\n(assert (>= X_0 -1.0))\n" \
        "(assert (<= X_1 1.0))\n(assert (>= X_1 -1.0))\n(assert (>= Y_0 5.0))\n"
    prop = parse_vnnlib(spec, model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    boxes = dict(intermediate.compute(model.graph, batch.lower, batch.upper).box)
    assert _choose(model, batch, boxes, ProbeSettings(), torch.Generator()) is None
    assert probe(model, prop, batch, boxes) == []
    assert math.isfinite(float(boxes["h"][1].max()))


def test_a_probe_out_of_time_while_bounding_returns_nothing():
    """Without kept bounds the probe computes CROWN's; when its time runs out there (the
    vit models: alpha-CROWN stopped by its deadline kept none), it ends with nothing
    instead of raising (that was a run's `error`)."""
    _, model, prop, batch, _, _ = _setup(20, seed=20)
    assert probe(model, prop, batch, None, expired=lambda: True) == []
