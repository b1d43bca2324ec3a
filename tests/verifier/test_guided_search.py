"""The counterexample search guided by branch-and-bound's domains (verifier/search/guided.py).

The planted models of test_hidden_counterexamples.py hide a counterexample in a slab
|x_1 + ... + x_20 - 20 P| <= ~1e-4 with no gradient outside it: PGD from random starts never
sees it, and with 20 inputs branch-and-bound splits activations, whose domains never shrink
the box.  The split limits (z >= 0, z <= 0 on the bump's pre-activations) are what point
at it; these tests check that the search follows them, that what it returns is real
(onnxruntime), and that it is what finds the counterexamples.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.problems import make_batch
from verifier.search.bab import BabSettings, split_nodes
from verifier.search.guided import GuidedSettings, guided_points, limit_violation, start_points

from .test_hidden_counterexamples import BUMPS, P, _spec, relu

N = 20


def _relu_domain(limited: bool):
    """The 20-input triangle y = relu(s + 1) - 2 relu(s) + relu(s - 1), s = K (sum x - 20 P),
    unsafe where y >= 0.5, and the domain s + 1 >= 0, s >= 0, s - 1 <= 0 (where y = 1 - s)
    or the same box without limits."""
    bump = next(b for b in BUMPS if b.name == "relu")
    data = relu(N)
    model = load_model(data)
    prop = parse_vnnlib(_spec(bump, N, bump.hidden), model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    (name, node), = split_nodes(model.graph)
    inf = math.inf
    lo = torch.tensor([[0.0, 0.0, -inf]]).reshape(1, *node.shape)
    hi = torch.tensor([[inf, inf, 0.0]]).reshape(1, *node.shape)
    return data, model, batch, ({name: (lo, hi)} if limited else {})


@pytest.mark.parametrize("starts", [1, 4])
def test_split_limits_lead_into_the_slab(starts: int):
    data, model, batch, splits = _relu_domain(limited=True)
    x0 = start_points(batch, None, starts, seed=0)  # the centre (sum 0: s = -20 P K) first
    xs, vs = guided_points(model.graph, batch, splits, x0, GuidedSettings())
    assert bool((xs >= batch.lower.unsqueeze(1)).all() and (xs <= batch.upper.unsqueeze(1)).all())
    best = int(vs.argmin())
    assert float(vs.reshape(-1)[best]) <= 0
    x = xs.reshape(-1, N)[best].numpy().astype(np.float32)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x.reshape(1, -1)})[0].ravel()
    assert y[0] >= 0.5, (x.sum() - N * P, y)  # a real counterexample, in the slab


def test_without_limits_the_flat_model_gives_nothing_to_follow():
    """The same search without the domain's limits: v has no gradient off the slab, so the
    limits, not the steps alone, are what find it."""
    _, model, batch, splits = _relu_domain(limited=False)
    x0 = start_points(batch, None, 4, seed=0)
    _, vs = guided_points(model.graph, batch, splits, x0, GuidedSettings())
    assert float(vs.min()) > 0


def test_limit_violation_counts_only_what_leaves_the_limits():
    zero = torch.zeros(2, 3)
    z = torch.tensor([[-2.0, 0.5, 3.0], [0.0, 1.0, 2.0]]).repeat_interleave(3, 0)  # (6, 3)
    lo = torch.tensor([[-1.0, -math.inf, 0.0], [-math.inf, -math.inf, -math.inf]])
    hi = torch.tensor([[math.inf, 0.0, 1.0], [math.inf, math.inf, math.inf]])
    got = limit_violation({"z": z}, {"z": (lo, hi)}, zero)
    # row 0: -2 is 1 below -1; 0.5 is 0.5 above 0; 3 is 2 above 1 -> 3.5; row 1: no limits
    assert torch.allclose(got, torch.tensor([[3.5] * 3, [0.0] * 3]))


FOUND_BY_GUIDED = ("relu", "leaky_relu", "sigmoid", "exp", "log", "sqrt", "reciprocal",
                   "abs", "max_of_variables", "product", "conv", "average_pool")


@pytest.mark.parametrize("name", FOUND_BY_GUIDED)
def test_hidden_counterexample_found_with_20_inputs(name: str):
    """verify() finds the planted counterexample by the guided search alone (the probe is
    off) in 0.1-1.1 s here (the timeout leaves room for a loaded machine), and onnxruntime
    confirms it."""
    bump = next(b for b in BUMPS if b.name == name)
    data = bump.build(N)
    model = load_model(data)
    prop = parse_vnnlib(_spec(bump, N, bump.hidden), model.n_inputs, model.n_outputs)
    result = verify(model, prop, Settings(timeout=20, probe=None))
    assert result.verdict == "falsified", result.message
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for cex in result.counterexamples:
        x = np.asarray(cex.x, dtype=np.float32)
        assert np.all((-1 <= x) & (x <= 1))
        y = sess.run(None, {"x": x.reshape(1, -1)})[0].ravel()
        assert y[bump.out] >= bump.hidden


def test_branch_and_bound_without_the_guided_search_misses_it():
    """The control: the same engine with the guided search off ends without a
    counterexample on the triangle (this is what the search adds)."""
    bump = next(b for b in BUMPS if b.name == "relu")
    model = load_model(bump.build(N))
    prop = parse_vnnlib(_spec(bump, N, bump.hidden), model.n_inputs, model.n_outputs)
    settings = dataclasses.replace(Settings(timeout=3, probe=None),
                                   bab_settings=BabSettings(guided=None))
    assert verify(model, prop, settings).verdict in ("unknown", "timeout")


def planted_ball(n: int, seed: int, r: float, distance: list[tuple[str, list[str], str]],
                 opset: int = 17) -> tuple[bytes, str, np.ndarray, float]:
    """y = base(x) + K relu(r - dist(x)) on [-1, 1]^n, a random ReLU layer for base and
    ``dist`` a distance from p built by the nodes ``distance`` (op, inputs, output) from
    ``d = x - p`` to ``dist`` (they may use the constant ``ones``, shape (n, 1)): the bump
    has no gradient outside the ball dist < r, and the unsafe set y >= T, T 0.3 above a
    sound bound of base's maximum, lies inside it (y(p) is 0.6 above that bound).  The
    model, its spec, p and T."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    W1 = (rng.normal(size=(n, 32)) / np.sqrt(n)).astype(np.float32)
    b1 = (rng.normal(size=32) * 0.1).astype(np.float32)
    W2 = (rng.normal(size=(32, 1)) / np.sqrt(32)).astype(np.float32)
    p = rng.uniform(-0.8, 0.8, n).astype(np.float32)
    r32 = np.float32(r)
    top = float(np.maximum(W2[:, 0], 0) @ np.maximum(np.abs(W1).sum(0) + b1, 0))
    base_p = float((np.maximum(p[None] @ W1 + b1, 0) @ W2)[0, 0])
    K = np.float32((top - base_p + 0.6) / r32)
    consts = {"W1": W1, "b1": b1, "W2": W2, "p": p[None], "ones": np.ones((n, 1), np.float32),
              "r": np.array([[r32]], np.float32), "K": np.array([[K]], np.float32)}
    ops = [("MatMul", ["x", "W1"], "h0"), ("Add", ["h0", "b1"], "h1"), ("Relu", ["h1"], "h2"),
           ("MatMul", ["h2", "W2"], "base"), ("Sub", ["x", "p"], "d"), *distance,
           ("Sub", ["r", "dist"], "rl"), ("Relu", ["rl"], "bump"), ("Mul", ["bump", "K"], "kb"),
           ("Add", ["base", "kb"], "y")]
    nodes = []
    for op, ins, out in ops:
        if op == "Split":  # into n columns: the outputs are out0 ... out{n-1}
            nodes.append(helper.make_node(op, ins, [f"{out}{k}" for k in range(n)], axis=1))
        else:
            nodes.append(helper.make_node(op, ins, [out]))
    graph = helper.make_graph(
        nodes, "ball",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]) \
        .SerializeToString()
    T = top + 0.3
    spec = "".join(f"(declare-const X_{i} Real)\n" for i in range(n)) + \
        "(declare-const Y_0 Real)\n" + \
        "".join(f"(assert (<= X_{i} 1.0))\n(assert (>= X_{i} -1.0))\n" for i in range(n)) + \
        f"(assert (>= Y_0 {T!r}))\n"
    return data, spec, p, T


def _l1_ball(n: int, seed: int) -> tuple[bytes, str, np.ndarray, float]:
    """``planted_ball`` with the L1 distance |x - p|_1 (relu(d) + relu(-d), summed), radius
    0.005 sqrt(n)."""
    return planted_ball(n, seed, 0.005 * n ** 0.5, [
        ("Relu", ["d"], "dp"), ("Neg", ["d"], "nd"), ("Relu", ["nd"], "dn"),
        ("Add", ["dp", "dn"], "ad"), ("MatMul", ["ad", "ones"], "dist")])


@pytest.mark.parametrize("n,guided", [(3, True), (8, True), (16, True), (8, False)])
def test_counterexample_in_an_l1_ball_found_by_input_splitting(n: int, guided: bool):
    """Input splitting (at most 16 inputs) homes in on the ball: clipping cuts the boxes
    towards it, and the guided search (no split limits here: Polyak steps on the violation
    from the weakest boxes) lands in it once a box reaches its basin.  Found in 0.5-4.5 s
    here; before, 8 inputs ended `unknown` within 2 s, when the first box at the ball's rim
    became a point (whose bound cannot reach 0): such boxes are now set aside and the
    search goes on, which alone finds that one; 16 inputs timed out without the guided
    search in input splitting."""
    data, spec, p, T = _l1_ball(n, seed=n)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": p[None]})[0][0, 0] >= T  # the planted point is real
    model = load_model(data)
    prop = parse_vnnlib(spec, model.n_inputs, model.n_outputs)
    bab = BabSettings() if guided else BabSettings(guided=None)
    result = verify(model, prop, Settings(timeout=30, bab_settings=bab, probe=None))
    assert result.verdict == "falsified", result.message
    for cex in result.counterexamples:
        x = np.asarray(cex.x, dtype=np.float32)
        assert np.all((-1 <= x) & (x <= 1))
        assert sess.run(None, {"x": x.reshape(1, -1)})[0][0, 0] >= T


def test_l1_ball_control_is_verified():
    """The same model with the threshold above the bump's peak holds, and is proved."""
    data, spec, p, T = _l1_ball(3, seed=3)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    peak = float(sess.run(None, {"x": p[None]})[0][0, 0])
    model = load_model(data)
    spec = spec.replace(f"(>= Y_0 {T!r})", f"(>= Y_0 {peak + 0.5!r})")
    prop = parse_vnnlib(spec, model.n_inputs, model.n_outputs)
    assert verify(model, prop, Settings(timeout=30)).verdict == "verified"
